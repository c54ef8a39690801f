//! Who may write. Several replicas may run; for sinks one writer must own (the
//! Kubernetes API), leader election decides, and every writer of such a sink asks this
//! handle before it writes. The runtime knows the election only through a `watch` of
//! whether this replica leads, so it needs no knowledge of how it is held.

use std::sync::Arc;

use tokio::sync::watch;

/// A stricter answer than the last change told, asked before every write (a lease's
/// own clock, which runs out between two rounds of the election).
type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// Whether this replica may write, and each change of it.
#[derive(Clone)]
pub struct Leadership {
    /// `None`: no election; this replica always leads.
    changes: Option<watch::Receiver<bool>>,
    check: Option<Check>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("elected", &self.is_elected())
            .field("leader", &self.is_leader())
            .finish()
    }
}

impl Leadership {
    /// No election is held: every writer may always write.
    pub fn always() -> Leadership {
        Leadership {
            changes: None,
            check: None,
        }
    }

    /// An election's view: `true` while this replica leads.
    pub fn elected(changes: watch::Receiver<bool>) -> Leadership {
        Leadership {
            changes: Some(changes),
            check: None,
        }
    }

    /// Also asks `check` before every write: leadership holds only while both say so.
    pub fn checked_by(mut self, check: impl Fn() -> bool + Send + Sync + 'static) -> Leadership {
        self.check = Some(Arc::new(check));
        self
    }

    /// An election is held.
    pub fn is_elected(&self) -> bool {
        self.changes.is_some()
    }

    /// This replica may write now.
    pub fn is_leader(&self) -> bool {
        self.changes.as_ref().is_none_or(|rx| *rx.borrow()) && self.check.as_ref().is_none_or(|check| check())
    }

    /// Waits for the next change of leadership; never, without an election (or once
    /// the election has ended).
    pub async fn changed(&mut self) {
        match &mut self.changes {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Waits until leadership is lost; never, without an election.
    pub async fn lost(&mut self) {
        match &mut self.changes {
            Some(rx) => {
                if rx.wait_for(|leading| !leading).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_elected_handle_follows_the_election_and_always_leads_without_one() {
        assert!(Leadership::always().is_leader());
        let (tx, rx) = watch::channel(false);
        let mut leadership = Leadership::elected(rx);
        assert!(!leadership.is_leader());
        tx.send_replace(true);
        leadership.changed().await;
        assert!(leadership.is_leader());
        tx.send_replace(false);
        leadership.lost().await;
        assert!(!leadership.is_leader());
        tx.send_replace(true);
        let expired = Leadership::elected(tx.subscribe()).checked_by(|| false);
        assert!(
            !expired.is_leader(),
            "a lease run out on its own clock is no lead"
        );
    }
}
