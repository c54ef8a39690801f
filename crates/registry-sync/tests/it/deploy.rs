//! The shipped deployment files are valid: the plain manifests parse, give the
//! least-privilege RBAC the docs promise, and carry a config registry-sync accepts.

use std::collections::BTreeMap;
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
    let budget = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(budget.len(), 1, "one replica stays through drains");
    assert_eq!(
        budget[0]["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "the budget covers the Deployment's pods"
    );
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
                resources.iter().all(|r| [
                    "serviceentries",
                    "workloadentries",
                    "workloadentries/status",
                    "leases"
                ]
                .contains(r)),
                "unexpected resources {resources:?}"
            );
            if resources.contains(&"workloadentries/status") {
                assert_eq!(
                    rule["verbs"],
                    serde_json::json!(["get", "patch"]),
                    "the status only read and patched"
                );
            }
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
    assert!(
        config.status_listen.is_some_and(|page| page.ip().is_loopback()),
        "the chart serves the status page on loopback only"
    );
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
        "templates/poddisruptionbudget.yaml",
        "templates/servicemonitor.yaml",
        "templates/networkpolicy.yaml",
    ] {
        assert!(chart.join(file).is_file(), "missing {file}");
    }
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    assert_eq!(values["replicaCount"], 2);
    assert_eq!(
        values["podDisruptionBudget"]["enabled"], true,
        "two replicas keep one through drains"
    );
    assert_eq!(
        values["metrics"]["serviceMonitor"]["enabled"], false,
        "the CRD may not exist"
    );
    assert!(values["secretMounts"].as_array().is_some_and(Vec::is_empty));
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

/// The ConfigMap's files (`sync.yaml` and the chart's `files`) as the real `helm
/// template` renders them for a release `name` in `namespace`, with `values` over the
/// chart's own; `None` when the test is skipped (no helm outside CI).
fn helm_rendered(namespace: &str, name: &str, values: &Value) -> Option<BTreeMap<String, String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, serde_json::to_string(values).unwrap()).unwrap();
    let chart = repo().join("deploy/helm/registry-sync");
    let out = registry_sync_testing::servers::helm(&[
        "template",
        name,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--values",
        file.to_str().unwrap(),
        "--show-only",
        "templates/configmap.yaml",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map: Value = serde_saphyr::from_str(&stdout).unwrap();
    Some(
        map["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
    )
}

/// Writes the ConfigMap's files and runs `registry-sync check` on its `sync.yaml`.
fn check_rendered(files: &BTreeMap<String, String>) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry-sync"))
        .args(["check", "--config"])
        .arg(dir.path().join("sync.yaml"))
        .output()
        .unwrap();
    drop(dir);
    out
}

#[test]
fn the_chart_passes_helm_lint_strict() {
    let chart = repo().join("deploy/helm/registry-sync");
    let Some(out) = registry_sync_testing::servers::helm(&["lint", "--strict", chart.to_str().unwrap()])
    else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
}

#[test]
fn the_charts_rendered_config_passes_check_for_either_sink_and_with_a_mounted_secret() {
    let chart = repo().join("deploy/helm/registry-sync");
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();

    let Some(files) = helm_rendered("mesh-system", "sync", &serde_json::json!({})) else {
        return;
    };
    let config: Value = serde_saphyr::from_str(&files["sync.yaml"]).unwrap();
    assert_eq!(
        config["sinks"]["kubernetes"]["instance"], "mesh-system-sync",
        "a unique default instance"
    );
    let out = check_rendered(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registry legacy (file): ok"), "{stdout}");

    let mcp = helm_rendered("mesh-system", "sync", &serde_json::json!({"sink": "mcp"})).unwrap();
    let config: Value = serde_saphyr::from_str(&mcp["sync.yaml"]).unwrap();
    assert_eq!(config["sinks"]["mcp"]["listen"], "0.0.0.0:15010", "{config}");
    let out = check_rendered(&mcp);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A registry whose password comes from a `secretMounts` entry: the config points at
    // the mount path the Deployment template uses; check names the registry and the
    // file when the Secret is not there, and never a secret's value.
    let mut registries = values["config"]["registries"].clone();
    registries.as_array_mut().unwrap().push(serde_json::json!({
        "name": "kv", "kind": "etcd", "namespace": "mesh-external",
        "address": "http://127.0.0.1:1", "prefix": "/services",
        "username": "sync", "password_file": "/var/run/secrets/registry-sync/etcd-auth/password",
    }));
    let deployment = std::fs::read_to_string(chart.join("templates/deployment.yaml")).unwrap();
    assert!(deployment.contains("mountPath: /var/run/secrets/registry-sync/{{ .name }}"));
    let with_secret = helm_rendered(
        "mesh-system",
        "sync",
        &serde_json::json!({"config": {"registries": registries}}),
    )
    .unwrap();
    let out = check_rendered(&with_secret);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("registry kv (etcd): FAILED")
            && stdout.contains("/var/run/secrets/registry-sync/etcd-auth/password"),
        "{stdout}"
    );
}
