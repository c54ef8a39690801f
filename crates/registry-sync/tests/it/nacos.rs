//! End-to-end: `registry-sync run` follows a real Nacos server (rnacos) into the files
//! sink, keeps the objects while Nacos is down and converges when it is back. Needs
//! the server that `scripts/test` installs and starts; skipped with a message otherwise
//! (a failure under CI).

use crate::support;

use std::time::Duration;

use registry_sync_testing::servers::{NACOS_VAR, NacosInstance, NacosWriter, TestNacos, shared_server};
use support::*;

fn config(address: &str, namespace_id: &str, auth: &str) -> String {
    format!(
        "registries:
  - name: nacos
    kind: nacos
    address: \"{address}\"
    namespace_id: {namespace_id}
    interval: 1s
    namespace: mesh
    endpoints: inline
{auth}sinks:
  files:
    dir: out
"
    )
}

fn orders<'a>(ip: &'a str, port: u32, extra: &'a [(&'a str, &'a str)]) -> NacosInstance<'a> {
    NacosInstance {
        namespace_id: "public",
        group: "DEFAULT_GROUP",
        service: "orders",
        ip,
        port,
        extra,
    }
}

const HTTP: &[(&str, &str)] = &[("metadata", r#"{"protocol":"http"}"#)];

#[test]
fn run_follows_nacos_into_files_keeps_them_while_nacos_is_down_and_converges_after() {
    let Some(mut server) = TestNacos::start_with_auth() else {
        return;
    };
    let nacos = server.writer().login("nacos", "nacos");
    let ws = Workspace::new();
    ws.write("nacos-password", "nacos\n");
    let auth = "    username: nacos\n    password_file: nacos-password\n";
    ws.write_config(&config(&server.address(), "public", auth));
    nacos.put(&orders("10.0.0.1", 8080, HTTP));
    let mut child = ws.spawn_run();
    let file = ws.service_entry_file("nacos.orders");

    child.await_file(&file, "orders appears", |t| {
        t.contains("10.0.0.1") && t.contains("http-8080")
    });
    assert_eq!(parse_object(&file).spec.hosts, ["orders.nacos"]);

    nacos.put(&orders("10.0.0.1", 9090, HTTP));
    nacos.delete("public", "DEFAULT_GROUP", "orders", "10.0.0.1", 8080);
    child.await_file(&file, "the port follows", |t| {
        t.contains("http-9090") && !t.contains("8080")
    });
    let weighted: Vec<(&str, &str)> = [HTTP, &[("weight", "0.5")]].concat();
    nacos.put(&orders("10.0.0.2", 9090, &weighted));
    nacos.delete("public", "DEFAULT_GROUP", "orders", "10.0.0.1", 9090);
    child.await_file(&file, "10.0.0.2 with weight 50 replaces 10.0.0.1", |t| {
        t.contains("10.0.0.2") && !t.contains("10.0.0.1") && t.contains("weight: 50")
    });

    // Nacos goes away: nothing is deleted, the failure is logged.
    server.stop();
    child.assert_down_and_nothing_deleted(&ws, "Nacos", Duration::from_secs(30));

    server.resume();
    let nacos = server.writer().login("nacos", "nacos");
    nacos.put(&NacosInstance {
        service: "payments",
        ..orders("10.0.1.1", 8443, &[])
    });
    nacos.put(&orders("10.0.0.2", 9090, &weighted));
    child.await_file(
        &ws.service_entry_file("nacos.payments"),
        "payments after the restart",
        |t| t.contains("10.0.1.1"),
    );
    assert!(file.exists(), "orders was kept across the outage");

    nacos.delete("public", "DEFAULT_GROUP", "orders", "10.0.0.2", 9090);
    nacos.delete_service("public", "DEFAULT_GROUP", "orders");
    assert!(
        wait_until(Duration::from_secs(30), || !file.exists()),
        "orders was never deleted after the service went; stderr:\n{}",
        child.stderr()
    );
    let stderr = child.stderr();
    assert!(!stderr.contains("password=nacos"), "the password was logged");
    child.terminate();
    assert!(
        child.wait_timeout(DEADLINE).is_some_and(|s| s.success()),
        "run did not stop cleanly; stderr:\n{}",
        child.stderr()
    );
}

#[test]
fn render_publishes_a_group_in_the_host_and_the_protocol_from_metadata() {
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let namespace_id = format!("render-{}", std::process::id());
    let nacos = NacosWriter::new(&address);
    nacos.put(&NacosInstance {
        namespace_id: &namespace_id,
        group: "SHOP",
        service: "carts",
        ip: "10.0.2.1",
        port: 7000,
        extra: &[("metadata", r#"{"protocol":"grpc","version":"v1"}"#)],
    });
    nacos.put(&NacosInstance {
        namespace_id: &namespace_id,
        group: "DEFAULT_GROUP",
        service: "users",
        ip: "10.0.2.2",
        port: 8080,
        extra: &[],
    });
    let ws = Workspace::new();
    ws.write_config(&config(&address, &namespace_id, ""));
    let output = ws.cmd("render");
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("- carts.shop.nacos"), "{output}");
    assert!(output.stdout.contains("- users.nacos"), "{output}");
    assert!(
        output.stdout.contains("grpc-7000") && output.stdout.contains("tcp-8080"),
        "{output}"
    );
}

#[test]
fn check_reports_an_unreachable_nacos_naming_the_registry() {
    let ws = Workspace::new();
    let closed = format!("127.0.0.1:{}", registry_sync_testing::servers::free_port());
    ws.check_fails_naming(
        &config(&closed, "public", ""),
        "registry nacos (nacos): FAILED",
        &closed,
    );
}

#[test]
fn a_nacos_address_with_a_scheme_is_refused_with_its_line() {
    let ws = Workspace::new();
    ws.write_config(&config("http://127.0.0.1:8848", "public", ""));
    let output = ws.cmd("check");
    assert_ne!(output.code(), Some(0), "{output}");
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains("line 4") && text.contains("registries[0].address"),
        "{output}"
    );
}
