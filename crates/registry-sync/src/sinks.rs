//! Opens the configured sinks: for writing (`run`, `once`) or only to read what they
//! hold (`plan`, which needs no write access anywhere).

use std::collections::BTreeMap;
#[cfg(feature = "kubernetes")]
use std::time::Duration;

use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, AsyncSink, FilesSink, Sink, SinkError, StdoutSink};

use crate::commands::CommandError;
use crate::config::Config;
use crate::pipeline::NamedSink;

/// Decides who may write to the Kubernetes sink; `None` when leader election is off.
#[cfg(feature = "kubernetes")]
pub type Leadership = Option<registry_sync_kubernetes::Leadership>;
#[cfg(not(feature = "kubernetes"))]
pub type Leadership = Option<NoLeaderElection>;

/// Without the Kubernetes sink there is nothing to elect a leader for.
#[cfg(not(feature = "kubernetes"))]
#[derive(Clone, Debug)]
pub struct NoLeaderElection;

/// What a process that keeps running (`run`) gives the sinks that serve for as long as
/// it lives (the MCP server): when to stop, and where to report.
pub struct Serving<'a> {
    pub shutdown: &'a tokio_util::sync::CancellationToken,
    pub metrics: &'a crate::metrics::Metrics,
}

/// Opens every configured sink for writing. The MCP server is started only with
/// `serving` (by `run`); a one-shot command leaves it out.
pub async fn open_sinks(
    config: &Config,
    leadership: Leadership,
    serving: Option<Serving<'_>>,
) -> Result<Vec<NamedSink>, CommandError> {
    let mut sinks = Vec::new();
    if let Some(dir) = &config.sinks.files {
        sinks.push(NamedSink {
            name: format!("files:{}", dir.display()),
            sink: Box::new(watched_files(dir)?),
        });
    }
    if config.sinks.stdout {
        sinks.push(NamedSink {
            name: "stdout".into(),
            sink: Box::new(StdoutSink::stdout()),
        });
    }
    if let Some(sink) = open_kubernetes(config, leadership).await? {
        sinks.push(sink);
    }
    if let Some(mcp) = &config.sinks.mcp {
        match serving {
            Some(serving) => sinks.push(open_mcp(mcp, serving).await?),
            None => tracing::warn!(
                "the MCP sink serves istiod while `registry-sync run` runs; this one-shot command leaves it out"
            ),
        }
    }
    if sinks.is_empty() {
        return Err(CommandError::NoSink(config.path.display().to_string()));
    }
    Ok(sinks)
}

/// The MCP-over-xDS server istiod dials, and the sink its writer drives.
#[cfg(feature = "mcp")]
async fn open_mcp(
    config: &crate::config::McpConfig,
    serving: Serving<'_>,
) -> Result<NamedSink, CommandError> {
    use registry_sync_mcp::server::{Ads, ServerTls};

    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path).map_err(|e| {
            CommandError::Mcp(format!(
                "cannot read `sinks.mcp.{key}` {}: {e}; point it at a PEM file",
                path.display()
            ))
        })
    };
    let tls = match &config.tls {
        Some(tls) => Some(ServerTls {
            cert_pem: read(&tls.cert_file, "cert_file")?,
            key_pem: read(&tls.key_file, "key_file")?,
        }),
        None => None,
    };
    let (sink, offers) = registry_sync_mcp::sink::McpSink::new();
    let observer = std::sync::Arc::new(serving.metrics.mcp.clone());
    let server = registry_sync_mcp::server::Serving::bind(config.listen, Ads::new(offers, observer), tls.as_ref())
        .await
        .map_err(|e| {
            CommandError::Mcp(format!(
                "the MCP sink cannot start: {e}; check `sinks.mcp` (a free address:port, a matching certificate and key)"
            ))
        })?;
    let bound = server.local_addr().unwrap_or(config.listen);
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    tracing::info!(address = %bound, "serving istiod as an MCP-over-xDS config source (xds://{bound}, {scheme})");
    let shutdown = serving.shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = server.run(shutdown.cancelled_owned()).await {
            tracing::error!(%error, "the MCP server stopped; istiod keeps its last view and reconnects when it is back");
        }
    });
    Ok(NamedSink {
        name: format!("mcp:{bound}"),
        sink: Box::new(sink),
    })
}

#[cfg(not(feature = "mcp"))]
async fn open_mcp(
    _config: &crate::config::McpConfig,
    _serving: Serving<'_>,
) -> Result<NamedSink, CommandError> {
    Err(CommandError::Mcp(
        "`sinks.mcp` is configured but this build has no MCP sink; build with the `mcp` feature".into(),
    ))
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

/// What `plan` diffs against: the sinks that hold state. A missing output directory is
/// an empty one (and is not created); the Kubernetes sink only lists and watches.
/// stdout holds nothing, so with no stateful sink the plan is against nothing:
/// everything would be created.
pub async fn open_sinks_read_only(config: &Config) -> Result<Vec<NamedSink>, CommandError> {
    let mut sinks = Vec::new();
    if let Some(dir) = &config.sinks.files {
        let sink: Box<dyn AsyncSink> = if dir.is_dir() {
            Box::new(FilesSink::open(dir)?)
        } else if dir.exists() {
            return Err(CommandError::NotADirectory(dir.display().to_string()));
        } else {
            Box::new(Nothing(BTreeMap::new()))
        };
        sinks.push(NamedSink {
            name: format!("files:{}", dir.display()),
            sink,
        });
    }
    if let Some(sink) = open_kubernetes(config, None).await? {
        sinks.push(sink);
    }
    if sinks.is_empty() {
        sinks.push(NamedSink {
            name: "(no stateful sink)".into(),
            sink: Box::new(Nothing(BTreeMap::new())),
        });
    }
    Ok(sinks)
}

#[cfg(feature = "kubernetes")]
async fn open_kubernetes(config: &Config, leadership: Leadership) -> Result<Option<NamedSink>, CommandError> {
    use registry_sync_kubernetes::{KubeSink, KubeSinkSettings};

    let Some(kube) = &config.sinks.kubernetes else {
        return Ok(None);
    };
    let client = registry_sync_kubernetes::client(kube.kubeconfig.as_deref())
        .await
        .map_err(CommandError::Kubernetes)?;
    let settings = KubeSinkSettings {
        namespaces: config
            .registries
            .iter()
            .map(|r| r.settings.namespace.clone())
            .collect(),
        qps: kube.qps,
        burst: kube.burst,
        concurrency: kube.concurrency,
        // A write sent while leading must not land after the lease could have passed
        // to another replica: no call outlasts the leadership margin (a fifth of it).
        call_timeout: kube
            .leader_election
            .as_ref()
            .map(|election| Duration::from_secs(election.lease_duration_seconds) / 5)
            .unwrap_or(Duration::from_secs(10))
            .min(Duration::from_secs(10)),
        ..KubeSinkSettings::default()
    };
    let sink = KubeSink::connect(client, settings, leadership).await?;
    Ok(Some(NamedSink {
        name: "kubernetes".into(),
        sink: Box::new(sink),
    }))
}

#[cfg(not(feature = "kubernetes"))]
async fn open_kubernetes(
    config: &Config,
    _leadership: Leadership,
) -> Result<Option<NamedSink>, CommandError> {
    match &config.sinks.kubernetes {
        Some(_) => Err(CommandError::Kubernetes(
            "this build of registry-sync does not include the Kubernetes sink (Cargo feature `kubernetes`)"
                .into(),
        )),
        None => Ok(None),
    }
}
