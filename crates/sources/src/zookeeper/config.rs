//! The `zookeeper` registry's keys.

use std::time::Duration;

use serde::Deserialize;

use super::{DEFAULT_SESSION_TIMEOUT, ZkLayout, ZookeeperConfig, ZookeeperError, ZookeeperSource};
use crate::config::{BlockError, Context, RawAddress, address, credentials, parse_duration, required};
use crate::registry::{Kind, load_and_watch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZookeeperBlock {
    address: Option<RawAddress>,
    layout: Option<String>,
    root: Option<String>,
    chroot: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    session_timeout: Option<String>,
}

fn absolute(value: &Option<String>, key: &str) -> Result<Option<String>, BlockError> {
    match value {
        None => Ok(None),
        Some(v) if !v.trim().starts_with('/') => Err(BlockError::new(
            key,
            format!("{v:?} must be an absolute path starting with /"),
        )),
        Some(v) => Ok(Some(v.trim().to_string())),
    }
}

impl Kind for ZookeeperSource {
    type Block = ZookeeperBlock;
    type Config = ZookeeperConfig;
    type Error = ZookeeperError;

    fn configure(b: ZookeeperBlock, cx: &Context) -> Result<ZookeeperConfig, BlockError> {
        let address = address(
            &b.address,
            "the ZooKeeper connect string, e.g. \"127.0.0.1:2181\" or \"h1:2181,h2:2181\"",
        )?;
        if let Some(bad) = address.iter().find(|a| a.contains('/') || !a.contains(':')) {
            return Err(BlockError::new(
                "address",
                format!("{bad:?} must be host:port (put a chroot path in `chroot`)"),
            ));
        }
        let layout = match required(&b.layout, "layout", "dubbo or curator")?.as_str() {
            "dubbo" => ZkLayout::Dubbo,
            "curator" => ZkLayout::Curator,
            other => {
                return Err(BlockError::new(
                    "layout",
                    format!("{other:?} is not a layout; use dubbo or curator"),
                ));
            }
        };
        let root = absolute(&b.root, "root")?.unwrap_or_else(|| layout.default_root().to_string());
        let chroot = absolute(&b.chroot, "chroot")?.filter(|c| c != "/");
        let session_timeout = match &b.session_timeout {
            None => DEFAULT_SESSION_TIMEOUT,
            Some(v) => parse_duration(v)
                .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(300)).contains(d))
                .ok_or_else(|| {
                    BlockError::new(
                        "session_timeout",
                        format!("{v:?} must be a duration from 1s to 300s, e.g. 10s or 2500ms"),
                    )
                })?,
        };
        Ok(ZookeeperConfig {
            address: address.join(","),
            chroot,
            layout,
            root,
            credentials: credentials(cx, &b.username, &b.password_file, &b.password_env)?,
            session_timeout,
        })
    }

    fn default_hosts(config: &ZookeeperConfig) -> &'static str {
        match config.layout {
            // A Dubbo interface name is already a dotted, unique name.
            ZkLayout::Dubbo => "{service}",
            ZkLayout::Curator => "{service}.{registry}",
        }
    }

    load_and_watch!();
}
