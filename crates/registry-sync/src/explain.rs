//! `explain`: what registry-sync made of one service or host, and why, in text a person
//! reads top to bottom.

use std::io::Write;

use registry_sync_istio::render_documents;
use registry_sync_plan::plan_keys;
use registry_sync_translate::{Explanation, Found};

use crate::commands::load_all;
use crate::config::Config;
use crate::error::{CommandError, Outcome};
use crate::sinks::{Purpose, open_sinks};
use registry_sync_index::Index;
use registry_sync_writer::NamedSink;

pub async fn explain(config: &Config, query: &str, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    let sinks = open_sinks(config, Purpose::ReadOnly).await?.sinks;
    let (index, errors) = load_all(config, &sinks).await;
    for error in &errors {
        tracing::error!("{error}");
        writeln!(out, "! {error}")?;
    }
    let found = index.explain(query);
    if found.is_empty() {
        writeln!(
            out,
            "nothing named {query:?}: no service (by name or namespace/name), host or object of the configured registries"
        )?;
        out.flush()?;
        return Ok(Outcome::Failed);
    }
    let owner = config.writer_settings().owner;
    write_found(&index, &owner, &sinks, &found, out)?;
    out.flush()?;
    Ok(if errors.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

fn write_found(
    index: &Index,
    owner: &registry_sync_plan::Owner,
    sinks: &[NamedSink],
    found: &Found,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    for unplaced in &found.unplaced {
        writeln!(
            out,
            "# {}:{} makes no objects: {}\n",
            unplaced.registry,
            unplaced.service.key(),
            unplaced.why
        )?;
    }
    for group in &found.groups {
        write_group(index, owner, sinks, group, out)?;
    }
    Ok(())
}

fn write_group(
    index: &Index,
    owner: &registry_sync_plan::Owner,
    sinks: &[NamedSink],
    group: &Explanation,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    writeln!(
        out,
        "# host {} in namespace {}",
        group.key.host, group.key.namespace
    )?;
    writeln!(out, "\n## registry records")?;
    for (registry, service) in &group.contributors {
        writeln!(
            out,
            "{registry}:{} ({} instances{})",
            service.key(),
            service.instances.len(),
            if service.labels.is_empty() {
                String::new()
            } else {
                format!(", {} metadata keys", service.labels.len())
            }
        )?;
    }
    writeln!(out, "\n## rules")?;
    for rule in &group.rules {
        writeln!(out, "- {rule}")?;
    }
    writeln!(out, "\n## instances")?;
    for fate in &group.instances {
        let what = match &fate.published {
            Ok(how) => how.clone(),
            Err(why) => format!("not published: {why}"),
        };
        writeln!(
            out,
            "{}:{} {} ({}): {what}",
            fate.registry, fate.service, fate.instance, fate.address
        )?;
    }
    if group.more_instances > 0 {
        writeln!(out, "… and {} more instances", group.more_instances)?;
    }
    for skip in &group.refused {
        writeln!(
            out,
            "{}:{} {}: not an instance: {}",
            skip.registry,
            skip.service,
            skip.instance.as_deref().unwrap_or("(a record)"),
            skip.reason
        )?;
    }
    let other: Vec<_> = group
        .skipped
        .iter()
        .filter(|s| s.instance.is_none())
        .chain(&group.notes)
        .collect();
    if !other.is_empty() {
        writeln!(out, "\n## adjusted")?;
        for skip in other {
            writeln!(out, "{}:{}: {}", skip.registry, skip.service, skip.reason)?;
        }
    }
    writeln!(out, "\n## objects")?;
    out.write_all(render_documents(group.objects.iter().map(|o| &**o))?.as_bytes())?;
    let keys: Vec<_> = group.objects.iter().map(|o| o.key()).collect();
    for named in sinks {
        let plan = plan_keys(&keys, index.desired(), named.sink.held(), owner, &index.scope());
        writeln!(out, "\n## against sink {}", named.name)?;
        out.write_all(plan.render_diff().as_bytes())?;
    }
    writeln!(out)?;
    Ok(())
}
