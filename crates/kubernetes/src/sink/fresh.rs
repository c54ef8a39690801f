//! The read right before a create. The watch may not have shown an object someone just
//! made under a name the plan creates, and a forced apply would take it over; so every
//! create is checked against the server first. One GET per create doubles the requests
//! of a cold sync, though: where a plan creates many objects of one kind in one
//! namespace, one paged LIST of that namespace reads them all instead.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DynamicObject, ListParams};
use registry_sync_istio::{IstioObject, Kind, ObjectKey};

use super::KubeSink;

/// From this many creates of one kind in one namespace, a plan lists instead of getting.
pub(super) const CREATES_PER_LIST: usize = 16;

/// Objects per page of that LIST: pages keep each response, and the memory of holding
/// it, small whatever the namespace holds.
const LIST_PAGE: u32 = 500;

/// What the listing before a plan's creates found.
#[derive(Default)]
pub(super) struct FreshRead {
    /// Per namespace and kind listed: the objects found under names the plan creates.
    listed: BTreeMap<(String, Kind), BTreeMap<String, DynamicObject>>,
}

/// What the fresh read knows of one create's name.
pub(super) enum Fresh<'a> {
    /// Listed: the object there, if any.
    Listed(Option<&'a DynamicObject>),
    /// Not listed (few creates there, or the list failed): read it on its own.
    NotListed,
}

impl FreshRead {
    pub(super) fn of(&self, key: &ObjectKey) -> Fresh<'_> {
        match self.listed.get(&(key.namespace.clone(), key.kind)) {
            Some(found) => Fresh::Listed(found.get(&key.name)),
            None => Fresh::NotListed,
        }
    }
}

impl KubeSink {
    /// Lists each namespace and kind where `creates` holds at least [`CREATES_PER_LIST`]
    /// objects. A namespace whose list fails is left out: its creates fall back to one
    /// GET each, so a failing list costs time, never safety.
    pub(super) async fn read_before_creates(&self, creates: &[std::sync::Arc<IstioObject>]) -> FreshRead {
        let mut names: BTreeMap<(String, Kind), BTreeSet<&str>> = BTreeMap::new();
        for object in creates {
            let key = object.key();
            names
                .entry((key.namespace, key.kind))
                .or_default()
                .insert(&object.metadata.name);
        }
        let mut fresh = FreshRead::default();
        for ((namespace, kind), wanted) in names {
            if wanted.len() < CREATES_PER_LIST {
                continue;
            }
            match self.list_named(&namespace, kind, &wanted).await {
                Ok(found) => {
                    fresh.listed.insert((namespace, kind), found);
                }
                Err(error) => tracing::debug!(
                    %namespace,
                    kind = %kind,
                    %error,
                    "cannot list before creating; reading each object on its own instead"
                ),
            }
        }
        fresh
    }

    async fn list_named(
        &self,
        namespace: &str,
        kind: Kind,
        wanted: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, DynamicObject>, kube::Error> {
        let api = self.writes.api(&ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: String::new(),
        });
        let mut found = BTreeMap::new();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            self.writes.limiter.acquire().await;
            let page = self.writes.timed(api.list(&params)).await?;
            for object in page.items {
                if let Some(name) = object.metadata.name.as_deref()
                    && wanted.contains(name)
                {
                    found.insert(name.to_string(), object);
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(found),
            }
        }
    }
}
