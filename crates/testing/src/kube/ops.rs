//! The write operations — create, replace, patch, server-side apply, delete — and list,
//! with the API server's preconditions, validation order and status codes.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::kube::apply::{self, Entry};
use crate::kube::resource::Resource;
use crate::kube::schema;
use crate::kube::selector::Selectors;
use crate::kube::status::{ApiError, success_status};
use crate::kube::store::{Store, ns_name, rv_of};
use crate::kube::util::{new_uid, now_rfc3339, random_suffix};
use crate::kube::validate::validate;

/// Query options shared by writes.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteOpts {
    /// `fieldManager`, else the User-Agent up to its first `/`.
    pub manager: String,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: an unknown field is an error, not a warning.
    pub strict: bool,
    pub force: bool,
}

/// A successful write: the HTTP code, the body and `Warning` headers.
#[derive(Debug)]
pub(crate) struct Written {
    pub code: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

/// Server-managed metadata a client cannot set.
const SERVER_METADATA: &[&str] = &[
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "generation",
    "managedFields",
    "resourceVersion",
    "selfLink",
    "uid",
];

fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Checks a body's type, apiVersion, kind, namespace and (for named requests) name, then
/// stamps namespace and name from the URL.
fn incoming(
    resource: Resource,
    ns: &str,
    url_name: Option<&str>,
    mut body: Value,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON or YAML object",
        ));
    }
    for (field, expected) in [("apiVersion", resource.api_version()), ("kind", resource.kind())] {
        match body.get(field).and_then(Value::as_str) {
            None | Some("") => {
                return Err(ApiError::bad_request(format!(
                    "Object '{field}' is missing in the request body"
                )));
            }
            Some(got) if got != expected => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({got}) does not match the expected {field} ({expected})"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(got) = meta_str(&body, "namespace")
        && got != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(url_name) = url_name {
        if let Some(got) = meta_str(&body, "name")
            && got != url_name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({got}) does not match the name on the URL ({url_name})"
            )));
        }
        meta(&mut body).insert("name".into(), url_name.into());
    }
    meta(&mut body).insert("namespace".into(), ns.into());
    Ok(body)
}

/// Drops what a client may not write: server metadata, and the status of a kind with a
/// status subresource.
fn strip_server_fields(resource: Resource, obj: &mut Value) {
    let m = meta(obj);
    for f in SERVER_METADATA {
        m.remove(*f);
    }
    if resource.has_status_subresource()
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
}

/// Copies server metadata (and a subresource status) from the stored object.
fn carry_server_fields(resource: Resource, old: &Value, new: &mut Value) {
    for f in SERVER_METADATA.iter().filter(|f| **f != "managedFields") {
        if let Some(v) = old.get("metadata").and_then(|m| m.get(*f)) {
            meta(new).insert((*f).to_string(), v.clone());
        }
    }
    if resource.has_status_subresource()
        && let Some(status) = old.get("status")
    {
        new["status"] = status.clone();
    }
}

fn stamp_new(obj: &mut Value) {
    let m = meta(obj);
    m.insert("uid".into(), new_uid().into());
    m.insert("creationTimestamp".into(), now_rfc3339().into());
    m.insert("generation".into(), 1.into());
}

/// Schema pruning and checks, then the validation rules. Returns the warnings.
fn check_object(resource: Resource, obj: &mut Value, strict: bool) -> Result<Vec<String>, ApiError> {
    let checked = schema::check(resource, obj, true);
    let warnings = unknown_fields(resource, &checked.unknown, strict)?;
    let mut errors = checked.errors;
    let cel = errors.is_empty();
    errors.extend(validate(resource, obj, cel));
    if errors.is_empty() {
        Ok(warnings)
    } else {
        let (_, name) = ns_name(obj);
        Err(ApiError::invalid(resource, &name, &errors))
    }
}

