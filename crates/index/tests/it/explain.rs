//! `Index::explain`: the group of a service, host or object, with the rules and the
//! fate of every instance, from the same translation the estate gets.

use registry_sync_catalog::RegistrySnapshot;
use registry_sync_index::Index;
use registry_sync_translate::EndpointMode;
use registry_sync_translate::testing::*;

use crate::Feed;

fn index() -> Index {
    let mut index = Index::new(settings_for(&[
        ("a", EndpointMode::Auto),
        ("b", EndpointMode::Auto),
    ]));
    index.update(
        "a",
        &RegistrySnapshot::new(
            "a",
            vec![svc(
                "orders",
                vec![
                    inst("10.0.0.1", &[("http", 8080)]),
                    unhealthy(inst("10.0.0.2", &[("http", 8080)])),
                    inst("10.0.0.3", &[("http", 15000)]),
                ],
            )],
            vec![],
        ),
    );
    index.update(
        "b",
        &RegistrySnapshot::new(
            "b",
            vec![svc("orders", vec![inst("10.0.1.1", &[("http", 8080)])])],
            vec![],
        ),
    );
    index
}

#[test]
fn a_service_host_or_object_name_finds_its_group_with_every_contributor() {
    let index = index();
    let by_name = index.explain("orders");
    // Both registries' templates give one host: one group, found once.
    assert_eq!(by_name.groups.len(), 1, "{by_name:?}");
    let by_host = index.explain("orders.legacy");
    assert_eq!(by_host.groups.len(), 1);
    let group = &by_host.groups[0];
    assert_eq!(group.contributors.len(), 2, "both registries merge on the host");
    assert!(
        group
            .rules
            .iter()
            .any(|r| r.starts_with("merged: a:orders, b:orders")),
        "{:?}",
        group.rules
    );
    let by_object = index.explain(&group.objects[0].metadata.name);
    assert_eq!(by_object.groups.len(), 1);
    assert_eq!(by_object.groups[0].key, group.key);
    assert!(index.explain("nothing").is_empty());
}

#[test]
fn every_instance_says_whether_it_is_published_and_why_not() {
    let index = index();
    let group = &index.explain("orders.legacy").groups[0];
    let fate = |address: &str| {
        group
            .instances
            .iter()
            .find(|f| f.address == address)
            .map(|f| f.published.clone())
            .unwrap()
    };
    assert_eq!(fate("10.0.0.1"), Ok("published".to_string()));
    assert_eq!(fate("10.0.0.2"), Err("unhealthy in the registry".to_string()));
    assert!(
        fate("10.0.0.3")
            .unwrap_err()
            .contains("reserved by Istio's sidecar")
    );
    // The objects are the ones the index holds.
    let held = index.desired().get(&group.objects[0].key()).unwrap();
    assert_eq!(**held, *group.objects[0]);
}
