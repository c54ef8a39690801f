//! Who may write. Several replicas may run; for sinks that one writer must own (the
//! Kubernetes API), leader election decides, and every writer of such a sink asks this
//! gate before it writes. The runtime knows the gate only through this trait, so it
//! needs no knowledge of how the election is held.

use std::sync::Arc;

use tokio::sync::watch;

pub trait WriteGate: Send + Sync {
    /// This replica may write now.
    fn is_open(&self) -> bool;

    /// Each change of [`WriteGate::is_open`], for writers that must react at once (a
    /// new leader starts with a full pass; a lost lead cancels writes in flight).
    fn changes(&self) -> watch::Receiver<bool>;
}

/// A gate, or none: every writer may write.
pub type Gate = Option<Arc<dyn WriteGate>>;
