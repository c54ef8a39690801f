use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use registry_sync_istio::{
    Endpoint, INSTANCE_LABEL, IstioObject, Location, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ObjectMeta,
    REGISTRY_LABEL, Resolution, ServiceEntrySpec, Spec, render_object,
};
use registry_sync_plan::{DeleteScope, Owner, Plan, plan};
use registry_sync_sinks::{FilesSink, Sink};

const US: &str = "prod-a";

use registry_sync_istio::LiteMap;

fn ours() -> LiteMap<String, String> {
    [
        (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        (INSTANCE_LABEL, US),
        (REGISTRY_LABEL, "consul"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn service_entry(name: &str, address: &str, labels: LiteMap<String, String>) -> IstioObject {
    IstioObject::new(
        ObjectMeta {
            name: name.into(),
            namespace: "mesh".into(),
            labels,
            ..Default::default()
        },
        Spec::ServiceEntry(ServiceEntrySpec {
            addresses: Vec::new(),
            hosts: vec![format!("{name}.example")],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![],
            endpoints: vec![Endpoint {
                address: address.into(),
                ..Default::default()
            }],
            workload_selector: None,
            export_to: Vec::new(),
        }),
    )
}

fn workload_entry(name: &str, address: &str) -> IstioObject {
    IstioObject::new(
        ObjectMeta {
            name: name.into(),
            namespace: "mesh".into(),
            labels: ours(),
            ..Default::default()
        },
        Spec::WorkloadEntry(Endpoint {
            address: address.into(),
            ..Default::default()
        }),
    )
}

fn desired(objects: &[IstioObject]) -> registry_sync_istio::Desired {
    objects
        .iter()
        .map(|o| (o.key(), std::sync::Arc::new(o.clone())))
        .collect()
}

fn scope() -> DeleteScope {
    DeleteScope {
        complete: ["consul".to_string()].into(),
        delivered: ["consul".to_string()].into(),
        configured: ["consul".to_string()].into(),
        prune_orphans: false,
        unknown: Default::default(),
    }
}

fn sync(sink: &mut FilesSink, objects: &[IstioObject]) -> Plan {
    let plan = plan(&desired(objects), sink.held(), &Owner::new(US), &scope());
    let report = sink.apply(&plan).unwrap();
    assert!(report.is_complete(), "{report:?}");
    plan
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    listing(dir)
        .into_iter()
        .map(|name| (name.clone(), fs::read(dir.join(&name)).unwrap()))
        .collect()
}

#[test]
fn objects_are_created_updated_and_deleted_as_one_file_each() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    let orders = service_entry("legacy.orders", "10.0.0.1", ours());
    let worker = workload_entry("orders-1", "10.0.0.1");

    let plan = sync(&mut sink, &[orders.clone(), worker.clone()]);
    assert_eq!(plan.creates.len(), 2);
    assert_eq!(
        listing(tmp.path()),
        [
            "mesh.serviceentry.legacy.orders.yaml",
            "mesh.workloadentry.orders-1.yaml"
        ]
    );
    let orders_file = tmp.path().join("mesh.serviceentry.legacy.orders.yaml");
    assert_eq!(
        fs::read_to_string(&orders_file).unwrap(),
        render_object(&orders).unwrap()
    );
    assert_eq!(
        sink.held()[&orders.key()].content_hash.as_deref(),
        Some(orders.content_hash())
    );

    let moved = service_entry("legacy.orders", "10.0.0.2", ours());
    let plan = sync(&mut sink, &[moved.clone(), worker.clone()]);
    assert_eq!((plan.updates.len(), plan.unchanged), (1, 1));
    assert_eq!(
        fs::read_to_string(&orders_file).unwrap(),
        render_object(&moved).unwrap()
    );
    assert_eq!(
        sink.held()[&moved.key()].content_hash.as_deref(),
        Some(moved.content_hash())
    );

    let plan = sync(&mut sink, std::slice::from_ref(&moved));
    assert_eq!(plan.deletes, vec![worker.key()]);
    assert_eq!(listing(tmp.path()), ["mesh.serviceentry.legacy.orders.yaml"]);
    assert!(!sink.held().contains_key(&worker.key()));
}

#[test]
fn open_creates_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    let sink = FilesSink::open(&dir).unwrap();
    assert!(dir.is_dir());
    assert!(sink.held().is_empty());
}

#[test]
fn reopening_the_directory_holds_the_same_hashes_so_a_restart_plans_no_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = [
        service_entry("a", "10.0.0.1", ours()),
        service_entry("b.with.dots", "10.0.0.2", ours()),
        workload_entry("w", "10.0.0.3"),
    ];
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    sync(&mut sink, &objects);
    let before = sink.held().clone();

    let reopened = FilesSink::open(tmp.path()).unwrap();
    assert_eq!(reopened.held(), &before);
    let again = plan(&desired(&objects), reopened.held(), &Owner::new(US), &scope());
    assert!(again.is_empty(), "{}", again.render_diff());
    assert_eq!(again.unchanged, objects.len());
}

#[test]
fn files_that_are_not_ours_are_never_touched_or_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let users = service_entry("payments", "10.9.9.9", LiteMap::new());
    fs::write(
        dir.join("configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    )
    .unwrap();
    fs::write(dir.join("payments.yaml"), render_object(&users).unwrap()).unwrap();
    fs::write(dir.join("notes.txt"), "not yaml at all: [").unwrap();
    fs::write(dir.join("broken.yml"), "kind: [unclosed").unwrap();
    let two_documents = format!(
        "{}---\n{}",
        render_object(&users).unwrap(),
        "apiVersion: v1\nkind: Secret\n"
    );
    fs::write(dir.join("bundle.yaml"), two_documents).unwrap();
    let before = snapshot(dir);

    let mut sink = FilesSink::open(dir).unwrap();
    assert_eq!(
        sink.held().keys().collect::<Vec<_>>(),
        [&users.key()],
        "only the user's ServiceEntry is an object"
    );
    // We want an object under the user's key, and nothing else: a conflict and no deletes.
    let ours_payments = service_entry("payments", "10.0.0.1", ours());
    let other = service_entry("other", "10.0.0.1", ours());
    let plan = sync(&mut sink, &[ours_payments.clone(), other.clone()]);
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.creates, vec![std::sync::Arc::new(other.clone())]);
    // Desiring nothing deletes our own file and still leaves the user's alone.
    let plan = sync(&mut sink, &[]);
    assert_eq!(plan.deletes, vec![other.key()]);

    assert_eq!(snapshot(dir), before);
}

#[test]
fn a_create_never_overwrites_a_file_it_does_not_hold_and_the_rest_still_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let squatter = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
    fs::write(tmp.path().join("mesh.serviceentry.a.yaml"), squatter).unwrap();
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    let a = service_entry("a", "10.0.0.1", ours());
    let b = service_entry("b", "10.0.0.1", ours());
    let plan = plan(&desired(&[a.clone(), b]), sink.held(), &Owner::new(US), &scope());

    let report = sink.apply(&plan).unwrap();
    assert_eq!(report.created, 1);
    assert_eq!(report.failed.len(), 1);
    let (key, message) = &report.failed[0];
    assert_eq!(key, &a.key());
    assert!(
        message.contains("mesh.serviceentry.a.yaml") && message.contains("move that file away"),
        "{message}"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("mesh.serviceentry.a.yaml")).unwrap(),
        squatter
    );
    assert!(!sink.held().contains_key(&a.key()));
}

