//! Which desired object changed at which version, so that each sink's writer asks for
//! exactly what it has not applied yet, however far behind it is.

use std::collections::{BTreeSet, HashMap};

use registry_sync_istio::{Kind, ObjectKey};

/// Sorts before every key: a range bound.
fn least_key() -> ObjectKey {
    ObjectKey {
        kind: Kind::ServiceEntry,
        namespace: String::new(),
        name: String::new(),
    }
}

/// What changed after a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// These keys (each once, in version order): plan them.
    Keys(Vec<ObjectKey>),
    /// The log no longer reaches that far back: plan everything.
    Everything,
}

/// Each key appears once, at the version it last changed, until every reader has
/// planned past that version ([`ChangeLog::compact`]): the log holds the recent
/// changes, not the estate.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    version: u64,
    by_key: HashMap<ObjectKey, u64>,
    by_version: BTreeSet<(u64, ObjectKey)>,
    /// Versions at or below this are compacted away.
    floor: u64,
}

impl ChangeLog {
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Records a change of `keys` as one new version; no new version when empty.
    pub(crate) fn record(&mut self, keys: impl IntoIterator<Item = ObjectKey>) {
        let next = self.version + 1;
        let mut any = false;
        for key in keys {
            any = true;
            if let Some(old) = self.by_key.insert(key.clone(), next) {
                self.by_version.remove(&(old, key.clone()));
            }
            self.by_version.insert((next, key));
        }
        if any {
            self.version = next;
        }
    }

    pub(crate) fn since(&self, version: u64) -> Since {
        if version < self.floor {
            return Since::Everything;
        }
        let start = (version + 1, least_key());
        Since::Keys(self.by_version.range(start..).map(|(_, k)| k.clone()).collect())
    }

    /// Forgets the changes at or below `upto`, which every reader has planned past. A
    /// reader still below `upto` afterwards gets [`Since::Everything`].
    pub(crate) fn compact(&mut self, upto: u64) {
        let upto = upto.min(self.version);
        if upto <= self.floor {
            return;
        }
        let old: Vec<(u64, ObjectKey)> = self
            .by_version
            .range(..(upto + 1, least_key()))
            .cloned()
            .collect();
        for entry in old {
            self.by_key.remove(&entry.1);
            self.by_version.remove(&entry);
        }
        self.floor = upto;
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::ServiceEntry,
            namespace: "mesh".into(),
            name: name.into(),
        }
    }

    fn keys(since: Since) -> Vec<String> {
        match since {
            Since::Keys(keys) => keys.into_iter().map(|k| k.name).collect(),
            Since::Everything => vec!["*".into()],
        }
    }

    #[test]
    fn a_reader_gets_each_key_once_however_often_it_changed() {
        let mut log = ChangeLog::default();
        log.record([key("a"), key("b")]);
        log.record([key("a")]);
        log.record([key("c")]);
        assert_eq!(log.version(), 3);
        assert_eq!(keys(log.since(0)), ["b", "a", "c"]);
        assert_eq!(keys(log.since(1)), ["a", "c"]);
        assert_eq!(keys(log.since(3)), Vec::<String>::new());
        log.record([]);
        assert_eq!(log.version(), 3, "nothing changed, no version");
    }

    #[test]
    fn compaction_forgets_what_every_reader_planned_and_sends_a_late_reader_to_a_full_plan() {
        let mut log = ChangeLog::default();
        log.record([key("gone"), key("kept")]);
        log.record([key("new")]);
        log.compact(1);
        assert_eq!(log.len(), 1, "only the change after version 1 is left");
        assert_eq!(log.since(0), Since::Everything);
        assert_eq!(keys(log.since(1)), ["new"]);
        log.record([key("kept")]);
        assert_eq!(keys(log.since(1)), ["new", "kept"]);
    }
}
