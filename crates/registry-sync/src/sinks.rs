//! Opens the configured sinks: for writing (`run`, `once`) or only to read what they
//! hold (`plan`, which needs no write access anywhere). Each sink is opened by its own
//! crate in one call; a sink left out of the build is refused when the config loads.

use std::collections::BTreeMap;

use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, AsyncSink, FilesSink, Sink, SinkError, StdoutSink};
use registry_sync_writer::{Leadership, NamedSink};

use crate::config::Config;
use crate::error::CommandError;

/// What the sinks are opened for.
pub enum Purpose<'a> {
    /// `run`: leader election starts where configured, and the sinks that serve for as
    /// long as the process lives (the MCP server) start, stopping with `shutdown`.
    Run {
        shutdown: &'a tokio_util::sync::CancellationToken,
        metrics: &'a crate::metrics::Metrics,
    },
    /// `once`, `prune`: one pass of writes, no election, no server.
    Once,
    /// `plan`: what each stateful sink holds, writing nothing anywhere. A missing output
    /// directory is an empty one (and is not created); stdout, which holds nothing, is
    /// left out, and with no stateful sink the plan is against nothing.
    ReadOnly,
}

/// The sinks, and the leadership the election gives the writers of those one replica
/// must own ([`Leadership::always`] without an election).
pub struct OpenedSinks {
    pub sinks: Vec<NamedSink>,
    pub leadership: Leadership,
}

pub async fn open_sinks(config: &Config, purpose: Purpose<'_>) -> Result<OpenedSinks, CommandError> {
    let read_only = matches!(purpose, Purpose::ReadOnly);
    let mut sinks = Vec::new();
    // Only leader election (the Kubernetes sink's) makes leadership conditional.
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_mut))]
    let mut leadership = Leadership::always();
    let mut add = |name: String, sink: Box<dyn AsyncSink>| sinks.push(NamedSink { name, sink });
    if let Some(dir) = &config.sinks.files {
        let name = format!("files:{}", dir.display());
        if !read_only {
            add(name, Box::new(watched_files(dir)?));
        } else if dir.is_dir() {
            add(name, Box::new(FilesSink::open(dir)?));
        } else if dir.exists() {
            return Err(CommandError::NotADirectory(dir.display().to_string()));
        } else {
            add(name, Box::new(Nothing(BTreeMap::new())));
        }
    }
    if config.sinks.stdout && !read_only {
        add("stdout".into(), Box::new(StdoutSink::stdout()));
    }
    #[cfg(feature = "kubernetes")]
    if let Some(kube) = &config.sinks.kubernetes {
        use registry_sync_kubernetes::Mode;
        let mode = match &purpose {
            Purpose::Run { shutdown, .. } => Mode::Elected(shutdown),
            Purpose::Once => Mode::Unelected,
            Purpose::ReadOnly => Mode::ReadOnly,
        };
        let opened = registry_sync_kubernetes::open(&kube.options(config), mode).await?;
        if let Some(elected) = opened.leadership {
            leadership = Leadership::elected(elected.changes()).checked_by(move || elected.is_leader());
        }
        add("kubernetes".into(), Box::new(opened.sink));
    }
    #[cfg(feature = "mcp")]
    if let Some(mcp) = &config.sinks.mcp {
        match &purpose {
            Purpose::Run { shutdown, metrics } => {
                let observer = std::sync::Arc::new(metrics.mcp.clone());
                let (sink, bound) = registry_sync_mcp::open(
                    &mcp.options(),
                    observer,
                    tokio_util::sync::CancellationToken::clone(shutdown).cancelled_owned(),
                )
                .await
                .map_err(|e| CommandError::Mcp(e.to_string()))?;
                add(format!("mcp:{bound}"), Box::new(sink));
            }
            Purpose::Once => tracing::warn!(
                "the MCP sink serves istiod while `registry-sync run` runs; this one-shot command leaves it out"
            ),
            // istiod holds what it was served; there is nothing here to diff against.
            Purpose::ReadOnly => {}
        }
    }
    if sinks.is_empty() {
        if !read_only {
            return Err(CommandError::NoSink(config.path.display().to_string()));
        }
        sinks.push(NamedSink {
            name: "(no stateful sink)".into(),
            sink: Box::new(Nothing(BTreeMap::new())),
        });
    }
    Ok(OpenedSinks { sinks, leadership })
}

/// The files sink, watching its directory so that a deleted or edited file is
/// repaired at once; without inotify it still works, repaired at the next resync.
fn watched_files(dir: &std::path::Path) -> Result<FilesSink, CommandError> {
    let mut sink = FilesSink::open(dir)?;
    if let Err(e) = sink.watch() {
        tracing::warn!(
            "{e}; a file deleted or edited by hand is repaired at the next resync (5 min) instead"
        );
    }
    Ok(sink)
}

/// Holds nothing and takes no writes: what `plan` diffs against when the output does
/// not exist yet or no sink is configured.
struct Nothing(BTreeMap<ObjectKey, HeldObject>);

impl Sink for Nothing {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.0
    }

    fn apply(&mut self, _plan: &Plan) -> Result<ApplyReport, SinkError> {
        Ok(ApplyReport::default())
    }
}
