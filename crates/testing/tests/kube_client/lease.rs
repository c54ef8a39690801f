//! Leases, as leader election uses them.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use registry_sync_testing::kube::Resource;
use serde_json::json;

use crate::common::{NS, setup, status};

fn lease(holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("registry-sync".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    }
}

#[tokio::test]
async fn a_lease_replace_with_a_stale_resource_version_conflicts_as_leader_election_expects() {
    let (server, client) = setup().await;
    let leases: Api<Lease> = Api::namespaced(client, NS);
    let created = leases
        .create(&PostParams::default(), &lease("replica-a"))
        .await
        .unwrap();
    let err = status(leases.create(&PostParams::default(), &lease("replica-b")).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().lease_transitions = Some(1);
    let renewed = leases
        .replace("registry-sync", &PostParams::default(), &renewed)
        .await
        .unwrap();

    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    let err = status(
        leases
            .replace("registry-sync", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let stored = server.object(Resource::Lease, NS, "registry-sync").unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], "replica-a");

    let mut unconditional = renewed.clone();
    unconditional.metadata.resource_version = None;
    unconditional.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    leases
        .replace("registry-sync", &PostParams::default(), &unconditional)
        .await
        .expect("Leases allow it");

    let deleted = leases.delete("registry-sync", &Default::default()).await.unwrap();
    assert!(deleted.is_right(), "a Lease delete answers with a Status");
}

#[tokio::test]
async fn a_strategic_merge_patch_with_nulls_clears_lease_fields_and_an_apply_conflicts_with_the_patcher() {
    let (_server, client) = setup().await;
    let leases: Api<Lease> = Api::namespaced(client, NS);
    leases
        .create(&PostParams::default(), &lease("replica-a"))
        .await
        .unwrap();
    let renew = json!({"spec": {"renewTime": "2026-01-01T00:00:00.000000Z", "holderIdentity": "replica-a"}});
    leases
        .patch(
            "registry-sync",
            &PatchParams::apply("a").force(),
            &Patch::Apply(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "replica-a"}})),
        )
        .await
        .unwrap();
    leases
        .patch(
            "registry-sync",
            &PatchParams {
                field_manager: Some("a".into()),
                ..Default::default()
            },
            &Patch::Strategic(&renew),
        )
        .await
        .unwrap();

    let grab = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "replica-b"}});
    let err = status(
        leases
            .patch("registry-sync", &PatchParams::apply("b"), &Patch::Apply(&grab))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    let release = json!({"spec": {"holderIdentity": null, "renewTime": null}});
    let released = leases
        .patch(
            "registry-sync",
            &PatchParams {
                field_manager: Some("a".into()),
                ..Default::default()
            },
            &Patch::Strategic(&release),
        )
        .await
        .unwrap();
    let spec = released.spec.unwrap();
    assert_eq!((spec.holder_identity, spec.renew_time), (None, None));
    let taken = leases
        .patch("registry-sync", &PatchParams::apply("b"), &Patch::Apply(&grab))
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("replica-b"));
}

#[tokio::test]
async fn kube_lease_manager_elects_one_leader_and_hands_over_on_release() {
    let (_server, client) = setup().await;
    let manager = |identity: &str| {
        LeaseManagerBuilder::new(client.clone(), "registry-sync-leader")
            .with_namespace(NS)
            .with_parameters(LeaseParams::new(identity, 5, 2))
            .build()
    };
    let a = manager("replica-a").await.unwrap();
    let b = manager("replica-b").await.unwrap();
    assert!(a.changed().await.unwrap(), "the first replica takes the lease");
    let waiting = tokio::time::timeout(Duration::from_millis(1500), b.changed()).await;
    assert!(
        waiting.is_err(),
        "the second replica waits while the lease is held"
    );
    a.release().await.unwrap();
    let b_leads = tokio::time::timeout(Duration::from_secs(10), b.changed())
        .await
        .expect("handover");
    assert!(b_leads.unwrap(), "the second replica takes over");
}
