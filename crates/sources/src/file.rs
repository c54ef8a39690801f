//! The `file` registry: a YAML file listing services and their instances.
//!
//! Meant for tests, demos and static estates. The file is the registry's whole truth,
//! so the rules that protect a live registry apply here too: a file that cannot be read
//! or parsed — missing, empty, half-written, broken YAML — is reported as
//! [`SourceEvent::Failed`] and never as an empty snapshot, while one bad service or
//! instance is skipped with a reason and the rest keeps syncing.
//!
//! ```yaml
//! services:
//!   - name: orders
//!     namespace: shop                 # optional
//!     labels: {team: checkout}        # optional; numbers and booleans kept as written
//!     instances:
//!       - address: 10.1.0.1           # IPv4, IPv6 or host name
//!         id: orders-1                # optional; default "10.1.0.1:8080,9090"
//!         ports: {http: 8080, grpc: 9090}
//!         healthy: true               # default true
//!         weight: 3                   # optional, 1 to 4294967295
//!         locality: eu-west-1/eu-west-1a
//!         network: net1
//!         service_account: orders
//!         labels: {version: v1, protocol: http}
//! ```
//!
//! Write the file atomically (a temporary file in the same directory, then `mv`) where
//! possible; in-place writes are picked up when the writer closes the file.

mod config;
pub use config::{FileBlock, FileConfig};
mod format;
mod items;
mod node;
mod watch;

use std::path::{Path, PathBuf};

use registry_sync_catalog::RegistrySnapshot;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use format::Unusable;

/// Why the whole file could not be used. The consumer keeps the last good state.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error(
        "registry {registry:?}: cannot read {}: {error}; check that the file exists and that registry-sync may read it",
        path.display()
    )]
    Read {
        registry: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "registry {registry:?}: {} is empty; write `services: []` to publish no services (an empty file is taken for a half-written one)",
        path.display()
    )]
    Empty { registry: String, path: PathBuf },
    #[error("registry {registry:?}: {} line {line}: the file is not UTF-8 text; save it as UTF-8", path.display())]
    NotUtf8 {
        registry: String,
        path: PathBuf,
        line: u64,
    },
    #[error(
        "registry {registry:?}: {}{}: {message}; correct the file and save it again",
        path.display(),
        position(*line, *column)
    )]
    Invalid {
        registry: String,
        path: PathBuf,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
}

impl crate::Classified for FileSourceError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            FileSourceError::Read { .. } => FailureReason::Unreachable,
            FileSourceError::Empty { .. }
            | FileSourceError::NotUtf8 { .. }
            | FileSourceError::Invalid { .. } => FailureReason::BadAnswer,
        }
    }
}

fn position(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" line {line} column {column}"),
        (Some(line), None) => format!(" line {line}"),
        _ => String::new(),
    }
}

/// One YAML file serving as one registry.
#[derive(Clone, Debug)]
pub struct FileSource {
    registry: String,
    path: PathBuf,
    requests: crate::requests::Requests,
}

impl FileSource {
    pub fn new(registry: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        let registry = registry.into();
        FileSource {
            requests: crate::requests::Requests::of(&registry),
            registry,
            path: path.into(),
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file once, for `once`, `plan` and `check` runs.
    pub fn load(&self) -> Result<RegistrySnapshot, FileSourceError> {
        let bytes = self.read()?;
        self.parse(&bytes)
    }

    /// Emits the current state, then a new event after each change of the file, until
    /// `cancel` is cancelled or the receiver is dropped.
    ///
    /// Changes are seen through the file system's notifications on the file's
    /// directory, because editors and `mv` replace the file rather than write to it;
    /// where notifications are unavailable the file is polled every second instead.
    /// A rewrite with identical bytes emits nothing, so consumers only wake for real
    /// changes; a failure after a failure with the same message is not repeated.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }

    fn read(&self) -> Result<Vec<u8>, FileSourceError> {
        self.requests.count();
        std::fs::read(&self.path).map_err(|error| FileSourceError::Read {
            registry: self.registry.clone(),
            path: self.path.clone(),
            error,
        })
    }

    fn parse(&self, bytes: &[u8]) -> Result<RegistrySnapshot, FileSourceError> {
        let registry = self.registry.clone();
        let path = self.path.clone();
        format::parse(&self.registry, bytes).map_err(|unusable| match unusable {
            Unusable::Empty => FileSourceError::Empty { registry, path },
            Unusable::NotUtf8 { line } => FileSourceError::NotUtf8 { registry, path, line },
            Unusable::Yaml {
                line,
                column,
                message,
            } => FileSourceError::Invalid {
                registry,
                path,
                line,
                column,
                message,
            },
        })
    }
}
