//! The config file's sections after the first read: each checks its part and says
//! which line and key are wrong.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use registry_sync_translate::SecretKeys;
use serde_saphyr::Spanned;

use super::kubernetes::{RawKubernetesSink, kubernetes_config};
use super::{
    ConfigError, DEFAULT_GUARD_WINDOW, Invalid, KubernetesConfig, RawAdmin, RawFilesSink, RawSafety,
    RawSinks, RegistryConfig, SafetyConfig, SinksConfig, is_dns_label, registry,
};

/// The instance id names every object and the Lease: a DNS label.
fn dns_label(value: &Spanned<String>, key: &str, invalid: &Invalid) -> Result<(), ConfigError> {
    if is_dns_label(&value.value) {
        return Ok(());
    }
    Err(invalid(
        value.referenced.line(),
        key.into(),
        format!(
            "{:?} must be a DNS label (lowercase letters, digits and '-', at most 63)",
            value.value
        ),
    ))
}

/// `instance`: a DNS label, `default` when not set.
pub(super) fn instance_section(
    raw: Option<Spanned<String>>,
    invalid: &Invalid,
) -> Result<String, ConfigError> {
    match raw {
        Some(instance) => {
            dns_label(&instance, "instance", invalid)?;
            Ok(instance.value)
        }
        None => Ok("default".to_string()),
    }
}

