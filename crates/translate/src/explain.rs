//! `explain`: for a service or host, the registry records behind it, each rule that
//! shaped its objects, what became of every instance, and the objects themselves, from
//! the same code that translates the estate.

use std::sync::Arc;

use registry_sync_catalog::{Service, Skipped};
use registry_sync_istio::{IstioObject, Spec};

use crate::group::{Trace, translate_group_traced};
use crate::{Contributor, GroupKey};

/// One host group a query found.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub key: GroupKey,
    /// The registry services merged into it, the first deciding.
    pub contributors: Vec<(String, Arc<Service>)>,
    /// Each rule that shaped the objects, in words, in the order they were applied.
    pub rules: Vec<String>,
    /// Every instance of the contributors and what became of it, the first
    /// [`MAX_FATES`] of them.
    pub instances: Vec<InstanceFate>,
    /// Instances past [`MAX_FATES`], counted only: a page or a terminal showing tens of
    /// thousands of lines helps no one and costs the process.
    pub more_instances: usize,
    /// The objects, as the sinks are given them.
    pub objects: Vec<Arc<IstioObject>>,
    /// What was refused or left out while translating the group.
    pub skipped: Vec<Skipped>,
    /// Lesser repairs (labels dropped, protocols defaulted).
    pub notes: Vec<Skipped>,
    /// Records of the contributors' registries that never became instances (a bad
    /// address, a malformed entry), as the sources reported them; filled in by the
    /// caller that holds them.
    pub refused: Vec<Skipped>,
}

/// One instance: published, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceFate {
    pub registry: String,
    pub service: String,
    pub instance: String,
    pub address: String,
    /// `Ok` with how it is published, `Err` with why it is not.
    pub published: Result<String, String>,
}

/// A service the query found that makes no objects: left out by `select`, or without
/// a valid host.
#[derive(Clone, Debug)]
pub struct Unplaced {
    pub registry: String,
    pub service: Arc<Service>,
    pub why: String,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub groups: Vec<Explanation>,
    pub unplaced: Vec<Unplaced>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.unplaced.is_empty()
    }
}

/// The most instance fates an explanation lists.
pub const MAX_FATES: usize = 1000;

/// What an explanation is made from, taken from the index in a moment (shared
/// services and objects, the group's own addresses) so that the work of explaining,
/// which grows with a service's instances, runs without the index: a caller that
/// shares the index with the feed loop looks up under its lock and explains after.
pub struct Lookup {
    settings: crate::Settings,
    groups: Vec<GroupInputs>,
    unplaced: Vec<Unplaced>,
}

pub struct GroupInputs {
    pub key: GroupKey,
    pub members: Vec<(String, Arc<Service>)>,
    /// The group's objects as the index holds them, by key.
    pub desired: Vec<Arc<IstioObject>>,
    /// The addresses the group holds, so the explanation allocates exactly them.
    pub vips: crate::Allocator,
    /// Why members stay where an earlier decision put them.
    pub kept: Vec<String>,
}

impl Lookup {
    /// What an explanation is made from, gathered by the index that holds the groups.
    pub fn new(settings: crate::Settings, groups: Vec<GroupInputs>, unplaced: Vec<Unplaced>) -> Lookup {
        Lookup {
            settings,
            groups,
            unplaced,
        }
    }
}

impl Lookup {
    /// The registry services (registry, service key) behind the groups found.
    pub fn contributors(&self) -> impl Iterator<Item = (&str, String)> {
        self.groups
            .iter()
            .flat_map(|g| g.members.iter())
            .map(|(registry, service)| (registry.as_str(), service.key().to_string()))
    }

    /// Translates each group found again, tracing every rule, and tells each
    /// instance's fate.
    pub fn explain(self) -> Found {
        let settings = &self.settings;
        Found {
            groups: self
                .groups
                .into_iter()
                .filter_map(|group| explain_group(settings, group))
                .collect(),
            unplaced: self.unplaced,
        }
    }
}

fn explain_group(settings: &crate::Settings, group: GroupInputs) -> Option<Explanation> {
    let GroupInputs {
        key,
        members,
        desired,
        mut vips,
        kept,
    } = group;
    let key = &key;
    let contributors: Vec<Contributor<'_>> = members
        .iter()
        .filter_map(|(registry, service)| {
            Some(Contributor {
                registry,
                settings: settings.registries.get(registry.as_str())?,
                service,
            })
        })
        .collect();
    if contributors.is_empty() {
        return None;
    }
    let mut trace = Trace::on();
    let translation = translate_group_traced(key, &contributors, settings, &mut vips, &mut trace);
    let objects: Vec<Arc<IstioObject>> = translation
        .objects
        .iter()
        .map(|o| {
            let key = o.key();
            desired
                .iter()
                .find(|held| held.key() == key)
                .cloned()
                .unwrap_or_else(|| Arc::new(o.clone()))
        })
        .collect();
    let total: usize = contributors.iter().map(|c| c.service.instances.len()).sum();
    let instances = contributors
        .iter()
        .flat_map(|c| c.service.instances.iter().map(move |i| (c, i)))
        .take(MAX_FATES)
        .map(|(c, instance)| {
            let refused = translation
                .skipped
                .iter()
                .find(|s| s.registry == c.registry && s.instance.as_deref() == Some(instance.id.as_str()));
            let serving = instance.healthy && instance.weight != Some(0);
            let published = if !c.settings.select.selects_instance(instance) {
                Err("left out by select.instances".to_string())
            } else if let Some(skip) = refused {
                Err(skip.reason.clone())
            } else if serving {
                Ok("published".to_string())
            } else if objects.iter().any(|o| {
                o.health == Some(false)
                    && matches!(&o.spec, Spec::WorkloadEntry(e) if e.address == instance.address.to_string())
            }) {
                Ok("published, unhealthy in its WorkloadEntry's status".to_string())
            } else if instance.weight == Some(0) {
                Err("weight 0: out of rotation".to_string())
            } else {
                Err("unhealthy in the registry".to_string())
            };
            InstanceFate {
                registry: c.registry.to_string(),
                service: c.service.key().to_string(),
                instance: instance.id.clone(),
                address: instance.address.to_string(),
                published,
            }
        })
        .collect();
    Some(Explanation {
        key: key.clone(),
        contributors: members,
        rules: kept.into_iter().chain(trace.lines()).collect(),
        instances,
        more_instances: total.saturating_sub(MAX_FATES),
        objects,
        skipped: translation.skipped,
        notes: translation.notes,
        refused: Vec::new(),
    })
}
