//! Which services and instances of a registry are published: name globs and metadata.
//!
//! A service left out here is not "gone from the registry": it is a choice of the
//! config, so it leaves no problem behind, and the objects it had go through the plan
//! (which says why) and the mass-deletion guard like any other removal.

use std::fmt;

use registry_sync_catalog::{Instance, Metadata, Service};
use wildmatch::WildMatch;

/// A shell-style pattern: `*` any run of characters, `?` one character, all else
/// literal and case-sensitive (registry names are).
#[derive(Clone)]
pub struct Glob {
    source: String,
    matcher: WildMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("a pattern cannot be empty; use `*` for everything")]
    Empty,
    #[error("pattern {0:?}: {1:?} is not allowed; only `*` and `?` are wildcards, and names have no spaces")]
    Character(String, char),
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if let Some(ch) = pattern
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '{' | '}'))
        {
            return Err(GlobError::Character(pattern.to_string(), ch));
        }
        Ok(Glob {
            source: pattern.to_string(),
            matcher: WildMatch::new(pattern),
        })
    }

    pub fn matches(&self, text: &str) -> bool {
        self.matcher.matches(text)
    }

    /// A service pattern with a `/` is matched against `namespace/name` (the
    /// registry-side namespace or group), one without against the name alone.
    pub fn matches_service(&self, service: &Service) -> bool {
        match (&service.namespace, self.source.contains('/')) {
            (Some(namespace), true) => self.matches(&format!("{namespace}/{}", service.name)),
            (None, true) => false,
            (_, false) => self.matches(&service.name),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.source == other.source
    }
}

impl Eq for Glob {}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

/// `key: pattern` pairs that must all match.
pub type MetadataMatch = Vec<(String, Glob)>;

fn carries(metadata: &Metadata, wanted: &MetadataMatch) -> bool {
    wanted
        .iter()
        .all(|(key, value)| metadata.get(key).is_some_and(|v| value.matches(v)))
}

