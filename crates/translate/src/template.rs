use std::fmt;

use crate::names::sanitize_dns_label;

/// A per-registry host template such as `{service}.{namespace}.legacy`.
///
/// Placeholders: `{service}`, `{namespace}` (the registry-side namespace or group;
/// empty when the service has none, and the empty label disappears) and `{registry}`.
/// The template must contain `{service}`: without it every service of the registry
/// would share one host and be merged into one ServiceEntry.
#[derive(Clone, PartialEq, Eq)]
pub struct HostTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Service,
    Namespace,
    Registry,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "host template {template:?}: unknown placeholder {{{name}}}; use {{service}}, {{namespace}} or {{registry}}"
    )]
    UnknownPlaceholder { template: String, name: String },
    #[error("host template {0:?}: a '{{' is never closed")]
    Unclosed(String),
    #[error("host template {0:?}: a '}}' has no matching '{{'")]
    UnmatchedClose(String),
    #[error("host template {0:?} must contain {{service}}, or every service would share one host")]
    MissingService(String),
    #[error(
        "host template {template:?}: {ch:?} cannot appear in a host name; use letters, digits, '-' and '.'"
    )]
    InvalidCharacter { template: String, ch: char },
}

/// Why a service's host could not be made a valid DNS name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {0:?} is empty after removing characters DNS does not allow")]
    Empty(String),
    #[error("host label {label:?} of {host:?} is longer than 63 characters")]
    LabelTooLong { host: String, label: String },
    #[error("host {0:?} is longer than 253 characters")]
    TooLong(String),
    #[error("host {0:?} ends in an all-numeric label and would read as an IP address")]
    Numeric(String),
}

/// What can be wrong with a template's braces or characters, met in order.
pub(crate) enum Syntax {
    Unclosed,
    UnmatchedClose,
    Invalid(char),
}

/// Splits a `{placeholder}` template into parts, in order: runs of characters
/// `literal_char` accepts become `literal(run)`, each `{name}` becomes
/// `placeholder(name)` (the name as written), and the first problem met stops it.
pub(crate) fn parse_parts<P, E>(
    template: &str,
    literal_char: impl Fn(char) -> bool,
    literal: impl Fn(String) -> P,
    mut placeholder: impl FnMut(String) -> Result<P, E>,
    syntax: impl Fn(Syntax) -> E,
) -> Result<Vec<P>, E> {
    let mut parts = Vec::new();
    let mut run = String::new();
    let mut chars = template.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(syntax(Syntax::Unclosed)),
                    }
                }
                let part = placeholder(name)?;
                if !run.is_empty() {
                    parts.push(literal(std::mem::take(&mut run)));
                }
                parts.push(part);
            }
            '}' => return Err(syntax(Syntax::UnmatchedClose)),
            c if literal_char(c) => run.push(c),
            c => return Err(syntax(Syntax::Invalid(c))),
        }
    }
    if !run.is_empty() {
        parts.push(literal(run));
    }
    Ok(parts)
}

impl HostTemplate {
    pub fn parse(template: &str) -> Result<HostTemplate, TemplateError> {
        let mut has_service = false;
        let parts = parse_parts(
            template,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '.',
            Part::Literal,
            |name| match name.trim() {
                "service" => {
                    has_service = true;
                    Ok(Part::Service)
                }
                "namespace" => Ok(Part::Namespace),
                "registry" => Ok(Part::Registry),
                _ => Err(TemplateError::UnknownPlaceholder {
                    template: template.to_string(),
                    name,
                }),
            },
            |problem| match problem {
                Syntax::Unclosed => TemplateError::Unclosed(template.to_string()),
                Syntax::UnmatchedClose => TemplateError::UnmatchedClose(template.to_string()),
                Syntax::Invalid(ch) => TemplateError::InvalidCharacter {
                    template: template.to_string(),
                    ch,
                },
            },
        )?;
        if !has_service {
            return Err(TemplateError::MissingService(template.to_string()));
        }
        Ok(HostTemplate {
            source: template.to_string(),
            parts,
        })
    }

    /// Fills the template and makes the result a lowercase DNS name: characters DNS
    /// does not allow become `-`, empty labels vanish. What cannot be repaired without
    /// guessing (an over-long label or name) is an error, and the service is skipped.
    pub fn render(
        &self,
        registry: &str,
        namespace: Option<&str>,
        service: &str,
    ) -> Result<String, HostError> {
        let mut raw = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => raw.push_str(s),
                Part::Service => raw.push_str(service),
                Part::Namespace => raw.push_str(namespace.unwrap_or_default()),
                Part::Registry => raw.push_str(registry),
            }
        }
        let labels: Vec<String> = raw
            .split('.')
            .map(sanitize_dns_label)
            .filter(|label| !label.is_empty())
            .collect();
        if labels.is_empty() {
            return Err(HostError::Empty(raw));
        }
        if let Some(label) = labels.iter().find(|l| l.len() > 63) {
            return Err(HostError::LabelTooLong {
                host: raw.clone(),
                label: label.clone(),
            });
        }
        let host = labels.join(".");
        if host.len() > 253 {
            return Err(HostError::TooLong(raw));
        }
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(HostError::Numeric(raw));
        }
        Ok(host)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for HostTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostTemplate({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, namespace: Option<&str>, service: &str) -> Result<String, HostError> {
        HostTemplate::parse(template)
            .unwrap()
            .render("legacy", namespace, service)
    }

    #[test]
    fn placeholders_are_filled_and_hosts_lowercased() {
        assert_eq!(
            render("{service}.{namespace}.{registry}", Some("Shop"), "Orders").unwrap(),
            "orders.shop.legacy"
        );
        assert_eq!(
            render("{service}.svc", None, "com.example.DemoService").unwrap(),
            "com.example.demoservice.svc"
        );
    }

    #[test]
    fn missing_namespace_leaves_no_empty_label() {
        assert_eq!(
            render("{service}.{namespace}.legacy", None, "orders").unwrap(),
            "orders.legacy"
        );
    }

    #[test]
    fn characters_dns_refuses_become_dashes() {
        assert_eq!(
            render("{service}.legacy", None, "Order_Service v2").unwrap(),
            "order-service-v2.legacy"
        );
        assert_eq!(render("{service}.legacy", None, "--a--").unwrap(), "a.legacy");
    }

    #[test]
    fn hosts_that_cannot_be_made_valid_are_errors() {
        assert!(matches!(
            render("{service}", None, "___"),
            Err(HostError::Empty(_))
        ));
        assert!(matches!(
            render("{service}.x", None, &"a".repeat(64)),
            Err(HostError::LabelTooLong { .. })
        ));
        let long = vec!["abcdefgh"; 30].join(".");
        assert!(matches!(
            render("{service}.x", None, &long),
            Err(HostError::TooLong(_))
        ));
        assert!(matches!(
            render("{service}", None, "10.0.0.1"),
            Err(HostError::Numeric(_))
        ));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert!(matches!(
            HostTemplate::parse("{svc}.x"),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            HostTemplate::parse("{service.x"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            HostTemplate::parse("service}.x"),
            Err(TemplateError::UnmatchedClose(_))
        ));
        assert!(matches!(
            HostTemplate::parse("static.example"),
            Err(TemplateError::MissingService(_))
        ));
        assert!(matches!(
            HostTemplate::parse("{service}/x"),
            Err(TemplateError::InvalidCharacter { .. })
        ));
        assert!(HostTemplate::parse("{ service }.x").is_ok());
    }
}
