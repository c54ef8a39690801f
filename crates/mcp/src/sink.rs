//! The sink the writer drives: it keeps the served set and publishes it to every
//! stream. It holds exactly what it serves. With a state directory it keeps that set on
//! disk too ([`crate::state`]) and starts from it, serving at once what it served last;
//! without one a restart starts empty and plans everything once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, AsyncSink, BoxFuture, SinkError, Unavailability};
use tokio::sync::watch;

use crate::served::{Entries, Served};
use crate::state::{GUARD_FILE, Record, SERVED_FILE, StateDir, encode, write_atomically};
use crate::validate::refusal;

/// How often at most the served set is written to the state directory: a restart
/// serves a set at most this much older than the last one served.
const STATE_EVERY: Duration = Duration::from_secs(1);

pub struct McpSink {
    served: Served,
    held: BTreeMap<ObjectKey, HeldObject>,
    offers: watch::Sender<Option<Entries>>,
    state: Option<KeptState>,
    initial_wait: Option<Duration>,
}

/// The served set as the state directory keeps it, and the task that writes it.
struct KeptState {
    dir: StateDir,
    records: BTreeMap<ObjectKey, Arc<Record>>,
    latest: watch::Sender<Option<Vec<Arc<Record>>>>,
}

impl McpSink {
    /// The sink, and the receiver every stream reads the served set from.
    pub fn new() -> (McpSink, watch::Receiver<Option<Entries>>) {
        let (offers, receiver) = watch::channel(None);
        let sink = McpSink {
            served: Served::default(),
            held: BTreeMap::new(),
            offers,
            state: None,
            initial_wait: None,
        };
        (sink, receiver)
    }

    /// Keeps the served set in `dir` and starts from what is kept there: a set kept by
    /// an earlier process is offered at once (it was whole when it was served). Needs a
    /// tokio runtime (a task writes the file).
    pub fn keep_state(mut self, dir: std::path::PathBuf) -> McpSink {
        let dir = StateDir(dir);
        let records = dir.load();
        if !records.is_empty() {
            tracing::info!(objects = records.len(), dir = %dir.0.display(), "serving istiod the set served before the restart until the registries are heard from");
        }
        self.held = StateDir::held(&records);
        let mut kept = BTreeMap::new();
        for record in records {
            self.served.restore(
                record.held.key.clone(),
                record.encoded.clone(),
                record.version.clone(),
                record.first_served,
            );
            kept.insert(record.held.key.clone(), Arc::new(record));
        }
        if !kept.is_empty() {
            self.served.complete();
            self.publish();
        }
        let (latest, mut pending) = watch::channel::<Option<Vec<Arc<Record>>>>(None);
        let task_dir = dir.clone();
        tokio::spawn(async move {
            while pending.changed().await.is_ok() {
                let Some(records) = pending.borrow_and_update().clone() else {
                    continue;
                };
                let dir = task_dir.clone();
                let written = tokio::task::spawn_blocking(move || {
                    let records: Vec<Record> = records.iter().map(|r| (**r).clone()).collect();
                    write_atomically(&dir.0, SERVED_FILE, &encode(&records))
                })
                .await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(dir = %task_dir.0.display(), "cannot keep the served set ({e}); a restart would start from an older one");
                }
                tokio::time::sleep(STATE_EVERY).await;
            }
        });
        self.state = Some(KeptState {
            dir,
            records: kept,
            latest,
        });
        self
    }

    /// Offers istiod the served set after `wait` even if some registry has not been
    /// heard from since start (see [`AsyncSink::complete_after`]).
    pub fn initial_wait(mut self, wait: Duration) -> McpSink {
        self.initial_wait = Some(wait);
        self
    }

    fn publish(&mut self) {
        if let Some(entries) = self.served.offer() {
            self.offers.send_replace(Some(entries));
        }
    }

    /// Keeps the record of an object just served, with the resource as it was encoded
    /// for serving.
    fn keep(&mut self, object: &registry_sync_istio::IstioObject) {
        let Some(state) = &mut self.state else { return };
        let key = object.key();
        let Some((encoded, first_served)) = self.served.encoded(&key) else {
            return;
        };
        let record = Record {
            held: HeldObject::written(object),
            version: object.content_hash().to_string(),
            first_served,
            encoded: encoded.clone(),
        };
        state.records.insert(key, Arc::new(record));
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
            if self.served.upsert(object, now) {
                self.keep(object);
            }
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
            if let Some(state) = &mut self.state {
                state.records.remove(key);
            }
            self.held.remove(key);
        }
        self.publish();
        if let Some(state) = &self.state
            && report.created + report.updated + report.deleted > 0
        {
            state
                .latest
                .send_replace(Some(state.records.values().cloned().collect()));
        }
        Box::pin(std::future::ready(Ok(report)))
    }

    fn complete_after(&self) -> Option<Duration> {
        self.initial_wait
    }

    fn load_guard_memory(&mut self) -> BoxFuture<'_, Result<Option<String>, SinkError>> {
        let memory = match &self.state {
            None => Ok(None),
            Some(state) => match std::fs::read_to_string(state.dir.0.join(GUARD_FILE)) {
                Ok(memory) => Ok(Some(memory)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(SinkError::unavailable(
                    Unavailability::Storage,
                    format!(
                        "cannot read the mass-change guard's memory in {}: {e}",
                        state.dir.0.display()
                    ),
                )),
            },
        };
        Box::pin(std::future::ready(memory))
    }

    fn keep_guard_memory<'a>(&'a mut self, memory: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        let kept = match &self.state {
            None => Ok(()),
            Some(state) => write_atomically(&state.dir.0, GUARD_FILE, memory.as_bytes()).map_err(|e| {
                SinkError::unavailable(
                    Unavailability::Storage,
                    format!(
                        "cannot keep the mass-change guard's memory in {}: {e}",
                        state.dir.0.display()
                    ),
                )
            }),
        };
        Box::pin(std::future::ready(kept))
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
