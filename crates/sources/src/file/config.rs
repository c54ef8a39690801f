//! The `file` registry's keys: `path`, the services file.

use std::path::PathBuf;

use serde::Deserialize;

use super::{FileSource, FileSourceError};
use crate::config::{BlockError, Context, required};
use crate::registry::Kind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBlock {
    path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    /// Resolved against the config file's directory.
    pub path: PathBuf,
}

impl Kind for FileSource {
    type Block = FileBlock;
    type Config = FileConfig;
    type Error = FileSourceError;

    fn configure(block: FileBlock, cx: &Context) -> Result<FileConfig, BlockError> {
        let path = required(&block.path, "path", "the services file")?;
        Ok(FileConfig { path: cx.path(&path) })
    }

    fn default_hosts(_: &FileConfig) -> &'static str {
        "{service}.{namespace}.{registry}"
    }

    fn load(
        registry: &str,
        config: &FileConfig,
    ) -> impl std::future::Future<Output = Result<registry_sync_catalog::RegistrySnapshot, FileSourceError>> + Send
    {
        std::future::ready(FileSource::new(registry, &config.path).load())
    }

    fn watch(
        registry: &str,
        config: &FileConfig,
        tx: tokio::sync::mpsc::Sender<crate::SourceEvent>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        FileSource::new(registry, &config.path).watch(tx, cancel)
    }
}
