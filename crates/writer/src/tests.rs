//! The writer against a sink that refuses or loses objects, fed by a real index.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_sync_catalog::{RegistrySnapshot, Service};
use registry_sync_index::{Event, Index};
use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::{Owner, Plan};
use registry_sync_sinks::{ApplyReport, AsyncSink, BoxFuture, SinkError};

use crate::{NamedSink, Quiet, SinkWriter, WriterSettings, pass};

/// Holds what it is given, refuses one object by name, records the plans, and sees
/// the objects in `deleted_behind` vanish at its next refresh (someone deleted them).
struct Refusing {
    held: BTreeMap<ObjectKey, HeldObject>,
    refuses: &'static str,
    plans: Arc<Mutex<Vec<(usize, usize)>>>,
    deleted_behind: Arc<Mutex<Vec<ObjectKey>>>,
}

impl AsyncSink for Refusing {
    fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        let gone: Vec<ObjectKey> = std::mem::take(&mut *self.deleted_behind.lock().unwrap());
        for key in &gone {
            self.held.remove(key);
        }
        Box::pin(std::future::ready(gone))
    }

    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
        self.plans.lock().unwrap().push((plan.writes(), plan.unchanged));
        let mut report = ApplyReport::default();
        for object in &plan.creates {
            if object.metadata.name.ends_with(self.refuses) {
                report.failed.push((object.key(), "denied by a webhook".into()));
            } else {
                self.held.insert(object.key(), HeldObject::written(object));
                report.created += 1;
            }
        }
        Box::pin(std::future::ready(Ok(report)))
    }
}

fn service(name: &str) -> Service {
    registry_sync_catalog::testing::service(
        name,
        vec![registry_sync_catalog::testing::instance("1", "10.0.0.1", 8080)],
    )
}

/// An index of one registry, `legacy`.
fn legacy_index() -> Index {
    Index::new(registry_sync_translate::testing::settings())
}

fn settings() -> WriterSettings {
    WriterSettings {
        owner: Owner::new("default"),
        max_delete_percent: None,
        guard_window: Duration::from_secs(600),
    }
}

fn view(index: &mut Index, names: &[&str]) {
    let services: Vec<Service> = names.iter().copied().map(service).collect();
    let snapshot = RegistrySnapshot::new("legacy", services, vec![]);
    index.apply("legacy", Event::View(&snapshot), Duration::ZERO);
}

/// The names of the objects a plan creates.
fn created_names(plan: &Plan) -> Vec<&str> {
    plan.creates.iter().map(|o| o.metadata.name.as_str()).collect()
}

/// A writer into a sink that refuses every object named `*bad`.
fn refusing_bad(plans: &Arc<Mutex<Vec<(usize, usize)>>>) -> SinkWriter {
    settings().writer(
        NamedSink {
            name: "refusing".into(),
            sink: Box::new(Refusing {
                held: BTreeMap::new(),
                refuses: "bad",
                plans: Arc::clone(plans),
                deleted_behind: Default::default(),
            }),
        },
        Arc::new(Quiet),
    )
}

#[tokio::test]
async fn a_refused_object_is_quarantined_and_retried_alone_while_the_rest_flows() {
    let mut index = legacy_index();
    let plans = Arc::new(Mutex::new(Vec::new()));
    let mut writer = refusing_bad(&plans);
    view(&mut index, &["a", "b", "c", "bad"]);
    let start = Instant::now();
    let step = writer.plan(&index, start);
    let report = writer.apply(step).await.unwrap();
    assert_eq!((report.created, report.failed.len()), (3, 1));
    assert_eq!(
        writer.applied(),
        Some(index.version()),
        "a quarantined object does not hold readiness back"
    );
    // A new service while the refused one waits: only the new one is planned.
    view(&mut index, &["a", "b", "c", "bad", "d"]);
    let step = writer.plan(&index, start + Duration::from_millis(500));
    assert_eq!(
        step.plan.creates.len(),
        1,
        "the refused object waits in quarantine"
    );
    writer.apply(step).await.unwrap();
    let step = writer.plan(&index, start + Duration::from_millis(1500));
    let names = created_names(&step.plan);
    assert_eq!(names, ["legacy.bad"], "once due, it is retried alone");
    assert_eq!(plans.lock().unwrap().clone(), [(4, 0), (1, 0)]);
}

#[tokio::test]
async fn a_quarantined_object_that_comes_due_during_another_pass_is_still_retried() {
    let mut index = legacy_index();
    let plans = Arc::new(Mutex::new(Vec::new()));
    let mut writer = refusing_bad(&plans);
    view(&mut index, &["a", "bad"]);
    let step = writer.plan(&index, Instant::now());
    writer.apply(step).await.unwrap();
    // Another change is planned before `bad` is due, and its pass outlasts the
    // quarantine's first backoff (1 s).
    view(&mut index, &["a", "bad", "c"]);
    let step = writer.plan(&index, Instant::now());
    assert_eq!(step.plan.creates.len(), 1, "only `c`: `bad` is not due yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    writer.apply(step).await.unwrap();
    let step = writer.plan(&index, Instant::now());
    let names = created_names(&step.plan);
    assert_eq!(
        names,
        ["legacy.bad"],
        "it came due while the other pass ran: tried now"
    );
}

#[tokio::test]
async fn an_object_the_sink_saw_vanish_before_a_plan_is_written_back_by_that_plan() {
    let mut index = legacy_index();
    let plans = Arc::new(Mutex::new(Vec::new()));
    let deleted_behind: Arc<Mutex<Vec<ObjectKey>>> = Default::default();
    let mut writers = vec![settings().writer(
        NamedSink {
            name: "drifting".into(),
            sink: Box::new(Refusing {
                held: BTreeMap::new(),
                refuses: "none",
                plans: Arc::clone(&plans),
                deleted_behind: Arc::clone(&deleted_behind),
            }),
        },
        Arc::new(Quiet),
    )];
    view(&mut index, &["a", "b"]);
    assert!(pass::sync(&index, &mut writers).await.written);
    // Someone deletes `a`; the next plan (incremental: the index did not change)
    // learns it from the sink right before planning.
    let a = index.desired().keys().next().unwrap().clone();
    deleted_behind.lock().unwrap().push(a.clone());
    assert!(pass::sync(&index, &mut writers).await.written);
    assert_eq!(plans.lock().unwrap().clone(), [(2, 0), (1, 0)]);
    assert!(writers[0].sink.held().contains_key(&a), "written back");
}
