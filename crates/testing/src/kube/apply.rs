//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Each entry is keyed by manager and operation (`Apply` or `Update`), as in the API
//! server. What is implemented:
//! * **Apply**: the applied configuration's fields become exactly the applier's `Apply`
//!   set. A field another entry owns with a different value is a conflict (`409`, one
//!   cause per field), unless `force=true`, which moves ownership to the applier. Equal
//!   values are shared. Fields the applier owned before and no longer sends are removed
//!   from the object when no other entry owns them (or anything below them).
//! * **Update** (create, replace, merge patch): the writer's `Update` entry gains every
//!   field whose value it changed or added; those fields leave every other entry; removed
//!   fields leave every entry. Updates never conflict.
//!
//! Not implemented: ownership of list items of atomic lists, `v:`/`i:` set and index
//! keys (no schema here has set- or index-keyed lists), subresource entries, and
//! `managedFields` supplied by a client (ignored; an apply that sends them is refused).

use serde_json::{Value, json};

use crate::kube::fields::{self, FieldSet, Path};
use crate::kube::resource::Resource;
use crate::kube::status::{ApiError, Cause};
use crate::kube::util::now_rfc3339;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str) -> bool {
        self.manager == manager && self.operation == operation
    }
}

/// The entries of a stored object's `metadata.managedFields`.
pub(crate) fn entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                set: e.get("fieldsV1").map(fields::from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes `entries` into `metadata.managedFields` (removing it when there are none).
pub(crate) fn store_entries(obj: &mut Value, entries: &[Entry]) {
    if entries.is_empty() {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        return;
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&e.set),
            })
        })
        .collect();
    meta.insert("managedFields".to_string(), Value::Array(list));
}

/// The entry for `(manager, operation)`, created when missing.
fn entry_mut<'a>(
    entries: &'a mut Vec<Entry>,
    resource: Resource,
    manager: &str,
    operation: &str,
) -> &'a mut Entry {
    let i = match entries.iter().position(|e| e.is(manager, operation)) {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: resource.api_version().to_string(),
                time: String::new(),
                set: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    &mut entries[i]
}

fn invalid(resource: Resource, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(resource, name, &causes)
}

