//! The writer's steps against a full plan. Each step plans only what changed since the
//! last one (the index's change log) and a sink's own drift; whatever registry events
//! arrive, in whatever order, after each step the sink must hold exactly what a full
//! plan from scratch would make it hold: nothing left to create, change or delete.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use registry_sync::config::Config;
use registry_sync_catalog::{RegistryDelta, RegistrySnapshot, Service, testing};
use registry_sync_sinks::testing::Memory;
use registry_sync_sources::SourceEvent;
use registry_sync_writer::{NamedSink, Quiet, feed, pass};

/// Two registries: one written inline, one as WorkloadEntries selected by their entry.
/// Mass deletes are confirmed, so the guard holds nothing back from either side.
const CONFIG: &str = "registries:
  - {name: inline, kind: file, path: unused.yaml, namespace: mesh, endpoints: inline}
  - {name: entries, kind: file, path: unused.yaml, namespace: mesh, endpoints: workload-entry}
safety:
  confirm_mass_delete: true
";
const REGISTRIES: [&str; 2] = ["inline", "entries"];

/// A service as the generator draws it: its number and its instances' numbers.
type Drawn = (u8, Vec<u8>);

#[derive(Clone, Debug)]
enum Event {
    /// A registry's whole view.
    View { registry: usize, services: Vec<Drawn> },
    /// One service added or changed.
    Upsert { registry: usize, service: Drawn },
    /// One service gone.
    Remove { registry: usize, service: u8 },
    /// The registry could not be read (its objects stay).
    Fail { registry: usize },
}

/// Service `s` with instances `ids`: each instance's address, port and health follow
/// from its number, so redrawing a number changes the instance.
fn service((s, ids): &Drawn) -> Service {
    let mut ids = ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let instances = ids
        .iter()
        .map(|i| {
            let mut instance = testing::instance(
                &format!("i{i}"),
                &format!("10.0.{s}.{i}"),
                8080 + u16::from(i % 3),
            );
            instance.healthy = i % 4 != 0;
            instance
        })
        .collect();
    testing::service(&format!("s{s}"), instances)
}

fn source_event(event: &Event) -> SourceEvent {
    match event {
        Event::View { registry, services } => {
            let mut unique: BTreeMap<u8, Drawn> = BTreeMap::new();
            for drawn in services {
                unique.insert(drawn.0, drawn.clone());
            }
            SourceEvent::Snapshot {
                registry: REGISTRIES[*registry].into(),
                snapshot: RegistrySnapshot::new(
                    REGISTRIES[*registry],
                    unique.values().map(service).collect(),
                    Vec::new(),
                ),
            }
        }
        Event::Upsert {
            registry,
            service: drawn,
        } => SourceEvent::Changed {
            registry: REGISTRIES[*registry].into(),
            delta: RegistryDelta {
                upserts: vec![Arc::new(service(drawn))],
                ..RegistryDelta::default()
            },
        },
        Event::Remove { registry, service: s } => SourceEvent::Changed {
            registry: REGISTRIES[*registry].into(),
            delta: RegistryDelta {
                removed: vec![service(&(*s, Vec::new())).key()],
                ..RegistryDelta::default()
            },
        },
        Event::Fail { registry } => SourceEvent::Failed {
            registry: REGISTRIES[*registry].into(),
            error: registry_sync_sources::SourceFailure::new(
                registry_sync_sources::FailureReason::Unreachable,
                "the registry is down",
            ),
        },
    }
}

fn drawn() -> impl Strategy<Value = Drawn> {
    (0u8..6, proptest::collection::vec(0u8..8, 0..5))
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (0usize..2, proptest::collection::vec(drawn(), 0..5))
            .prop_map(|(registry, services)| Event::View { registry, services }),
        4 => (0usize..2, drawn()).prop_map(|(registry, service)| Event::Upsert { registry, service }),
        2 => (0usize..2, 0u8..6).prop_map(|(registry, service)| Event::Remove { registry, service }),
        1 => (0usize..2).prop_map(|registry| Event::Fail { registry }),
    ]
}

/// Feeds `events` to the index one at a time, with a writer step after each, and
/// returns the first step after which a full plan still had work, described.
async fn first_divergence(events: &[Event]) -> Option<String> {
    let config = Config::parse(Path::new("sync.yaml"), CONFIG).expect("the config parses");
    let mut index = config.index();
    let settings = config.writer_settings();
    let mut writer = settings.writer(
        NamedSink {
            name: "memory".into(),
            sink: Box::new(Memory::default()),
        },
        std::sync::Arc::new(Quiet),
    );
    // The first views of both registries, as `run` waits for them.
    let mut events: Vec<Event> = events.to_vec();
    for registry in 0..REGISTRIES.len() {
        events.insert(
            0,
            Event::View {
                registry,
                services: Vec::new(),
            },
        );
    }
    for (n, event) in events.iter().enumerate() {
        feed::take(&mut index, source_event(event), std::time::Duration::ZERO, &Quiet);
        // A pass that wrote the successors of replaced objects asks for another, as the
        // writer task would run it at once.
        for _ in 0..3 {
            writer.catch_up().await;
            let step = writer.plan(&index, Instant::now());
            if let Err(e) = writer.apply(step).await {
                return Some(format!("step {n} ({event:?}): the sink failed: {e}"));
            }
            if !writer.wants_another_pass() {
                break;
            }
        }
        let full = pass::plan_for(&index, &settings, writer.sink.as_ref(), None);
        if full.writes() > 0 || !full.status.is_empty() {
            return Some(format!(
                "after step {n} ({event:?}) a full plan still had work: creates {:?}, updates {:?}, deletes {:?}, status {}",
                full.creates.iter().map(|o| o.key()).collect::<Vec<_>>(),
                full.updates.iter().map(|o| o.key()).collect::<Vec<_>>(),
                full.deletes,
                full.status.len()
            ));
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn after_every_writer_step_the_sink_holds_what_a_full_plan_would_make_it_hold(
        events in proptest::collection::vec(event(), 1..25)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let divergence = runtime.block_on(first_divergence(&events));
        prop_assert!(divergence.is_none(), "{}", divergence.unwrap_or_default());
    }
}
