//! Where a service's objects land: the registry's namespace, or one chosen per service
//! by a template, limited to an allow-list.
//!
//! The allow-list is of exact names, not patterns: it is also the set of namespaces the
//! Kubernetes sink lists and watches, and a pattern would let registry data (anyone who
//! can register a service) write into any namespace the operator can reach.

use std::collections::BTreeSet;
use std::fmt;

use registry_sync_catalog::Service;

use crate::names::sanitize_dns_label;
use crate::template::{Syntax, parse_parts};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Namespace,
    Registry,
    Meta(String),
}

/// `namespace_from`: a template such as `{meta:k8s-namespace}` or `team-{namespace}`.
#[derive(Clone, PartialEq, Eq)]
pub struct NamespaceTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceTemplateError {
    #[error(
        "namespace template {template:?}: unknown placeholder {{{name}}}; use {{namespace}}, {{registry}} or {{meta:KEY}}"
    )]
    UnknownPlaceholder { template: String, name: String },
    #[error("namespace template {0:?}: a '{{' is never closed")]
    Unclosed(String),
    #[error(
        "namespace template {0:?} has no placeholder, so every service would land in one namespace; set `namespace` instead"
    )]
    NoPlaceholder(String),
    #[error(
        "namespace template {template:?}: {ch:?} cannot appear in a namespace name; use lowercase letters, digits and '-'"
    )]
    InvalidCharacter { template: String, ch: char },
}

impl NamespaceTemplate {
    pub fn parse(template: &str) -> Result<NamespaceTemplate, NamespaceTemplateError> {
        let parts = parse_parts(
            template.trim(),
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            Part::Literal,
            |name| {
                let trimmed = name.trim();
                match trimmed.split_once(':') {
                    None if trimmed == "namespace" => Ok(Part::Namespace),
                    None if trimmed == "registry" => Ok(Part::Registry),
                    Some(("meta", key)) if !key.trim().is_empty() => Ok(Part::Meta(key.trim().to_string())),
                    _ => Err(NamespaceTemplateError::UnknownPlaceholder {
                        template: template.to_string(),
                        name,
                    }),
                }
            },
            |problem| match problem {
                Syntax::Unclosed => NamespaceTemplateError::Unclosed(template.to_string()),
                // A `}` outside a placeholder is a character a namespace cannot hold.
                Syntax::UnmatchedClose => NamespaceTemplateError::InvalidCharacter {
                    template: template.to_string(),
                    ch: '}',
                },
                Syntax::Invalid(ch) => NamespaceTemplateError::InvalidCharacter {
                    template: template.to_string(),
                    ch,
                },
            },
        )?;
        if parts.iter().all(|p| matches!(p, Part::Literal(_))) {
            return Err(NamespaceTemplateError::NoPlaceholder(template.to_string()));
        }
        Ok(NamespaceTemplate {
            source: template.trim().to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The namespace the template names for a service, or why it names none.
    fn render(&self, registry: &str, service: &Service) -> Result<String, String> {
        let mut raw = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => raw.push_str(text),
                Part::Registry => raw.push_str(registry),
                Part::Namespace => match service.namespace.as_deref().map(str::trim) {
                    Some(namespace) if !namespace.is_empty() => raw.push_str(namespace),
                    _ => return Err("the service has no registry-side namespace or group".into()),
                },
                Part::Meta(key) => raw.push_str(&meta_value(service, key)?),
            }
        }
        let name = sanitize_dns_label(&raw);
        if name.is_empty() || name.len() > 63 {
            return Err(format!(
                "{:?} is not a Kubernetes namespace name",
                raw.chars().take(80).collect::<String>()
            ));
        }
        Ok(name)
    }
}

impl fmt::Debug for NamespaceTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespaceTemplate({:?})", self.source)
    }
}

/// The service's own metadata, else the value every instance that has the key agrees
/// on (registries such as Consul and Nacos keep metadata per instance).
fn meta_value(service: &Service, key: &str) -> Result<String, String> {
    if let Some(value) = service.labels.get(key).filter(|v| !v.trim().is_empty()) {
        return Ok(value.trim().to_string());
    }
    let values: BTreeSet<&str> = service
        .instances
        .iter()
        .filter_map(|i| i.labels.get(key))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    match values.len() {
        0 => Err(format!("no metadata key {key:?}")),
        1 => Ok(values.into_iter().next().unwrap_or_default().to_string()),
        n => Err(format!(
            "its instances disagree on metadata key {key:?} ({n} values)"
        )),
    }
}

/// `namespace_from` with its `allowed_namespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRule {
    pub template: NamespaceTemplate,
    /// Exact names (see the module docs).
    pub allowed: BTreeSet<String>,
}

