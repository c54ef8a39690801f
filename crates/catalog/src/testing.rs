//! Fixture builders for tests and benches (the `testing` feature): the catalog's plain
//! shapes, written once instead of in every crate that needs a service to feed.

use crate::{Address, Instance, InstancePort, Service};

/// A healthy instance `id` at `address` with one port, `http` = `port`, and nothing else
/// set (no weight, placement or labels).
pub fn instance(id: &str, address: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        address: Address::parse(address).expect("a fixture's address is valid"),
        ports: vec![InstancePort {
            name: "http".into(),
            number: port,
            protocol_hint: None,
        }],
        healthy: true,
        weight: None,
        placement: None,
        labels: Default::default(),
    }
}

/// Service `name` (no namespace, no labels) of `instances`.
pub fn service(name: &str, instances: Vec<Instance>) -> Service {
    Service {
        name: name.into(),
        namespace: None,
        labels: Default::default(),
        instances,
    }
}

/// Service `name` with one instance per address of `addresses`, each named after its
/// address, on port 8080.
pub fn service_at(name: &str, addresses: &[&str]) -> Service {
    service(name, addresses.iter().map(|a| instance(a, a, 8080)).collect())
}
