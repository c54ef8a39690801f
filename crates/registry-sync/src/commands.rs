//! The one-shot commands: `render`, `plan`, `once`, `check`.

use std::io::Write;

use registry_sync_catalog::ServiceKey;
use registry_sync_istio::{HeldObject, ObjectKey, render_documents};
use registry_sync_translate::OVERRIDES_ANNOTATION;

use crate::config::Config;
pub use crate::error::{CommandError, Outcome};
pub use crate::explain::explain;
use crate::progress::ReadProgress;
use crate::sinks::{Purpose, open_sinks};
use crate::sources;
use registry_sync_index::Index;
use registry_sync_sources::SourceEvent;
use registry_sync_writer::{NamedSink, Quiet, SinkWriter, feed, pass};

/// Reads every registry once into a fresh index, keeping the virtual IPs `sinks`
/// hold. Every failure is collected so one broken registry does not hide the others'.
pub async fn load_all(config: &Config, sinks: &[NamedSink]) -> (Index, Vec<CommandError>) {
    load_reporting(config, sinks, false).await
}

/// [`load_all`], saying how far it is when `report` (the commands that write).
async fn load_reporting(config: &Config, sinks: &[NamedSink], report: bool) -> (Index, Vec<CommandError>) {
    let mut index = config.index();
    let owner = config.writer_settings().owner;
    index.seed_vips(sinks.iter().flat_map(|named| named.sink.held().values()), &owner);
    let mut errors = Vec::new();
    let mut progress = report.then(|| ReadProgress::start(config.registries.len()));
    for registry in &config.registries {
        match sources::load(registry).await {
            Ok(snapshot) => {
                tracing::debug!(
                    registry = %registry.name,
                    services = snapshot.services().len(),
                    instances = snapshot.instance_count(),
                    "registry read"
                );
                // As `run` takes a view: its problems, moves and notes logged alike.
                let view = SourceEvent::Snapshot {
                    registry: registry.name.clone(),
                    snapshot,
                };
                feed::take(&mut index, view, std::time::Duration::ZERO, &Quiet);
                if let Some(progress) = &mut progress {
                    progress.read(&registry.name, index.desired().len());
                }
            }
            Err(error) => {
                errors.push(CommandError::Registry {
                    registry: registry.name.clone(),
                    error: Box::new(error),
                });
            }
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    (index, errors)
}

fn report_errors(errors: &[CommandError]) {
    for error in errors {
        tracing::error!("{error}");
    }
}

/// `render`: every object as multi-document YAML on `out`, sorted by kind, namespace
/// and name. Refuses to print a partial estate when a registry cannot be read.
pub async fn render(config: &Config, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    let (index, errors) = load_all(config, &[]).await;
    if !errors.is_empty() {
        report_errors(&errors);
        return Ok(Outcome::Failed);
    }
    let yaml = render_documents(index.desired().values().map(|o| &**o))?;
    out.write_all(yaml.as_bytes())?;
    out.flush()?;
    Ok(Outcome::Ok)
}

/// `plan`: the diff against each sink, writing nothing. 0 in sync, 2 pending, 1 error.
pub async fn plan(config: &Config, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    let mut sinks = open_sinks(config, Purpose::ReadOnly).await?.sinks;
    let (index, errors) = load_all(config, &sinks).await;
    let settings = config.writer_settings();
    let mut pending = false;
    for named in &mut sinks {
        let memory = named.sink.load_guard_memory().await.unwrap_or_else(|e| {
            tracing::warn!(sink = %named.name, "cannot read the mass-change guard's memory ({e}); judging from what the sink holds");
            None
        });
        let plan = pass::plan_for(&index, &settings, named.sink.as_ref(), memory.as_deref());
        pending |= !plan.is_empty();
        writeln!(out, "# sink {}", named.name)?;
        let why = |key: &ObjectKey| explain_change(&index, named.sink.held(), key);
        out.write_all(plan.render_diff_explained(&why).as_bytes())?;
    }
    out.flush()?;
    if !errors.is_empty() {
        report_errors(&errors);
        return Ok(Outcome::Failed);
    }
    Ok(if pending { Outcome::Pending } else { Outcome::Ok })
}

/// What the config did to an object in a plan: the override rules named on the object
/// to be written, or, for one to be deleted, that `select` now leaves out a service it
/// was made from.
fn explain_change(
    index: &Index,
    held: &std::collections::BTreeMap<ObjectKey, HeldObject>,
    key: &ObjectKey,
) -> Option<String> {
    if let Some(object) = index.desired().get(key) {
        return object
            .metadata
            .annotations
            .get(OVERRIDES_ANNOTATION)
            .map(|rules| format!("overrides: {rules}"));
    }
    let reasons: Vec<String> = held
        .get(key)?
        .sources
        .iter()
        .filter_map(|source| {
            let (registry, service) = source.split_once(':')?;
            let keys = [service.split_once('/'), service.rsplit_once('/'), None];
            keys.into_iter()
                .map(|split| match split {
                    Some((namespace, name)) => ServiceKey {
                        namespace: Some(namespace.to_string()),
                        name: name.to_string(),
                    },
                    None => ServiceKey {
                        namespace: None,
                        name: service.to_string(),
                    },
                })
                .find_map(|service_key| index.unselected(registry, &service_key))
                .map(|why| format!("{source} is not selected: {why}"))
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// `once`: one full sync into every sink. Registries that fail keep their objects;
/// the command then exits 1 after syncing the rest.
pub async fn once(config: &Config) -> Result<Outcome, CommandError> {
    let sinks = open_sinks(config, Purpose::Once).await?.sinks;
    let (index, errors) = load_reporting(config, &sinks, true).await;
    sync_once(config, index, sinks, errors).await
}

/// `prune`: `once`, and also delete the objects of registries the configuration no
/// longer names (which `run` and `once` only list). Refused while a registry fails:
/// what it names could not be told apart from what it dropped.
pub async fn prune(config: &Config) -> Result<Outcome, CommandError> {
    let sinks = open_sinks(config, Purpose::Once).await?.sinks;
    let (index, errors) = load_reporting(config, &sinks, true).await;
    if !errors.is_empty() {
        report_errors(&errors);
        tracing::error!("prune needs every registry to answer; nothing was written");
        return Ok(Outcome::Failed);
    }
    sync_once(config, index.prune_orphans(), sinks, errors).await
}

async fn sync_once(
    config: &Config,
    index: Index,
    sinks: Vec<NamedSink>,
    errors: Vec<CommandError>,
) -> Result<Outcome, CommandError> {
    report_errors(&errors);
    let settings = config.writer_settings();
    let observer: std::sync::Arc<dyn registry_sync_writer::Observer> =
        std::sync::Arc::new(crate::observe::Progress);
    let mut writers: Vec<SinkWriter> = sinks
        .into_iter()
        .map(|sink| settings.writer(sink, std::sync::Arc::clone(&observer)))
        .collect();
    let pass = pass::sync(&index, &mut writers).await;
    if pass.replacements_blocked {
        tracing::error!(
            "some objects were not replaced: their successors conflict with other objects or were refused (see the warnings above); the old objects stay"
        );
    }
    Ok(
        if !pass.written || !errors.is_empty() || pass.replacements_blocked {
            Outcome::Failed
        } else if pass.held_back {
            Outcome::HeldBack
        } else {
            Outcome::Ok
        },
    )
}

/// `check`: the config is valid (it was loaded) and every registry answers.
pub async fn check(config: &Config, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    let mut failed = false;
    writeln!(
        out,
        "config {}: ok, {} registries",
        config.path.display(),
        config.registries.len()
    )?;
    for registry in &config.registries {
        match sources::load(registry).await {
            Ok(snapshot) => writeln!(
                out,
                "registry {} ({}): ok, {} services, {} instances, {} items skipped",
                registry.name,
                registry.source.kind(),
                snapshot.services().len(),
                snapshot.instance_count(),
                snapshot.skipped.len()
            )?,
            Err(error) => {
                let message = error.to_string();
                failed = true;
                writeln!(
                    out,
                    "registry {} ({}): FAILED: {message}",
                    registry.name,
                    registry.source.kind()
                )?;
            }
        }
    }
    if let Some(dir) = &config.sinks.files {
        let state = if dir.is_dir() { "exists" } else { "will be created" };
        writeln!(out, "sink files: {} ({state})", dir.display())?;
    }
    out.flush()?;
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}