/// Records an `Update` by `manager` that turned `old` (none for a create) into `new`.
pub(crate) fn record_update(
    resource: Resource,
    name: &str,
    entries: &mut Vec<Entry>,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
) -> Result<(), ApiError> {
    let new_set = fields::leaves(resource, new).map_err(|c| invalid(resource, name, c))?;
    let old_set = old
        .map(|o| fields::leaves(resource, o).unwrap_or_default())
        .unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| !fields::same_at(o, new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    for e in entries.iter_mut() {
        let mine = e.is(manager, "Update");
        e.set
            .retain(|p| !removed.contains(p) && (mine || !changed.contains(p)));
    }
    if !changed.is_empty() {
        let e = entry_mut(entries, resource, manager, "Update");
        e.set.extend(changed);
        e.time = now_rfc3339();
    }
    entries.retain(|e| !e.set.is_empty());
    Ok(())
}

/// Server-side apply of `applied` (already pruned, without server fields) by `manager`
/// onto `live` (none: the object is created). Returns the merged object, without
/// `managedFields`, and the new entries.
pub(crate) fn apply(
    resource: Resource,
    name: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, Vec<Entry>), ApiError> {
    let mut entries = live.map(entries).unwrap_or_default();
    let applied_set = fields::leaves(resource, applied).map_err(|c| invalid(resource, name, c))?;
    let empty = json!({});
    let live_value = live.unwrap_or(&empty);

    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.is(manager, "Apply") {
            continue;
        }
        for p in applied_set.intersection(&e.set) {
            if !fields::same_at(live_value, applied, p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let shown: Vec<(String, String)> = conflicts
            .iter()
            .map(|(i, p)| (entries[*i].manager.clone(), fields::display(p)))
            .collect();
        return Err(ApiError::apply_conflicts(&shown, resource.api_version()));
    }
    for (i, p) in &conflicts {
        entries[*i].set.remove(p);
    }

    let previous = entries
        .iter()
        .find(|e| e.is(manager, "Apply"))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let mut obj = live.cloned().unwrap_or_else(|| json!({}));
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let dropped: Vec<&Path> = previous.difference(&applied_set).collect();
    for p in dropped.into_iter().rev() {
        let kept_by_others = entries
            .iter()
            .any(|e| !e.is(manager, "Apply") && fields::owns_at_or_below(&e.set, p));
        if !kept_by_others && !fields::owns_at_or_below(&applied_set, p) {
            fields::remove(&mut obj, p);
        }
    }
    fields::merge(resource, &mut Vec::new(), &mut obj, applied);

    let e = entry_mut(&mut entries, resource, manager, "Apply");
    e.set = applied_set;
    e.time = now_rfc3339();
    entries.retain(|e| !e.set.is_empty());
    Ok((obj, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_after(steps: &[(&str, Value, bool)]) -> Result<(Value, Vec<Entry>), ApiError> {
        let mut live: Option<Value> = None;
        let mut last = None;
        for (manager, applied, force) in steps {
            let (mut obj, entries) = apply(
                Resource::ServiceEntry,
                "x",
                live.as_ref(),
                applied,
                manager,
                *force,
            )?;
            store_entries(&mut obj, &entries);
            live = Some(obj.clone());
            last = Some((obj, entries));
        }
        Ok(last.expect("at least one step"))
    }

    #[test]
    fn a_field_the_applier_stops_sending_is_removed() {
        let (obj, _) = live_after(&[
            (
                "a",
                json!({"spec": {"hosts": ["h"], "location": "MESH_INTERNAL"}}),
                false,
            ),
            ("a", json!({"spec": {"hosts": ["h"]}}), false),
        ])
        .unwrap();
        assert_eq!(obj["spec"], json!({"hosts": ["h"]}));
    }

    #[test]
    fn a_field_shared_with_another_manager_survives_when_one_stops_sending_it() {
        let (obj, entries) = live_after(&[
            (
                "a",
                json!({"spec": {"hosts": ["h"], "location": "MESH_INTERNAL"}}),
                false,
            ),
            ("b", json!({"spec": {"location": "MESH_INTERNAL"}}), false),
            ("a", json!({"spec": {"hosts": ["h"]}}), false),
        ])
        .unwrap();
        assert_eq!(obj["spec"]["location"], "MESH_INTERNAL");
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn managers_own_different_ports_of_one_entry() {
        let (obj, _) = live_after(&[
            (
                "a",
                json!({"spec": {"hosts": ["h"], "ports": [{"name": "http", "number": 80}]}}),
                false,
            ),
            (
                "b",
                json!({"spec": {"ports": [{"name": "grpc", "number": 90}]}}),
                false,
            ),
            (
                "a",
                json!({"spec": {"hosts": ["h"], "ports": [{"name": "http", "number": 81}]}}),
                false,
            ),
        ])
        .unwrap();
        assert_eq!(
            obj["spec"]["ports"],
            json!([{"name": "http", "number": 81}, {"name": "grpc", "number": 90}])
        );
    }

    #[test]
    fn a_differing_value_conflicts_and_force_takes_it_over() {
        let a = ("a", json!({"spec": {"hosts": ["h"]}}), false);
        let err = live_after(&[a.clone(), ("b", json!({"spec": {"hosts": ["other"]}}), false)]).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains("conflict with \"a\""), "{}", err.message);
        let (_, entries) = live_after(&[a, ("b", json!({"spec": {"hosts": ["other"]}}), true)]).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "b");
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let old = json!({"spec": {"hosts": ["h"], "location": "MESH_INTERNAL"}});
        let (_, mut entries) = apply(Resource::ServiceEntry, "x", None, &old, "a", false).unwrap();
        let new = json!({"spec": {"hosts": ["h2"], "location": "MESH_INTERNAL"}});
        record_update(
            Resource::ServiceEntry,
            "x",
            &mut entries,
            Some(&old),
            &new,
            "editor",
        )
        .unwrap();
        let owner_of = |f: &str| {
            let p = vec!["f:spec".to_string(), format!("f:{f}")];
            entries
                .iter()
                .find(|e| e.set.contains(&p))
                .map(|e| e.manager.clone())
        };
        assert_eq!(owner_of("hosts").as_deref(), Some("editor"));
        assert_eq!(owner_of("location").as_deref(), Some("a"));
    }
}

#[cfg(test)]
mod renamed_port {
    use super::*;

    #[test]
    fn a_port_the_applier_renames_is_replaced_not_left_half_empty() {
        let port = |name: &str, number: u32| {
            json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                   "metadata": {"name": "x", "namespace": "ns"},
                   "spec": {"hosts": ["x.example"], "resolution": "STATIC",
                            "ports": [{"number": number, "protocol": "HTTP", "name": name}]}})
        };
        let (first, entries) = apply(
            Resource::ServiceEntry,
            "x",
            None,
            &port("http-9000", 9000),
            "registry-sync",
            true,
        )
        .unwrap();
        let mut live = first;
        store_entries(&mut live, &entries);
        let (second, _) = apply(
            Resource::ServiceEntry,
            "x",
            Some(&live),
            &port("http-9001", 9001),
            "registry-sync",
            true,
        )
        .unwrap();
        assert_eq!(
            second["spec"]["ports"],
            json!([{"number": 9001, "protocol": "HTTP", "name": "http-9001"}])
        );
    }
}
