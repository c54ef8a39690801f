//! `sinks.kubernetes`: the API server connection, pacing and leader election.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, is_dns_label};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetesSink {
    #[serde(default)]
    kubeconfig: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) instance: Option<Spanned<String>>,
    #[serde(default)]
    qps: Option<Spanned<f64>>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    concurrency: Option<Spanned<usize>>,
    #[serde(default)]
    leader_election: Option<RawLeaderElection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeaderElection {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    lease: Option<Spanned<String>>,
    #[serde(default)]
    lease_duration_seconds: Option<Spanned<u64>>,
}

fn default_true() -> bool {
    true
}

/// `sinks.kubernetes`.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesConfig {
    /// `None`: KUBECONFIG, then ~/.kube/config, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    pub qps: f64,
    pub burst: u32,
    pub concurrency: usize,
    pub leader_election: Option<LeaderElectionConfig>,
}

/// `sinks.kubernetes.leader_election`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease; `None`: the pod's own namespace (POD_NAMESPACE).
    pub namespace: Option<String>,
    pub lease: String,
    pub lease_duration_seconds: u64,
}

#[cfg(feature = "kubernetes")]
impl KubernetesConfig {
    /// What the Kubernetes crate opens the sink with.
    pub fn options(&self, config: &super::Config) -> registry_sync_kubernetes::KubeOptions {
        registry_sync_kubernetes::KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            namespaces: config.namespaces(),
            qps: self.qps,
            burst: self.burst,
            concurrency: self.concurrency,
            instance: config.instance.clone(),
            leader_election: self.leader_election.as_ref().map(|e| {
                registry_sync_kubernetes::ElectionOptions {
                    namespace: e.namespace.clone(),
                    lease: e.lease.clone(),
                    lease_duration: std::time::Duration::from_secs(e.lease_duration_seconds),
                }
            }),
        }
    }
}

/// Validates `sinks.kubernetes`.
pub(super) fn kubernetes_config(
    raw: RawKubernetesSink,
    base: &Path,
    invalid: &super::Invalid,
) -> Result<KubernetesConfig, ConfigError> {
    /// Below one request a minute the sink could not keep up with any registry.
    const MIN_QPS: f64 = 1.0 / 60.0;
    let qps = match raw.qps {
        Some(q) if !(q.value.is_finite() && (q.value == 0.0 || q.value >= MIN_QPS)) => {
            return Err(invalid(
                q.referenced.line(),
                "sinks.kubernetes.qps".into(),
                format!("must be 0 (no limit) or at least {MIN_QPS}"),
            ));
        }
        Some(q) => q.value,
        None => 50.0,
    };
    let concurrency = match raw.concurrency {
        Some(c) if c.value == 0 || c.value > 256 => {
            return Err(invalid(
                c.referenced.line(),
                "sinks.kubernetes.concurrency".into(),
                "must be 1 to 256".into(),
            ));
        }
        Some(c) => c.value,
        None => 8,
    };
    let leader_election = match raw.leader_election {
        Some(le) if !le.enabled => None,
        le => {
            let le = le.unwrap_or(RawLeaderElection {
                enabled: true,
                namespace: None,
                lease: None,
                lease_duration_seconds: None,
            });
            let duration = match le.lease_duration_seconds {
                Some(d) if d.value < 2 || d.value > 3600 => {
                    return Err(invalid(
                        d.referenced.line(),
                        "sinks.kubernetes.leader_election.lease_duration_seconds".into(),
                        "must be 2 to 3600".into(),
                    ));
                }
                Some(d) => d.value,
                None => 15,
            };
            if let Some(ns) = le.namespace.as_ref().filter(|ns| !is_dns_label(&ns.value)) {
                return Err(invalid(
                    ns.referenced.line(),
                    "sinks.kubernetes.leader_election.namespace".into(),
                    format!("{:?} is not a valid namespace name", ns.value),
                ));
            }
            Some(LeaderElectionConfig {
                namespace: le.namespace.map(|ns| ns.value),
                lease: le.lease.map_or_else(|| "registry-sync".to_string(), |l| l.value),
                lease_duration_seconds: duration,
            })
        }
    };
    Ok(KubernetesConfig {
        kubeconfig: raw.kubeconfig.map(|k| expand_home(base, &k.value)),
        qps,
        burst: raw.burst.unwrap_or(100),
        concurrency,
        leader_election,
    })
}