fn unknown_fields(resource: Resource, unknown: &[String], strict: bool) -> Result<Vec<String>, ApiError> {
    let warnings: Vec<String> = unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
    if strict && !warnings.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            warnings.join(", "),
            kind = resource.kind(),
            version = resource.version(),
        )));
    }
    Ok(warnings)
}

/// The object without the `time` of its managedFields entries, for no-op detection.
fn without_times(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(list) = v
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for e in list.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("time");
        }
    }
    v
}

/// Whether anything but metadata and status differs: that bumps `metadata.generation`.
fn spec_changed(a: &Value, b: &Value) -> bool {
    let rest = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    rest(a) != rest(b)
}

/// Commits a write: stores the managed fields, detects a no-op (no new resourceVersion,
/// as the API server does), bumps the generation, completes a pending deletion whose
/// finalizers are gone, and records the event.
fn finish(
    store: &mut Store,
    resource: Resource,
    old: Option<Arc<Value>>,
    mut new: Value,
    entries: &[Entry],
    opts: &WriteOpts,
    warnings: Vec<String>,
) -> Result<Written, ApiError> {
    apply::store_entries(&mut new, entries);
    let code = if old.is_some() { 200 } else { 201 };
    if let Some(old) = &old {
        meta(&mut new).insert("resourceVersion".into(), rv_of(old).to_string().into());
        if without_times(old) == without_times(&new) {
            return Ok(Written {
                code,
                body: (**old).clone(),
                warnings,
            });
        }
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bump = i64::from(spec_changed(old, &new));
        meta(&mut new).insert("generation".into(), (generation + bump).into());
        let finalizers_gone = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers_gone {
            if opts.dry_run {
                return Ok(Written {
                    code,
                    body: new,
                    warnings,
                });
            }
            let (ns, name) = ns_name(&new);
            let body = store
                .remove(resource, &ns, &name)
                .map(|o| (*o).clone())
                .unwrap_or(new);
            return Ok(Written { code, body, warnings });
        }
    }
    if opts.dry_run {
        return Ok(Written {
            code,
            body: new,
            warnings,
        });
    }
    let stored = store.put(resource, new, old);
    Ok(Written {
        code,
        body: (*stored).clone(),
        warnings,
    })
}

pub(crate) fn create(
    store: &mut Store,
    resource: Resource,
    ns: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    let mut obj = incoming(resource, ns, None, body)?;
    if meta_str(&obj, "resourceVersion").is_some() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if meta_str(&obj, "name").is_none()
        && let Some(prefix) = meta_str(&obj, "generateName").map(str::to_string)
    {
        meta(&mut obj).insert("name".into(), format!("{prefix}{}", random_suffix()).into());
    }
    strip_server_fields(resource, &mut obj);
    let warnings = check_object(resource, &mut obj, opts.strict)?;
    let (_, name) = ns_name(&obj);
    if store.get(resource, ns, &name).is_some() {
        return Err(ApiError::already_exists(resource, &name));
    }
    stamp_new(&mut obj);
    let mut entries = Vec::new();
    apply::record_update(resource, &name, &mut entries, None, &obj, &opts.manager)?;
    finish(store, resource, None, obj, &entries, opts, warnings)
}

fn existing(store: &Store, resource: Resource, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
    store
        .get(resource, ns, name)
        .ok_or_else(|| ApiError::not_found(resource, name))
}

/// Replace (PUT).
pub(crate) fn update(
    store: &mut Store,
    resource: Resource,
    ns: &str,
    name: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    let mut obj = incoming(resource, ns, Some(name), body)?;
    let old = existing(store, resource, ns, name)?;
    match meta_str(&obj, "resourceVersion") {
        None if !resource.allows_unconditional_update() => {
            let cause = crate::kube::status::Cause::invalid(
                "metadata.resourceVersion",
                &json!(0),
                "must be specified for an update",
            );
            return Err(ApiError::invalid(resource, name, &[cause]));
        }
        Some(rv) if rv != rv_of(&old).to_string() => return Err(ApiError::modified(resource, name)),
        _ => {}
    }
    if let (Some(uid), Some(live)) = (meta_str(&obj, "uid"), meta_str(&old, "uid"))
        && uid != live
    {
        let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {live}");
        return Err(ApiError::conflict(resource, name, &why));
    }
    strip_server_fields(resource, &mut obj);
    carry_server_fields(resource, &old, &mut obj);
    let warnings = check_object(resource, &mut obj, opts.strict)?;
    let mut entries = apply::entries(&old);
    apply::record_update(resource, name, &mut entries, Some(&old), &obj, &opts.manager)?;
    finish(store, resource, Some(old), obj, &entries, opts, warnings)
}

