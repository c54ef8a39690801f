use std::collections::BTreeMap;

use litemap::LiteMap;
use serde::Deserialize;

use crate::object::{registry_of_source, spec_hash, split_sources};
use crate::{
    CONTENT_HASH_ANNOTATION, HEALTH_CHECKS_ANNOTATION, HEALTHY_CONDITION, IstioObject, Kind, ObjectKey,
    SOURCES_ANNOTATION, SPEC_HASH_ANNOTATION, Spec,
};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot render {key} as YAML: {message}")]
    Yaml { key: ObjectKey, message: String },
}

/// One object as a YAML document (without the `---` separator).
pub fn render_object(object: &IstioObject) -> Result<String, RenderError> {
    serde_saphyr::to_string(object).map_err(|e| RenderError::Yaml {
        key: object.key(),
        message: e.to_string(),
    })
}

/// Objects as one multi-document YAML stream, in the order given.
pub fn render_documents<'a>(
    objects: impl IntoIterator<Item = &'a IstioObject>,
) -> Result<String, RenderError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&render_object(object)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// What a sink needs to know of an object it finds: who it is, whether it is ours, and
/// which content it carries. Everything else in the document is ignored, so a file
/// with extra fields or a newer schema still reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldObject {
    pub key: ObjectKey,
    pub labels: LiteMap<String, String>,
    pub content_hash: Option<String>,
    /// The registry services it was made from (`registry:service`), from its
    /// [`SOURCES_ANNOTATION`]: a merged object may only be rewritten once every one of
    /// them has been heard from, and this is how the plan knows them after a restart.
    pub sources: Vec<String>,
    /// Endpoints it carries (inline endpoints of a ServiceEntry, 1 for a WorkloadEntry),
    /// so the mass-change guard can see a registry's endpoints vanish, not just objects.
    pub endpoints: usize,
    /// A ServiceEntry's first host and first address, so an allocated address is kept
    /// across restarts.
    pub vip: Option<(String, String)>,
    /// A WorkloadEntry's `Healthy` condition, where its status has one (`None` for
    /// sinks without status, and for objects without the condition).
    pub healthy: Option<bool>,
}

