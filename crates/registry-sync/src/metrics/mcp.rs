//! What the MCP server tells Prometheus: connected istiods, pushes and bytes by type,
//! how long istiod takes to acknowledge, and the version each one acknowledged last.
//!
//! Series stay bounded whatever a client sends: the type label is one of our two kinds
//! or `other`, and a client's series go when it disconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AckLabels {
    pub node: String,
    pub r#type: &'static str,
    pub version: String,
}

#[derive(Clone)]
pub struct McpMetrics {
    pub clients: Gauge,
    pub pushes: Family<TypeLabels, Counter>,
    pub bytes: Family<TypeLabels, Counter>,
    pub ack_seconds: Histogram,
    pub acked: Family<AckLabels, Gauge>,
    /// The series of `acked` each client has now, so an older one can be removed.
    last_acked: Arc<Mutex<HashMap<(String, &'static str), String>>>,
}

/// The label of a requested type URL.
fn type_label(type_url: &str) -> &'static str {
    match type_url.rsplit_once('/').map(|(_, kind)| kind) {
        Some("ServiceEntry") if type_url.starts_with("networking.istio.io/") => "ServiceEntry",
        Some("WorkloadEntry") if type_url.starts_with("networking.istio.io/") => "WorkloadEntry",
        _ => "other",
    }
}

impl McpMetrics {
    pub fn register(registry: &mut Registry) -> McpMetrics {
        let metrics = McpMetrics {
            clients: Gauge::default(),
            pushes: Family::default(),
            bytes: Family::default(),
            // 1 ms to ~65 s.
            ack_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            acked: Family::default(),
            last_acked: Arc::default(),
        };
        registry.register(
            "mcp_clients",
            "istiod streams connected to the MCP server",
            metrics.clients.clone(),
        );
        registry.register(
            "mcp_pushes",
            "Responses sent to istiod, by type (ServiceEntry, WorkloadEntry, other)",
            metrics.pushes.clone(),
        );
        registry.register(
            "mcp_pushed_bytes",
            "Encoded bytes of the responses sent to istiod, by type",
            metrics.bytes.clone(),
        );
        registry.register(
            "mcp_ack_seconds",
            "From a response sent to istiod to its acknowledgement",
            metrics.ack_seconds.clone(),
        );
        registry.register(
            "mcp_acked_version",
            "1 for the set version each connected istiod acknowledged last, per type",
            metrics.acked.clone(),
        );
        metrics
    }
}

/// The MCP server reports through this.
#[cfg(feature = "mcp")]
impl registry_sync_mcp::server::Observer for McpMetrics {
    fn connected(&self, node: &str) {
        McpMetrics::connected(self, node);
    }

    fn disconnected(&self, node: &str) {
        McpMetrics::disconnected(self, node);
    }

    fn pushed(&self, type_url: &str, bytes: usize) {
        McpMetrics::pushed(self, type_url, bytes);
    }

    fn acked(&self, node: &str, type_url: &str, version: &str, after: Duration) {
        McpMetrics::acked(self, node, type_url, version, after);
    }
}

impl McpMetrics {
    pub fn connected(&self, _node: &str) {
        self.clients.inc();
    }

    pub fn disconnected(&self, node: &str) {
        self.clients.dec();
        let mut last = self.last_acked.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|(n, r#type), version| {
            if n != node {
                return true;
            }
            self.acked.remove(&AckLabels {
                node: n.clone(),
                r#type,
                version: version.clone(),
            });
            false
        });
    }

    pub fn pushed(&self, type_url: &str, bytes: usize) {
        let labels = TypeLabels {
            r#type: type_label(type_url),
        };
        self.pushes.get_or_create(&labels).inc();
        self.bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    pub fn acked(&self, node: &str, type_url: &str, version: &str, after: Duration) {
        self.ack_seconds.observe(after.as_secs_f64());
        let r#type = type_label(type_url);
        if r#type == "other" {
            return;
        }
        let mut last = self.last_acked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = last.insert((node.to_string(), r#type), version.to_string()) {
            self.acked.remove(&AckLabels {
                node: node.to_string(),
                r#type,
                version: old,
            });
        }
        self.acked
            .get_or_create(&AckLabels {
                node: node.to_string(),
                r#type,
                version: version.to_string(),
            })
            .set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_kinds_name_a_type_label_whatever_a_client_asks_for() {
        assert_eq!(type_label("networking.istio.io/v1/ServiceEntry"), "ServiceEntry");
        assert_eq!(
            type_label("networking.istio.io/v1alpha3/WorkloadEntry"),
            "WorkloadEntry"
        );
        assert_eq!(type_label("core/v1alpha1/MeshConfig"), "other");
        assert_eq!(type_label("evil.example/v1/ServiceEntry"), "other");
        assert_eq!(type_label(&"x".repeat(10_000)), "other");
    }
}
