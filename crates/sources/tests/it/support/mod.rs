//! Driving a watching source in a test: start it on a channel, then wait for the
//! snapshot that satisfies a condition, with a generous deadline and never a fixed
//! sleep as the assertion.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry_sync_catalog::{Instance, RegistrySnapshot};
use registry_sync_sources::SourceEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take; reconnect backoff can reach several
/// seconds, so this is generous.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(base: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{base}-{nanos}")
}

/// The instance `id` of service `service`, if the snapshot has it.
pub fn instance<'s>(snapshot: &'s RegistrySnapshot, service: &str, id: &str) -> Option<&'s Instance> {
    snapshot
        .services()
        .iter()
        .find(|s| s.name == service)?
        .instances
        .iter()
        .find(|i| i.id == id)
}

/// A source running on its own task, and what it has sent.
pub struct Watch {
    rx: mpsc::Receiver<SourceEvent>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    last: Option<RegistrySnapshot>,
    failures: Vec<String>,
}

impl Watch {
    pub fn start<F>(run: impl FnOnce(mpsc::Sender<SourceEvent>, CancellationToken) -> F) -> Watch
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(tx, cancel.clone()));
        Watch {
            rx,
            cancel,
            task,
            last: None,
            failures: Vec::new(),
        }
    }

    #[cfg(feature = "etcd")]
    pub fn start_etcd(source: registry_sync_sources::etcd::EtcdSource) -> Watch {
        Watch::start(|tx, cancel| source.watch(tx, cancel))
    }

    #[cfg(feature = "zookeeper")]
    pub fn start_zookeeper(source: registry_sync_sources::zookeeper::ZookeeperSource) -> Watch {
        Watch::start(|tx, cancel| source.watch(tx, cancel))
    }

    async fn next_event(&mut self, what: &str) -> SourceEvent {
        match tokio::time::timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(event)) => {
                if let SourceEvent::Failed { error, .. } = &event {
                    self.failures.push(error.message.clone());
                }
                event
            }
            Ok(None) => panic!("the source stopped while waiting for {what}"),
            Err(_) => panic!(
                "waited {DEADLINE:?} for {what}; last snapshot: {:#?}; failures: {:#?}",
                self.last.as_ref().map(summary),
                self.failures
            ),
        }
    }

    /// The next view (a whole snapshot, or the last view with a change folded in).
    pub async fn next_snapshot(&mut self) -> RegistrySnapshot {
        loop {
            let event = self.next_event("the next snapshot").await;
            if let Some(view) = self.fold(&event) {
                return view;
            }
        }
    }

    /// Folds a view event into the last view; `None` for a failure.
    fn fold(&mut self, event: &SourceEvent) -> Option<RegistrySnapshot> {
        let mut view = self.last.take().unwrap_or_default();
        let is_view = event.fold_into(&mut view);
        self.last = Some(view.clone());
        is_view.then_some(view)
    }

    /// Waits for a view for which `condition` holds.
    pub async fn until(
        &mut self,
        what: &str,
        condition: impl Fn(&RegistrySnapshot) -> bool,
    ) -> RegistrySnapshot {
        if let Some(last) = &self.last
            && condition(last)
        {
            return last.clone();
        }
        loop {
            let event = self.next_event(what).await;
            if let Some(view) = self.fold(&event)
                && condition(&view)
            {
                return view;
            }
        }
    }

    /// Waits for a failure; a view meanwhile must still hold everything the last one
    /// held (a failing registry never loses services).
    pub async fn until_failed(&mut self) -> String {
        let before = self.last.as_ref().map(|s| s.services().len()).unwrap_or_default();
        loop {
            let event = self.next_event("a failure").await;
            if let SourceEvent::Failed { error, .. } = event {
                return error.message;
            }
            let view = self.fold(&event).expect("not a failure");
            assert!(
                view.services().len() >= before,
                "services were lost: {:?}",
                summary(&view)
            );
        }
    }

    /// Asserts that nothing at all is sent for a few seconds (while the registry is
    /// down: no repeated failure, and certainly no snapshot with services missing).
    pub async fn assert_quiet_for_a_while(&mut self) {
        if let Ok(event) = tokio::time::timeout(Duration::from_secs(3), self.rx.recv()).await {
            panic!("expected silence while the registry is down, got {event:?}");
        }
    }

    /// Asserts how many failures were sent so far.
    pub fn assert_failures(&self, count: usize) {
        assert_eq!(self.failures.len(), count, "failures sent: {:#?}", self.failures);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

/// `service: [instance ids]`, for failure messages.
fn summary(snapshot: &RegistrySnapshot) -> Vec<String> {
    snapshot
        .services()
        .iter()
        .map(|s| {
            let ids: Vec<&str> = s.instances.iter().map(|i| i.id.as_str()).collect();
            format!("{}: {ids:?}", s.name)
        })
        .collect()
}
