//! Builds each configured registry's source and runs it: once (render, plan, once,
//! check) or as a watch that feeds the run loop.

use registry_sync_catalog::RegistrySnapshot;
use registry_sync_sources::SourceEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{RegistryConfig, SourceConfig};

#[cfg(not(feature = "file"))]
const NOT_BUILT: &str =
    "this build of registry-sync does not include the `file` registry (Cargo feature `file`)";

/// Reads a registry once. The error names the registry and what to check: sources
/// write their own messages that way, and callers print them as they are.
pub async fn load(registry: &RegistryConfig) -> Result<RegistrySnapshot, String> {
    match &registry.source {
        #[cfg(feature = "file")]
        SourceConfig::File { path } => registry_sync_sources::file::FileSource::new(&registry.name, path)
            .load()
            .map_err(|e| e.to_string()),
        #[cfg(not(feature = "file"))]
        SourceConfig::File { .. } => Err(NOT_BUILT.to_string()),
        #[cfg(feature = "etcd")]
        SourceConfig::Etcd(config) => {
            registry_sync_sources::etcd::EtcdSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "zookeeper")]
        SourceConfig::Zookeeper(config) => {
            registry_sync_sources::zookeeper::ZookeeperSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "dns")]
        SourceConfig::Dns(config) => {
            registry_sync_sources::dns::DnsSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "consul")]
        SourceConfig::Consul(config) => {
            registry_sync_sources::consul::ConsulSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "eureka")]
        SourceConfig::Eureka(config) => {
            registry_sync_sources::eureka::EurekaSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "cloudmap")]
        SourceConfig::CloudMap(config) => {
            registry_sync_sources::cloudmap::CloudMapSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "nacos")]
        SourceConfig::Nacos(config) => {
            registry_sync_sources::nacos::NacosSource::new(&registry.name, (**config).clone())
                .load()
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// Starts watching a registry; events arrive on `tx` until `cancel` fires.
pub fn spawn_watch(
    registry: &RegistryConfig,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    match &registry.source {
        #[cfg(feature = "file")]
        SourceConfig::File { path } => {
            let source = registry_sync_sources::file::FileSource::new(&registry.name, path);
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "etcd")]
        SourceConfig::Etcd(config) => {
            let source = registry_sync_sources::etcd::EtcdSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "zookeeper")]
        SourceConfig::Zookeeper(config) => {
            let source =
                registry_sync_sources::zookeeper::ZookeeperSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "dns")]
        SourceConfig::Dns(config) => {
            let source = registry_sync_sources::dns::DnsSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "consul")]
        SourceConfig::Consul(config) => {
            let source = registry_sync_sources::consul::ConsulSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "eureka")]
        SourceConfig::Eureka(config) => {
            let source = registry_sync_sources::eureka::EurekaSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "cloudmap")]
        SourceConfig::CloudMap(config) => {
            let source =
                registry_sync_sources::cloudmap::CloudMapSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(feature = "nacos")]
        SourceConfig::Nacos(config) => {
            let source = registry_sync_sources::nacos::NacosSource::new(&registry.name, (**config).clone());
            tokio::spawn(source.watch(tx, cancel))
        }
        #[cfg(not(feature = "file"))]
        SourceConfig::File { .. } => {
            let registry = registry.name.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(SourceEvent::Failed {
                        registry,
                        error: NOT_BUILT.to_string(),
                    })
                    .await;
                cancel.cancelled().await;
            })
        }
    }
}
