//! The MCP server and its sink, opened in one call: the certificate read, the port
//! bound (so a taken port fails at start, not later), and the server running until
//! `shutdown`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::server::{Ads, Observer, ServeError, ServerTls, Serving};
use crate::sink::McpSink;

#[derive(Clone, Debug)]
pub struct McpOptions {
    pub listen: SocketAddr,
    /// Certificate and key (PEM files): the server speaks TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With TLS: only clients with a certificate from this CA (PEM file) are served.
    pub client_ca: Option<PathBuf>,
    /// Where the served set and the guard's memory are kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// How long to wait for every registry before istiod is answered with what there is.
    pub initial_wait: std::time::Duration,
    /// Streams served at once; more are refused.
    pub max_streams: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read `sinks.mcp.{key}` {}: {error}; point it at a PEM file", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the MCP sink cannot start: {0}; check `sinks.mcp` (a free address:port, a matching certificate and key)"
    )]
    Serve(#[from] ServeError),
}

/// The sink the writer drives, and the address the server listens on.
pub async fn open(
    options: &McpOptions,
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(McpSink, SocketAddr), OpenError> {
    let read = |path: &PathBuf, key: &'static str| {
        std::fs::read(path).map_err(|error| OpenError::Read {
            key,
            path: path.clone(),
            error,
        })
    };
    let tls = match &options.tls {
        Some((cert, key)) => Some(ServerTls {
            cert_pem: read(cert, "cert_file")?,
            key_pem: read(key, "key_file")?,
            files: Some((cert.clone(), key.clone())),
            client_ca_pem: match &options.client_ca {
                Some(ca) => Some(read(ca, "client_ca_file")?),
                None => None,
            },
        }),
        None => None,
    };
    let (sink, offers) = McpSink::new();
    let sink = sink.initial_wait(options.initial_wait);
    let sink = match &options.state_dir {
        Some(dir) => sink.keep_state(dir.clone()),
        None => sink,
    };
    let server = Serving::bind(
        options.listen,
        Ads::new(offers, observer).max_streams(options.max_streams),
        tls.as_ref(),
    )
    .await?;
    let bound = server.local_addr().unwrap_or(options.listen);
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    tracing::info!(address = %bound, "serving istiod as an MCP-over-xDS config source (xds://{bound}, {scheme})");
    tokio::spawn(async move {
        if let Err(error) = server.run(shutdown).await {
            tracing::error!(%error, "the MCP server stopped; istiod keeps its last view and reconnects when it is back");
        }
    });
    Ok((sink, bound))
}
