//! The Kubernetes sink against the API server stand-in, over real HTTP, exactly as
//! against a cluster: round trips, zero-write passes, ownership, faults.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use registry_sync_istio::IstioObject;
use registry_sync_kubernetes::{KubeSink, KubeSinkSettings};
use registry_sync_plan::{Owner, Plan, plan};
use registry_sync_sinks::AsyncSink;
use registry_sync_testing::kube::{Resource, StandIn, Verb};
use support::*;

fn settings() -> KubeSinkSettings {
    KubeSinkSettings {
        namespaces: BTreeSet::from([NS.to_string()]),
        qps: 0.0,
        initial_list_timeout: Duration::from_secs(10),
        ..KubeSinkSettings::default()
    }
}

async fn connect(server: &StandIn) -> KubeSink {
    let client = kube::Client::try_from(server.kube_config()).expect("client");
    KubeSink::connect(client, settings(), None)
        .await
        .expect("connects")
}

/// Plans against what the sink holds now and applies, like one pipeline pass.
async fn pass(sink: &mut KubeSink, objects: &[IstioObject]) -> Plan {
    sink.refresh().await;
    let plan = plan(&desired(objects), sink.held(), &Owner::new("default"), &scope());
    let report = sink.apply(&plan).await.expect("sink usable");
    assert!(report.failed.is_empty(), "{report:?}");
    plan
}

fn addresses_on_server(server: &StandIn, name: &str) -> Vec<String> {
    let object = server
        .object(Resource::ServiceEntry, NS, name)
        .expect("object exists");
    object["spec"]["endpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["address"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn create_update_delete_round_trip_writes_exactly_the_plan() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    server.reset_counts();

    let plan = pass(&mut sink, &[entry("a", &["10.0.0.1"]), entry("b", &["10.0.0.2"])]).await;
    assert_eq!(plan.creates.len(), 2);
    assert_eq!(
        server.counts().get(Verb::Apply),
        2,
        "creates are server-side applies too"
    );
    assert_eq!(addresses_on_server(&server, "a"), ["10.0.0.1"]);

    let plan = pass(
        &mut sink,
        &[entry("a", &["10.0.0.1", "10.0.0.9"]), entry("b", &["10.0.0.2"])],
    )
    .await;
    assert_eq!((plan.updates.len(), plan.unchanged), (1, 1));
    assert_eq!(
        server.counts().get(Verb::Apply),
        3,
        "one more apply for the update"
    );
    assert_eq!(addresses_on_server(&server, "a"), ["10.0.0.1", "10.0.0.9"]);

    let plan = pass(&mut sink, &[entry("a", &["10.0.0.1", "10.0.0.9"])]).await;
    assert_eq!(plan.deletes.len(), 1);
    assert_eq!(server.counts().get(Verb::Delete), 1);
    assert!(server.object(Resource::ServiceEntry, NS, "b").is_none());
    assert_eq!(
        server.counts().writes(),
        4,
        "two creates, one update, one delete: nothing else"
    );
}

#[tokio::test]
async fn a_second_pass_and_a_restart_write_nothing() {
    let server = StandIn::start().await;
    let objects = [entry("a", &["10.0.0.1"]), entry("b", &["10.0.0.2"])];
    let mut sink = connect(&server).await;
    pass(&mut sink, &objects).await;
    server.reset_counts();

    let again = pass(&mut sink, &objects).await;
    assert!(again.is_empty(), "{again:?}");
    drop(sink);

    let mut restarted = connect(&server).await;
    let after_restart = pass(&mut restarted, &objects).await;
    assert!(
        after_restart.is_empty(),
        "a restart knows every object from the list: {after_restart:?}"
    );
    assert_eq!(after_restart.unchanged, 2);
    assert_eq!(server.counts().writes(), 0);
}

#[tokio::test]
async fn a_users_service_entry_with_our_name_is_never_touched() {
    let server = StandIn::start().await;
    let client = kube::Client::try_from(server.kube_config()).unwrap();
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client,
        NS,
        &registry_sync_kubernetes::api_resource(registry_sync_istio::Kind::ServiceEntry),
    );
    let users: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "a", "namespace": NS, "labels": {"team": "payments"}},
        "spec": {"hosts": ["a.example.com"], "resolution": "DNS", "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}]}
    }))
    .unwrap();
    api.create(&Default::default(), &users).await.unwrap();
    let before = server.object(Resource::ServiceEntry, NS, "a").unwrap();

    let mut sink = connect(&server).await;
    server.reset_counts();
    sink.refresh().await;
    let objects = [entry("a", &["10.0.0.1"])];
    let first = plan(&desired(&objects), sink.held(), &Owner::new("default"), &scope());
    assert!(
        first.is_empty(),
        "the sink sees the user's object, so nothing is sent: {first:?}"
    );
    assert_eq!(first.conflicts.len(), 1, "reported as a conflict");
    let report = sink.apply(&first).await.unwrap();
    assert_eq!((report.created, report.updated), (0, 0));
    assert_eq!(server.counts().writes(), 0);
    let after = server.object(Resource::ServiceEntry, NS, "a").unwrap();
    assert_eq!(before, after, "the user's object is byte for byte unchanged");
}

