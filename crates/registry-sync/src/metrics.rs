//! What `run` tells Prometheus: per registry whether it answers, when it last did, what
//! it holds and what was skipped; per sink the writes by verb and result, conflicts and
//! plan sizes; and how long a registry event takes to reach every sink.
//!
//! Label values are bounded: registry and sink names come from the config, and skip
//! reasons are folded into a few categories, so no registry data can blow up the
//! series count. No label or value ever carries a secret.

mod mcp;

pub use self::mcp::McpMetrics;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use registry_sync_catalog::Skipped;
use registry_sync_plan::{HeldBack, Plan, Replacement};
use registry_sync_sinks::ApplyReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub registry: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

/// A failure's `reason`: a short fixed word (the error's `metric_label`), never a message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryFailureLabels {
    pub registry: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkFailureLabels {
    pub sink: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub sink: String,
    pub verb: &'static str,
    pub result: &'static str,
}

/// `registry_requests_total`, read at each scrape from the counters the sources keep
/// (they count where they send, without a metrics type).
#[derive(Debug)]
struct RegistryRequests;

impl Collector for RegistryRequests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "registry_requests",
            "Requests sent to the registry (HTTP and gRPC calls, watches opened, ZooKeeper operations, DNS queries, file reads); what a registry pushes is not counted",
            None,
            MetricType::Counter,
        )?;
        for (registry, total) in registry_sync_sources::requests::totals() {
            let labels = RegistryLabels { registry };
            ConstCounter::new(total).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// All metrics of one process, cheap to clone (shared series).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub registry_up: Family<RegistryLabels, Gauge>,
    pub registry_last_sync: Family<RegistryLabels, Gauge<f64, AtomicU64>>,
    pub registry_services: Family<RegistryLabels, Gauge>,
    pub registry_instances: Family<RegistryLabels, Gauge>,
    pub registry_failures: Family<RegistryFailureLabels, Counter>,
    pub sink_failures: Family<SinkFailureLabels, Counter>,
    pub skipped: Family<SkipLabels, Counter>,
    pub writes: Family<WriteLabels, Counter>,
    pub conflicts: Family<SinkLabels, Gauge>,
    pub plan_writes: Family<SinkLabels, Histogram>,
    pub held_back: Family<SinkLabels, Gauge>,
    pub replacements_waiting: Family<SinkLabels, Gauge>,
    pub quarantined: Family<SinkLabels, Gauge>,
    pub propagation: Histogram,
    pub leader: Gauge,
    pub mcp: McpMetrics,
    /// The status page's view, fed by the same hooks.
    pub status: crate::status::StatusBoard,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn plan_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 9))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("registry_sync");
        let metrics = Metrics {
            registry: Arc::new(Registry::default()),
            registry_up: Family::default(),
            registry_last_sync: Family::default(),
            registry_services: Family::default(),
            registry_instances: Family::default(),
            registry_failures: Family::default(),
            sink_failures: Family::default(),
            skipped: Family::default(),
            writes: Family::default(),
            conflicts: Family::default(),
            plan_writes: Family::new_with_constructor(plan_histogram),
            held_back: Family::default(),
            replacements_waiting: Family::default(),
            quarantined: Family::default(),
            // 0.5 ms to ~65 s.
            propagation: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            leader: Gauge::default(),
            mcp: McpMetrics::register(&mut registry),
            status: crate::status::StatusBoard::default(),
        };
        registry.register(
            "registry_up",
            "1 while the registry answers, 0 while it fails (its last state is kept)",
            metrics.registry_up.clone(),
        );
        registry.register(
            "registry_last_sync_timestamp_seconds",
            "When the registry last delivered a complete view",
            metrics.registry_last_sync.clone(),
        );
        registry.register(
            "registry_services",
            "Services in the registry's last view",
            metrics.registry_services.clone(),
        );
        registry.register(
            "registry_instances",
            "Instances in the registry's last view",
            metrics.registry_instances.clone(),
        );
        registry.register(
            "registry_failures",
            "Times a registry could not be read, by reason (unreachable, timeout, credentials, denied, throttled, bad_answer, configuration, internal)",
            metrics.registry_failures.clone(),
        );
        registry.register(
            "sink_failures",
            "Times a sink could not be used at all, by reason",
            metrics.sink_failures.clone(),
        );
        registry.register(
            "skipped_items",
            "Registry items left out, by coarse reason",
            metrics.skipped.clone(),
        );
        registry.register(
            "sink_writes",
            "Writes to a sink by verb and result",
            metrics.writes.clone(),
        );
        registry.register(
            "sink_conflicts",
            "Objects not written because someone else owns their name",
            metrics.conflicts.clone(),
        );
        registry.register(
            "sink_plan_writes",
            "Writes per applied plan",
            metrics.plan_writes.clone(),
        );
        registry.register(
            "sink_held_back_changes",
            "Changes the mass-change guard holds back (a registry losing too many objects or endpoints at once); confirm with --confirm-mass-delete",
            metrics.held_back.clone(),
        );
        registry.register(
            "sink_replacements_waiting",
            "Objects kept until the objects replacing them (a move, a rename, a change of endpoint mode) are in the sink; stuck while a successor conflicts or is refused",
            metrics.replacements_waiting.clone(),
        );
        registry.register(
            "sink_quarantined_objects",
            "Objects the sink keeps refusing, retried alone with backoff while everything else flows",
            metrics.quarantined.clone(),
        );
        registry.register(
            "propagation_seconds",
            "From a registry event reaching registry-sync to every sink having applied it",
            metrics.propagation.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader (or leader election is off)",
            metrics.leader.clone(),
        );
        registry.register_collector(Box::new(RegistryRequests));
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    pub fn registry_synced(&self, registry: &str, services: usize, instances: usize, skipped: &[Skipped]) {
        let labels = RegistryLabels {
            registry: registry.to_string(),
        };
        self.registry_up.get_or_create(&labels).set(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        self.registry_last_sync.get_or_create(&labels).set(now);
        self.registry_services.get_or_create(&labels).set(services as i64);
        self.registry_instances
            .get_or_create(&labels)
            .set(instances as i64);
        self.status.registry_synced(registry, services, instances);
        for skip in skipped {
            self.skip(skip);
        }
    }

    pub fn skip(&self, skip: &Skipped) {
        let labels = SkipLabels {
            registry: skip.registry.clone(),
            reason: skip.kind.metric_label(),
        };
        self.skipped.get_or_create(&labels).inc();
    }

    pub fn registry_failed(&self, registry: &str, failure: &registry_sync_sources::SourceFailure) {
        self.status.registry_failed(registry, failure);
        self.registry_up
            .get_or_create(&RegistryLabels {
                registry: registry.to_string(),
            })
            .set(0);
        self.registry_failures
            .get_or_create(&RegistryFailureLabels {
                registry: registry.to_string(),
                reason: failure.reason.metric_label().to_string(),
            })
            .inc();
    }

    /// A sink that could not be used at all (not one refused object: those are counted
    /// by `sink_writes{result="failed"}`).
    pub fn sink_failed(&self, sink: &str, error: &registry_sync_sinks::SinkError) {
        self.sink_failures
            .get_or_create(&SinkFailureLabels {
                sink: sink.to_string(),
                reason: error.metric_label().to_string(),
            })
            .inc();
    }

    pub fn held_back(&self, sink: &str, held_back: &[HeldBack]) {
        self.status.held_back(sink, held_back);
        let changes: usize = held_back.iter().map(|h| h.keys.len()).sum();
        self.held_back
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .set(changes as i64);
    }

    /// The replacements of the last plan that wait for their successors.
    pub fn replacements(&self, sink: &str, waiting: &[Replacement]) {
        self.status.replacements(sink, waiting);
        self.replacements_waiting
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .set(waiting.len() as i64);
    }

    pub fn quarantined(&self, sink: &str, objects: usize) {
        self.quarantined
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .set(objects as i64);
    }

    pub fn applied(&self, sink: &str, plan: &Plan, report: &ApplyReport) {
        self.status.applied(sink, plan, report);
        let sink_labels = SinkLabels {
            sink: sink.to_string(),
        };
        self.conflicts
            .get_or_create(&sink_labels)
            .set(plan.conflicts.len() as i64);
        self.plan_writes
            .get_or_create(&sink_labels)
            .observe(plan.writes() as f64);
        let count = |verb: &'static str, result: &'static str, n: usize| {
            if n > 0 {
                self.writes
                    .get_or_create(&WriteLabels {
                        sink: sink.to_string(),
                        verb,
                        result,
                    })
                    .inc_by(n as u64);
            }
        };
        count("create", "ok", report.created);
        count("update", "ok", report.updated);
        count("delete", "ok", report.deleted);
        count("status", "ok", report.status);
        count("any", "error", report.failed.len());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_registry_sync_prefix() {
        let metrics = Metrics::new();
        metrics.registry_synced("legacy", 3, 7, &[]);
        metrics.registry_failed(
            "other",
            &registry_sync_sources::SourceFailure::new(
                registry_sync_sources::FailureReason::Denied,
                "the token lost its rights",
            ),
        );
        metrics.sink_failed(
            "kubernetes",
            &registry_sync_sinks::SinkError::unavailable(
                registry_sync_sinks::Unavailability::Unreachable,
                "the API server stalls",
            ),
        );
        let text = metrics.encode();
        assert!(
            text.contains("registry_sync_registry_failures_total{registry=\"other\",reason=\"denied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("registry_sync_sink_failures_total{sink=\"kubernetes\",reason=\"unreachable\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("stalls") && !text.contains("rights"),
            "a message is never a label: {text}"
        );
        assert!(
            text.contains("registry_sync_registry_up{registry=\"legacy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("registry_sync_registry_up{registry=\"other\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("registry_sync_registry_instances{registry=\"legacy\"} 7"),
            "{text}"
        );
    }

    #[test]
    fn the_requests_a_source_counts_are_exposed_per_registry() {
        registry_sync_sources::requests::Requests::of("metrics-test-requests").add(12);
        let text = Metrics::new().encode();
        assert!(
            text.contains("registry_sync_registry_requests_total{registry=\"metrics-test-requests\"} 12"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE registry_sync_registry_requests counter"),
            "{text}"
        );
    }

    #[test]
    fn skipped_items_are_counted_by_the_kind_their_source_gave_not_by_their_words() {
        use registry_sync_catalog::SkipKind;
        let metrics = Metrics::new();
        let skip = |kind, reason: &str| Skipped {
            registry: "legacy".into(),
            service: "orders".into(),
            instance: Some("orders-1".into()),
            kind,
            reason: reason.into(),
        };
        // The words mention a port; the kind says it is the address that is wrong.
        metrics.skip(&skip(
            SkipKind::InvalidAddress,
            "port 8080's host \"10.0.0.300\" is no address",
        ));
        metrics.skip(&skip(
            SkipKind::ReservedPort,
            "port 15000 is reserved by Istio's sidecar",
        ));
        metrics.skip(&skip(
            SkipKind::ReservedPort,
            "port 15001 is reserved by Istio's sidecar",
        ));
        let text = metrics.encode();
        for (label, count) in [("invalid_address", 1), ("reserved_port", 2)] {
            let line = format!(
                "registry_sync_skipped_items_total{{registry=\"legacy\",reason=\"{label}\"}} {count}"
            );
            assert!(text.contains(&line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("reason=\"invalid_port\""), "{text}");
    }
}
