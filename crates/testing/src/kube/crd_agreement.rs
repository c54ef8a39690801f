//! The stand-in's schema and rules against the real Istio CRDs in
//! `../shared/istio-crds/` (beside the workspace), when that file is present.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::kube::resource::Resource;
use crate::kube::schema::{self, SERVICE_ENTRY_SPEC, Schema, WORKLOAD_ENTRY_SPEC};
use crate::kube::validate::{CEL_RULES, validate};

fn crd_path() -> PathBuf {
    // crates/testing → workspace root → its parent holds shared/.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-crds/serviceentry-workloadentry.crd.yaml")
}

/// The v1 OpenAPI schema of each CRD by kind, or `None` (loudly; failing under CI) when
/// the file is not there.
fn crd_schemas() -> Option<Vec<(Resource, Value)>> {
    let path = crd_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "\n!!! Istio CRD file not found at {}: the stand-in's validation was NOT checked \
             against the real CRDs. Put shared/istio-crds/ beside the workspace.\n",
            path.display()
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and the Istio CRD file is missing: {}",
            path.display()
        );
        return None;
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("the CRD file is valid YAML");
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| d.is_object()) {
        let resource = match doc.pointer("/spec/names/kind").and_then(Value::as_str) {
            Some("ServiceEntry") => Resource::ServiceEntry,
            Some("WorkloadEntry") => Resource::WorkloadEntry,
            _ => continue,
        };
        let versions = doc
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .expect("versions");
        let v1 = versions.iter().find(|v| v["name"] == "v1").expect("a v1 version");
        out.push((
            resource,
            v1.pointer("/schema/openAPIV3Schema").expect("a schema").clone(),
        ));
    }
    assert_eq!(out.len(), 2, "both CRDs are in the file");
    Some(out)
}

fn num(v: &Value, key: &str) -> Option<i128> {
    v.get(key)
        .and_then(|n| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)))
}

