//! End-to-end: `registry-sync run` follows the Eureka stand-in into the files sink,
//! keeps the objects while Eureka is down and converges when it is back.

use crate::support;

use std::time::Duration;

use registry_sync_testing::standins::eureka::EurekaStandIn;
use serde_json::json;
use support::*;

fn config(url: &str) -> String {
    format!(
        "registries:
  - name: eureka
    kind: eureka
    address: \"{url}\"
    refresh: 200ms
    namespace: mesh
    endpoints: inline
sinks:
  files:
    dir: out
"
    )
}

fn orders(id: &str, ip: &str, port: u16) -> serde_json::Value {
    json!({"instanceId": id, "hostName": format!("{id}.local"), "app": "ORDERS", "ipAddr": ip, "status": "UP",
        "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}})
}

#[test]
fn run_follows_eureka_into_files_keeps_them_while_eureka_is_down_and_converges_after() {
    let mut eureka = EurekaStandIn::start();
    eureka.set_single_as_object(true);
    let ws = Workspace::new();
    ws.write_config(&config(&eureka.url()));
    eureka.register("orders", orders("o1", "10.0.0.1", 8080)).unwrap();
    let child = ws.spawn_run();
    // The app name is upper case, so the object name carries a hash suffix.
    let find = || {
        std::fs::read_dir(ws.out_dir())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("mesh.serviceentry.eureka.orders"))
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), || find().is_some()),
        "no file; stderr:\n{}",
        child.stderr()
    );
    let file = find().unwrap();

    child.await_file(&file, "orders appears", |t| {
        t.contains("10.0.0.1") && t.contains("http-8080")
    });
    assert_eq!(parse_object(&file).spec.hosts, ["orders.eureka"]);
    eureka.register("orders", orders("o2", "10.0.0.2", 8080)).unwrap();
    eureka.set_status("orders", "o1", "OUT_OF_SERVICE");
    child.await_file(&file, "o1 out of service", |t| {
        t.contains("10.0.0.2") && !t.contains("10.0.0.1")
    });

    eureka.stop();
    child.assert_down_and_nothing_deleted(&ws, "Eureka", Duration::from_secs(30));
    eureka.register("orders", orders("o3", "10.0.0.3", 8080)).unwrap();
    eureka.resume();
    child.await_file(&file, "converges", |t| t.contains("10.0.0.3"));

    eureka.cancel("orders", "o1");
    eureka.cancel("orders", "o2");
    eureka.cancel("orders", "o3");
    assert!(
        wait_until(Duration::from_secs(30), || !file.exists()),
        "orders was never deleted after its last instance went; stderr:\n{}",
        child.stderr()
    );
    child.stop_cleanly();
}
