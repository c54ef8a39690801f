//! The HTTP client the HTTP registries (Consul, Eureka) share: rustls, a connect
//! timeout, no Nagle delay (small requests on a latency path), and an optional private
//! CA for registries behind TLS with their own certificate authority.

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
