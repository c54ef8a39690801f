//! The shipped deployment files are valid: the plain manifests parse, give the
//! least-privilege RBAC the README promises, and carry a config registry-sync accepts.

use std::path::{Path, PathBuf};

use registry_sync::config::Config;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/manifests/registry-sync.yaml")).unwrap();
    serde_saphyr::from_str_multiple(&text).expect("the manifests are valid YAML")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn the_manifests_run_two_replicas_with_probes_as_non_root() {
    let docs = manifests();
    let deployment = of_kind(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(of_kind(&docs, "Service").len(), 1, "a metrics Service");
}

#[test]
fn the_manifests_grant_nothing_cluster_wide_and_only_what_is_needed() {
    let docs = manifests();
    assert!(of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty());
    for role in of_kind(&docs, "Role") {
        for rule in role["rules"].as_array().unwrap() {
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                resources
                    .iter()
                    .all(|r| ["serviceentries", "workloadentries", "leases"].contains(r)),
                "unexpected resources {resources:?}"
            );
            if resources.contains(&"leases") {
                assert_eq!(
                    role["metadata"]["namespace"], "registry-sync",
                    "leases only in its own namespace"
                );
            }
        }
    }
}

#[test]
fn the_config_in_the_manifests_is_accepted() {
    let docs = manifests();
    let configmap = of_kind(&docs, "ConfigMap")[0];
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in configmap["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), content.as_str().unwrap()).unwrap();
    }
    let config = Config::load(&dir.path().join("sync.yaml")).expect("the shipped config is valid");
    assert!(config.sinks.kubernetes.is_some());
    assert!(config.admin_listen.is_some());
    let loaded =
        registry_sync_sources::file::FileSource::new("legacy", dir.path().join("services.yaml")).load();
    assert!(loaded.is_ok(), "{loaded:?}");
}

#[test]
fn the_helm_chart_has_every_template_the_readme_lists() {
    let chart = repo().join("deploy/helm/registry-sync");
    for file in [
        "Chart.yaml",
        "values.yaml",
        "templates/deployment.yaml",
        "templates/rbac.yaml",
        "templates/configmap.yaml",
        "templates/service.yaml",
        "templates/serviceaccount.yaml",
    ] {
        assert!(chart.join(file).is_file(), "missing {file}");
    }
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    assert_eq!(values["replicaCount"], 2);
    // The chart's registry config, as the chart renders it, minus the parts it fills in.
    let mut config = values["config"].clone();
    config["sinks"] = serde_json::json!({"stdout": true});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sync.yaml"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    Config::load(&dir.path().join("sync.yaml")).expect("the chart's default config is valid");

    // `sink: mcp`: the chart fills in `sinks.mcp.listen` from `mcp.port`.
    assert_eq!(values["sink"], "kubernetes");
    config["sinks"] = serde_json::json!({"mcp": {"listen": format!("0.0.0.0:{}", values["mcp"]["port"])}});
    std::fs::write(
        dir.path().join("sync.yaml"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    let mcp = Config::load(&dir.path().join("sync.yaml")).expect("the chart's MCP config is valid");
    assert_eq!(mcp.sinks.mcp.map(|m| m.listen.port()), Some(15010));
}
