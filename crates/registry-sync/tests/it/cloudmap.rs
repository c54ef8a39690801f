//! End-to-end: `registry-sync run` follows AWS Cloud Map (moto, a real AWS API
//! emulator) into the files sink, keeps the objects while Cloud Map is unreachable and
//! converges when it is back. Each test starts its own moto; `scripts/test` installs
//! it. The binary finds dummy credentials in its environment, through the standard
//! AWS credentials chain.

#![cfg(feature = "cloudmap")]

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use registry_sync_sources::testing::CloudMapWriter;
use registry_sync_testing::servers::{MOTO_ENV, Proxy, TestMoto};
use support::*;

fn config(endpoint: &str) -> String {
    format!(
        "registries:
  - name: aws
    kind: cloudmap
    region: us-east-1
    namespaces: [demo.local]
    endpoint: \"{endpoint}\"
    interval: 200ms
    namespace: mesh
    endpoints: inline
sinks:
  files:
    dir: out
"
    )
}

/// Runs one write against moto on a short-lived runtime.
fn write<F: Future<Output = T>, T>(future: F) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The ServiceEntry file whose hosts are exactly `[host]`, if there is one.
fn entry_for_host(ws: &Workspace, host: &str) -> Option<(PathBuf, String)> {
    let entries = std::fs::read_dir(ws.out_dir()).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".serviceentry."))
        })
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .find(|(_, text)| {
            parse_objects(text)
                .first()
                .is_some_and(|o| o.spec.hosts == [host.to_string()])
        })
}

fn await_entry(child: &ChildGuard, ws: &Workspace, host: &str, what: &str, cond: impl Fn(&str) -> bool) {
    assert!(
        wait_until(Duration::from_secs(30), || entry_for_host(ws, host)
            .is_some_and(|(_, t)| cond(&t))),
        "{what}: the entry of {host} never matched (now: {:?}); stderr:\n{}",
        entry_for_host(ws, host).map(|(_, t)| t),
        child.stderr()
    );
}

fn instance(ip: &str, port: &str, protocol: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_INSTANCE_IPV4".into(), ip.into()),
        ("AWS_INSTANCE_PORT".into(), port.into()),
        ("protocol".into(), protocol.into()),
    ]
}

fn register(writer: &CloudMapWriter, service: &str, id: &str, attributes: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    write(writer.register(service, id, &pairs));
}

#[test]
fn run_follows_cloud_map_into_files_keeps_them_while_it_is_unreachable_and_converges_after() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = write(writer.namespace("demo.local"));
    let orders = write(writer.service(&namespace, "orders", true));
    register(&writer, &orders, "o-1", &instance("10.0.0.1", "8080", "http"));
    let proxy = Proxy::start(&moto.address());
    let ws = Workspace::new();
    ws.write_config(&config(&format!("http://{}", proxy.address())));
    let child = ws.spawn_run_with_env(MOTO_ENV);

    await_entry(&child, &ws, "orders.demo.local", "orders appears", |t| {
        t.contains("10.0.0.1") && t.contains("http-8080")
    });
    let (orders_file, _) = entry_for_host(&ws, "orders.demo.local").unwrap();
    let object = parse_object(&orders_file);
    assert_eq!(object.spec.resolution.as_deref(), Some("STATIC"));
    assert_eq!(object.service_ports()[0].protocol, "HTTP");

    register(&writer, &orders, "o-1", &instance("10.0.0.1", "9090", "grpc"));
    await_entry(
        &child,
        &ws,
        "orders.demo.local",
        "port and protocol follow",
        |t| t.contains("grpc-9090") && !t.contains("8080"),
    );

    write(writer.set_health(&orders, "o-1", false));
    await_entry(
        &child,
        &ws,
        "orders.demo.local",
        "the unhealthy endpoint leaves",
        |t| !t.contains("10.0.0.1"),
    );
    write(writer.set_health(&orders, "o-1", true));
    register(&writer, &orders, "o-2", &instance("10.0.0.2", "9090", "grpc"));
    write(writer.deregister(&orders, "o-1"));
    await_entry(&child, &ws, "orders.demo.local", "o-1 is replaced by o-2", |t| {
        t.contains("10.0.0.2") && !t.contains("10.0.0.1")
    });

    // Cloud Map becomes unreachable: nothing is deleted, the failure is logged.
    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(60), || child
            .stderr()
            .contains("registry failing")),
        "the failure was never logged; stderr:\n{}",
        child.stderr()
    );
    assert!(
        !child.stderr().contains("testing"),
        "credentials never appear in logs"
    );
    let kept = ws.out_files();
    let payments = write(writer.service(&namespace, "payments", false));
    register(&writer, &payments, "p-1", &instance("10.0.1.1", "8443", "https"));
    assert!(
        holds_for(Duration::from_secs(2), || ws.out_files() == kept),
        "objects changed while Cloud Map was unreachable"
    );

    proxy.restore();
    await_entry(
        &child,
        &ws,
        "payments.demo.local",
        "payments after the outage",
        |t| t.contains("10.0.1.1") && t.contains("https-8443"),
    );
    assert!(orders_file.exists(), "orders was kept across the outage");

    write(writer.deregister(&orders, "o-2"));
    write(writer.delete_service(&orders));
    assert!(
        wait_until(Duration::from_secs(30), || !orders_file.exists()),
        "orders was never deleted after the service went; stderr:\n{}",
        child.stderr()
    );
    child.stop_cleanly();
}

