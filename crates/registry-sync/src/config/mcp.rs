//! `sinks.mcp`: where istiod dials registry-sync as an MCP-over-xDS config source, and
//! the server certificate when it dials with TLS (istiod ≥ 1.26, `tlsSettings.mode:
//! SIMPLE`; every other mode, MUTUAL included, is plaintext on istiod's side).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMcpSink {
    listen: Spanned<String>,
    #[serde(default)]
    cert_file: Option<Spanned<String>>,
    #[serde(default)]
    key_file: Option<Spanned<String>>,
    #[serde(default)]
    client_ca_file: Option<Spanned<String>>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    initial_wait: Option<Spanned<String>>,
    #[serde(default)]
    max_streams: Option<Spanned<u64>>,
}

/// How long istiod waits by default for every registry's first view before it is
/// answered with what there is.
pub const DEFAULT_INITIAL_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpConfig {
    pub listen: SocketAddr,
    pub tls: Option<McpTls>,
    /// Where the served set is kept across restarts (resolved against the config's
    /// directory).
    pub state_dir: Option<PathBuf>,
    pub initial_wait: std::time::Duration,
    /// Streams served at once (every istiod holds one).
    pub max_streams: usize,
}

#[cfg(feature = "mcp")]
impl McpConfig {
    /// What the MCP crate opens the server with.
    pub fn options(&self) -> registry_sync_mcp::McpOptions {
        registry_sync_mcp::McpOptions {
            listen: self.listen,
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.cert_file.clone(), t.key_file.clone())),
            client_ca: self.tls.as_ref().and_then(|t| t.client_ca_file.clone()),
            state_dir: self.state_dir.clone(),
            initial_wait: self.initial_wait,
            max_streams: self.max_streams,
        }
    }
}

/// PEM files, resolved against the config file's directory; read at start (the
/// certificate and key again when they change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Only clients with a certificate from this CA are served.
    pub client_ca_file: Option<PathBuf>,
}

pub(super) fn mcp_config(
    raw: RawMcpSink,
    base: &Path,
    invalid: &super::Invalid,
) -> Result<McpConfig, ConfigError> {
    let listen = raw.listen.value.parse().map_err(|_| {
        invalid(
            raw.listen.referenced.line(),
            "sinks.mcp.listen".into(),
            format!(
                "{:?} is not an address:port such as 0.0.0.0:15010 (the port istiod's `xds://` config source dials)",
                raw.listen.value
            ),
        )
    })?;
    if let (Some(ca), None) = (&raw.client_ca_file, &raw.cert_file) {
        return Err(invalid(
            ca.referenced.line(),
            "sinks.mcp.client_ca_file".into(),
            "checks client certificates over TLS: set `cert_file` and `key_file` too".into(),
        ));
    }
    let tls = match (raw.cert_file, raw.key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            for (file, key_name) in [(&cert, "sinks.mcp.cert_file"), (&key, "sinks.mcp.key_file")] {
                if file.value.trim().is_empty() {
                    return Err(invalid(
                        file.referenced.line(),
                        key_name.into(),
                        "must name a PEM file".into(),
                    ));
                }
            }
            Some(McpTls {
                cert_file: base.join(&cert.value),
                key_file: base.join(&key.value),
                client_ca_file: raw.client_ca_file.as_ref().map(|ca| base.join(&ca.value)),
            })
        }
        (Some(one), None) | (None, Some(one)) => {
            return Err(invalid(
                one.referenced.line(),
                "sinks.mcp".into(),
                "`cert_file` and `key_file` go together: set both for TLS, or neither for plaintext".into(),
            ));
        }
    };
    let state_dir = match raw.state_dir {
        Some(dir) if dir.value.trim().is_empty() => {
            return Err(invalid(
                dir.referenced.line(),
                "sinks.mcp.state_dir".into(),
                "must name a directory".into(),
            ));
        }
        Some(dir) => Some(base.join(&dir.value)),
        None => None,
    };
    let initial_wait = match raw.initial_wait {
        Some(wait) => registry_sync_sources::config::parse_duration(&wait.value)
            .filter(|d| {
                (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(d)
            })
            .ok_or_else(|| {
                invalid(
                    wait.referenced.line(),
                    "sinks.mcp.initial_wait".into(),
                    "is a duration from 1s to 60m, such as `120s` or `2m`".into(),
                )
            })?,
        None => DEFAULT_INITIAL_WAIT,
    };
    let max_streams = match raw.max_streams {
        Some(max) if (1..=10_000).contains(&max.value) => max.value as usize,
        Some(max) => {
            return Err(invalid(
                max.referenced.line(),
                "sinks.mcp.max_streams".into(),
                "is a number of streams from 1 to 10000 (each istiod holds one)".into(),
            ));
        }
        None => 64,
    };
    Ok(McpConfig {
        listen,
        tls,
        state_dir,
        initial_wait,
        max_streams,
    })
}
