//! End-to-end: `registry-sync run` follows Dubbo providers in a real ZooKeeper into
//! the files sink, keeps the objects while ZooKeeper is down and converges when it is
//! back. Needs the servers that `scripts/test` starts; skipped with a message
//! otherwise (a failure under CI).

use crate::support;

use std::time::Duration;

use registry_sync_testing::servers::TestZookeeper;
use support::*;
use zookeeper_client::{Acls, Client, CreateMode};

const CONFIG: &str = "registries:
  - name: dubbo
    kind: zookeeper
    address: ADDRESS
    layout: dubbo
    namespace: mesh
    endpoints: inline
sinks:
  files:
    dir: out
";

const DEMO: &str = "com.example.DemoService";

/// Runs ZooKeeper writes on a short-lived client.
fn with_zk(address: &str, f: impl AsyncFnOnce(&Client)) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::connector()
            .connect(address)
            .await
            .expect("connect to ZooKeeper");
        f(&client).await;
    });
}

fn provider_path(port: u16) -> String {
    let url = format!("dubbo://10.0.0.1:{port}/{DEMO}?application=demo&side=provider");
    let node = percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC);
    format!("/dubbo/{DEMO}/providers/{node}")
}

fn register(address: &str, port: u16) {
    with_zk(address, async |zk| {
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        zk.mkdir(&format!("/dubbo/{DEMO}/providers"), &options)
            .await
            .expect("mkdir");
        zk.create(&provider_path(port), b"", &options)
            .await
            .expect("create the provider");
    });
}

fn deregister(address: &str, port: u16) {
    with_zk(address, async |zk| {
        zk.delete(&provider_path(port), None).await.expect("delete")
    });
}

/// The text of the one ServiceEntry in `out/`, if there is one.
fn entry(ws: &Workspace) -> Option<String> {
    let name = ws.out_files().into_keys().find(|n| n.contains("serviceentry"))?;
    std::fs::read_to_string(ws.out_dir().join(name)).ok()
}

fn await_entry(ws: &Workspace, child: &ChildGuard, what: &str, cond: impl Fn(&str) -> bool) {
    assert!(
        wait_until(Duration::from_secs(30), || entry(ws).is_some_and(|t| cond(&t))),
        "{what}: the ServiceEntry never matched ({:?}); stderr:\n{}",
        entry(ws),
        child.stderr()
    );
}

#[test]
fn run_follows_dubbo_providers_into_files_keeps_them_while_zookeeper_is_down_and_converges_after() {
    let Some(mut zookeeper) = TestZookeeper::start() else {
        return;
    };
    let address = zookeeper.address();
    let ws = Workspace::new();
    ws.write_config(&CONFIG.replace("ADDRESS", &address));
    register(&address, 20880);
    let child = ws.spawn_run();

    await_entry(&ws, &child, "the provider appears", |t| {
        t.contains("com.example.demoservice") && t.contains("10.0.0.1") && t.contains("20880")
    });
    register(&address, 20881);
    deregister(&address, 20880);
    await_entry(&ws, &child, "the provider moves", |t| {
        t.contains("20881") && !t.contains("20880")
    });

    zookeeper.stop();
    child.assert_down_and_nothing_deleted(&ws, "ZooKeeper", Duration::from_secs(30));

    zookeeper.resume();
    register(&address, 20882);
    await_entry(&ws, &child, "the new provider after the restart", |t| {
        t.contains("20882")
    });

    with_zk(&address, async |zk| {
        for port in [20881, 20882] {
            let _ = zk.delete(&provider_path(port), None).await;
        }
        zk.delete(&format!("/dubbo/{DEMO}/providers"), None)
            .await
            .expect("delete providers");
    });
    assert!(
        wait_until(Duration::from_secs(30), || entry(&ws).is_none()),
        "the ServiceEntry was never deleted; stderr:\n{}",
        child.stderr()
    );
    child.stop_cleanly();
}
