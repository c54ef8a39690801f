//! What a failed write says: the verb, the object, the API server's error and what to
//! do about it.

use super::Write;
use crate::pacing::status_code;

pub(super) enum WriteError {
    NotLeader,
    Api(kube::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NotLeader => f.write_str("leadership lost; writes stopped"),
            WriteError::Api(e) => e.fmt(f),
        }
    }
}

pub(super) fn describe(write: &Write, error: &WriteError) -> String {
    let (verb, key) = match write {
        Write::Create(o) | Write::Update(o, _) => ("apply", o.key()),
        Write::Delete(k, _) => ("delete", k.clone()),
    };
    let hint = match error {
        WriteError::NotLeader => "another replica leads now",
        WriteError::Api(e) if e.to_string().contains("admission webhook") => {
            "an admission webhook refused the object (its reason is above); the other objects are written, and this one is tried again on the next pass"
        }
        WriteError::Api(kube::Error::Api(status)) if crate::pacing::lacks_schema_field(status) => {
            "the Istio CRDs in the cluster do not declare a field of this object: they are older than the objects registry-sync writes; upgrade the Istio CRDs"
        }
        WriteError::Api(e) => match status_code(e) {
            Some(403) => "grant registry-sync this verb on this resource in this namespace (RBAC)",
            Some(404) => "does the namespace exist, and are the Istio CRDs installed?",
            Some(409) => "the object changed meanwhile; it is retried on the next pass",
            Some(422) => "the API server refused the object; this is a registry-sync bug worth reporting",
            Some(429) | Some(500..=599) => "the API server is overloaded or failing; retried with backoff",
            _ => "check the connection to the API server",
        },
    };
    format!("{verb} {key} failed: {error}; {hint}")
}