/// The kinds of PATCH besides server-side apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
}

/// The stored object with `patch` applied; a `metadata.resourceVersion` the patch sets
/// is a precondition on the stored one.
fn patched(
    resource: Resource,
    name: &str,
    old: &Value,
    kind: PatchKind,
    patch: &Value,
) -> Result<Value, ApiError> {
    let mut obj = old.clone();
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            crate::kube::patch::merge_patch(&mut obj, patch);
        }
        PatchKind::Json => crate::kube::patch::json_patch(&mut obj, patch).map_err(ApiError::bad_request)?,
    }
    if let Some(rv) = meta_str(&obj, "resourceVersion")
        && rv != rv_of(old).to_string()
    {
        return Err(ApiError::modified(resource, name));
    }
    Ok(obj)
}

/// Merge, strategic-merge (Lease only: no lists, so it equals a merge patch) and JSON patch.
pub(crate) fn patch(
    store: &mut Store,
    resource: Resource,
    ns: &str,
    name: &str,
    kind: PatchKind,
    patch: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    let old = existing(store, resource, ns, name)?;
    let mut obj = patched(resource, name, &old, kind, &patch)?;
    let m = meta(&mut obj);
    m.insert("name".into(), name.into());
    m.insert("namespace".into(), ns.into());
    strip_server_fields(resource, &mut obj);
    carry_server_fields(resource, &old, &mut obj);
    let warnings = check_object(resource, &mut obj, opts.strict)?;
    let mut entries = apply::entries(&old);
    apply::record_update(resource, name, &mut entries, Some(&old), &obj, &opts.manager)?;
    finish(store, resource, Some(old), obj, &entries, opts, warnings)
}

/// A write to the status subresource (merge or JSON patch): only `status` changes, the
/// rest of the object is the stored one, and the generation stays (a status is not a
/// spec change). `metadata.resourceVersion` in the patch is a precondition, as on the
/// main resource.
pub(crate) fn patch_status(
    store: &mut Store,
    resource: Resource,
    ns: &str,
    name: &str,
    kind: PatchKind,
    patch: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    if !resource.has_status_subresource() {
        return Err(ApiError::path_not_found());
    }
    let old = existing(store, resource, ns, name)?;
    let patched = patched(resource, name, &old, kind, &patch)?;
    let mut obj = (*old).clone();
    match patched.get("status") {
        Some(status) if !status.is_null() => obj["status"] = status.clone(),
        _ => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }
    let entries = apply::entries(&old);
    finish(store, resource, Some(old), obj, &entries, opts, Vec::new())
}

/// Server-side apply (PATCH with `application/apply-patch+yaml`).
pub(crate) fn server_side_apply(
    store: &mut Store,
    resource: Resource,
    ns: &str,
    name: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    if opts.manager.is_empty() {
        return Err(ApiError::invalid_options(
            "fieldManager: Required value: is required for apply patch",
        ));
    }
    let mut applied = incoming(resource, ns, Some(name), body)?;
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let old = store.get(resource, ns, name);
    if let Some(rv) = meta_str(&applied, "resourceVersion")
        && old.as_ref().is_none_or(|o| rv != rv_of(o).to_string())
    {
        return Err(ApiError::modified(resource, name));
    }
    strip_server_fields(resource, &mut applied);
    let checked = schema::check(resource, &mut applied, false);
    if let Some(first) = checked.unknown.first() {
        return Err(ApiError::undeclared_field(resource, name, first));
    }
    let mut warnings = Vec::new();
    if !checked.errors.is_empty() {
        return Err(ApiError::invalid(resource, name, &checked.errors));
    }
    // The namespace and name come from the URL; they are identity, not owned fields.
    let (mut merged, entries) = apply::apply(
        resource,
        name,
        old.as_deref(),
        &applied,
        &opts.manager,
        opts.force,
    )?;
    match &old {
        Some(old) => carry_server_fields(resource, old, &mut merged),
        None => stamp_new(&mut merged),
    }
    warnings.extend(check_object(resource, &mut merged, opts.strict)?);
    finish(store, resource, old, merged, &entries, opts, warnings)
}

