//! End-to-end: `registry-sync run` follows SRV records of a real dnsmasq into the files
//! sink, keeps the objects while the server is down and converges when it is back.
//! Needs the dnsmasq that `scripts/test` installs; skipped with a message otherwise (a
//! failure under CI).

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use registry_sync_testing::servers::TestDnsmasq;
use support::*;

fn config(nameserver: &str) -> String {
    format!(
        "registries:
  - name: legacy-dns
    kind: dns
    nameserver: \"{nameserver}\"
    names: [_http._tcp.billing.example, _grpc._tcp.orders.example]
    min_refresh: 200ms
    namespace: mesh
    endpoints: inline
sinks:
  files:
    dir: out
"
    )
}

const RECORDS: &str = "\
srv-host=_http._tcp.billing.example,a.billing.example,8080,0,3
srv-host=_grpc._tcp.orders.example,o.example,7000
host-record=a.billing.example,10.0.0.1
host-record=o.example,10.0.1.1";

/// The ServiceEntry file whose host is `host`, once there is one.
fn entry_for(ws: &Workspace, host: &str) -> Option<PathBuf> {
    ws.out_files()
        .into_keys()
        .map(|name| ws.out_dir().join(name))
        .find(|path| {
            path.to_string_lossy().contains(".serviceentry.")
                && std::fs::read_to_string(path).is_ok_and(|t| t.contains(&format!("- {host}")))
        })
}

fn await_entry(child: &ChildGuard, ws: &Workspace, host: &str, what: &str, cond: impl Fn(&str) -> bool) {
    assert!(
        wait_until(Duration::from_secs(30), || entry_for(ws, host)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|t| cond(&t))),
        "{what}: never matched; files: {:?}; stderr:\n{}",
        ws.out_files().keys().collect::<Vec<_>>(),
        child.stderr()
    );
}

#[test]
fn run_follows_srv_records_into_files_keeps_them_while_dns_is_down_and_converges_after() {
    let Some(mut dns) = TestDnsmasq::start(RECORDS) else {
        return;
    };
    let ws = Workspace::new();
    ws.write_config(&config(&dns.address()));
    let child = ws.spawn_run();

    await_entry(&child, &ws, "billing.example", "billing appears", |t| {
        t.contains("10.0.0.1") && t.contains("http-8080")
    });
    let billing = entry_for(&ws, "billing.example").unwrap();
    let object = parse_object(&billing);
    assert_eq!(object.spec.hosts, ["billing.example"]);
    assert_eq!(
        object.service_ports()[0].protocol,
        "HTTP",
        "the SRV service label names the port"
    );
    assert_eq!(object.spec.endpoints[0].weight, Some(3));
    await_entry(&child, &ws, "orders.example", "orders appears", |t| {
        t.contains("GRPC")
    });

    // A new target, a changed port.
    dns.restart(&format!(
        "{RECORDS}\nsrv-host=_http._tcp.billing.example,b.billing.example,8080,0,0\nhost-record=b.billing.example,10.0.0.2"
    ));
    await_entry(&child, &ws, "billing.example", "b joins", |t| {
        t.contains("10.0.0.2")
    });

    // The server goes away: nothing is deleted, the failure is logged.
    dns.stop();
    child.assert_down_and_nothing_deleted(&ws, "DNS", Duration::from_secs(30));

    // Back without orders: billing converges, orders is deleted.
    dns.restart(
        "srv-host=_http._tcp.billing.example,a.billing.example,9090\nhost-record=a.billing.example,10.0.0.1",
    );
    await_entry(&child, &ws, "billing.example", "billing converges", |t| {
        t.contains("http-9090") && !t.contains("10.0.0.2")
    });
    assert!(
        wait_until(Duration::from_secs(30), || entry_for(&ws, "orders.example")
            .is_none()),
        "orders was never deleted after its SRV name went; stderr:\n{}",
        child.stderr()
    );
    child.stop_cleanly();
}

#[test]
fn check_reports_an_unreachable_dns_server_naming_the_registry() {
    let ws = Workspace::new();
    // A UDP port nobody listens on: the query is refused at once.
    let closed = format!("127.0.0.1:{}", registry_sync_testing::servers::free_port());
    ws.check_fails_naming(&config(&closed), "registry legacy-dns (dns): FAILED", &closed);
}
