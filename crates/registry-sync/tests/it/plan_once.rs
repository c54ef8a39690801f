//! End-to-end: `plan` shows what `once` would write, and `once` writes exactly that —
//! never touching what is not ours, never deleting what a failing registry had.

use crate::support;

use support::*;

// ---------------------------------------------------------------------------------
// plan

#[test]
fn plan_exits_2_and_lists_every_object_to_create_before_the_first_sync() {
    let ws = Workspace::with_services(&services(8080, true));
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(2), "{out}");
    for name in ["legacy.orders", "legacy.payments", "legacy.reports"] {
        let line = format!("+ ServiceEntry mesh/{name} (create)");
        assert!(out.stdout.lines().any(|l| l == line), "missing `{line}`:\n{out}");
    }
    assert!(out.stdout.contains("3 to create"), "{out}");
}

#[test]
fn plan_never_creates_a_missing_output_directory() {
    let ws = Workspace::with_services(&services(8080, true));
    assert!(!ws.out_dir().exists());
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!ws.out_dir().exists(), "plan created {}", ws.out_dir().display());
}

#[test]
fn plan_exits_0_with_nothing_to_create_after_once() {
    let ws = Workspace::with_services(&services(8080, true));
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("0 to create, 0 to update, 0 to delete, 3 unchanged"),
        "{out}"
    );
    assert!(
        !out.stdout
            .lines()
            .any(|l| ["+ ", "~ ", "- ", "! "].iter().any(|p| l.starts_with(p))),
        "{out}"
    );
}

#[test]
fn plan_exits_2_and_shows_an_update_after_a_port_changes() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    ws.write_services(&services(8181, true));
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(2), "{out}");
    let changes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| ["+ ", "~ ", "- ", "! "].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(changes, ["~ ServiceEntry mesh/legacy.orders (update)"], "{out}");
    // plan writes nothing: the file still has the old port.
    let file = ws
        .read(&ws.service_entry_file("legacy.orders"))
        .expect("orders file");
    assert!(file.contains("8080") && !file.contains("8181"), "{file}");
}

#[test]
fn plan_exits_2_and_shows_a_delete_after_a_service_is_removed() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    ws.write_services(&services(8080, false));
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "- ServiceEntry mesh/legacy.payments (delete)"),
        "{out}"
    );
    assert!(
        ws.service_entry_file("legacy.payments").exists(),
        "plan deleted a file"
    );
}

#[test]
fn plan_exits_1_on_a_config_error() {
    let ws = Workspace::with_services(&services(8080, true));
    ws.write_config(&FILES_SINK_CONFIG.replace("namespace: mesh", "namespace: Not_A_Namespace"));
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("registries[0].namespace"), "{out}");
    assert!(!ws.out_dir().exists());
}

#[test]
fn plan_exits_1_when_the_services_file_does_not_parse() {
    let ws = Workspace::with_services("services:\n  - name: [\n");
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("services.yaml"), "{out}");
}

// ---------------------------------------------------------------------------------
// once

#[test]
fn once_writes_one_file_per_object() {
    let ws = Workspace::with_services(&services(8080, true));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(file_names(&ws), expected_files(true));
    for name in ["legacy.orders", "legacy.payments", "legacy.reports"] {
        let object = parse_object(&ws.service_entry_file(name));
        assert_eq!(object.kind, "ServiceEntry");
        assert_eq!(object.metadata.name, name);
        assert_eq!(object.metadata.namespace, "mesh");
    }
    let orders = parse_object(&ws.service_entry_file("legacy.orders"));
    let addresses: Vec<&str> = orders.spec.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addresses, ["10.0.0.1", "10.0.0.2"]);
    assert!(
        lines_with(&out.stderr, &["created=3"]).len() == 1,
        "the log reports the three creations:\n{out}"
    );
}

#[test]
fn a_second_once_writes_nothing() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();
    assert_eq!(before.len(), 3);

    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");
    let after = ws.out_files();
    assert_eq!(
        before, after,
        "a second once rewrote files (bytes, inode or mtime changed)"
    );
    assert_log_reports_no_writes(&out.stderr);
}

