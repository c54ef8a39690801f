//! Builders that keep rule tests short, here and in the index's tests: a catalog is a
//! few lines of data.

use crate::{EndpointMode, HostTemplate, RegistrySettings, Settings, Translation, translate};
use registry_sync_catalog::{
    Address, Catalog, Instance, InstancePort, Metadata, Protocol, RegistrySnapshot, Service,
};
use registry_sync_istio::{Endpoint, IstioObject, Kind, ServiceEntrySpec, Spec};

pub fn settings_for(registries: &[(&str, EndpointMode)]) -> Settings {
    Settings {
        instance: "default".into(),
        registries: registries
            .iter()
            .map(|(name, mode)| {
                (
                    name.to_string(),
                    RegistrySettings {
                        endpoints: *mode,
                        ..RegistrySettings::new(
                            HostTemplate::parse("{service}.{namespace}.legacy").unwrap(),
                            "mesh",
                        )
                    },
                )
            })
            .collect(),
        overrides: Vec::new(),
    }
}

pub fn settings() -> Settings {
    settings_for(&[("legacy", EndpointMode::Auto)])
}

pub fn inst(address: &str, ports: &[(&str, u16)]) -> Instance {
    Instance {
        id: format!(
            "{address}:{}",
            ports
                .iter()
                .map(|p| p.1.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        address: Address::parse(address).unwrap(),
        ports: ports
            .iter()
            .map(|(name, number)| InstancePort {
                name: name.to_string(),
                number: *number,
                protocol_hint: None,
            })
            .collect(),
        healthy: true,
        weight: None,
        placement: None,
        labels: Metadata::new(),
    }
}

pub fn with_labels(mut instance: Instance, labels: &[(&str, &str)]) -> Instance {
    instance.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    instance
}

pub fn unhealthy(mut instance: Instance) -> Instance {
    instance.healthy = false;
    instance
}

pub fn hinted(mut instance: Instance, protocol: Protocol) -> Instance {
    for port in &mut instance.ports {
        port.protocol_hint = Some(protocol);
    }
    instance
}

pub fn svc(name: &str, instances: Vec<Instance>) -> Service {
    Service {
        name: name.into(),
        namespace: None,
        labels: Metadata::new(),
        instances,
    }
}

pub fn catalog(registries: Vec<(&str, Vec<Service>)>) -> Catalog {
    let mut catalog = Catalog::default();
    for (name, services) in registries {
        catalog.update(name, RegistrySnapshot::new(name, services, vec![]));
    }
    catalog
}

pub fn run(services: Vec<Service>) -> Translation {
    translate(&catalog(vec![("legacy", services)]), &settings())
}

pub fn service_entries(t: &Translation) -> Vec<&ServiceEntrySpec> {
    t.objects
        .iter()
        .filter_map(|o| match &o.spec {
            Spec::ServiceEntry(se) => Some(se),
            _ => None,
        })
        .collect()
}

pub fn only_entry(t: &Translation) -> &ServiceEntrySpec {
    let entries = service_entries(t);
    assert_eq!(
        entries.len(),
        1,
        "expected one ServiceEntry, got {:#?}",
        t.objects
    );
    entries[0]
}

pub fn workload_entries(t: &Translation) -> Vec<(&IstioObject, &Endpoint)> {
    t.objects
        .iter()
        .filter_map(|o| match &o.spec {
            Spec::WorkloadEntry(we) if o.kind == Kind::WorkloadEntry => Some((o, we)),
            _ => None,
        })
        .collect()
}

pub fn ports_of(se: &ServiceEntrySpec) -> Vec<(u32, &str, &str)> {
    se.ports
        .iter()
        .map(|p| (p.number, p.name.as_str(), p.protocol.as_str()))
        .collect()
}
