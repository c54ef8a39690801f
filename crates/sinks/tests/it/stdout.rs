use std::collections::BTreeMap;
use std::sync::Arc;

use registry_sync_istio::{
    Endpoint, INSTANCE_LABEL, IstioObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ObjectMeta, REGISTRY_LABEL,
    Spec, render_object,
};
use registry_sync_plan::{DeleteScope, Owner, plan};
use registry_sync_sinks::{Sink, StdoutSink};

fn workload_entry(name: &str, address: &str) -> IstioObject {
    let labels = [
        (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        (INSTANCE_LABEL, "prod-a"),
        (REGISTRY_LABEL, "legacy"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    IstioObject::new(
        ObjectMeta {
            name: name.into(),
            namespace: "mesh".into(),
            labels,
            ..Default::default()
        },
        Spec::WorkloadEntry(Endpoint {
            address: address.into(),
            ..Default::default()
        }),
    )
}

#[test]
fn stdout_sink_prints_documents_and_deletions_and_holds_what_it_printed() {
    let mut sink = StdoutSink::new(Vec::new());
    assert!(sink.held().is_empty());
    let owner = Owner::new("prod-a");
    let legacy = std::collections::BTreeSet::from(["legacy".to_string()]);
    let scope = DeleteScope {
        complete: legacy.clone(),
        delivered: legacy.clone(),
        configured: legacy,
        prune_orphans: false,
        unknown: Default::default(),
    };
    let a = workload_entry("a", "10.0.0.1");
    let b = workload_entry("b", "10.0.0.1");
    let first: BTreeMap<_, _> = [(a.key(), Arc::new(a.clone())), (b.key(), Arc::new(b.clone()))].into();
    let report = sink.apply(&plan(&first, sink.held(), &owner, &scope)).unwrap();
    assert_eq!(report.created, 2);
    assert_eq!(sink.held().len(), 2);

    let a2 = workload_entry("a", "10.0.0.2");
    let second: BTreeMap<_, _> = [(a2.key(), Arc::new(a2.clone()))].into();
    let report = sink.apply(&plan(&second, sink.held(), &owner, &scope)).unwrap();
    assert_eq!((report.updated, report.deleted), (1, 1));
    assert_eq!(sink.held().keys().collect::<Vec<_>>(), [&a2.key()]);
    assert!(plan(&second, sink.held(), &owner, &scope).is_empty());

    let printed = String::from_utf8(sink.into_inner()).unwrap();
    let expected = format!(
        "---\n{}---\n{}---\n{}# deleted: WorkloadEntry mesh/b\n",
        render_object(&a).unwrap(),
        render_object(&b).unwrap(),
        render_object(&a2).unwrap(),
    );
    assert_eq!(printed, expected);
}

#[test]
fn stdout_sink_reports_a_broken_stream_as_an_error() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let a = workload_entry("a", "10.0.0.1");
    let desired: BTreeMap<_, _> = [(a.key(), Arc::new(a))].into();
    let mut sink = StdoutSink::new(Broken);
    let plan = plan(
        &desired,
        sink.held(),
        &Owner::new("prod-a"),
        &DeleteScope::default(),
    );
    let error = sink.apply(&plan).unwrap_err();
    assert!(error.to_string().contains("output stream"), "{error}");
    assert!(sink.held().is_empty());
}
