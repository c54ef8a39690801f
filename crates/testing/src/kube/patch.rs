//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::Value;

/// Applies a JSON merge patch: objects merge, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("just made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split(pointer: &str) -> Result<(String, String), String> {
    let cut = pointer
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok((pointer[..cut].to_string(), unescape(&pointer[cut + 1..])))
}

fn add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(pointer)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| format!("bad index {last:?}"))?
            };
            if i > a.len() {
                return Err(format!("index {i} out of bounds"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {pointer:?}")),
    }
}

fn remove(doc: &mut Value, pointer: &str) -> Result<Value, String> {
    let (parent, last) = split(pointer)?;
    let missing = || format!("doc is missing path: {pointer:?}");
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// Applies a JSON patch (a list of operations); all or nothing.
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let mut work = doc.clone();
    for op in ops {
        let s = |k: &str| op.get(k).and_then(Value::as_str);
        let path = s("path").ok_or("an operation needs a path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("missing value for {path:?}"))
        };
        match s("op").unwrap_or_default() {
            "add" => add(&mut work, path, value()?)?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            "test" => {
                if work.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path:?} failed"));
                }
            }
            "move" | "copy" => {
                let from = s("from").ok_or("move and copy need from")?;
                let v = if s("op") == Some("move") {
                    remove(&mut work, from)?
                } else {
                    work.pointer(from)
                        .cloned()
                        .ok_or_else(|| format!("doc is missing path: {from:?}"))?
                };
                add(&mut work, path, v)?;
            }
            other => return Err(format!("unexpected kind of JSON patch operation: {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_objects_and_deletes_nulls() {
        let mut doc = json!({"spec": {"a": 1, "b": 2, "l": [1, 2]}});
        merge_patch(&mut doc, &json!({"spec": {"a": null, "c": 3, "l": [3]}}));
        assert_eq!(doc, json!({"spec": {"b": 2, "c": 3, "l": [3]}}));
    }

    #[test]
    fn json_patch_applies_all_operations_or_none() {
        let mut doc = json!({"spec": {"hosts": ["a"]}});
        let ok = json!([
            {"op": "add", "path": "/spec/hosts/-", "value": "b"},
            {"op": "replace", "path": "/spec/hosts/0", "value": "c"},
            {"op": "test", "path": "/spec/hosts/1", "value": "b"},
            {"op": "copy", "from": "/spec/hosts", "path": "/spec/copy"},
        ]);
        json_patch(&mut doc, &ok).unwrap();
        assert_eq!(doc, json!({"spec": {"hosts": ["c", "b"], "copy": ["c", "b"]}}));
        let bad = json!([{"op": "remove", "path": "/spec/copy"}, {"op": "remove", "path": "/nope"}]);
        assert!(json_patch(&mut doc, &bad).is_err());
        assert!(
            doc["spec"].get("copy").is_some(),
            "a failed patch changes nothing"
        );
    }
}
