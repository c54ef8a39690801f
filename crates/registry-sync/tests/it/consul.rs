//! End-to-end: `registry-sync run` follows the Consul stand-in into the files sink,
//! keeps the objects while Consul is down and converges when it is back.

use crate::support;

use std::time::Duration;

use registry_sync_testing::standins::consul::ConsulStandIn;
use serde_json::json;
use support::*;

fn config(url: &str, token_file: &str) -> String {
    format!(
        "registries:
  - name: consul
    kind: consul
    address: \"{url}\"
    datacenter: dc1
    token_file: {token_file}
    wait: 2s
    namespace: mesh
    endpoints: inline
sinks:
  files:
    dir: out
"
    )
}

fn web(id: &str, address: &str, port: u16) -> serde_json::Value {
    json!({"ID": id, "Name": "web", "Address": address, "Port": port, "Meta": {"protocol": "http"},
        "Check": {"CheckID": format!("check-{id}"), "Status": "passing"}})
}

#[test]
fn run_follows_consul_into_files_keeps_them_while_consul_is_down_and_converges_after() {
    let mut consul = ConsulStandIn::start();
    consul.require_token("consul-acl-token");
    let ws = Workspace::new();
    ws.write("consul-token", "consul-acl-token\n");
    ws.write_config(&config(&consul.url(), "consul-token"));
    consul.register(web("web-1", "10.0.0.1", 8080)).unwrap();
    let child = ws.spawn_run();
    let file = ws.service_entry_file("consul.web");

    child.await_file(&file, "web appears", |t| {
        t.contains("10.0.0.1") && t.contains("http-8080")
    });
    assert_eq!(parse_object(&file).spec.hosts, ["web.service.consul"]);

    consul.register(web("web-1", "10.0.0.1", 9090)).unwrap();
    child.await_file(&file, "the port follows", |t| t.contains("http-9090"));
    consul.register(web("web-2", "10.0.0.2", 9090)).unwrap();
    consul.set_check("check-web-1", "critical");
    child.await_file(&file, "web-1 fails its check", |t| {
        t.contains("10.0.0.2") && !t.contains("10.0.0.1")
    });

    consul.stop();
    child.assert_down_and_nothing_deleted(&ws, "Consul", Duration::from_secs(30));
    consul
        .register(json!({"ID": "pay-1", "Name": "payments", "Address": "10.0.1.1", "Port": 8443}))
        .unwrap();
    consul.resume();
    child.await_file(
        &ws.service_entry_file("consul.payments"),
        "payments after the restart",
        |t| t.contains("10.0.1.1"),
    );
    assert!(file.exists(), "web was kept across the outage");

    assert!(consul.deregister("web-1") && consul.deregister("web-2"));
    assert!(
        wait_until(Duration::from_secs(30), || !file.exists()),
        "web was never deleted after its last instance went; stderr:\n{}",
        child.stderr()
    );
    assert!(
        !child.stderr().contains("consul-acl-token"),
        "the token was logged"
    );
    child.stop_cleanly();
}

#[test]
fn check_reports_an_unreachable_consul_naming_the_registry() {
    let ws = Workspace::new();
    ws.write("consul-token", "t\n");
    let closed = format!("http://127.0.0.1:{}", registry_sync_testing::servers::free_port());
    ws.check_fails_naming(
        &config(&closed, "consul-token"),
        "registry consul (consul): FAILED",
        &closed,
    );
}

#[test]
fn keys_of_another_kind_on_a_consul_registry_are_refused_with_their_line() {
    let ws = Workspace::new();
    ws.write_config(
        "registries:
  - name: consul
    kind: consul
    address: \"http://127.0.0.1:8500\"
    prefix: /services
    namespace: mesh
",
    );
    let output = ws.cmd("check");
    assert_ne!(output.code(), Some(0), "{output}");
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains("line 5") && text.contains("registries[0].prefix"),
        "{output}"
    );
}
