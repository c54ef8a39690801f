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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpConfig {
    pub listen: SocketAddr,
    pub tls: Option<McpTls>,
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
        }
    }
}

/// PEM files, resolved against the config file's directory; read at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

pub(super) fn mcp_config(
    raw: RawMcpSink,
    base: &Path,
    invalid: &impl Fn(u64, String, String) -> ConfigError,
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
    Ok(McpConfig { listen, tls })
}