#[test]
fn once_deletes_the_file_of_a_service_removed_from_the_registry() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    assert!(ws.service_entry_file("legacy.payments").exists());
    let kept = ws.out_files();

    ws.write_services(&services(8080, false));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(file_names(&ws), expected_files(false));
    let after = ws.out_files();
    for (name, state) in &after {
        assert_eq!(
            Some(state),
            kept.get(name),
            "{name} was rewritten though unchanged"
        );
    }
}

#[test]
fn a_hand_made_object_with_our_name_is_never_overwritten_and_plan_reports_a_conflict() {
    let ws = Workspace::with_services(&services(8080, true));
    let hand_made = ws.service_entry_file("legacy.payments");
    ws.write(&hand_made, HAND_MADE);

    let plan = ws.cmd("plan");
    assert_eq!(plan.code(), Some(2), "{plan}");
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.starts_with("! ServiceEntry mesh/legacy.payments")),
        "{plan}"
    );
    assert!(
        !plan.stdout.contains("+ ServiceEntry mesh/legacy.payments"),
        "{plan}"
    );

    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(
        ws.read(&hand_made).as_deref(),
        Some(HAND_MADE),
        "the hand-made file was changed"
    );
    assert!(
        ws.service_entry_file("legacy.orders").exists(),
        "the other objects are still written"
    );
    assert!(
        lines_with(&once.stderr, &["WARN", "legacy.payments", "conflict"]).len() == 1,
        "the conflict is warned about:\n{once}"
    );

    // Not ours to delete either, when the registry drops the service.
    ws.write_services(&services(8080, false));
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(
        ws.read(&hand_made).as_deref(),
        Some(HAND_MADE),
        "the hand-made file was removed"
    );
}

#[test]
fn an_object_of_another_installation_is_left_alone() {
    let ws = Workspace::with_services(&services(8080, true));
    let theirs = HAND_MADE.replace(
        "  namespace: mesh\n",
        concat!(
            "  namespace: mesh\n",
            "  labels:\n",
            "    app.kubernetes.io/managed-by: registry-sync\n",
            "    registry-sync.io/instance: other\n",
            "    registry-sync.io/registry: legacy\n",
        ),
    );
    let path = ws.service_entry_file("legacy.payments");
    ws.write(&path, &theirs);

    let plan = ws.cmd("plan");
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.starts_with("! ServiceEntry mesh/legacy.payments")),
        "{plan}"
    );
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(ws.read(&path).as_deref(), Some(theirs.as_str()));
}

#[test]
fn once_leaves_other_files_in_the_output_directory_untouched() {
    let ws = Workspace::with_services(&services(8080, true));
    let notes = ws.out_dir().join("README.txt");
    let config_map = ws.out_dir().join("configmap.yaml");
    let broken = ws.out_dir().join("broken.yaml");
    let config_map_text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: mesh\n";
    ws.write(&notes, "hand-written notes\n");
    ws.write(&config_map, config_map_text);
    ws.write(&broken, "this: [is not yaml\n");
    let others = [notes, config_map, broken].map(|p| FileState::of(&p));

    assert_eq!(ws.cmd("once").code(), Some(0));
    ws.write_services(&services(8181, false));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");

    let files = ws.out_files();
    for (name, state) in ["README.txt", "configmap.yaml", "broken.yaml"]
        .iter()
        .zip(&others)
    {
        assert_eq!(files.get(*name), Some(state), "{name} was touched");
    }
    assert!(files.contains_key("mesh.serviceentry.legacy.orders.yaml"));
    assert!(!files.contains_key("mesh.serviceentry.legacy.payments.yaml"));
}

#[test]
fn once_keeps_every_written_file_when_the_services_file_no_longer_parses() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();

    // Line 4 opens a flow mapping that is never closed.
    ws.write_services("services:\n  - name: orders\n    instances:\n      - {address: 10.0.0.1\n");
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(1), "{out}");
    let services_path = ws.services_path().display().to_string();
    let errors = lines_with(&out.stderr, &["ERROR", &services_path, "line "]);
    assert!(!errors.is_empty(), "the error names the file and a line:\n{out}");
    assert_eq!(
        ws.out_files(),
        before,
        "files changed although the registry could not be read"
    );
}

