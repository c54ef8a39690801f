//! Field paths and field sets in the `FieldsV1` format of `metadata.managedFields`.
//!
//! A path is a list of `FieldsV1` keys: `f:<field>` for an object field and
//! `k:{"name":"http"}` for an item of an associative list. The set a manager owns holds
//! leaves: scalars, atomic lists, empty objects and associative-list items themselves
//! (the `"."` entry under an item that also has owned children).
//!
//! Objects are granular (each field separately owned); lists are atomic, except
//! `ServiceEntry` `spec.ports`, which the CRD declares `x-kubernetes-list-type: map` keyed
//! by `name`, so two managers can own different ports of one entry.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::kube::resource::Resource;
use crate::kube::status::Cause;

pub(crate) type Path = Vec<String>;
pub(crate) type FieldSet = BTreeSet<Path>;

/// Metadata fields a client owns; the rest of `metadata` is the server's or is identity.
const USER_METADATA: &[&str] = &[
    "annotations",
    "finalizers",
    "generateName",
    "labels",
    "ownerReferences",
];

/// The key field of an associative list at `path`, if it is one.
pub(crate) fn list_map_key(resource: Resource, path: &[String]) -> Option<&'static str> {
    (resource == Resource::ServiceEntry && path == ["f:spec", "f:ports"]).then_some("name")
}

fn field(name: &str) -> String {
    format!("f:{name}")
}

fn item_key(key: &str, value: &Value) -> String {
    format!("k:{}", json!({ key: value }))
}

/// The leaves of `obj` that a writer of it owns. Fails when an associative-list item
/// lacks its key or repeats one.
pub(crate) fn leaves(resource: Resource, obj: &Value) -> Result<FieldSet, Vec<Cause>> {
    let mut out = FieldSet::new();
    let mut errs = Vec::new();
    let Some(map) = obj.as_object() else {
        return Ok(out);
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if resource.has_status_subresource() => {}
            "metadata" => {
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if USER_METADATA.contains(&mk.as_str()) {
                        walk(
                            resource,
                            vec![field("metadata"), field(mk)],
                            mv,
                            &mut out,
                            &mut errs,
                        );
                    }
                }
            }
            _ => walk(resource, vec![field(k)], v, &mut out, &mut errs),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

fn walk(resource: Resource, path: Path, v: &Value, out: &mut FieldSet, errs: &mut Vec<Cause>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(field(k));
                walk(resource, p, c, out, errs);
            }
        }
        Value::Array(items) if list_map_key(resource, &path).is_some() => {
            let key = list_map_key(resource, &path).unwrap_or_default();
            let shown = display(&path);
            let shown = shown.trim_start_matches('.');
            for (i, item) in items.iter().enumerate() {
                let Some(kv) = item.get(key).filter(|k| !k.is_null()) else {
                    errs.push(Cause::required(format!("{shown}[{i}].{key}")));
                    continue;
                };
                let mut p = path.clone();
                p.push(item_key(key, kv));
                if !out.insert(p.clone()) {
                    errs.push(Cause::duplicate(format!("{shown}[{i}]"), &json!({ key: kv })));
                    continue;
                }
                for (k, c) in item.as_object().into_iter().flatten() {
                    let mut fp = p.clone();
                    fp.push(field(k));
                    walk(resource, fp, c, out, errs);
                }
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

fn parse_item_key(seg: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(seg.strip_prefix("k:")?).ok()
}

fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// The value at `path`, if present.
pub(crate) fn get<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = if let Some(f) = seg.strip_prefix("f:") {
            v.as_object()?.get(f)?
        } else {
            let key = parse_item_key(seg)?;
            v.as_array()?.iter().find(|item| item_matches(item, &key))?
        };
    }
    Some(v)
}

/// Whether two objects agree at `path`. For an associative-list item (its `"."`), only
/// its presence counts: its fields are compared as their own leaves.
pub(crate) fn same_at(a: &Value, b: &Value, path: &[String]) -> bool {
    let (x, y) = (get(a, path), get(b, path));
    if path.last().is_some_and(|s| s.starts_with("k:")) {
        x.is_some() == y.is_some()
    } else {
        x == y
    }
}

/// Removes the value at `path`, then any container on the way that became empty (below
/// the top-level fields such as `spec` and `metadata`).
pub(crate) fn remove(v: &mut Value, path: &[String]) {
    remove_rec(v, path, 0);
}

fn remove_rec(v: &mut Value, path: &[String], depth: usize) -> bool {
    let Some((seg, rest)) = path.split_first() else {
        return false;
    };
    let removed_child = if rest.is_empty() {
        remove_child(v, seg);
        true
    } else if let Some(key) = seg.strip_prefix("k:").and_then(|_| parse_item_key(seg)) {
        // Found by position, not by key: removing the item's fields may remove its key
        // field too, and an emptied item must still be found to be dropped.
        let Some(items) = v.as_array_mut() else {
            return false;
        };
        match items.iter().position(|item| item_matches(item, &key)) {
            Some(index) => {
                if remove_rec(&mut items[index], rest, depth + 1) && depth >= 1 {
                    items.remove(index);
                }
                true
            }
            None => false,
        }
    } else {
        match child_mut(v, seg) {
            Some(child) => {
                let now_empty = remove_rec(child, rest, depth + 1);
                if now_empty && depth >= 1 {
                    remove_child(v, seg);
                }
                true
            }
            None => false,
        }
    };
    removed_child
        && match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
}

