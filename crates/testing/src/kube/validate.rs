//! Validation beyond the structural schema: object metadata (names, labels, annotations)
//! as the API server checks it for every kind, the Istio CRDs' CEL rules
//! (`x-kubernetes-validations`), the list-map key uniqueness of `spec.ports`, and the
//! Lease rules. Written from the CRDs and the Kubernetes API conventions, in this crate's
//! own code; a test compares [`CEL_RULES`] with the CRD file when it is present.

use serde_json::{Map, Value};

use crate::kube::resource::Resource;
use crate::kube::status::Cause;

/// The CEL rules implemented here, as `(kind, schema path, message)`. Paths use `[]` for
/// list items and `.*` for map values, the way the agreement test walks the CRD.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const CEL_RULES: &[(Resource, &str, &str)] = &[
    (
        Resource::ServiceEntry,
        "spec",
        "only one of WorkloadSelector or Endpoints can be set",
    ),
    (
        Resource::ServiceEntry,
        "spec",
        "CIDR addresses are allowed only for NONE/STATIC resolution types",
    ),
    (Resource::ServiceEntry, "spec", "NONE mode cannot set endpoints"),
    (
        Resource::ServiceEntry,
        "spec",
        "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
    ),
    (Resource::ServiceEntry, "spec.endpoints[]", "Address is required"),
    (
        Resource::ServiceEntry,
        "spec.endpoints[]",
        "UDS may not include ports",
    ),
    (
        Resource::ServiceEntry,
        "spec.endpoints[].address",
        "UDS must be an absolute path or abstract socket",
    ),
    (
        Resource::ServiceEntry,
        "spec.endpoints[].address",
        "UDS may not be a dir",
    ),
    (
        Resource::ServiceEntry,
        "spec.endpoints[].ports",
        "port name must be valid",
    ),
    (
        Resource::ServiceEntry,
        "spec.endpoints[].ports.*",
        "port must be between 1-65535",
    ),
    (
        Resource::ServiceEntry,
        "spec.hosts[]",
        "hostname cannot be wildcard",
    ),
    (
        Resource::ServiceEntry,
        "spec.ports",
        "port number cannot be duplicated",
    ),
    (
        Resource::ServiceEntry,
        "spec.ports[].number",
        "port must be between 1-65535",
    ),
    (
        Resource::ServiceEntry,
        "spec.ports[].targetPort",
        "port must be between 1-65535",
    ),
    (
        Resource::ServiceEntry,
        "spec.workloadSelector.labels.*",
        "wildcard is not supported in selector",
    ),
    (Resource::WorkloadEntry, "spec", "Address is required"),
    (Resource::WorkloadEntry, "spec", "UDS may not include ports"),
    (
        Resource::WorkloadEntry,
        "spec.address",
        "UDS must be an absolute path or abstract socket",
    ),
    (Resource::WorkloadEntry, "spec.address", "UDS may not be a dir"),
    (Resource::WorkloadEntry, "spec.ports", "port name must be valid"),
    (
        Resource::WorkloadEntry,
        "spec.ports.*",
        "port must be between 1-65535",
    ),
];

/// Everything but the structural schema. `cel` is false when the schema check already
/// failed: the API server does not run CEL rules over ill-typed values.
pub(crate) fn validate(resource: Resource, obj: &Value, cel: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    if let Some(meta) = obj.get("metadata").and_then(Value::as_object) {
        metadata(meta, &mut errs);
    }
    let Some(spec) = obj.get("spec").and_then(Value::as_object) else {
        return errs;
    };
    match resource {
        Resource::ServiceEntry => service_entry(spec, cel, &mut errs),
        Resource::WorkloadEntry if cel => workload(spec, "spec", &mut errs),
        Resource::WorkloadEntry => {}
        Resource::Lease => lease(spec, &mut errs),
    }
    errs
}

/// A failed CEL rule, reported as the API server (1.37) does: a scalar value as JSON
/// (`"*"`, `0`), nothing for an object or a list, then the message.
fn rule(field: impl Into<String>, value: &Value, message: &str) -> Cause {
    let detail = match value {
        Value::Object(_) | Value::Array(_) => format!("Invalid value: {message}"),
        scalar => format!("Invalid value: {scalar}: {message}"),
    };
    Cause::new("FieldValueInvalid", field, detail)
}

