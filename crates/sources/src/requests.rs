//! What reading a registry costs it: the requests registry-sync sends, counted per
//! registry where each client sends them, so an operator sees a poller's price next to
//! a watch's before the registry's owners ask.
//!
//! A request is one call a registry answers: an HTTP request (Consul, Eureka, Cloud
//! Map, Nacos's catalog and login), a gRPC call or watch opened (etcd, Nacos), a
//! ZooKeeper operation (a multi-read is one), a DNS query, a read of a registry file.
//! What a server pushes on an open watch is not a request.
//!
//! The counters live in one table of the process, keyed by registry name (unique in a
//! config), so a client counts without the runtime threading a handle through every
//! kind's constructor; the status page and the metrics read the same table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in the sliding window of [`Requests::last_minute`].
const WINDOW: usize = 60;

/// The request counter of one registry. Cheap to clone; clones count together.
#[derive(Clone, Debug, Default)]
pub struct Requests(Arc<Mutex<Window>>);

/// Per-second buckets of the last minute, and the total since the process started.
#[derive(Debug)]
struct Window {
    total: u64,
    /// `(second, count)` per slot `second % WINDOW`; a slot of an older second is stale.
    slots: [(u64, u64); WINDOW],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            total: 0,
            slots: [(0, 0); WINDOW],
        }
    }
}

impl Window {
    fn add(&mut self, second: u64, n: u64) {
        self.total += n;
        let slot = &mut self.slots[(second % WINDOW as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += n;
    }

    fn within(&self, now: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(second, _)| *second <= now && now - *second < WINDOW as u64)
            .map(|(_, count)| count)
            .sum()
    }
}

fn table() -> &'static Mutex<BTreeMap<String, Requests>> {
    static TABLE: OnceLock<Mutex<BTreeMap<String, Requests>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

fn now_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Requests {
    /// The counter of `registry`, shared by everything in the process that reads it.
    pub fn of(registry: &str) -> Requests {
        let mut table = table().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.entry(registry.to_string()).or_default().clone()
    }

    /// One request sent.
    pub fn count(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.add_at(now_second(), n);
    }

    fn add_at(&self, second: u64, n: u64) {
        self.lock().add(second, n);
    }

    /// Requests sent since the process started.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Requests sent in the last 60 seconds.
    pub fn last_minute(&self) -> u64 {
        self.lock().within(now_second())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every registry that sent a request, with its total.
pub fn totals() -> BTreeMap<String, u64> {
    let table = table().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    table
        .iter()
        .map(|(name, requests)| (name.clone(), requests.total()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_counts_the_last_sixty_seconds_and_forgets_older_ones() {
        let requests = Requests::default();
        requests.add_at(1_000, 5);
        requests.add_at(1_030, 2);
        requests.add_at(1_059, 1);
        let window = requests.lock();
        assert_eq!(window.within(1_059), 8);
        // 1,000 has left the window; its slot is reused by 1,060.
        assert_eq!(window.within(1_060), 3);
        assert_eq!(window.within(1_200), 0);
        assert_eq!(window.total, 8);
    }

    #[test]
    fn a_slot_reused_a_minute_later_starts_from_zero() {
        let requests = Requests::default();
        requests.add_at(2_000, 7);
        requests.add_at(2_060, 1);
        assert_eq!(requests.lock().within(2_060), 1);
        assert_eq!(requests.total(), 8);
    }

    #[test]
    fn counters_of_one_name_are_shared() {
        let name = "requests-test-shared";
        Requests::of(name).add(3);
        Requests::of(name).count();
        assert_eq!(Requests::of(name).total(), 4);
        assert_eq!(totals().get(name), Some(&4));
    }
}