impl HeldObject {
    /// What a sink holds right after writing `object`.
    pub fn written(object: &IstioObject) -> HeldObject {
        HeldObject {
            key: object.key(),
            labels: object.metadata.labels.clone(),
            content_hash: Some(object.content_hash().to_string()),
            sources: object.sources().map(str::to_string).collect(),
            endpoints: object.endpoint_count(),
            vip: object.vip(),
            healthy: None,
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The registries named by [`HeldObject::sources`].
    pub fn source_registries(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| registry_of_source(s))
    }
}

#[derive(Deserialize)]
struct LooseObject {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    metadata: LooseMeta,
    #[serde(default)]
    spec: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LooseMeta {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: LiteMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Reads a single YAML document back into a [`HeldObject`]. Returns `None` for anything
/// that is not an Istio ServiceEntry or WorkloadEntry or does not parse: such a document
/// is not something registry-sync wrote, so it is left alone.
pub fn parse_held(text: &str) -> Option<HeldObject> {
    held_from_loose(serde_saphyr::from_str(text).ok()?)
}

/// [`parse_held`] for an object an API server returned as JSON.
pub fn held_from_json(value: serde_json::Value) -> Option<HeldObject> {
    held_from_loose(serde_json::from_value(value).ok()?)
}

fn held_from_loose(loose: LooseObject) -> Option<HeldObject> {
    if !loose.api_version.starts_with(concat!("networking.istio.io", "/")) {
        return None;
    }
    let kind = match loose.kind.as_str() {
        "ServiceEntry" => Kind::ServiceEntry,
        "WorkloadEntry" => Kind::WorkloadEntry,
        _ => return None,
    };
    let mut meta = loose.metadata;
    let healthy = loose.status.as_ref().and_then(healthy_condition);
    let checked = meta
        .annotations
        .get(HEALTH_CHECKS_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let endpoints = match kind {
        // As istiod counts it: with health checks on, only a `Healthy: True` serves.
        Kind::WorkloadEntry if checked => usize::from(healthy == Some(true)),
        Kind::WorkloadEntry => 1,
        Kind::ServiceEntry => loose
            .spec
            .as_ref()
            .and_then(|spec| spec.get("endpoints"))
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len),
    };
    let vip = loose
        .spec
        .as_ref()
        .filter(|_| kind == Kind::ServiceEntry)
        .and_then(|spec| {
            let first = |field: &str| spec.get(field)?.as_array()?.first()?.as_str().map(str::to_string);
            Some((first("hosts")?, first("addresses")?))
        });
    let sources = meta
        .annotations
        .get(SOURCES_ANNOTATION)
        .map(|v| split_sources(v).map(str::to_string).collect())
        .unwrap_or_default();
    let stamped = meta.annotations.remove(CONTENT_HASH_ANNOTATION);
    let actual_spec = loose.spec.and_then(|spec| spec_hash_of(kind, spec));
    let spec_intact =
        actual_spec.is_some() && meta.annotations.get(SPEC_HASH_ANNOTATION) == actual_spec.as_ref();
    Some(HeldObject {
        key: ObjectKey {
            kind,
            namespace: meta.namespace,
            name: meta.name,
        },
        // A spec edited by hand no longer matches its stamped spec hash: the object then
        // holds no content hash, differs from the desired one and is written back.
        content_hash: stamped.filter(|_| spec_intact),
        labels: meta.labels,
        sources,
        endpoints,
        vip,
        healthy,
    })
}

/// The `Healthy` condition of a status, as istiod reads it.
fn healthy_condition(status: &serde_json::Value) -> Option<bool> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(serde_json::Value::as_str) == Some(HEALTHY_CONDITION))
        .and_then(|c| c.get("status")?.as_str())
        .map(|s| s == "True")
}

/// Recomputes the spec hash of a document as registry-sync would have stamped it.
/// `None` when the spec is not one registry-sync can have written.
fn spec_hash_of(kind: Kind, spec: serde_json::Value) -> Option<String> {
    let spec = match kind {
        Kind::ServiceEntry => Spec::ServiceEntry(serde_json::from_value(spec).ok()?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(serde_json::from_value(spec).ok()?),
    };
    Some(spec_hash(&spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Location, ObjectMeta, Resolution, ServiceEntrySpec, ServicePort, Spec};

    fn sample() -> IstioObject {
        let mut labels = LiteMap::new();
        labels.insert(crate::MANAGED_BY_LABEL.to_string(), "registry-sync".to_string());
        IstioObject::new(
            ObjectMeta {
                name: "legacy.orders".into(),
                namespace: "mesh".into(),
                labels,
                ..Default::default()
            },
            Spec::ServiceEntry(ServiceEntrySpec {
                addresses: Vec::new(),
                hosts: vec!["orders.legacy".into()],
                location: Location::MeshInternal,
                resolution: Resolution::Static,
                ports: vec![ServicePort {
                    number: 8080,
                    protocol: "HTTP".into(),
                    name: "http-8080".into(),
                }],
                endpoints: vec![Endpoint {
                    address: "10.0.0.1".into(),
                    ports: std::sync::Arc::new([("http-8080".to_string(), 8080)].into_iter().collect()),
                    ..Default::default()
                }],
                workload_selector: None,
                export_to: Vec::new(),
            }),
        )
    }

    #[test]
    fn rendered_documents_read_back_as_the_same_held_object() {
        let object = sample();
        let text = render_object(&object).unwrap();
        assert!(text.contains("apiVersion: networking.istio.io/v1"), "{text}");
        assert!(text.contains("resolution: STATIC"), "{text}");
        let held = parse_held(&text).unwrap();
        assert_eq!(held, HeldObject::written(&object));
        assert_eq!(held.endpoints, 1);
        assert_eq!(held.key, object.key());
        assert_eq!(held.content_hash.as_deref(), Some(object.content_hash()));
        assert_eq!(held.label(crate::MANAGED_BY_LABEL), Some("registry-sync"));
    }

    #[test]
    fn a_hand_edited_document_holds_no_valid_hash_so_it_is_written_back() {
        let text = render_object(&sample()).unwrap();
        let edited = text.replace("10.0.0.1", "10.6.6.6");
        assert_ne!(text, edited);
        assert_eq!(parse_held(&edited).unwrap().content_hash, None);
        // A label another controller adds is not ours to correct.
        let relabelled = text.replace("registry-sync\n", "registry-sync\n    extra: x\n");
        assert_ne!(text, relabelled);
        assert_eq!(
            parse_held(&relabelled).unwrap().content_hash.as_deref(),
            Some(sample().content_hash())
        );
    }

    #[test]
    fn documents_that_are_not_istio_objects_are_not_held() {
        assert_eq!(
            parse_held("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
            None
        );
        assert_eq!(parse_held("not: [yaml"), None);
        assert_eq!(parse_held(""), None);
    }

    #[test]
    fn multi_document_output_separates_each_object() {
        let a = sample();
        let text = render_documents([&a, &a]).unwrap();
        assert_eq!(text.matches("---\n").count(), 2);
    }
}