/// Delete, honouring `preconditions` and finalizers.
pub(crate) fn delete(
    store: &mut Store,
    resource: Resource,
    ns: &str,
    name: &str,
    options: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let old = existing(store, resource, ns, name)?;
    let live_uid = meta_str(&old, "uid").unwrap_or_default().to_string();
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str)
        && uid != live_uid
    {
        let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {live_uid}");
        return Err(ApiError::conflict(resource, name, &why));
    }
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        && rv != rv_of(&old).to_string()
    {
        let why = format!(
            "Precondition failed: the ResourceVersion in the precondition ({rv}) does not match the \
             ResourceVersion in record ({}). The object might have been modified",
            rv_of(&old)
        );
        return Err(ApiError::conflict(resource, name, &why));
    }
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if old.pointer("/metadata/deletionTimestamp").is_some() || dry_run {
            return Ok((*old).clone());
        }
        let mut marked = (*old).clone();
        let m = meta(&mut marked);
        m.insert("deletionTimestamp".into(), now_rfc3339().into());
        m.insert("deletionGracePeriodSeconds".into(), 0.into());
        return Ok((*store.put(resource, marked, Some(old))).clone());
    }
    let last = if dry_run {
        old
    } else {
        store.remove(resource, ns, name).unwrap_or(old)
    };
    if resource.delete_returns_object() {
        Ok((*last).clone())
    } else {
        Ok(success_status(resource, name, &live_uid))
    }
}

/// A list page: `(items, resourceVersion, continue token, remaining item count)`.
pub(crate) type Page = (Vec<Value>, u64, Option<String>, usize);

/// List with selectors and `limit`/`continue` paging. A continue token is
/// `<resourceVersion>:<namespace>:<name>` of the last item returned.
pub(crate) fn list(
    store: &Store,
    resource: Resource,
    ns: Option<&str>,
    selectors: &Selectors,
    limit: Option<usize>,
    continue_token: Option<&str>,
) -> Result<Page, ApiError> {
    let (rv, after) = match continue_token.filter(|t| !t.is_empty()) {
        None => (store.rv(), None),
        Some(token) => {
            let mut parts = token.splitn(3, ':');
            let rv = parts.next().and_then(|r| r.parse::<u64>().ok());
            let (Some(rv), Some(ns), Some(name)) = (rv, parts.next(), parts.next()) else {
                return Err(ApiError::bad_request("continue key is not valid"));
            };
            if rv < store.floor() {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ));
            }
            (rv, Some((ns.to_string(), name.to_string())))
        }
    };
    let matching = store
        .list(resource, ns)
        .filter(|o| after.as_ref().is_none_or(|a| ns_name(o) > *a) && selectors.matches(o));
    let mut items: Vec<Value> = Vec::new();
    let mut remaining = 0;
    for obj in matching {
        if limit.is_some_and(|l| l > 0 && items.len() >= l) {
            remaining += 1;
        } else {
            items.push((**obj).clone());
        }
    }
    let token = (remaining > 0).then(|| {
        let (ns, name) = items.last().map(ns_name).unwrap_or_default();
        format!("{rv}:{ns}:{name}")
    });
    Ok((items, rv, token, remaining))
}
