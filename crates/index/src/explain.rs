//! The look-up behind `explain`: which groups and services a query names, taken
//! from the held state in a moment; the explaining itself is the translation's.

use std::sync::Arc;

use registry_sync_translate::{Allocator, GroupInputs, GroupKey, Lookup, Unplaced};

use crate::groups::Groups;

impl Groups {
    /// What explaining `query` needs, without explaining: a scan of the services and
    /// objects by name, and shared pointers to what it found. `query` finds every
    /// group whose host, object name or contributing service (by name, or as
    /// `namespace/name`) it is, and every such service that makes no object.
    pub(crate) fn lookup(&self, query: &str) -> Lookup {
        let query = query.trim();
        let mut unplaced = Vec::new();
        let mut groups: Vec<GroupKey> = Vec::new();
        for (registry, service, group) in self.placements() {
            let named = service.name == query || service.key().to_string() == query;
            match group {
                Ok(Some(key)) if named || key.host == query => groups.push(key.clone()),
                Ok(Some(_)) => {}
                Ok(None) if named => unplaced.push(Unplaced {
                    registry: registry.to_string(),
                    service: Arc::clone(service),
                    why: self.unselected(registry, &service.key()).map_or_else(
                        || "left out by select".to_string(),
                        |why| format!("not selected: {why}"),
                    ),
                }),
                Err(skip) if named => unplaced.push(Unplaced {
                    registry: registry.to_string(),
                    service: Arc::clone(service),
                    why: skip.reason.clone(),
                }),
                _ => {}
            }
        }
        groups.extend(
            self.desired()
                .values()
                .filter(|o| o.metadata.name == query)
                .filter_map(|o| self.group_of_object(&o.key())),
        );
        groups.sort();
        groups.dedup();
        let groups = groups
            .into_iter()
            .map(|key| {
                let desired = self.objects_of_group(&key);
                let mut vips = Allocator::default();
                for (host, address) in desired.iter().filter_map(|o| o.vip()) {
                    vips.seed(&key.namespace, &host, &address);
                }
                GroupInputs {
                    members: self.members_of(&key),
                    kept: self.kept_in(&key),
                    key,
                    desired,
                    vips,
                }
            })
            .collect();
        Lookup::new(self.settings().clone(), groups, unplaced)
    }
}