fn describe(wanted: &MetadataMatch) -> String {
    wanted
        .iter()
        .map(|(key, value)| format!("{key}={}", value.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A registry's `select`. Empty: everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Services whose name matches one of these; empty: every service.
    pub include: Vec<Glob>,
    /// Services whose name matches one of these are left out, even when included.
    pub exclude: Vec<Glob>,
    /// The service, or at least one of its instances, carries all of these (most
    /// registries keep metadata per instance only).
    pub service_metadata: MetadataMatch,
    /// Only instances that carry all of these.
    pub instance_metadata: MetadataMatch,
    /// Instances that carry all of these are left out.
    pub instance_exclude_metadata: MetadataMatch,
}

impl Selection {
    /// Why the service is not selected, or `None` when it is.
    pub fn rejects(&self, service: &Service) -> Option<String> {
        if !self.include.is_empty() && !self.include.iter().any(|g| g.matches_service(service)) {
            let patterns: Vec<&str> = self.include.iter().map(Glob::as_str).collect();
            return Some(format!(
                "its name matches none of select.services.include ({})",
                patterns.join(", ")
            ));
        }
        if let Some(glob) = self.exclude.iter().find(|g| g.matches_service(service)) {
            return Some(format!(
                "its name matches select.services.exclude {:?}",
                glob.as_str()
            ));
        }
        if !self.service_metadata.is_empty()
            && !carries(&service.labels, &self.service_metadata)
            && !service
                .instances
                .iter()
                .any(|i| carries(&i.labels, &self.service_metadata))
        {
            return Some(format!(
                "neither it nor any instance carries select.services.metadata ({})",
                describe(&self.service_metadata)
            ));
        }
        None
    }

    /// The service passes the name rules and fails only `select.services.metadata`: a
    /// decision its instances' metadata made, which instance churn can unmake.
    pub fn rejects_by_metadata_only(&self, service: &Service) -> bool {
        let by_name = Selection {
            service_metadata: Vec::new(),
            ..self.clone()
        };
        by_name.rejects(service).is_none() && self.rejects(service).is_some()
    }

    /// Whether the instance is published (given its service is).
    pub fn selects_instance(&self, instance: &Instance) -> bool {
        (self.instance_metadata.is_empty() || carries(&instance.labels, &self.instance_metadata))
            && (self.instance_exclude_metadata.is_empty()
                || !carries(&instance.labels, &self.instance_exclude_metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: Option<&str>, name: &str, instance_labels: &[(&str, &str)]) -> Service {
        Service {
            name: name.into(),
            namespace: namespace.map(str::to_string),
            labels: Metadata::new(),
            instances: vec![Instance {
                id: "i1".into(),
                address: registry_sync_catalog::Address::parse("10.0.0.1").unwrap(),
                ports: Vec::new(),
                healthy: true,
                weight: None,
                placement: None,
                labels: instance_labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
        }
    }

    fn globs(patterns: &[&str]) -> Vec<Glob> {
        patterns.iter().map(|p| Glob::new(p).unwrap()).collect()
    }

    #[test]
    fn globs_match_names_and_namespaced_patterns_match_namespace_slash_name() {
        let g = Glob::new("pay*").unwrap();
        assert!(g.matches_service(&service(Some("shop"), "payments", &[])));
        assert!(!g.matches_service(&service(None, "orders", &[])));
        let scoped = Glob::new("shop/*").unwrap();
        assert!(scoped.matches_service(&service(Some("shop"), "orders", &[])));
        assert!(!scoped.matches_service(&service(Some("other"), "orders", &[])));
        assert!(!scoped.matches_service(&service(None, "orders", &[])));
        assert!(Glob::new("a?c").unwrap().matches("abc"));
        assert!(!Glob::new("Orders").unwrap().matches("orders"), "case-sensitive");
    }

    #[test]
    fn bad_patterns_are_refused_with_the_character() {
        assert_eq!(Glob::new("  ").unwrap_err(), GlobError::Empty);
        assert_eq!(
            Glob::new("a[bc]").unwrap_err(),
            GlobError::Character("a[bc]".into(), '[')
        );
        assert!(matches!(Glob::new("a b"), Err(GlobError::Character(_, ' '))));
    }

    #[test]
    fn include_then_exclude_decide_and_say_why() {
        let selection = Selection {
            include: globs(&["pay*", "orders"]),
            exclude: globs(&["*-canary"]),
            ..Selection::default()
        };
        assert_eq!(selection.rejects(&service(None, "payments", &[])), None);
        assert_eq!(selection.rejects(&service(None, "orders", &[])), None);
        let why = selection.rejects(&service(None, "billing", &[])).unwrap();
        assert!(
            why.contains("none of select.services.include (pay*, orders)"),
            "{why}"
        );
        let why = selection.rejects(&service(None, "payments-canary", &[])).unwrap();
        assert!(why.contains("exclude \"*-canary\""), "{why}");
    }

    #[test]
    fn service_metadata_is_found_on_the_service_or_any_instance() {
        let selection = Selection {
            service_metadata: vec![("mesh".into(), Glob::new("on").unwrap())],
            ..Selection::default()
        };
        assert_eq!(selection.rejects(&service(None, "a", &[("mesh", "on")])), None);
        let mut labelled = service(None, "b", &[]);
        labelled.labels.insert("mesh".into(), "on".into());
        assert_eq!(selection.rejects(&labelled), None);
        assert!(
            selection
                .rejects(&service(None, "c", &[("mesh", "off")]))
                .unwrap()
                .contains("mesh=on")
        );
    }

    #[test]
    fn instance_filters_pick_instances_by_metadata() {
        let selection = Selection {
            instance_metadata: vec![("env".into(), Glob::new("prod*").unwrap())],
            instance_exclude_metadata: vec![("canary".into(), Glob::new("true").unwrap())],
            ..Selection::default()
        };
        let pick =
            |labels: &[(&str, &str)]| selection.selects_instance(&service(None, "s", labels).instances[0]);
        assert!(pick(&[("env", "prod-eu")]));
        assert!(!pick(&[("env", "staging")]));
        assert!(!pick(&[]));
        assert!(!pick(&[("env", "prod"), ("canary", "true")]));
        assert!(Selection::default().selects_instance(&service(None, "s", &[]).instances[0]));
    }
}
