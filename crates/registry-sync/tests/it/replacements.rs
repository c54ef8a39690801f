//! End-to-end through the binary and the files sink: an object that moves (here, its
//! registry's namespace changes) is removed only once its successor is written. A
//! successor whose name a user's object holds keeps the old object, says so in `plan`
//! and in the log, and makes `once` exit 1; once the user's object is gone the move
//! finishes in one `once`.

use crate::support;

use support::*;

/// A user's own ServiceEntry, without registry-sync's labels.
const USERS_ORDERS: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy.orders
  namespace: team-a
spec:
  hosts: [orders.hand-made]
  resolution: STATIC
  ports:
    - {number: 80, name: http, protocol: HTTP}
";

fn moved_config() -> String {
    FILES_SINK_CONFIG.replace("namespace: mesh", "namespace: team-a")
}

#[test]
fn a_move_whose_successor_conflicts_keeps_the_old_object_until_the_conflict_is_resolved() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let old_orders = ws.service_entry_file("legacy.orders");
    assert!(old_orders.exists());
    let users = ws.out_dir().join("team-a.serviceentry.legacy.orders.yaml");
    ws.write(&users, USERS_ORDERS);
    ws.write_config(&moved_config());

    let plan = ws.cmd("plan");
    assert_eq!(plan.code(), Some(2), "{plan}");
    assert!(
        plan.stdout.lines().any(|l| l.starts_with("= waits ServiceEntry mesh/legacy.orders (kept: its successor ServiceEntry team-a/legacy.orders cannot be written")),
        "{plan}"
    );
    assert!(
        plan.stdout.lines().any(|l| l == "! ServiceEntry team-a/legacy.orders (conflict: an object not created by registry-sync (no app.kubernetes.io/managed-by label) already has this name; rename or delete it, or exclude the service from registry-sync)"),
        "{plan}"
    );

    let once = ws.cmd("once");
    assert_eq!(
        once.code(),
        Some(1),
        "a blocked replacement fails the pass: {once}"
    );
    assert!(once.stderr.contains("not removed"), "{once}");
    assert!(
        old_orders.exists(),
        "the old object stays while its successor cannot be written"
    );
    assert_eq!(
        ws.read(&users).as_deref(),
        Some(USERS_ORDERS),
        "the user's object is untouched"
    );
    // The moves whose successors landed finished in the same `once`.
    let files: Vec<String> = ws.out_files().into_keys().collect();
    assert!(
        files.contains(&"team-a.serviceentry.legacy.payments.yaml".to_string()),
        "{files:?}"
    );
    assert!(
        !files.contains(&"mesh.serviceentry.legacy.payments.yaml".to_string()),
        "{files:?}"
    );

    std::fs::remove_file(&users).unwrap();
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    assert!(!old_orders.exists(), "removed once its successor is written");
    let moved = parse_object(&ws.out_dir().join("team-a.serviceentry.legacy.orders.yaml"));
    assert_eq!(moved.metadata.namespace, "team-a");
    assert_eq!(ws.cmd("plan").code(), Some(0));
}