/// The namespace chosen for a service, and, when the default was used instead of the
/// template's, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub namespace: String,
    pub fallback: Option<Fallback>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The template names nothing for this service (no such metadata): expected for
    /// services that do not ask for a namespace.
    Unnamed(String),
    /// The template names a namespace outside `allowed_namespaces`: a registry entry
    /// asks for a namespace it may not use.
    NotAllowed(String),
}

impl NamespaceRule {
    pub fn choose(&self, registry: &str, default: &str, service: &Service) -> Chosen {
        let fallback = match self.template.render(registry, service) {
            Ok(namespace) if self.allowed.contains(&namespace) => {
                return Chosen {
                    namespace,
                    fallback: None,
                };
            }
            Ok(namespace) => Fallback::NotAllowed(format!(
                "namespace_from {:?} names namespace {namespace:?}, which is not in allowed_namespaces; published in {default:?} instead",
                self.template.as_str()
            )),
            Err(why) => Fallback::Unnamed(format!(
                "namespace_from {:?}: {why}; published in {default:?}",
                self.template.as_str()
            )),
        };
        Chosen {
            namespace: default.to_string(),
            fallback: Some(fallback),
        }
    }
}

#[cfg(test)]
mod tests {
    use registry_sync_catalog::{Address, Instance, Metadata};

    use super::*;

    fn service(namespace: Option<&str>, instance_meta: &[&[(&str, &str)]]) -> Service {
        Service {
            name: "orders".into(),
            namespace: namespace.map(str::to_string),
            labels: Metadata::new(),
            instances: instance_meta
                .iter()
                .enumerate()
                .map(|(n, meta)| Instance {
                    id: format!("i{n}"),
                    address: Address::parse("10.0.0.1").unwrap(),
                    ports: Vec::new(),
                    healthy: true,
                    weight: None,
                    placement: None,
                    labels: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                })
                .collect(),
        }
    }

    fn rule(template: &str, allowed: &[&str]) -> NamespaceRule {
        NamespaceRule {
            template: NamespaceTemplate::parse(template).unwrap(),
            allowed: allowed.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn a_metadata_key_names_an_allowed_namespace() {
        let chosen = rule("{meta:k8s-namespace}", &["payments"]).choose(
            "consul",
            "mesh",
            &service(None, &[&[("k8s-namespace", "Payments")], &[]]),
        );
        assert_eq!(chosen.namespace, "payments");
        assert_eq!(chosen.fallback, None);
    }

    #[test]
    fn the_registry_namespace_with_literals_and_the_registry_name() {
        let chosen = rule("{registry}-{namespace}", &["nacos-shop"]).choose(
            "nacos",
            "mesh",
            &service(Some("Shop"), &[]),
        );
        assert_eq!(chosen.namespace, "nacos-shop");
    }

    #[test]
    fn a_namespace_outside_the_allow_list_falls_back_with_the_reason() {
        let chosen = rule("{meta:ns}", &["payments"]).choose(
            "consul",
            "mesh",
            &service(None, &[&[("ns", "kube-system")]]),
        );
        assert_eq!(chosen.namespace, "mesh");
        let Some(Fallback::NotAllowed(why)) = chosen.fallback else {
            panic!("{chosen:?}")
        };
        assert!(
            why.contains("\"kube-system\", which is not in allowed_namespaces"),
            "{why}"
        );
    }

    #[test]
    fn missing_or_disagreeing_metadata_falls_back_to_the_default() {
        let r = rule("{meta:ns}", &["a", "b"]);
        for (service, expected) in [
            (service(None, &[&[]]), "no metadata key \"ns\""),
            (
                service(None, &[&[("ns", "a")], &[("ns", "b")]]),
                "disagree on metadata key \"ns\" (2 values)",
            ),
            (
                service(None, &[&[("ns", "___")]]),
                "is not a Kubernetes namespace name",
            ),
        ] {
            let chosen = r.choose("consul", "mesh", &service);
            assert_eq!(chosen.namespace, "mesh");
            let Some(Fallback::Unnamed(why)) = chosen.fallback else {
                panic!("{chosen:?}")
            };
            assert!(why.contains(expected), "{why}");
        }
        let chosen = rule("{namespace}", &["a"]).choose("nacos", "mesh", &service(None, &[]));
        assert!(
            matches!(chosen.fallback, Some(Fallback::Unnamed(w)) if w.contains("no registry-side namespace"))
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for (template, expected) in [
            ("{meta:}", "unknown placeholder"),
            ("{service}", "unknown placeholder"),
            ("{meta:ns", "never closed"),
            ("fixed", "no placeholder"),
            ("Team-{namespace}", "'T' cannot appear"),
        ] {
            let error = NamespaceTemplate::parse(template).unwrap_err().to_string();
            assert!(error.contains(expected), "{template}: {error}");
        }
    }
}
