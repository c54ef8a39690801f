//! The `etcd` registry's keys.

use serde::Deserialize;

use super::{EtcdConfig, EtcdError, EtcdSource, FieldPath, JsonFields, TlsFiles, ValueFormat};
use crate::config::{BlockError, Context, RawAddress, address, credentials, required};
use crate::registry::{Kind, load_and_watch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdBlock {
    address: Option<RawAddress>,
    prefix: Option<String>,
    value_format: Option<String>,
    address_field: Option<String>,
    port_field: Option<String>,
    metadata_field: Option<String>,
    healthy_field: Option<String>,
    weight_field: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

impl Kind for EtcdSource {
    type Block = EtcdBlock;
    type Config = EtcdConfig;
    type Error = EtcdError;

    fn configure(b: EtcdBlock, cx: &Context) -> Result<EtcdConfig, BlockError> {
        let endpoints = address(&b.address, "the etcd endpoints, e.g. [\"http://127.0.0.1:2379\"]")?;
        if let Some(bad) = endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Err(BlockError::new(
                "address",
                format!("{bad:?} must be a URL starting with http:// or https://"),
            ));
        }
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if https != 0 && https != endpoints.len() {
            return Err(BlockError::new(
                "address",
                "use https:// for every endpoint or for none",
            ));
        }
        let prefix = required(
            &b.prefix,
            "prefix",
            "the key prefix the services live under, e.g. /services",
        )?;
        let fields = [
            (&b.address_field, "address_field"),
            (&b.port_field, "port_field"),
            (&b.metadata_field, "metadata_field"),
            (&b.healthy_field, "healthy_field"),
            (&b.weight_field, "weight_field"),
        ];
        let format = match b.value_format.as_deref().map(str::trim) {
            None | Some("naming-endpoints") => {
                if let Some((_, key)) = fields.iter().find(|(v, _)| v.is_some()) {
                    return Err(BlockError::new(key, "applies only with `value_format: json`"));
                }
                ValueFormat::NamingEndpoints
            }
            Some("json") => {
                let mut paths = JsonFields::default();
                let slots = [
                    &mut paths.address,
                    &mut paths.port,
                    &mut paths.metadata,
                    &mut paths.healthy,
                    &mut paths.weight,
                ];
                for ((value, key), slot) in fields.into_iter().zip(slots) {
                    if let Some(value) = value {
                        *slot = FieldPath::parse(value.trim())
                            .map_err(|message| BlockError::new(key, message))?;
                    }
                }
                ValueFormat::Json(paths)
            }
            Some(other) => {
                return Err(BlockError::new(
                    "value_format",
                    format!("{other:?} is not a value format; use naming-endpoints (the default) or json"),
                ));
            }
        };
        let tls = match (&b.ca_file, &b.cert_file, &b.key_file) {
            (None, None, None) if https > 0 => {
                return Err(BlockError::new(
                    "ca_file",
                    "https:// endpoints need `ca_file`, the CA certificate (PEM) that signed etcd's certificates",
                ));
            }
            (None, None, None) => None,
            (ca, cert, key) => {
                if https == 0 {
                    return Err(BlockError::new(
                        "ca_file",
                        "TLS files need https:// endpoints in `address`",
                    ));
                }
                let Some(ca) = ca else {
                    return Err(BlockError::new(
                        "ca_file",
                        "is required with `cert_file` and `key_file`",
                    ));
                };
                let client = match (cert, key) {
                    (Some(cert), Some(key)) => Some((cx.path(cert), cx.path(key))),
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(BlockError::new("key_file", "is required with `cert_file`"));
                    }
                    (None, Some(_)) => {
                        return Err(BlockError::new("cert_file", "is required with `key_file`"));
                    }
                };
                Some(TlsFiles {
                    ca_file: cx.path(ca),
                    client,
                })
            }
        };
        Ok(EtcdConfig {
            endpoints,
            prefix,
            credentials: credentials(cx, &b.username, &b.password_file, &b.password_env)?,
            tls,
            format,
        })
    }

    fn default_hosts(_: &EtcdConfig) -> &'static str {
        "{service}.{registry}"
    }

    load_and_watch!();
}
