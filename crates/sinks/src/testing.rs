//! An in-memory sink for tests and benches: it holds what it is given, as a sink does
//! after applying, and counts the writes it was asked for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;

use crate::{ApplyReport, Sink, SinkError};

#[derive(Default)]
pub struct Memory {
    held: BTreeMap<ObjectKey, HeldObject>,
    writes: Arc<AtomicUsize>,
}

impl Memory {
    /// A sink that adds the writes of every plan it applies to `writes`.
    pub fn counting(writes: Arc<AtomicUsize>) -> Memory {
        Memory {
            held: BTreeMap::new(),
            writes,
        }
    }
}

impl Sink for Memory {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        for object in plan.creates.iter().chain(&plan.updates) {
            self.held.insert(object.key(), HeldObject::written(object));
        }
        for key in &plan.deletes {
            self.held.remove(key);
        }
        self.writes.fetch_add(plan.writes(), Ordering::Relaxed);
        Ok(ApplyReport {
            created: plan.creates.len(),
            updated: plan.updates.len(),
            deleted: plan.deletes.len(),
            ..ApplyReport::default()
        })
    }
}