/// `~/x` is relative to the home directory, other relative paths to the config file.
fn expand_home(base: &Path, path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => base.join(path),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn parse(sinks: &str) -> Result<Config, ConfigError> {
        let instance = if sinks.contains("instance") {
            ""
        } else {
            "instance: test\n"
        };
        Config::parse(
            Path::new("/etc/registry-sync/sync.yaml"),
            &format!(
                "{instance}registries:\n  - {{name: a, kind: file, path: s.yaml, namespace: mesh}}\n{sinks}"
            ),
        )
    }

    #[test]
    fn the_kubernetes_sink_needs_a_chosen_instance_name() {
        let err = Config::parse(
            Path::new("/etc/registry-sync/sync.yaml"),
            "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  kubernetes: {}\n",
        )
        .expect_err("no default instance with the Kubernetes sink")
        .to_string();
        assert!(err.contains("`instance`") && err.contains("is required"), "{err}");
    }

    #[test]
    fn the_kubernetes_sink_has_safe_defaults_with_leader_election_on() {
        let config = parse("sinks:\n  kubernetes: {}\n").unwrap();
        let kube = config.sinks.kubernetes.unwrap();
        assert_eq!((kube.qps, kube.burst, kube.concurrency), (50.0, 100, 8));
        let election = kube.leader_election.expect("on by default");
        assert_eq!(
            (election.lease.as_str(), election.lease_duration_seconds),
            ("registry-sync", 15)
        );
        assert_eq!(kube.kubeconfig, None);
        assert_eq!(config.instance, "test");
    }

    #[test]
    fn the_sinks_instance_names_the_installation_and_must_agree_with_the_top_level_one() {
        let config = parse("sinks:\n  kubernetes: {instance: prod-east}\n").unwrap();
        assert_eq!(config.instance, "prod-east");
        let err = Config::parse(
            Path::new("sync.yaml"),
            "instance: a\nregistries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  kubernetes: {instance: b}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sinks.kubernetes.instance") && err.contains("line 5"),
            "{err}"
        );
    }

    #[test]
    fn bad_pacing_and_election_values_name_their_key() {
        let err = parse("sinks:\n  kubernetes: {concurrency: 0}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks.kubernetes.concurrency"), "{err}");
        let tiny = parse("sinks:\n  kubernetes: {qps: 1.0e-300}\n")
            .expect_err("a tiny qps is refused")
            .to_string();
        assert!(tiny.contains("sinks.kubernetes.qps"), "{tiny}");
        let err = parse("sinks:\n  kubernetes: {qps: -1}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks.kubernetes.qps"), "{err}");
        let err = parse("sinks:\n  kubernetes: {leader_election: {lease_duration_seconds: 1}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease_duration_seconds"), "{err}");
        let err = parse("sinks:\n  kubernetes: {leader_elction: {}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("leader_elction"), "{err}");
    }

    #[test]
    fn leader_election_can_be_turned_off_and_kubeconfig_is_relative_to_the_config() {
        let config =
            parse("sinks:\n  kubernetes: {kubeconfig: kube.yaml, leader_election: {enabled: false}}\n")
                .unwrap();
        let kube = config.sinks.kubernetes.unwrap();
        assert!(kube.leader_election.is_none());
        assert_eq!(
            kube.kubeconfig.as_deref(),
            Some(Path::new("/etc/registry-sync/kube.yaml"))
        );
    }

    #[test]
    fn the_mass_delete_share_must_be_a_share() {
        let err = parse("safety: {max_delete_share: 1.5}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("safety.max_delete_share"), "{err}");
        let config = parse("safety: {max_delete_share: 0.2, confirm_mass_delete: true}\n").unwrap();
        assert_eq!(config.safety.max_delete_share, 0.2);
        assert!(config.safety.confirm_mass_delete);
    }

    #[test]
    fn the_admin_address_must_be_an_address_and_port() {
        let err = parse("admin: {listen: localhost}\n").unwrap_err().to_string();
        assert!(err.contains("admin.listen"), "{err}");
        assert!(
            parse("admin: {listen: \"0.0.0.0:9090\"}\n")
                .unwrap()
                .admin_listen
                .is_some()
        );
        let config = parse("admin: {listen: \"0.0.0.0:9090\", status_listen: \"127.0.0.1:9091\"}\n").unwrap();
        assert_eq!(config.status_listen, Some("127.0.0.1:9091".parse().unwrap()));
        let err = parse("admin: {listen: \"0.0.0.0:9090\", status_listen: nine}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.status_listen"), "{err}");
    }
}