fn child_mut<'a>(v: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        v.as_object_mut()?.get_mut(f)
    } else {
        let key = parse_item_key(seg)?;
        v.as_array_mut()?.iter_mut().find(|item| item_matches(item, &key))
    }
}

fn remove_child(v: &mut Value, seg: &str) {
    if let Some(f) = seg.strip_prefix("f:") {
        if let Some(m) = v.as_object_mut() {
            m.remove(f);
        }
    } else if let (Some(key), Some(a)) = (parse_item_key(seg), v.as_array_mut()) {
        a.retain(|item| !item_matches(item, &key));
    }
}

/// Merges an applied configuration into `base`: objects field by field, associative lists
/// item by item (applied items first, in applied order), everything else replaced.
pub(crate) fn merge(resource: Resource, path: &mut Path, base: &mut Value, applied: &Value) {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, av) in a {
                path.push(field(k));
                match b.get_mut(k) {
                    Some(bv) => merge(resource, path, bv, av),
                    None => {
                        b.insert(k.clone(), av.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(b), Value::Array(a)) if list_map_key(resource, path).is_some() => {
            let key = list_map_key(resource, path).unwrap_or_default();
            let mut out = Vec::with_capacity(a.len().max(b.len()));
            for ai in a {
                let existing = b
                    .iter()
                    .find(|bi| bi.get(key).is_some() && bi.get(key) == ai.get(key));
                match existing {
                    Some(bi) => {
                        let mut item = bi.clone();
                        path.push(item_key(key, ai.get(key).unwrap_or(&Value::Null)));
                        merge(resource, path, &mut item, ai);
                        path.pop();
                        out.push(item);
                    }
                    None => out.push(ai.clone()),
                }
            }
            for bi in b.iter() {
                if !a
                    .iter()
                    .any(|ai| ai.get(key).is_some() && ai.get(key) == bi.get(key))
                {
                    out.push(bi.clone());
                }
            }
            *b = out;
        }
        (base, applied) => *base = applied.clone(),
    }
}

/// `FieldsV1` JSON of a field set.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        leaf: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut m = Map::new();
        if node.leaf && !node.children.is_empty() {
            m.insert(".".to_string(), json!({}));
        }
        for (k, c) in &node.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for seg in path {
            node = node.children.entry(seg.clone()).or_default();
        }
        node.leaf = true;
    }
    render(&root)
}

/// The field set of a `FieldsV1` JSON.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k == "." {
                out.insert(path.clone());
            } else {
                path.push(k.clone());
                walk(c, path, out);
                path.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// A path as the API server shows it in conflicts: `.spec.ports[name="http"].number`.
pub(crate) fn display(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(key) = parse_item_key(seg) {
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else {
            s.push_str(&format!("[{seg}]"));
        }
    }
    s
}

/// Whether `set` holds `path` or anything below it.
pub(crate) fn owns_at_or_below(set: &FieldSet, path: &Path) -> bool {
    set.range(path.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn se() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u"},
            "spec": {"hosts": ["a.b"], "ports": [{"name": "http", "number": 80}], "workloadSelector": {}},
            "status": {"conditions": []},
        })
    }

    #[test]
    fn leaves_follow_the_fields_v1_format() {
        let set = leaves(Resource::ServiceEntry, &se()).unwrap();
        assert_eq!(
            to_fields_v1(&set),
            json!({
                "f:metadata": {"f:labels": {"f:x": {}}},
                "f:spec": {
                    "f:hosts": {},
                    "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:number": {}}},
                    "f:workloadSelector": {},
                },
            })
        );
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }

    #[test]
    fn removing_a_port_item_and_emptied_containers() {
        let mut v = se();
        let port = vec![
            "f:spec".to_string(),
            "f:ports".to_string(),
            "k:{\"name\":\"http\"}".to_string(),
        ];
        assert_eq!(get(&v, &port).and_then(|p| p.get("number")), Some(&json!(80)));
        remove(&mut v, &port);
        assert!(v["spec"].get("ports").is_none(), "the emptied list goes too");
        remove(
            &mut v,
            &[
                "f:metadata".to_string(),
                "f:labels".to_string(),
                "f:x".to_string(),
            ],
        );
        assert!(v["metadata"].get("labels").is_none());
        assert_eq!(display(&port), ".spec.ports[name=\"http\"]");
    }

    #[test]
    fn merging_keeps_other_ports_and_replaces_atomic_lists() {
        let mut base = se();
        let applied = json!({"spec": {"hosts": ["c.d"], "ports": [{"name": "grpc", "number": 90}]}});
        merge(Resource::ServiceEntry, &mut Vec::new(), &mut base, &applied);
        assert_eq!(base["spec"]["hosts"], json!(["c.d"]));
        assert_eq!(
            base["spec"]["ports"],
            json!([{"name": "grpc", "number": 90}, {"name": "http", "number": 80}])
        );
    }

    #[test]
    fn a_port_without_a_name_is_refused() {
        let v = json!({"spec": {"ports": [{"number": 80}, {"name": "a", "number": 1}, {"name": "a", "number": 2}]}});
        let errs = leaves(Resource::ServiceEntry, &v).unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}
