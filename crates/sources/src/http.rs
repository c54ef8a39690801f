//! Eureka's HTTP client: rustls, a connect timeout, no Nagle delay (small requests on a
//! latency path), and an optional private CA for registries behind TLS with their own
//! certificate authority.

use std::path::Path;
use std::time::Duration;

/// Why the client could not be built; each source wraps it in its own error, which
/// names the registry.
pub(crate) enum ClientError {
    /// The CA file could not be read or is not PEM.
    CaFile(String),
    /// The TLS stack refused the configuration.
    Build(String),
}

pub(crate) fn client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(timeout) = request_timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| ClientError::CaFile(e.to_string()))?;
        let certificate =
            reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError::CaFile(e.to_string()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|e| ClientError::Build(e.to_string()))
}

/// Why a body was not read.
pub(crate) enum BodyError {
    /// Longer than the limit (in bytes).
    TooLarge(usize),
    Read(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes: a declared length over it is
/// refused before anything is read, and an undeclared one as soon as it grows past it.
pub(crate) async fn body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Serves one response of `body_len` bytes, with or without a Content-Length.
    fn serve(body_len: usize, declared: bool) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let head = if declared {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n")
            } else {
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&vec![b'x'; body_len]);
        });
        format!("http://{address}/")
    }

    async fn read(url: &str, limit: usize) -> Result<usize, usize> {
        let response = reqwest::get(url).await.unwrap();
        match body(response, limit).await {
            Ok(body) => Ok(body.len()),
            Err(BodyError::TooLarge(limit)) => Err(limit),
            Err(BodyError::Read(e)) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_declared_or_not() {
        assert_eq!(read(&serve(1000, true), 1000).await, Ok(1000));
        assert_eq!(read(&serve(1001, true), 1000).await, Err(1000));
        assert_eq!(read(&serve(1000, false), 1000).await, Ok(1000));
        assert_eq!(read(&serve(64 << 10, false), 1000).await, Err(1000));
    }
}
