//! Request counting by verb and resource.

use std::collections::BTreeMap;

use crate::kube::resource::Resource;

/// The verb of a request, as the API server's audit log would name it (with server-side
/// apply told apart from other patches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    /// POST
    Create,
    /// PUT
    Update,
    /// PATCH with a merge, strategic-merge or JSON patch
    Patch,
    /// PATCH with `application/apply-patch+yaml` (server-side apply)
    Apply,
    Delete,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 8] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Patch,
        Verb::Apply,
        Verb::Delete,
    ];

    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Apply | Verb::Delete
        )
    }
}

/// A snapshot of request counts. Every request to a resource path is counted when it
/// arrives — including requests then failed by an injected fault (429, 500), so retries
/// show up — but not discovery or `/version`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub(crate) by: BTreeMap<(Verb, String), u64>,
}

impl Counts {
    /// Requests with this verb, over all resources.
    pub fn get(&self, verb: Verb) -> u64 {
        self.by
            .iter()
            .filter(|((v, _), _)| *v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this verb to one resource.
    pub fn of(&self, verb: Verb, resource: Resource) -> u64 {
        self.by
            .get(&(verb, resource.plural().to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Write requests (create, update, patch, apply, delete), over all resources.
    pub fn writes(&self) -> u64 {
        self.by
            .iter()
            .filter(|((v, _), _)| v.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// Write requests to one resource.
    pub fn writes_of(&self, resource: Resource) -> u64 {
        Verb::ALL
            .into_iter()
            .filter(|v| v.is_write())
            .map(|v| self.of(v, resource))
            .sum()
    }

    /// Writes to one resource's status subresource (`<plural>/status`).
    pub fn status_writes_of(&self, resource: Resource) -> u64 {
        let path = format!("{}/status", resource.plural());
        self.by
            .iter()
            .filter(|((v, p), _)| v.is_write() && *p == path)
            .map(|(_, n)| n)
            .sum()
    }

    /// All counted requests.
    pub fn total(&self) -> u64 {
        self.by.values().sum()
    }

    /// `(verb, plural, count)` for every non-zero count, including paths the stand-in
    /// does not serve (e.g. `events`), which answered 404.
    pub fn iter(&self) -> impl Iterator<Item = (Verb, &str, u64)> {
        self.by.iter().map(|((v, p), n)| (*v, p.as_str(), *n))
    }
}
