//! The sink the writer drives: it keeps the served set and publishes it to every
//! stream. It holds exactly what it serves, so a restart plans everything once (the
//! served set starts empty) and then writes nothing while nothing changes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, AsyncSink, BoxFuture, SinkError};
use tokio::sync::watch;

use crate::served::{Entries, Served};
use crate::validate::refusal;

pub struct McpSink {
    served: Served,
    held: BTreeMap<ObjectKey, HeldObject>,
    offers: watch::Sender<Option<Entries>>,
}

impl McpSink {
    /// The sink, and the receiver every stream reads the served set from.
    pub fn new() -> (McpSink, watch::Receiver<Option<Entries>>) {
        let (offers, receiver) = watch::channel(None);
        let sink = McpSink {
            served: Served::default(),
            held: BTreeMap::new(),
            offers,
        };
        (sink, receiver)
    }

    fn publish(&mut self) {
        if let Some(entries) = self.served.offer() {
            self.offers.send_replace(Some(entries));
        }
    }
}

impl AsyncSink for McpSink {
    fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(std::future::ready(Vec::new()))
    }

    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
        let now = SystemTime::now();
        let mut report = ApplyReport::default();
        for (object, create) in plan
            .creates
            .iter()
            .map(|o| (o, true))
            .chain(plan.updates.iter().map(|o| (o, false)))
        {
            // Refused here rather than dropped by istiod without a word; an update
            // refused leaves the last good version served, as istiod would keep it.
            if let Some(why) = refusal(object) {
                report.failed.push((
                    object.key(),
                    format!("not served to istiod: {why} (istiod would drop it without a word)"),
                ));
                continue;
            }
            self.served.upsert(object, now);
            self.held.insert(object.key(), HeldObject::written(object));
            if create {
                report.created += 1;
            } else {
                report.updated += 1;
            }
        }
        for key in &plan.deletes {
            if self.served.remove(key) {
                report.deleted += 1;
            }
            self.held.remove(key);
        }
        self.publish();
        Box::pin(std::future::ready(Ok(report)))
    }

    fn complete(&mut self) {
        self.served.complete();
        self.publish();
    }

    /// Each replica serves the istiods connected to it; leader election (for the
    /// Kubernetes sink) must not leave a standby's istiods without an answer.
    fn needs_leadership(&self) -> bool {
        false
    }
}
