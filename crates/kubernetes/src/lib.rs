//! registry-sync's Kubernetes side: the sink that keeps ServiceEntries and
//! WorkloadEntries in the API server, and the leader election that lets several
//! replicas run while one writes.
//!
//! ```text
//!  the sink's writer ──plan──▶ KubeSink ──SSA / DELETE / status──▶ API server
//!        ▲                      │  ▲                                   │
//!        └─ held, drift ◀───────┘  └──── label-selected watch ◀────────┘
//!                 every request gated by Leadership (a Lease)
//! ```

#![forbid(unsafe_code)]

pub mod leader;
mod open;
pub mod pacing;
pub mod sink;

pub use leader::{LeaderSettings, Leadership};
pub use open::{ElectionOptions, KubeOptions, Mode, OpenError, Opened, open};
pub use sink::{
    FIELD_MANAGER, GUARD_MEMORY_ANNOTATION, GuardStore, KubeSink, KubeSinkSettings, api_resource,
};

/// A client for the given kubeconfig file, or — without one — the environment's
/// (`KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {} is not usable: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration found (KUBECONFIG, ~/.kube/config, in-cluster): {e}")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}