fn users_entry(name: &str) -> kube::api::DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "payments"}},
        "spec": {"hosts": [format!("{name}.example.com")], "resolution": "DNS", "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}]}
    }))
    .unwrap()
}

fn service_entries(server: &StandIn) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        kube::Client::try_from(server.kube_config()).unwrap(),
        NS,
        &registry_sync_kubernetes::api_resource(registry_sync_istio::Kind::ServiceEntry),
    )
}

#[tokio::test]
async fn a_create_never_takes_over_an_object_the_watch_has_not_shown_yet() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    sink.refresh().await;
    let objects = [entry("a", &["10.0.0.1"])];
    // Planned before the user's object exists: a create.
    let planned = plan(&desired(&objects), sink.held(), &Owner::new("default"), &scope());
    assert_eq!(planned.creates.len(), 1);
    service_entries(&server)
        .create(&Default::default(), &users_entry("a"))
        .await
        .unwrap();
    let before = server.object(Resource::ServiceEntry, NS, "a").unwrap();

    let report = sink.apply(&planned).await.unwrap();
    assert_eq!(report.created, 0, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].1.contains("refused"), "{report:?}");
    let after = server.object(Resource::ServiceEntry, NS, "a").unwrap();
    assert_eq!(before, after, "the user's object is untouched");
    let next = plan(&desired(&objects), sink.held(), &Owner::new("default"), &scope());
    assert_eq!(
        next.conflicts.len(),
        1,
        "the next plan reports the conflict: {next:?}"
    );
    assert!(next.is_empty());
}

#[tokio::test]
async fn many_creates_read_the_namespace_page_by_page_instead_of_once_each_and_still_never_take_over() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    sink.refresh().await;
    // The namespace holds more than a page of the listing, so the check reads every page.
    let objects: Vec<IstioObject> = (0..700)
        .map(|n| entry(&format!("svc-{n:03}"), &["10.0.0.1"]))
        .collect();
    pass(&mut sink, &objects[..600]).await;
    let planned = plan(&desired(&objects), sink.held(), &Owner::new("default"), &scope());
    assert_eq!(planned.creates.len(), 100);
    // Made after the plan, behind the watch's back, on the last page.
    service_entries(&server)
        .create(&Default::default(), &users_entry("svc-650"))
        .await
        .unwrap();
    let before = server.object(Resource::ServiceEntry, NS, "svc-650").unwrap();
    server.reset_counts();

    let report = sink.apply(&planned).await.unwrap();
    assert_eq!(report.created, 99, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0.name, "svc-650");
    assert!(report.failed[0].1.contains("refused"), "{report:?}");
    assert_eq!(
        server.object(Resource::ServiceEntry, NS, "svc-650").unwrap(),
        before,
        "the user's object is untouched"
    );
    let counts = server.counts();
    assert_eq!(
        counts.of(Verb::Get, Resource::ServiceEntry),
        0,
        "no GET per create"
    );
    assert_eq!(
        counts.of(Verb::List, Resource::ServiceEntry),
        2,
        "one listing of two pages"
    );
    assert_eq!(counts.of(Verb::Apply, Resource::ServiceEntry), 99);
}

#[tokio::test]
async fn an_update_never_lands_on_an_object_someone_replaced_since_it_was_planned() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    pass(&mut sink, &[entry("a", &["10.0.0.1"])]).await;
    let planned = plan(
        &desired(&[entry("a", &["10.0.0.2"])]),
        sink.held(),
        &Owner::new("default"),
        &scope(),
    );
    assert_eq!(planned.updates.len(), 1);
    // Replaced by a user's object of the same name before the update goes out.
    let api = service_entries(&server);
    api.delete("a", &Default::default()).await.unwrap();
    api.create(&Default::default(), &users_entry("a")).await.unwrap();
    let before = server.object(Resource::ServiceEntry, NS, "a").unwrap();

    let report = sink.apply(&planned).await.unwrap();
    assert_eq!((report.updated, report.failed.len()), (0, 1), "{report:?}");
    assert_eq!(server.object(Resource::ServiceEntry, NS, "a").unwrap(), before);
}

