//! How commands end: the exit code scripts rely on, and the failures, each naming what
//! to fix. Its own module, so that commands, sinks and the runtime all use it without
//! importing each other.

use registry_sync_sinks::SinkError;

/// How a command ended, as the process exit code scripts rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for `plan`: nothing to change.
    Ok = 0,
    /// Something failed (a registry, a sink, a write).
    Failed = 1,
    /// `plan` only: changes are pending.
    Pending = 2,
    /// `once`, `prune`: the mass-change guard held changes back (a registry would lose
    /// more than `safety.max_delete_share` of its objects or endpoints); everything
    /// else was written. Confirm with `--confirm-mass-delete` if the change is real.
    HeldBack = 3,
}

/// Failures of one-shot commands, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The source's own error, which already names the registry.
    #[error("{error}")]
    Registry {
        registry: String,
        /// Boxed: some kinds' errors are large, and most results never hold one.
        #[source]
        error: Box<registry_sync_sources::registry::SourceError>,
    },
    #[error(
        "the files sink's output path {0} exists but is not a directory; point `sinks.files.dir` at a directory"
    )]
    NotADirectory(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Files(#[from] registry_sync_sinks::FilesError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Render(#[from] registry_sync_istio::RenderError),
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Kubernetes(#[from] registry_sync_kubernetes::OpenError),
    #[error("{0}")]
    Admin(String),
    /// Already says what to fix.
    #[error("{0}")]
    Mcp(String),
    #[error("no sink is configured: add `sinks: {{files: {{dir: …}}}}` or `sinks: {{stdout: true}}` to {0}")]
    NoSink(String),
}
