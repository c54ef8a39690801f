//! The structural schema of each served kind, written from the Istio CRDs' OpenAPI
//! (`spec` of `networking.istio.io/v1` ServiceEntry and WorkloadEntry) and from the
//! Kubernetes API reference (Lease, object metadata).
//!
//! Checking an object against it does what the API server's decoding and OpenAPI
//! validation do: unknown fields are pruned (reported as warnings, or refused under
//! `fieldValidation=Strict`), `null`s are dropped, and wrong types, missing required
//! fields and `maxItems`/`minItems`/`maxLength`/`maxProperties`/`minimum`/`maximum`/`enum`
//! violations become `422 Invalid` causes. The CEL rules (`x-kubernetes-validations`) live
//! in [`crate::kube::validate`].

use serde_json::Value;

use crate::kube::resource::Resource;
use crate::kube::status::Cause;

/// A node of a structural schema.
#[derive(Debug)]
pub(crate) enum Schema {
    Str {
        max_len: Option<usize>,
        allowed: &'static [&'static str],
    },
    Int {
        min: i64,
        max: i64,
    },
    Obj {
        fields: &'static [(&'static str, Schema)],
        required: &'static [&'static str],
    },
    /// An object with `additionalProperties`.
    Map {
        values: &'static Schema,
        max_props: Option<usize>,
    },
    List {
        items: &'static Schema,
        min_items: usize,
        max_items: Option<usize>,
    },
    /// Anything (`x-kubernetes-preserve-unknown-fields`, or not typed by the stand-in).
    Any,
}

const STR: Schema = Schema::Str {
    max_len: None,
    allowed: &[],
};
const fn str_max(n: usize) -> Schema {
    Schema::Str {
        max_len: Some(n),
        allowed: &[],
    }
}
const UINT32: Schema = Schema::Int {
    min: 0,
    max: 4_294_967_295,
};
const INT32: Schema = Schema::Int {
    min: i32::MIN as i64,
    max: i32::MAX as i64,
};
const INT64: Schema = Schema::Int {
    min: i64::MIN,
    max: i64::MAX,
};
const STR_MAP: Schema = Schema::Map {
    values: &STR,
    max_props: None,
};
const STR_LIST: Schema = Schema::List {
    items: &STR,
    min_items: 0,
    max_items: None,
};
const ANY_LIST: Schema = Schema::List {
    items: &Schema::Any,
    min_items: 0,
    max_items: None,
};

const METADATA: Schema = Schema::Obj {
    fields: &[
        ("annotations", STR_MAP),
        ("creationTimestamp", STR),
        ("deletionGracePeriodSeconds", INT64),
        ("deletionTimestamp", STR),
        ("finalizers", STR_LIST),
        ("generateName", STR),
        ("generation", INT64),
        ("labels", STR_MAP),
        ("managedFields", ANY_LIST),
        ("name", STR),
        ("namespace", STR),
        ("ownerReferences", ANY_LIST),
        ("resourceVersion", STR),
        ("selfLink", STR),
        ("uid", STR),
    ],
    required: &[],
};

/// Fields shared by a ServiceEntry endpoint and a WorkloadEntry spec.
const WORKLOAD_FIELDS: &[(&str, Schema)] = &[
    ("address", str_max(256)),
    (
        "labels",
        Schema::Map {
            values: &STR,
            max_props: Some(256),
        },
    ),
    ("locality", str_max(2048)),
    ("network", str_max(2048)),
    (
        "ports",
        Schema::Map {
            values: &UINT32,
            max_props: Some(128),
        },
    ),
    ("serviceAccount", str_max(253)),
    ("weight", UINT32),
];

const SERVICE_PORT: Schema = Schema::Obj {
    fields: &[
        ("name", str_max(256)),
        ("number", UINT32),
        ("protocol", str_max(256)),
        ("targetPort", UINT32),
    ],
    required: &["number", "name"],
};

pub(crate) const LOCATIONS: &[&str] = &["MESH_EXTERNAL", "MESH_INTERNAL"];
pub(crate) const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"];

pub(crate) const SERVICE_ENTRY_SPEC: Schema = Schema::Obj {
    fields: &[
        (
            "addresses",
            Schema::List {
                items: &str_max(64),
                min_items: 0,
                max_items: Some(256),
            },
        ),
        (
            "endpoints",
            Schema::List {
                items: &Schema::Obj {
                    fields: WORKLOAD_FIELDS,
                    required: &[],
                },
                min_items: 0,
                max_items: Some(4096),
            },
        ),
        ("exportTo", STR_LIST),
        (
            "hosts",
            Schema::List {
                items: &STR,
                min_items: 1,
                max_items: Some(256),
            },
        ),
        (
            "location",
            Schema::Str {
                max_len: None,
                allowed: LOCATIONS,
            },
        ),
        (
            "ports",
            Schema::List {
                items: &SERVICE_PORT,
                min_items: 0,
                max_items: Some(256),
            },
        ),
        (
            "resolution",
            Schema::Str {
                max_len: None,
                allowed: RESOLUTIONS,
            },
        ),
        ("subjectAltNames", STR_LIST),
        (
            "workloadSelector",
            Schema::Obj {
                fields: &[(
                    "labels",
                    Schema::Map {
                        values: &str_max(63),
                        max_props: Some(256),
                    },
                )],
                required: &[],
            },
        ),
    ],
    required: &["hosts"],
};

pub(crate) const WORKLOAD_ENTRY_SPEC: Schema = Schema::Obj {
    fields: WORKLOAD_FIELDS,
    required: &[],
};

