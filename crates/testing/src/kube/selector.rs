//! Label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
//! comma-separated, all must hold) and field selectors (`metadata.name`,
//! `metadata.namespace` with `=`, `==`, `!=`).

use serde_json::Value;

use crate::kube::validate::{is_label_value, qualified_name_problems};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Both selectors of a list or watch request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
}

impl Selectors {
    /// Parses the `labelSelector` and `fieldSelector` query parameters.
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selectors, String> {
        let labels = match labels {
            Some(s) => parse_labels(s)?,
            None => Vec::new(),
        };
        let fields = match fields {
            Some(s) => parse_fields(s)?,
            None => Vec::new(),
        };
        Ok(Selectors { labels, fields })
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            Requirement::Eq(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(field, equal, value)| {
                let actual = match field.as_str() {
                    "metadata.name" => obj.pointer("/metadata/name"),
                    _ => obj.pointer("/metadata/namespace"),
                };
                (actual.and_then(Value::as_str).unwrap_or("") == value) == *equal
            })
    }
}

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    match qualified_name_problems(k).first() {
        None => Ok(k.to_string()),
        Some(p) => Err(format!(
            "unable to parse requirement: invalid label key \"{k}\": {p}"
        )),
    }
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if is_label_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: \"{v}\""
        ))
    }
}

fn parse_labels(s: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in split_top(s) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let req = if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(key(k)?)
        } else if let Some(open) = part.find('(') {
            let close = part
                .rfind(')')
                .filter(|c| *c > open && part[c + 1..].trim().is_empty());
            let close = close.ok_or_else(|| format!("unable to parse requirement: found '{part}'"))?;
            let mut head = part[..open].split_whitespace();
            let (k, op) = (head.next().unwrap_or(""), head.next().unwrap_or(""));
            let values = part[open + 1..close]
                .split(',')
                .map(value)
                .collect::<Result<Vec<_>, _>>()?;
            match (op, head.next()) {
                ("in", None) => Requirement::In(key(k)?, values),
                ("notin", None) => Requirement::NotIn(key(k)?, values),
                _ => return Err(format!("unable to parse requirement: found '{part}'")),
            }
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEq(key(k)?, value(v)?)
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Eq(key(k)?, value(v)?)
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Eq(key(k)?, value(v)?)
        } else if part.contains(['<', '>']) {
            return Err(format!(
                "unable to parse requirement: unsupported operator in '{part}'"
            ));
        } else {
            Requirement::Exists(key(part)?)
        };
        out.push(req);
    }
    Ok(out)
}

fn parse_fields(s: &str) -> Result<Vec<(String, bool, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, true, v)
        } else {
            return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
        };
        let field = field.trim();
        if field != "metadata.name" && field != "metadata.namespace" {
            return Err(format!("field label not supported: {field}"));
        }
        out.push((field.to_string(), equal, value.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn every_label_operator_matches_like_the_api_server() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| Selectors::parse(Some(s), None).unwrap().matches(&o);
        assert!(m("app=web") && m("app==web") && m("app!=db") && m("app") && m("!db"));
        assert!(m("app in (db, web)") && m("app notin (db)") && m("db notin (x)"));
        assert!(m("app=web,tier in (front,back),!db"));
        assert!(!m("app=db") && !m("!app") && !m("db") && !m("app in (db)") && !m("db in (x)"));
        assert!(m(""));
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let o = obj(json!({}));
        let m = |s: &str| Selectors::parse(None, Some(s)).unwrap().matches(&o);
        assert!(m("metadata.name=a") && m("metadata.namespace==ns") && m("metadata.name!=b"));
        assert!(!m("metadata.name=b"));
        assert!(Selectors::parse(None, Some("spec.hosts=x")).is_err());
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for bad in ["app in (a", "bad key=x", "app=-x", "app > 3", "app in (a) x"] {
            assert!(Selectors::parse(Some(bad), None).is_err(), "{bad}");
        }
    }
}