fn service_entry(spec: &Map<String, Value>, cel: bool, errs: &mut Vec<Cause>) {
    // x-kubernetes-list-type: map, keyed by name: names are unique (a structural check).
    if let Some(ports) = spec.get("ports").and_then(Value::as_array) {
        let mut seen = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            if let Some(name) = port.get("name").filter(|n| !n.is_null()) {
                if seen.contains(&name) {
                    errs.push(Cause::duplicate(
                        format!("spec.ports[{i}]"),
                        &serde_json::json!({"name": name}),
                    ));
                }
                seen.push(name);
            }
        }
    }
    if !cel {
        return;
    }
    let spec_value = Value::Object(spec.clone());
    let resolution = spec.get("resolution").and_then(Value::as_str).unwrap_or("NONE");
    let endpoints = spec.get("endpoints").and_then(Value::as_array);
    if spec.contains_key("workloadSelector") && spec.contains_key("endpoints") {
        errs.push(rule(
            "spec",
            &spec_value,
            "only one of WorkloadSelector or Endpoints can be set",
        ));
    }
    let cidr = spec
        .get("addresses")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|a| a.contains('/')));
    if cidr && !matches!(resolution, "STATIC" | "NONE") {
        errs.push(rule(
            "spec",
            &spec_value,
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        ));
    }
    if resolution == "NONE" && spec.contains_key("endpoints") {
        errs.push(rule("spec", &spec_value, "NONE mode cannot set endpoints"));
    }
    if resolution == "DNS_ROUND_ROBIN" && endpoints.is_some_and(|e| e.len() > 1) {
        errs.push(rule(
            "spec",
            &spec_value,
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        ));
    }
    if let Some(hosts) = spec.get("hosts").and_then(Value::as_array) {
        for (i, host) in hosts.iter().enumerate() {
            if host.as_str() == Some("*") {
                errs.push(rule(
                    format!("spec.hosts[{i}]"),
                    host,
                    "hostname cannot be wildcard",
                ));
            }
        }
    }
    if let Some(ports) = spec.get("ports").and_then(Value::as_array) {
        for (i, port) in ports.iter().enumerate() {
            for field in ["number", "targetPort"] {
                if let Some(n) = port.get(field)
                    && !port_number_ok(n)
                {
                    errs.push(rule(
                        format!("spec.ports[{i}].{field}"),
                        n,
                        "port must be between 1-65535",
                    ));
                }
            }
        }
        let numbers: Vec<&Value> = ports.iter().filter_map(|p| p.get("number")).collect();
        if numbers
            .iter()
            .any(|n| numbers.iter().filter(|m| *m == n).count() != 1)
        {
            errs.push(rule(
                "spec.ports",
                &Value::Array(ports.clone()),
                "port number cannot be duplicated",
            ));
        }
    }
    for (i, endpoint) in endpoints.into_iter().flatten().enumerate() {
        if let Some(endpoint) = endpoint.as_object() {
            workload(endpoint, &format!("spec.endpoints[{i}]"), errs);
        }
    }
    if let Some(labels) = spec
        .get("workloadSelector")
        .and_then(|w| w.get("labels"))
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            if value.as_str().is_some_and(|v| v.contains('*')) {
                let field = format!("spec.workloadSelector.labels.{key}");
                errs.push(rule(field, value, "wildcard is not supported in selector"));
            }
        }
    }
}

/// The rules of a WorkloadEntry spec, which a ServiceEntry endpoint shares.
fn workload(w: &Map<String, Value>, path: &str, errs: &mut Vec<Cause>) {
    let whole = Value::Object(w.clone());
    if !w.contains_key("address") && !w.contains_key("network") {
        errs.push(rule(path, &whole, "Address is required"));
    }
    let address = w.get("address").and_then(Value::as_str).unwrap_or("");
    if let Some(socket) = address.strip_prefix("unix://") {
        let field = format!("{path}.address");
        let addr_value = Value::from(address);
        if !(socket.starts_with('/') || socket.starts_with('@')) {
            errs.push(rule(
                &field,
                &addr_value,
                "UDS must be an absolute path or abstract socket",
            ));
        }
        if address.ends_with('/') {
            errs.push(rule(&field, &addr_value, "UDS may not be a dir"));
        }
        if w.contains_key("ports") {
            errs.push(rule(path, &whole, "UDS may not include ports"));
        }
    }
    if let Some(ports) = w.get("ports").and_then(Value::as_object) {
        if !ports.keys().all(|k| port_name_ok(k)) {
            errs.push(rule(
                format!("{path}.ports"),
                &Value::Object(ports.clone()),
                "port name must be valid",
            ));
        }
        for (name, n) in ports {
            if !port_number_ok(n) {
                errs.push(rule(
                    format!("{path}.ports[{name}]"),
                    n,
                    "port must be between 1-65535",
                ));
            }
        }
    }
}