/// Compares one schema node; collects the CRD's CEL messages by path on the way.
fn compare(
    crd: &Value,
    mine: &Schema,
    path: &str,
    diffs: &mut Vec<String>,
    cel: &mut BTreeSet<(String, String)>,
) {
    for rule in crd
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        cel.insert((
            path.to_string(),
            rule["message"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let mut expect = |what: &str, theirs: Option<i128>, ours: Option<i128>| {
        if theirs != ours {
            diffs.push(format!("{path}: {what}: CRD {theirs:?}, stand-in {ours:?}"));
        }
    };
    if let Some(t) = mine.type_name()
        && crd.get("type").and_then(Value::as_str) != Some(t)
    {
        diffs.push(format!("{path}: type: CRD {:?}, stand-in {t}", crd.get("type")));
        return;
    }
    match mine {
        Schema::Any => {}
        Schema::Str { max_len, allowed } => {
            expect("maxLength", num(crd, "maxLength"), max_len.map(|m| m as i128));
            let theirs: BTreeSet<&str> = crd
                .get("enum")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if theirs != allowed.iter().copied().collect() {
                diffs.push(format!("{path}: enum: CRD {theirs:?}, stand-in {allowed:?}"));
            }
        }
        Schema::Int { min, max } => {
            expect("minimum", num(crd, "minimum"), Some(i128::from(*min)));
            expect("maximum", num(crd, "maximum"), Some(i128::from(*max)));
        }
        Schema::Obj { fields, required } => {
            let props = crd
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let theirs: BTreeSet<&str> = props.keys().map(String::as_str).collect();
            let ours: BTreeSet<&str> = fields.iter().map(|(n, _)| *n).collect();
            if theirs != ours {
                diffs.push(format!("{path}: properties: CRD {theirs:?}, stand-in {ours:?}"));
            }
            for (name, s) in fields.iter() {
                if let Some(p) = props.get(*name) {
                    compare(p, s, &format!("{path}.{name}"), diffs, cel);
                }
            }
            let theirs: BTreeSet<&str> = crd
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if theirs != required.iter().copied().collect() {
                diffs.push(format!("{path}: required: CRD {theirs:?}, stand-in {required:?}"));
            }
        }
        Schema::Map { values, max_props } => {
            expect(
                "maxProperties",
                num(crd, "maxProperties"),
                max_props.map(|m| m as i128),
            );
            match crd.get("additionalProperties") {
                Some(ap) => compare(ap, values, &format!("{path}.*"), diffs, cel),
                None => diffs.push(format!("{path}: the CRD has no additionalProperties")),
            }
        }
        Schema::List {
            items,
            min_items,
            max_items,
        } => {
            expect("maxItems", num(crd, "maxItems"), max_items.map(|m| m as i128));
            expect(
                "minItems",
                num(crd, "minItems").or(Some(0)),
                Some(*min_items as i128),
            );
            match crd.get("items") {
                Some(it) => compare(it, items, &format!("{path}[]"), diffs, cel),
                None => diffs.push(format!("{path}: the CRD has no items")),
            }
        }
    }
}

#[test]
fn the_stand_in_schema_and_cel_rules_agree_with_the_istio_crds() {
    let Some(crds) = crd_schemas() else { return };
    for (resource, crd) in crds {
        let mine = match resource {
            Resource::ServiceEntry => &SERVICE_ENTRY_SPEC,
            _ => &WORKLOAD_ENTRY_SPEC,
        };
        let mut diffs = Vec::new();
        let mut cel = BTreeSet::new();
        compare(&crd["properties"]["spec"], mine, "spec", &mut diffs, &mut cel);
        assert!(
            diffs.is_empty(),
            "{resource}: the schema differs from the CRD:\n{}",
            diffs.join("\n")
        );
        let ours: BTreeSet<(String, String)> = CEL_RULES
            .iter()
            .filter(|(r, _, _)| *r == resource)
            .map(|(_, p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(
            cel, ours,
            "{resource}: the CEL rules differ from the CRD's x-kubernetes-validations"
        );
        let required = crd["required"].as_array().expect("top-level required");
        assert!(
            required.contains(&json!("spec")),
            "{resource}: the CRD requires spec"
        );
    }
}

fn service_entry(spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
           "metadata": {"name": "x", "namespace": "ns"}, "spec": spec})
}

fn errors(mut obj: Value) -> Vec<String> {
    let checked = schema::check(Resource::ServiceEntry, &mut obj, true);
    let cel = checked.errors.is_empty();
    let mut all: Vec<String> = checked.errors.into_iter().map(|c| c.message).collect();
    all.extend(
        validate(Resource::ServiceEntry, &obj, cel)
            .into_iter()
            .map(|c| c.message),
    );
    all
}

#[test]
fn the_endpoint_limit_and_the_port_number_rule_behave_as_the_crd_states() {
    let Some(crds) = crd_schemas() else { return };
    let se = &crds
        .iter()
        .find(|(r, _)| *r == Resource::ServiceEntry)
        .expect("ServiceEntry CRD")
        .1;
    let spec = &se["properties"]["spec"]["properties"];
    let max = spec["endpoints"]["maxItems"]
        .as_u64()
        .expect("endpoints.maxItems") as usize;
    assert_eq!(max, 4096);
    let number_rule = &spec["ports"]["items"]["properties"]["number"]["x-kubernetes-validations"][0]["rule"];
    assert_eq!(number_rule, "0 < self && self <= 65535");

    let endpoints = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"address": format!("10.0.{}.{}", i / 256, i % 256)}))
            .collect()
    };
    let with =
        |n| service_entry(json!({"hosts": ["a.b"], "resolution": "STATIC", "endpoints": endpoints(n)}));
    assert_eq!(errors(with(max)), Vec::<String>::new());
    assert_eq!(
        errors(with(max + 1)),
        vec![format!(
            "spec.endpoints: Too many: {}: must have at most {max} items",
            max + 1
        )]
    );

    for (number, ok) in [(0, false), (1, true), (65535, true), (65536, false)] {
        let e = errors(service_entry(
            json!({"hosts": ["a.b"], "ports": [{"name": "tcp", "number": number}]}),
        ));
        assert_eq!(e.is_empty(), ok, "port {number}: {e:?}");
        if !ok {
            assert_eq!(
                e,
                vec![format!(
                    "spec.ports[0].number: Invalid value: {number}: port must be between 1-65535"
                )]
            );
        }
    }
}
