//! Create, get, replace, patch, delete and list through kube-rs.

use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::discovery::Discovery;
use registry_sync_testing::kube::{Resource, Verb};
use serde_json::json;

use crate::common::{NS, api, create_se, rv, setup, status};

#[tokio::test]
async fn a_created_object_gets_server_fields_and_a_second_create_is_already_exists() {
    let (server, client) = setup().await;
    let created = create_se(&client, "orders", json!({"app": "orders"})).await;
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let got = api(&client, Resource::ServiceEntry).get("orders").await.unwrap();
    assert_eq!(got.metadata.resource_version, created.metadata.resource_version);
    let stored = server.object(Resource::ServiceEntry, NS, "orders").unwrap();
    assert_eq!(stored["metadata"]["managedFields"][0]["operation"], "Update");

    let api = api(&client, Resource::ServiceEntry);
    let err = status(api.create(&PostParams::default(), &got).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (400, "BadRequest"),
        "a resourceVersion on create: {}",
        err.message
    );
    let mut fresh = got.clone();
    fresh.metadata.resource_version = None;
    let err = status(api.create(&PostParams::default(), &fresh).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        err.message,
        "serviceentries.networking.istio.io \"orders\" already exists"
    );
    let err = status(api.get("payments").await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn a_replace_needs_the_current_resource_version() {
    let (_server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    let created = create_se(&client, "orders", json!({})).await;
    let mut edited = created.clone();
    edited.data["spec"]["hosts"] = json!(["orders.example.com"]);
    let replaced = api
        .replace("orders", &PostParams::default(), &edited)
        .await
        .unwrap();
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(replaced.metadata.generation, Some(2));

    let err = status(api.replace("orders", &PostParams::default(), &edited).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (409, "Conflict"),
        "stale resourceVersion"
    );
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );

    let mut unconditional = replaced.clone();
    unconditional.metadata.resource_version = None;
    let err = status(
        api.replace("orders", &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (422, "Invalid"),
        "custom resources need a resourceVersion"
    );

    let err = status(api.replace("payments", &PostParams::default(), &replaced).await);
    assert_eq!(err.code, 400, "the body's name must match the URL");
    let mut missing = replaced.clone();
    missing.metadata.name = Some("payments".into());
    let err = status(api.replace("payments", &PostParams::default(), &missing).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn merge_patches_apply_and_strategic_merge_patches_are_refused_for_custom_resources() {
    let (_server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    create_se(&client, "orders", json!({"app": "orders"})).await;
    let patch =
        json!({"metadata": {"labels": {"app": null, "tier": "web"}}, "spec": {"location": "MESH_EXTERNAL"}});
    let patched = api
        .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert_eq!(labels.get("tier").map(String::as_str), Some("web"));
    assert!(!labels.contains_key("app"));
    assert_eq!(patched.data["spec"]["location"], "MESH_EXTERNAL");

    let err = status(
        api.patch("orders", &PatchParams::default(), &Patch::Strategic(&patch))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (415, "UnsupportedMediaType"));
    let err = status(
        api.patch("payments", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn delete_returns_the_object_then_not_found_and_honours_preconditions() {
    let (server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    let created = create_se(&client, "orders", json!({})).await;
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = status(api.delete("orders", &wrong).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    let deleted = api.delete("orders", &DeleteParams::default()).await.unwrap();
    let object = deleted.left().expect("the deleted object");
    assert_eq!(object.metadata.uid, created.metadata.uid);
    assert!(
        rv(&object) > rv(&created),
        "the deletion has its own resourceVersion"
    );
    assert!(server.object(Resource::ServiceEntry, NS, "orders").is_none());
    let err = status(api.delete("orders", &DeleteParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn an_object_with_finalizers_is_deleted_only_when_they_are_removed() {
    let (server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    create_se(&client, "orders", json!({})).await;
    let add = json!({"metadata": {"finalizers": ["registry-sync.io/cleanup"]}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .unwrap();

    let pending = api
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        server.object(Resource::ServiceEntry, NS, "orders").is_some(),
        "still there"
    );

    let clear = json!({"metadata": {"finalizers": null}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    assert!(
        server.object(Resource::ServiceEntry, NS, "orders").is_none(),
        "gone once unfinalized"
    );
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors_and_page_with_limit_and_continue() {
    let (_server, client) = setup().await;
    for (name, app) in [
        ("a", "orders"),
        ("b", "orders"),
        ("c", "payments"),
        ("d", "orders"),
    ] {
        create_se(&client, name, json!({"app": app, "managed": "yes"})).await;
    }
    let other_ns: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "other", &Resource::ServiceEntry.api_resource());
    let mut e = crate::common::dynamic(crate::common::service_entry(
        "e",
        json!({"app": "orders"}),
        crate::common::spec(),
    ));
    e.metadata.namespace = Some("other".into());
    other_ns.create(&PostParams::default(), &e).await.unwrap();

    let api = api(&client, Resource::ServiceEntry);
    let names = |l: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        l.items.into_iter().map(|o| o.metadata.name.unwrap()).collect()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=orders"))
                .await
                .unwrap()
        ),
        ["a", "b", "d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (payments),managed"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=orders"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &Resource::ServiceEntry.api_resource());
    let everywhere = all
        .list(&ListParams::default().labels("app=orders"))
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 4);
    let types = everywhere.items[0]
        .types
        .clone()
        .expect("items carry apiVersion and kind");
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("networking.istio.io/v1", "ServiceEntry")
    );

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let list_rv = first.metadata.resource_version.clone();
    let second = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(first), ["a", "b", "c"]);
    assert_eq!(
        second.metadata.resource_version, list_rv,
        "pages share the first page's resourceVersion"
    );
    assert_eq!(names(second), ["d"]);

    let err = status(api.list(&ListParams::default().labels("app in (x")).await);
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn discovery_and_version_answer_like_a_cluster() {
    let (server, client) = setup().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "ServiceEntry")
        .expect("ServiceEntry is discovered");
    assert_eq!(
        (ar.plural.as_str(), ar.api_version.as_str()),
        ("serviceentries", "networking.istio.io/v1")
    );
    assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
    assert!(discovery.has_group("coordination.k8s.io"));
    assert_eq!(server.counts().total(), 0, "discovery is not counted");
    assert_eq!(server.counts().get(Verb::Get), 0);
}