#[tokio::test]
async fn an_object_an_admission_webhook_refuses_is_reported_and_the_others_are_written() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    server
        .faults()
        .deny_admission("b", "ServiceEntries must not name hosts outside the allow-list");
    let objects = [
        entry("a", &["10.0.0.1"]),
        entry("b", &["10.0.0.2"]),
        entry("c", &["10.0.0.3"]),
    ];
    sink.refresh().await;
    let first = plan(&desired(&objects), sink.held(), &Owner::new("default"), &scope());
    let report = sink.apply(&first).await.unwrap();
    assert_eq!(report.created, 2, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    let (key, error) = &report.failed[0];
    assert_eq!(key.name, "b");
    assert!(
        error.contains("denied the request") && error.contains("allow-list"),
        "{error}"
    );
    assert!(
        error.contains("an admission webhook refused"),
        "the hint says what happened: {error}"
    );
    assert_eq!(server.counts().get(Verb::Delete), 0);

    // The next pass retries only the refused object.
    sink.refresh().await;
    let second = plan(&desired(&objects), sink.held(), &Owner::new("default"), &scope());
    assert_eq!((second.creates.len(), second.unchanged), (1, 2), "{second:?}");
    server.faults().clear();
    let report = sink.apply(&second).await.unwrap();
    assert_eq!((report.created, report.failed.len()), (1, 0));
}

#[tokio::test]
async fn transient_faults_are_retried_until_the_writes_land() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    server.faults().fail_next_writes(2);
    server.faults().throttle_next(2, 1);
    let objects = [
        entry("a", &["10.0.0.1"]),
        entry("b", &["10.0.0.2"]),
        entry("c", &["10.0.0.3"]),
    ];
    pass(&mut sink, &objects).await;
    for name in ["a", "b", "c"] {
        assert!(
            server.object(Resource::ServiceEntry, NS, name).is_some(),
            "{name} written despite the faults"
        );
    }
    assert!(
        server.counts().get(Verb::Apply) > 3,
        "the failed attempts were retried"
    );
    let again = pass(&mut sink, &objects).await;
    assert!(again.is_empty());
}

#[tokio::test]
async fn a_dropped_watch_resumes_and_the_view_stays_right() {
    let server = StandIn::start().await;
    let mut sink = connect(&server).await;
    let objects = [entry("a", &["10.0.0.1"]), entry("b", &["10.0.0.2"])];
    pass(&mut sink, &objects).await;
    server.faults().drop_watches();
    // Someone deletes one of our objects while the watch is down.
    let client = kube::Client::try_from(server.kube_config()).unwrap();
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client,
        NS,
        &registry_sync_kubernetes::api_resource(registry_sync_istio::Kind::ServiceEntry),
    );
    api.delete("b", &Default::default()).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        sink.refresh().await;
        if !sink.held().keys().any(|k| k.name == "b") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never caught up: {:?}",
            sink.held().keys()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plan = pass(&mut sink, &objects).await;
    assert_eq!(plan.creates.len(), 1, "the deleted object is recreated: {plan:?}");
    assert!(server.object(Resource::ServiceEntry, NS, "b").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watch_events_wait_in_a_bounded_queue_and_the_drained_view_is_current() {
    let server = StandIn::start().await;
    let api = service_entries(&server);
    for n in 0..4 {
        api.create(&Default::default(), &users_entry(&format!("u{n}")))
            .await
            .unwrap();
    }
    // A replica that does not take its watch in (a standby before it drained, or a
    // writer busy applying): 10,000 changes by someone else meanwhile.
    let mut sink = connect(&server).await;
    let per_object = 2_500;
    let writers = (0..4).map(|n| {
        let api = api.clone();
        async move {
            for i in 0..per_object {
                let patch = serde_json::json!({"metadata": {"labels": {"rev": i.to_string()}}});
                api.patch(
                    &format!("u{n}"),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
            }
        }
    });
    futures::future::join_all(writers).await;
    assert!(
        sink.queued() <= 1024,
        "the watch queue is bounded: {} events waiting",
        sink.queued()
    );
    // Drained, the view is the server's latest, object by object.
    let last = (per_object - 1).to_string();
    let current = |sink: &KubeSink| {
        (0..4).all(|n| {
            let key = registry_sync_istio::ObjectKey {
                kind: registry_sync_istio::Kind::ServiceEntry,
                namespace: NS.into(),
                name: format!("u{n}"),
            };
            sink.held()
                .get(&key)
                .is_some_and(|held| held.labels.get("rev") == Some(&last))
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !current(&sink) {
        let observed = tokio::time::timeout_at(deadline, sink.observe()).await;
        assert!(observed.is_ok(), "the view never caught up with the server");
    }
}
