//! A registry's `select`, `namespace_from` and `allowed_namespaces`: read strictly, and
//! every pattern or template checked where it is written.

use std::collections::{BTreeMap, BTreeSet};

use registry_sync_translate::{Glob, MetadataMatch, NamespaceRule, NamespaceTemplate, Selection};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::is_dns_label;

/// `select`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelect {
    #[serde(default)]
    services: Option<RawServiceSelect>,
    #[serde(default)]
    instances: Option<RawInstanceSelect>,
}

/// `select.services`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServiceSelect {
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    metadata: BTreeMap<String, Spanned<String>>,
}

/// `select.instances`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstanceSelect {
    #[serde(default)]
    metadata: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    exclude_metadata: BTreeMap<String, Spanned<String>>,
}

/// A checked value, or the line and key it failed at and why.
pub(crate) type Checked<T> = Result<T, (u64, String, String)>;

pub(crate) fn glob(pattern: &Spanned<String>, key: &str) -> Checked<Glob> {
    Glob::new(&pattern.value).map_err(|e| (pattern.referenced.line(), key.to_string(), e.to_string()))
}

fn globs(patterns: &[Spanned<String>], key: &str) -> Checked<Vec<Glob>> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| glob(p, &format!("{key}[{i}]")))
        .collect()
}

fn metadata(pairs: &BTreeMap<String, Spanned<String>>, key: &str) -> Checked<MetadataMatch> {
    pairs
        .iter()
        .map(|(name, value)| {
            let key = format!("{key}.{name}");
            if name.trim().is_empty() {
                return Err((
                    value.referenced.line(),
                    key,
                    "a metadata key cannot be empty".into(),
                ));
            }
            Ok((name.trim().to_string(), glob(value, &key)?))
        })
        .collect()
}

impl RawSelect {
    pub(crate) fn check(&self) -> Checked<Selection> {
        let services = self.services.as_ref();
        let instances = self.instances.as_ref();
        let empty_services = RawServiceSelect::default();
        let empty_instances = RawInstanceSelect::default();
        let s = services.unwrap_or(&empty_services);
        let i = instances.unwrap_or(&empty_instances);
        Ok(Selection {
            include: globs(&s.include, "select.services.include")?,
            exclude: globs(&s.exclude, "select.services.exclude")?,
            service_metadata: metadata(&s.metadata, "select.services.metadata")?,
            instance_metadata: metadata(&i.metadata, "select.instances.metadata")?,
            instance_exclude_metadata: metadata(&i.exclude_metadata, "select.instances.exclude_metadata")?,
        })
    }
}

/// `namespace_from` needs `allowed_namespaces`, and the reverse: a template with no
/// limit would let registry data pick any namespace, and a limit with no template
/// does nothing.
pub(crate) fn namespace_rule(
    from: Option<&Spanned<String>>,
    allowed: Option<&Spanned<Vec<String>>>,
    default_namespace: &str,
    line: u64,
) -> Checked<Option<NamespaceRule>> {
    let (from, allowed) = match (from, allowed) {
        (None, None) => return Ok(None),
        (Some(from), None) => {
            return Err((
                from.referenced.line(),
                "allowed_namespaces".into(),
                "is required with `namespace_from`: list the namespaces its services may land in".into(),
            ));
        }
        (None, Some(allowed)) => {
            return Err((
                allowed.referenced.line().max(line),
                "namespace_from".into(),
                "is required with `allowed_namespaces`: the template that picks a service's namespace, e.g. `{meta:k8s-namespace}`"
                    .into(),
            ));
        }
        (Some(from), Some(allowed)) => (from, allowed),
    };
    let template = NamespaceTemplate::parse(&from.value).map_err(|e| {
        (
            from.referenced.line(),
            "namespace_from".to_string(),
            e.to_string(),
        )
    })?;
    let mut names = BTreeSet::new();
    for name in &allowed.value {
        let name = name.trim();
        if !is_dns_label(name) {
            return Err((
                allowed.referenced.line(),
                "allowed_namespaces".into(),
                format!(
                    "{name:?} is not a namespace name (patterns are not allowed: the Kubernetes sink watches each one)"
                ),
            ));
        }
        if !names.insert(name.to_string()) {
            return Err((
                allowed.referenced.line(),
                "allowed_namespaces".into(),
                format!("{name:?} is listed twice"),
            ));
        }
    }
    if names.is_empty() {
        return Err((
            allowed.referenced.line(),
            "allowed_namespaces".into(),
            "must list at least one namespace".into(),
        ));
    }
    // Where a service lands without a namespace of its own, so always allowed.
    names.insert(default_namespace.to_string());
    Ok(Some(NamespaceRule {
        template,
        allowed: names,
    }))
}