/// `registries`: at least one, each checked by its kind, names unique. Also the line
/// of each registry's `health` (or its name), for a later check across sections.
pub(super) fn registries_section(
    raw: Spanned<Vec<registry::RawRegistry>>,
    base: &Path,
    secret_keys: &SecretKeys,
    invalid: &Invalid,
) -> Result<(Vec<RegistryConfig>, Vec<u64>), ConfigError> {
    if raw.value.is_empty() {
        return Err(invalid(
            raw.referenced.line(),
            "registries".into(),
            "at least one registry is needed".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut registries = Vec::new();
    let mut health_lines = Vec::new();
    for (index, r) in raw.value.into_iter().enumerate() {
        let entry = registry::Entry {
            index,
            base,
            secret_keys,
            invalid,
        };
        let name_line = r.name_line();
        health_lines.push(r.health_line().unwrap_or(name_line));
        let registry = entry.check(r)?;
        if !seen.insert(registry.name.clone()) {
            return Err(invalid(
                name_line,
                format!("registries[{index}].name"),
                format!("{:?} is used by two registries", registry.name),
            ));
        }
        registries.push(registry);
    }
    Ok((registries, health_lines))
}

/// A sink this build was made without is refused by name, with the feature to build.
pub(super) fn built_sinks_section(raw: &RawSinks, invalid: &Invalid) -> Result<(), ConfigError> {
    for (built, set, key) in [
        (
            cfg!(feature = "kubernetes"),
            raw.kubernetes.is_some(),
            "kubernetes",
        ),
        (cfg!(feature = "mcp"), raw.mcp.is_some(), "mcp"),
    ] {
        if set && !built {
            return Err(invalid(
                1,
                format!("sinks.{key}"),
                format!(
                    "this build of registry-sync has no {key} sink; build it with the Cargo feature `{key}`"
                ),
            ));
        }
    }
    Ok(())
}

/// `sinks.kubernetes`, and the instance id it needs: a cluster is shared, so it must be
/// named (at the top or in the sink, the same in both when both are set).
pub(super) fn kubernetes_section(
    raw: RawKubernetesSink,
    instance: &mut String,
    instance_set: bool,
    base: &Path,
    invalid: &Invalid,
) -> Result<KubernetesConfig, ConfigError> {
    // Two installations left on the default id would own — and delete — each other's
    // objects in a shared cluster. A directory of files is its own scope; a cluster is
    // not, so the Kubernetes sink needs a chosen name.
    if !instance_set && raw.instance.is_none() {
        return Err(invalid(
            1,
            "instance".into(),
            "is required with the Kubernetes sink: it names this installation on every object, \
             and two installations left on one default could delete each other's objects; \
             set a name unique in the cluster, e.g. `instance: prod-east` (the Helm chart \
             derives one from the release)"
                .into(),
        ));
    }
    if let Some(own) = &raw.instance {
        dns_label(own, "sinks.kubernetes.instance", invalid)?;
        if instance_set && own.value != *instance {
            return Err(invalid(
                own.referenced.line(),
                "sinks.kubernetes.instance".into(),
                format!(
                    "{:?} differs from the top-level `instance` {instance:?}; set one of them",
                    own.value
                ),
            ));
        }
        instance.clone_from(&own.value);
    }
    kubernetes_config(raw, base, invalid)
}

/// `safety`: the mass-change guard's share and window.
pub(super) fn safety_section(raw: &RawSafety, invalid: &Invalid) -> Result<SafetyConfig, ConfigError> {
    if let Some(share) = &raw.max_delete_share
        && !(0.0..=1.0).contains(&share.value)
    {
        return Err(invalid(
            share.referenced.line(),
            "safety.max_delete_share".into(),
            format!(
                "{} is not a share between 0 and 1 (0.5 = half of a registry's objects)",
                share.value
            ),
        ));
    }
    let guard_window = match &raw.window {
        None => DEFAULT_GUARD_WINDOW,
        Some(window) => registry_sync_sources::config::parse_duration(&window.value).ok_or_else(|| {
            invalid(
                window.referenced.line(),
                "safety.window".into(),
                "is not a duration: write it as `300s`, `5m` or `2500ms`".into(),
            )
        })?,
    };
    Ok(SafetyConfig {
        max_delete_share: raw.max_delete_share.as_ref().map_or(0.5, |s| s.value),
        guard_window,
        confirm_mass_delete: raw.confirm_mass_delete,
    })
}

/// `sinks.files`: a directory, relative to the config file.
pub(super) fn files_section(
    raw: &RawFilesSink,
    base: &Path,
    invalid: &Invalid,
) -> Result<PathBuf, ConfigError> {
    if raw.dir.value.trim().is_empty() {
        return Err(invalid(
            raw.dir.referenced.line(),
            "sinks.files.dir".into(),
            "must not be empty".into(),
        ));
    }
    Ok(base.join(&raw.dir.value))
}

/// `health: status` keeps health in the objects' status, which only the Kubernetes sink
/// writes: beside any other sink, unhealthy instances would be published as serving.
pub(super) fn health_section(
    sinks: &SinksConfig,
    registries: &[RegistryConfig],
    health_lines: &[u64],
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    let statusless = [
        (sinks.files.is_some(), "files"),
        (sinks.stdout, "stdout"),
        (sinks.mcp.is_some(), "mcp"),
    ];
    if let Some(sink) = statusless.iter().find(|(on, _)| *on).map(|(_, name)| name)
        && let Some((index, registry)) = registries
            .iter()
            .enumerate()
            .find(|(_, r)| r.settings.health_in_status)
    {
        return Err(invalid(
            health_lines[index],
            format!("registries[{index}].health"),
            format!(
                "`status` keeps health in the objects' status, which only the Kubernetes sink writes; the {sink} sink would publish registry {:?}'s unhealthy instances as serving. Use `health: endpoints` or the Kubernetes sink alone",
                registry.name
            ),
        ));
    }
    Ok(())
}

type Listeners = (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>);

/// `admin`: where the status page, metrics and probes listen.
pub(super) fn admin_section(raw: Option<&RawAdmin>, invalid: &Invalid) -> Result<Listeners, ConfigError> {
    let address = |value: &Spanned<String>, key: &str| -> Result<std::net::SocketAddr, ConfigError> {
        value.value.parse().map_err(|_| {
            invalid(
                value.referenced.line(),
                key.into(),
                format!("{:?} is not an address:port such as 0.0.0.0:9090", value.value),
            )
        })
    };
    let Some(admin) = raw else {
        return Ok((None, None));
    };
    Ok((
        Some(address(&admin.listen, "admin.listen")?),
        admin
            .status_listen
            .as_ref()
            .map(|value| address(value, "admin.status_listen"))
            .transpose()?,
    ))
}