#[test]
fn run_syncs_a_thousand_services() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    write(async {
        let namespace = writer.namespace("demo.local").await;
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..1000 {
            let (writer, namespace) = (writer.clone(), namespace.clone());
            let semaphore = std::sync::Arc::clone(&semaphore);
            tasks.spawn(async move {
                let _permit = semaphore.acquire().await;
                let id = writer.service(&namespace, &format!("svc-{n:04}"), false).await;
                let ip = format!("10.2.{}.{}", n / 250, n % 250 + 1);
                let pairs = [("AWS_INSTANCE_IPV4", ip.as_str()), ("AWS_INSTANCE_PORT", "8080")];
                writer.register(&id, "i-1", &pairs).await;
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a writer task");
        }
    });
    let ws = Workspace::new();
    ws.write_config(&config(&moto.url()));
    let child = ws.spawn_run_with_env(MOTO_ENV);
    // Names only: the sink's temporary files come and go while it writes.
    let entries = || {
        std::fs::read_dir(ws.out_dir()).map_or(0, |dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(".serviceentry."))
                .count()
        })
    };
    assert!(
        wait_until(Duration::from_secs(120), || entries() == 1000),
        "{} of 1000 entries; stderr:\n{}",
        entries(),
        child.stderr()
    );
    await_entry(&child, &ws, "svc-0999.demo.local", "the last service", |t| {
        t.contains("10.2.3.250")
    });
}

#[test]
fn check_reads_cloud_map_and_reports_an_unreachable_one_naming_the_registry() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = write(writer.namespace("demo.local"));
    let web = write(writer.service(&namespace, "web", false));
    register(&writer, &web, "w-1", &instance("10.0.0.1", "80", "http"));
    register(&writer, &web, "w-2", &instance("300.0.0.1", "80", "http"));
    let ws = Workspace::new();
    ws.write_config(&config(&moto.url()));
    let output = ws.cmd_with_env("check", MOTO_ENV);
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(
        output
            .stdout
            .contains("registry aws (cloudmap): ok, 1 services, 1 instances, 1 items skipped"),
        "{output}"
    );

    let closed = format!("http://127.0.0.1:{}", registry_sync_testing::servers::free_port());
    ws.write_config(&config(&closed));
    let output = ws.cmd_with_env("check", MOTO_ENV);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stdout.contains("registry aws (cloudmap): FAILED")
            && output.stdout.contains(&closed)
            && output.stdout.contains("cannot reach Cloud Map"),
        "{output}"
    );
}