#[test]
fn an_update_of_an_object_held_under_another_file_name_moves_it_to_its_own_name() {
    let tmp = tempfile::tempdir().unwrap();
    let old = service_entry("orders", "10.0.0.1", ours());
    fs::write(tmp.path().join("orders.yml"), render_object(&old).unwrap()).unwrap();
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    assert_eq!(sink.path_of(&old.key()), Some(tmp.path().join("orders.yml")));

    let new = service_entry("orders", "10.0.0.2", ours());
    let plan = sync(&mut sink, std::slice::from_ref(&new));
    assert_eq!(plan.updates.len(), 1);
    assert_eq!(listing(tmp.path()), ["mesh.serviceentry.orders.yaml"]);
    assert_eq!(
        sink.path_of(&new.key()),
        Some(tmp.path().join("mesh.serviceentry.orders.yaml"))
    );
}

#[test]
fn of_two_files_holding_the_same_object_the_first_by_name_is_held_and_the_other_never_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let first = service_entry("dup", "10.0.0.1", ours());
    let second = service_entry("dup", "10.0.0.2", ours());
    fs::write(tmp.path().join("a.yaml"), render_object(&first).unwrap()).unwrap();
    fs::write(tmp.path().join("b.yaml"), render_object(&second).unwrap()).unwrap();
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    assert_eq!(
        sink.held()[&first.key()].content_hash.as_deref(),
        Some(first.content_hash())
    );

    sync(&mut sink, &[]);
    assert_eq!(listing(tmp.path()), ["b.yaml"]);
    assert_eq!(
        fs::read_to_string(tmp.path().join("b.yaml")).unwrap(),
        render_object(&second).unwrap()
    );
}

