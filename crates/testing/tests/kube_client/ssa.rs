//! Server-side apply through kube-rs.

use kube::api::{Patch, PatchParams};
use registry_sync_testing::kube::{Resource, Verb};
use serde_json::json;

use crate::common::{NS, api, apply, rv, service_entry, setup, spec, status};

#[tokio::test]
async fn applying_a_new_object_creates_it_and_reapplying_the_same_configuration_writes_nothing() {
    let (server, client) = setup().await;
    let config = service_entry("orders", json!({"app": "orders"}), spec());
    let created = apply(&client, "registry-sync", &config)
        .await
        .expect("apply creates");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));

    let again = apply(&client, "registry-sync", &config).await.expect("re-apply");
    assert_eq!(
        rv(&again),
        rv(&created),
        "a no-op apply keeps the resourceVersion"
    );
    assert_eq!(server.resource_version(), rv(&created), "and writes nothing");
    assert_eq!(server.counts().of(Verb::Apply, Resource::ServiceEntry), 2);
    assert_eq!(server.counts().writes(), 2);
}

#[tokio::test]
async fn managed_fields_record_the_applier_in_the_fields_v1_format() {
    let (_server, client) = setup().await;
    let config = service_entry("orders", json!({"app": "orders"}), spec());
    let created = apply(&client, "registry-sync", &config).await.unwrap();
    let managed = created.metadata.managed_fields.expect("managedFields");
    assert_eq!(managed.len(), 1);
    let entry = &managed[0];
    assert_eq!(entry.manager.as_deref(), Some("registry-sync"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.api_version.as_deref(), Some("networking.istio.io/v1"));
    assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
    assert!(entry.time.is_some());
    let fields = &entry.fields_v1.as_ref().expect("fieldsV1").0;
    assert_eq!(
        fields,
        &json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:endpoints": {},
                "f:hosts": {},
                "f:location": {},
                "f:ports": {"k:{\"name\":\"http-8080\"}": {".": {}, "f:name": {}, "f:number": {}, "f:protocol": {}}},
                "f:resolution": {},
            },
        })
    );
}

#[tokio::test]
async fn applying_a_changed_field_updates_the_object_and_a_spec_change_bumps_the_generation() {
    let (_server, client) = setup().await;
    let mut config = service_entry("orders", json!({"app": "orders"}), spec());
    let first = apply(&client, "registry-sync", &config).await.unwrap();

    config["spec"]["endpoints"][0]["address"] = json!("10.0.0.2");
    let second = apply(&client, "registry-sync", &config).await.unwrap();
    assert!(rv(&second) > rv(&first));
    assert_eq!(second.metadata.generation, Some(2));
    assert_eq!(second.data["spec"]["endpoints"][0]["address"], "10.0.0.2");

    config["metadata"]["labels"]["tier"] = json!("backend");
    let third = apply(&client, "registry-sync", &config).await.unwrap();
    assert!(rv(&third) > rv(&second));
    assert_eq!(
        third.metadata.generation,
        Some(2),
        "a label change leaves the generation"
    );
}

#[tokio::test]
async fn a_field_dropped_from_the_applied_configuration_is_removed_unless_another_manager_owns_it() {
    let (_server, client) = setup().await;
    let mut config = service_entry("orders", json!({"app": "orders", "team": "a"}), spec());
    config["spec"]["exportTo"] = json!(["."]);
    apply(&client, "registry-sync", &config).await.unwrap();
    // Another manager applies the same location: shared ownership.
    let other = json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                       "metadata": {"name": "orders"}, "spec": {"location": "MESH_INTERNAL"}});
    apply(&client, "ops-team", &other)
        .await
        .expect("an equal value is no conflict");

    config["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("team");
    config["spec"].as_object_mut().unwrap().remove("location");
    config["spec"].as_object_mut().unwrap().remove("exportTo");
    let after = apply(&client, "registry-sync", &config).await.unwrap();
    assert_eq!(
        after.metadata.labels.unwrap().get("team"),
        None,
        "the dropped label is gone"
    );
    assert_eq!(
        after.data["spec"].get("exportTo"),
        None,
        "the dropped field is gone"
    );
    assert_eq!(
        after.data["spec"]["location"], "MESH_INTERNAL",
        "the co-owned field stays"
    );
}

#[tokio::test]
async fn a_field_owned_by_another_manager_conflicts_with_409_until_the_apply_is_forced() {
    let (server, client) = setup().await;
    let config = service_entry("orders", json!({}), spec());
    apply(&client, "registry-sync", &config).await.unwrap();

    let mut theirs = config.clone();
    theirs["spec"]["hosts"] = json!(["orders.example.com"]);
    theirs["spec"]["location"] = json!("MESH_EXTERNAL");
    let err = status(apply(&client, "kubectl", &theirs).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.starts_with("Apply failed with 2 conflicts"),
        "{}",
        err.message
    );
    let causes = err.details.expect("details").causes;
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, [".spec.hosts", ".spec.location"]);
    assert!(causes.iter().all(|c| c.reason == "FieldManagerConflict"));
    assert!(
        causes[0].message.contains("conflict with \"registry-sync\""),
        "{}",
        causes[0].message
    );
    let stored = server.object(Resource::ServiceEntry, NS, "orders").unwrap();
    assert_eq!(
        stored["spec"]["hosts"],
        json!(["orders.shop.consul"]),
        "a conflict changes nothing"
    );

    let api = api(&client, Resource::ServiceEntry);
    let forced = api
        .patch(
            "orders",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["hosts"], json!(["orders.example.com"]));
    let owners: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:hosts").is_some())
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(owners, ["kubectl"], "force moves ownership");
    // The original manager now conflicts in turn.
    let err = status(apply(&client, "registry-sync", &config).await);
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn two_managers_own_different_ports_of_one_service_entry() {
    let (server, client) = setup().await;
    let mut config = service_entry("orders", json!({}), spec());
    config["spec"].as_object_mut().unwrap().remove("endpoints");
    config["spec"]["resolution"] = json!("DNS");
    apply(&client, "registry-sync", &config).await.unwrap();
    let grpc = json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "orders"},
                      "spec": {"ports": [{"name": "grpc-9090", "number": 9090, "protocol": "GRPC"}]}});
    apply(&client, "ops-team", &grpc)
        .await
        .expect("another port is no conflict");
    config["spec"]["ports"][0]["protocol"] = json!("HTTP2");
    apply(&client, "registry-sync", &config).await.unwrap();
    let stored = server.object(Resource::ServiceEntry, NS, "orders").unwrap();
    let names: Vec<&str> = stored["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http-8080", "grpc-9090"]);
    assert_eq!(stored["spec"]["ports"][0]["protocol"], "HTTP2");
}

#[tokio::test]
async fn an_applied_configuration_with_managed_fields_or_a_wrong_name_is_a_bad_request() {
    let (_server, client) = setup().await;
    let mut config = service_entry("orders", json!({}), spec());
    config["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    let err = status(apply(&client, "registry-sync", &config).await);
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    let api = api(&client, Resource::ServiceEntry);
    let config = service_entry("orders", json!({}), spec());
    let err = status(
        api.patch("payments", &PatchParams::apply("m"), &Patch::Apply(&config))
            .await,
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("does not match the name on the URL"),
        "{}",
        err.message
    );
}