fn port_number_ok(n: &Value) -> bool {
    n.as_u64().is_some_and(|n| (1..=65535).contains(&n))
}

/// `size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")`.
pub(crate) fn port_name_ok(key: &str) -> bool {
    let b = key.as_bytes();
    key.len() < 63
        && !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn lease(spec: &Map<String, Value>, errs: &mut Vec<Cause>) {
    if let Some(d) = spec.get("leaseDurationSeconds")
        && d.as_i64().is_some_and(|d| d <= 0)
    {
        errs.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.get("leaseTransitions")
        && t.as_i64().is_some_and(|t| t < 0)
    {
        errs.push(Cause::invalid(
            "spec.leaseTransitions",
            t,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(s) = spec.get("strategy")
        && s.as_str() != Some("OldestEmulationVersion")
    {
        errs.push(Cause::not_supported(
            "spec.strategy",
            s,
            &["OldestEmulationVersion"],
        ));
    }
    if spec.contains_key("preferredHolder") && !spec.contains_key("strategy") {
        errs.push(Cause::new(
            "FieldValueRequired",
            "spec.strategy",
            "Required value: must be specified when preferredHolder is set",
        ));
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
    '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
    validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
    and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
    validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', \
    '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
    '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn metadata(meta: &Map<String, Value>, errs: &mut Vec<Cause>) {
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => errs.push(Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        )),
        Some(name) => {
            if name.len() > 253 {
                errs.push(Cause::invalid(
                    "metadata.name",
                    &name.into(),
                    "must be no more than 253 characters",
                ));
            }
            if !is_dns1123_subdomain(name) {
                errs.push(Cause::invalid("metadata.name", &name.into(), SUBDOMAIN_MSG));
            }
        }
    }
    for (field, value_rules) in [("labels", true), ("annotations", false)] {
        let Some(map) = meta.get(field).and_then(Value::as_object) else {
            continue;
        };
        let path = format!("metadata.{field}");
        let mut total = 0;
        for (key, value) in map {
            for problem in qualified_name_problems(key) {
                errs.push(Cause::invalid(&path, &key.as_str().into(), problem));
            }
            let value = value.as_str().unwrap_or_default();
            total += key.len() + value.len();
            if value_rules {
                if value.len() > 63 {
                    errs.push(Cause::invalid(
                        &path,
                        &value.into(),
                        "must be no more than 63 bytes",
                    ));
                }
                if !value.is_empty() && !is_name_part(value) {
                    errs.push(Cause::invalid(&path, &value.into(), LABEL_VALUE_MSG));
                }
            }
        }
        if !value_rules && total > 256 * 1024 {
            errs.push(Cause::too_long(&path, 256 * 1024));
        }
    }
    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in finalizers.iter().enumerate() {
            for problem in qualified_name_problems(f.as_str().unwrap_or_default()) {
                errs.push(Cause::invalid(format!("metadata.finalizers[{i}]"), f, problem));
            }
        }
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at most 253 long.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns1123_label_part)
}

fn is_dns1123_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|c| is_lower_alnum(*c) || *c == b'-')
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What is wrong with a label or annotation key (`[prefix/]name`); empty when valid.
pub(crate) fn qualified_name_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else if !is_dns1123_subdomain(prefix) {
            problems.push(format!("prefix part {SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            problems.push("name part must be no more than 63 bytes".to_string());
        }
        if !is_name_part(name) {
            problems.push(NAME_PART_MSG.to_string());
        }
    }
    problems
}

/// A valid label value: empty, or at most 63 characters of `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub(crate) fn is_label_value(v: &str) -> bool {
    v.is_empty() || (v.len() <= 63 && is_name_part(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_the_crd_pattern() {
        for ok in ["http", "a", "http-8080", "A1", &"a".repeat(62)] {
            assert!(port_name_ok(ok), "{ok}");
        }
        for bad in ["", "-http", "http-", "http_1", "h.t", &"a".repeat(63)] {
            assert!(!port_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn subdomains_and_label_keys_follow_kubernetes_syntax() {
        assert!(is_dns1123_subdomain("consul.default.orders"));
        assert!(!is_dns1123_subdomain("Orders"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(qualified_name_problems("app.kubernetes.io/managed-by").is_empty());
        assert!(!qualified_name_problems("bad key").is_empty());
        assert!(!qualified_name_problems("/x").is_empty());
        assert!(is_label_value("") && is_label_value("v1.2_3") && !is_label_value("-x"));
    }
}