#[test]
fn a_file_edited_since_it_was_read_is_neither_overwritten_nor_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    let a = service_entry("a", "10.0.0.1", ours());
    let b = service_entry("b", "10.0.0.1", ours());
    sync(&mut sink, &[a.clone(), b.clone()]);

    // Someone takes both objects over behind the sink's back.
    let taken_a = render_object(&service_entry("a", "10.0.0.7", LiteMap::new())).unwrap();
    let taken_b = render_object(&service_entry("b", "10.0.0.7", LiteMap::new())).unwrap();
    fs::write(tmp.path().join("mesh.serviceentry.a.yaml"), &taken_a).unwrap();
    fs::write(tmp.path().join("mesh.serviceentry.b.yaml"), &taken_b).unwrap();

    let stale = plan(
        &desired(&[service_entry("a", "10.0.0.2", ours())]),
        sink.held(),
        &Owner::new(US),
        &scope(),
    );
    assert_eq!((stale.updates.len(), stale.deletes.len()), (1, 1));
    let report = sink.apply(&stale).unwrap();
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report
            .failed
            .iter()
            .all(|(_, m)| m.contains("changed since registry-sync read it")),
        "{report:?}"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("mesh.serviceentry.a.yaml")).unwrap(),
        taken_a
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("mesh.serviceentry.b.yaml")).unwrap(),
        taken_b
    );

    // The sink now holds what is there, so the next plan sees the takeover.
    let next = plan(
        &desired(&[service_entry("a", "10.0.0.2", ours())]),
        sink.held(),
        &Owner::new(US),
        &scope(),
    );
    assert!(next.is_empty(), "{}", next.render_diff());
    assert_eq!(next.conflicts.len(), 1);
}

#[test]
fn no_temporary_files_are_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FilesSink::open(tmp.path()).unwrap();
    for round in 0..5u8 {
        let objects: Vec<_> = (0..4)
            .map(|i| service_entry(&format!("s{i}"), &format!("10.0.{round}.{i}"), ours()))
            .collect();
        sync(&mut sink, &objects[..4 - usize::from(round % 2)]);
    }
    let names = listing(tmp.path());
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".yaml")), "{names:?}");
}

#[test]
fn apply_into_a_path_that_is_no_longer_a_directory_reports_each_object_instead_of_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let mut sink = FilesSink::open(&dir).unwrap();
    sync(&mut sink, &[service_entry("gone", "10.0.0.1", ours())]);
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, "a file where the directory was").unwrap();

    let objects = [
        service_entry("a", "10.0.0.1", ours()),
        service_entry("b", "10.0.0.1", ours()),
    ];
    let plan = plan(&desired(&objects), sink.held(), &Owner::new(US), &scope());
    let report = sink.apply(&plan).unwrap();
    assert_eq!((report.created, report.deleted), (0, 0));
    // The deleted object's file is gone already (with its directory); the re-read says so.
    let failed: Vec<_> = report.failed.iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(failed, ["a", "b", "gone"], "{report:?}");
    assert!(report.failed.iter().all(|(_, m)| m.contains("out")), "{report:?}");
}

#[test]
fn an_object_whose_name_would_escape_the_directory_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let mut sink = FilesSink::open(&dir).unwrap();
    let objects = [
        service_entry("../../etc/x", "10.0.0.1", ours()),
        service_entry("fine", "10.0.0.1", ours()),
    ];
    let plan = plan(&desired(&objects), sink.held(), &Owner::new(US), &scope());
    let report = sink.apply(&plan).unwrap();
    assert_eq!(report.created, 1);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("path separator"), "{report:?}");
    assert_eq!(listing(tmp.path()), ["out"]);
    assert_eq!(listing(&dir), ["mesh.serviceentry.fine.yaml"]);
}