const LEASE_SPEC: Schema = Schema::Obj {
    fields: &[
        ("acquireTime", STR),
        ("holderIdentity", STR),
        ("leaseDurationSeconds", INT32),
        ("leaseTransitions", INT32),
        ("preferredHolder", STR),
        ("renewTime", STR),
        ("strategy", STR),
    ],
    required: &[],
};

const SERVICE_ENTRY: Schema = Schema::Obj {
    fields: &[
        ("apiVersion", STR),
        ("kind", STR),
        ("metadata", METADATA),
        ("spec", SERVICE_ENTRY_SPEC),
        ("status", Schema::Any),
    ],
    required: &["spec"],
};
const WORKLOAD_ENTRY: Schema = Schema::Obj {
    fields: &[
        ("apiVersion", STR),
        ("kind", STR),
        ("metadata", METADATA),
        ("spec", WORKLOAD_ENTRY_SPEC),
        ("status", Schema::Any),
    ],
    required: &["spec"],
};
const LEASE: Schema = Schema::Obj {
    fields: &[
        ("apiVersion", STR),
        ("kind", STR),
        ("metadata", METADATA),
        ("spec", LEASE_SPEC),
    ],
    required: &[],
};

/// The whole-object schema of a resource.
pub(crate) fn object_schema(resource: Resource) -> &'static Schema {
    match resource {
        Resource::ServiceEntry => &SERVICE_ENTRY,
        Resource::WorkloadEntry => &WORKLOAD_ENTRY,
        Resource::Lease => &LEASE,
    }
}

/// The outcome of checking an object against its schema.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub errors: Vec<Cause>,
    /// Paths of pruned unknown fields, e.g. `spec.foo`.
    pub unknown: Vec<String>,
}

/// Prunes `value` in place and reports type and limit violations. `required` is skipped
/// for partial objects (a server-side apply configuration).
pub(crate) fn check(resource: Resource, value: &mut Value, check_required: bool) -> Checked {
    let mut out = Checked::default();
    walk(object_schema(resource), value, "", check_required, &mut out);
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn walk(schema: &Schema, value: &mut Value, path: &str, required: bool, out: &mut Checked) {
    match schema {
        Schema::Any => {}
        Schema::Str { max_len, allowed } => match value {
            Value::String(s) => {
                if let Some(max) = max_len
                    && s.len() > *max
                {
                    out.errors.push(Cause::too_long(path, *max));
                }
                if !allowed.is_empty() && !allowed.contains(&s.as_str()) {
                    out.errors.push(Cause::not_supported(path, value, allowed));
                }
            }
            other => out.errors.push(Cause::type_invalid(path, other, "string")),
        },
        Schema::Int { min, max } => {
            let n = match value {
                Value::Number(n) if n.is_i64() => n.as_i64().map(i128::from),
                Value::Number(n) if n.is_u64() => n.as_u64().map(i128::from),
                _ => None,
            };
            match n {
                None => out.errors.push(Cause::type_invalid(path, value, "integer")),
                Some(n) if n < i128::from(*min) => out.errors.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body should be greater than or equal to {min}"),
                )),
                Some(n) if n > i128::from(*max) => out.errors.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body should be less than or equal to {max}"),
                )),
                Some(_) => {}
            }
        }
        Schema::Obj {
            fields,
            required: req,
        } => {
            let Value::Object(map) = value else {
                out.errors.push(Cause::type_invalid(path, value, "object"));
                return;
            };
            map.retain(|key, v| {
                if v.is_null() {
                    return false;
                }
                let known = fields.iter().any(|(name, _)| name == key);
                if !known {
                    out.unknown.push(join(path, key));
                }
                known
            });
            for (name, field_schema) in fields.iter() {
                if let Some(v) = map.get_mut(*name) {
                    walk(field_schema, v, &join(path, name), required, out);
                }
            }
            if required {
                for name in req.iter().filter(|name| !map.contains_key(**name)) {
                    out.errors.push(Cause::required(join(path, name)));
                }
            }
        }
        Schema::Map { values, max_props } => {
            let Value::Object(map) = value else {
                out.errors.push(Cause::type_invalid(path, value, "object"));
                return;
            };
            if let Some(max) = max_props
                && map.len() > *max
            {
                out.errors.push(Cause::too_many(path, map.len(), *max));
            }
            for (key, v) in map.iter_mut() {
                walk(values, v, &join(path, key), required, out);
            }
        }
        Schema::List {
            items,
            min_items,
            max_items,
        } => {
            let Value::Array(list) = value else {
                out.errors.push(Cause::type_invalid(path, value, "array"));
                return;
            };
            if let Some(max) = max_items
                && list.len() > *max
            {
                out.errors.push(Cause::too_many(path, list.len(), *max));
            }
            if list.len() < *min_items {
                out.errors.push(Cause::invalid(
                    path,
                    &Value::from(list.len()),
                    format!("{path} in body should have at least {min_items} items"),
                ));
            }
            for (i, item) in list.iter_mut().enumerate() {
                walk(items, item, &format!("{path}[{i}]"), required, out);
            }
        }
    }
}

impl Schema {
    /// The JSON Schema type name, for comparisons with an OpenAPI schema.
    #[cfg(test)]
    pub(crate) fn type_name(&self) -> Option<&'static str> {
        match self {
            Schema::Str { .. } => Some("string"),
            Schema::Int { .. } => Some("integer"),
            Schema::Obj { .. } | Schema::Map { .. } => Some("object"),
            Schema::List { .. } => Some("array"),
            Schema::Any => None,
        }
    }
}
