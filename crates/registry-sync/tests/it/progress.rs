//! End-to-end: a long pass says how far it is. stderr is not a terminal here, so the
//! progress comes as log lines (a terminal gets a bar instead).

use crate::support;

use std::time::Duration;

use registry_sync_testing::kube::StandIn;
use support::standin::*;
use support::*;

fn many(services: usize) -> String {
    std::iter::once("services:\n".to_string())
        .chain((0..services).map(|n| {
            format!(
                "  - name: svc-{n}\n    instances:\n      - {{address: 10.0.{}.{}, ports: {{http: 8080}}}}\n",
                n / 250,
                n % 250 + 1
            )
        }))
        .collect()
}

#[test]
fn once_says_what_it_read_and_applied() {
    let ws = Workspace::with_services(&many(300));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");
    for line in [
        "registries read: 1 of 1, 300 objects planned",
        "applying 300 writes",
        "applied 300 of 300 writes in",
    ] {
        assert!(out.stderr.contains(line), "{line:?} missing:\n{out}");
    }
    // A pass that writes nothing, or little, stays quiet.
    let again = ws.cmd("once");
    assert!(!again.stderr.contains("applying"), "{again}");
}

#[test]
fn a_cold_run_reports_its_first_pass() {
    let ws = Workspace::with_services(&many(300));
    let child = ws.spawn_run();
    assert!(
        wait_until(DEADLINE, || child
            .stderr()
            .contains("applied 300 of 300 writes in")),
        "{}",
        child.stderr()
    );
    child.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_server_shows_writes_done_so_far_with_a_rate_and_time_left() {
    let server = StandIn::start().await;
    server.faults().set_latency(Duration::from_millis(50));
    let ws = workspace(&server, &many(300), "");
    let out = cmd(&ws, &["once"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let progress: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("of 300 writes,") && l.contains("/s,") && l.contains("left"))
        .collect();
    assert!(!progress.is_empty(), "no progress while writing:\n{out}");
    assert!(out.stderr.contains("applied 300 of 300 writes in"), "{out}");
}
