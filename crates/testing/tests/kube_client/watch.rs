//! Watches, raw and through kube-runtime's watcher.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use registry_sync_testing::kube::{Resource, Verb};
use serde_json::json;

use crate::common::{api, create_se, eventually, rv, setup};

type Events = std::pin::Pin<Box<dyn Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Send>>;

async fn watch(api: &Api<DynamicObject>, params: &WatchParams, from: &str) -> Events {
    api.watch(params, from).await.expect("watch starts").boxed()
}

/// The next event that is not a bookmark, as `(type, name)`.
async fn next(events: &mut Events) -> (String, String) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("a well-formed event");
        let (kind, obj) = match event {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => return ("ERROR".into(), format!("{} {}", e.code, e.reason)),
        };
        return (kind.into(), obj.metadata.name.unwrap_or_default());
    }
}

fn ev(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

async fn relabel(api: &Api<DynamicObject>, name: &str, app: &str) {
    let patch = json!({"metadata": {"labels": {"app": app}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_label_selected_watch_sees_added_modified_and_deleted_including_objects_entering_and_leaving() {
    let (_server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    create_se(&client, "existing", json!({"app": "orders"})).await;
    let mut events = watch(&api, &WatchParams::default().labels("app=orders"), "0").await;
    assert_eq!(
        next(&mut events).await,
        ev("ADDED", "existing"),
        "the current state comes first"
    );

    create_se(&client, "a", json!({"app": "orders"})).await;
    create_se(&client, "b", json!({"app": "payments"})).await;
    let spec = json!({"spec": {"location": "MESH_EXTERNAL"}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    relabel(&api, "a", "payments").await;
    relabel(&api, "b", "orders").await;
    api.delete("b", &DeleteParams::default()).await.unwrap();

    for expected in [
        ev("ADDED", "a"),
        ev("MODIFIED", "a"),
        ev("DELETED", "a"),
        ev("ADDED", "b"),
        ev("DELETED", "b"),
    ] {
        assert_eq!(next(&mut events).await, expected);
    }
}

#[tokio::test]
async fn a_watch_resumes_after_a_resource_version_and_expires_beyond_the_history() {
    let (server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    let first = create_se(&client, "a", json!({})).await;
    create_se(&client, "b", json!({})).await;
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let mut events = watch(&api, &WatchParams::default(), &rv(&first).to_string()).await;
    assert_eq!(next(&mut events).await, ev("ADDED", "b"));
    assert_eq!(next(&mut events).await, ev("DELETED", "a"));

    server.faults().set_history_limit(1);
    let mut events = watch(&api, &WatchParams::default(), &rv(&first).to_string()).await;
    assert_eq!(next(&mut events).await, ev("ERROR", "410 Expired"));
    assert!(events.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn a_watch_ends_when_its_timeout_passes_and_sends_bookmarks_when_asked() {
    let (server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    create_se(&client, "a", json!({})).await;
    let params = WatchParams::streaming_lists().timeout(1);
    let mut events = api.watch(&params, "0").await.unwrap().boxed();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(_)));
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert!(b.metadata.annotations.contains_key("k8s.io/initial-events-end"));
            assert_eq!(b.metadata.resource_version, server.resource_version().to_string());
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    let ended = tokio::time::timeout(Duration::from_secs(3), events.next())
        .await
        .expect("ends after ~1 s");
    assert!(ended.is_none());
}

fn names(reader: &reflector::Store<DynamicObject>) -> BTreeSet<String> {
    reader
        .state()
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn a_kube_runtime_watcher_converges_after_dropped_watches_and_an_expired_history() {
    let (server, client) = setup().await;
    let api = api(&client, Resource::ServiceEntry);
    for name in ["a", "b", "c"] {
        create_se(&client, name, json!({"app": "orders"})).await;
    }
    let writer = Writer::new(Resource::ServiceEntry.api_resource());
    let reader = writer.as_reader();
    let stream =
        reflector::reflector(writer, watcher(api.clone(), watcher::Config::default())).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("the initial list", || async {
        names(&reader) == set(&["a", "b", "c"])
    })
    .await;
    let lists_before = server.counts().of(Verb::List, Resource::ServiceEntry);

    server.faults().drop_watches();
    create_se(&client, "d", json!({})).await;
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("the changes after a dropped watch", || async {
        names(&reader) == set(&["b", "c", "d"])
    })
    .await;
    eventually("a new watch", || async {
        server.counts().of(Verb::Watch, Resource::ServiceEntry) >= 2
    })
    .await;
    assert_eq!(
        server.counts().of(Verb::List, Resource::ServiceEntry),
        lists_before,
        "a dropped watch resumes from its resourceVersion without a relist"
    );

    // No history: the open watch falls behind it, gets 410 Expired and must relist.
    server.faults().set_history_limit(0);
    create_se(&client, "e", json!({})).await;
    api.delete("b", &DeleteParams::default()).await.unwrap();
    eventually("the state after a relist", || async {
        names(&reader) == set(&["c", "d", "e"])
    })
    .await;
    assert!(
        server.counts().of(Verb::List, Resource::ServiceEntry) > lists_before,
        "410 made it relist"
    );
    task.abort();
}