#[test]
fn once_still_syncs_the_other_registries_when_one_fails() {
    let ws = Workspace::new();
    ws.write_config(
        "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
  - name: vms
    kind: file
    path: vms.yaml
    namespace: mesh
sinks:
  files:
    dir: out
",
    );
    ws.write_services(&services(8080, true));
    ws.write(
        "vms.yaml",
        "services:\n  - name: ledger\n    instances:\n      - address: 10.9.0.1\n        ports: {grpc: 7070}\n",
    );
    assert_eq!(ws.cmd("once").code(), Some(0));
    let ledger = ws.service_entry_file("vms.ledger");
    let ledger_before = FileState::of(&ledger);

    ws.write("vms.yaml", "services: [\n");
    ws.write_services(&services(8181, false));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(
        FileState::of(&ledger),
        ledger_before,
        "the failing registry's object was touched"
    );
    let orders = ws
        .read(&ws.service_entry_file("legacy.orders"))
        .expect("orders file");
    assert!(
        orders.contains("8181"),
        "the healthy registry was synced:\n{orders}"
    );
    assert!(!ws.service_entry_file("legacy.payments").exists());
}

#[test]
fn bad_instances_are_skipped_with_a_warning_and_the_good_ones_are_written() {
    let ws = Workspace::with_services(
        "\
services:
  - name: payments
    namespace: shop
    instances:
      - address: 10.0.0.1
        id: good-1
        ports: {https: 8443}
      - address: 10.0.0.300
        id: bad-address
        ports: {https: 8443}
      - address: 10.0.0.2
        id: zero-port
        ports: {https: 0}
      - address: 10.0.0.3
        id: reserved-port
        ports: {https: 8443, admin: 15000}
      - address: 10.0.0.4
        id: good-2
        ports: {https: 8443}
",
    );
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");

    for (instance, reason) in [
        ("bad-address", "10.0.0.300"),
        ("zero-port", "port 0"),
        ("reserved-port", "15000"),
    ] {
        let lines = lines_with(
            &out.stderr,
            &[
                "WARN",
                "registry=legacy",
                "service=shop/payments",
                instance,
                reason,
            ],
        );
        assert_eq!(
            lines.len(),
            1,
            "one warning names registry, service, instance {instance} and reason {reason:?}:\n{out}"
        );
    }

    let payments = parse_object(&ws.service_entry_file("legacy.shop.payments"));
    let addresses: Vec<&str> = payments
        .spec
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["10.0.0.1", "10.0.0.4"]);
    let ports: Vec<u32> = payments.service_ports().iter().map(|p| p.number).collect();
    assert_eq!(ports, [8443]);
}

#[test]
fn a_hand_edited_object_is_shown_by_plan_and_written_back_by_once() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let file = ws.service_entry_file("legacy.orders");
    let original = ws.read(&file).expect("written by once");
    let edited = original.replace("10.0.0.1", "10.6.6.6");
    assert_ne!(original, edited);
    std::fs::write(&file, &edited).unwrap();

    let plan = ws.cmd("plan");
    assert_eq!(plan.code(), Some(2), "{plan}");
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.starts_with("~ ") && l.contains("legacy.orders")),
        "{plan}"
    );

    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(
        ws.read(&file).as_deref(),
        Some(original.as_str()),
        "the registry's truth is restored"
    );
}

#[test]
fn plan_exits_1_when_the_output_path_is_a_file_not_a_directory() {
    let ws = Workspace::with_services(&services(8080, true));
    std::fs::write(ws.out_dir(), "not a directory").unwrap();
    let plan = ws.cmd("plan");
    assert_eq!(plan.code(), Some(1), "{plan}");
    assert!(plan.stderr.contains("not a directory"), "{plan}");
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(1), "plan and once agree:\n{once}");
}
