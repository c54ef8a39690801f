//! End-to-end: `run` follows the services file as it changes and stops cleanly.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::*;

// ---------------------------------------------------------------------------------
// run

/// Waits until `path` exists and contains `needle`; fails the test with the log if not.
fn await_content(child: &ChildGuard, path: &Path, needle: &str) {
    let appeared = wait_until(DEADLINE, || {
        std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
    });
    assert!(
        appeared,
        "{} never contained {needle:?}; stderr:\n{}",
        path.display(),
        child.stderr()
    );
}

#[test]
fn run_follows_changes_to_the_services_file_and_stops_cleanly_on_sigterm() {
    let ws = Workspace::with_services(&services(8080, true));
    let mut child = ws.spawn_run();
    let orders = ws.service_entry_file("legacy.orders");
    let payments = ws.service_entry_file("legacy.payments");
    let reports = ws.service_entry_file("legacy.reports");

    // The first view is synced.
    assert!(
        wait_until(DEADLINE, || file_names(&ws) == expected_files(true)),
        "files never appeared: {:?}; stderr:\n{}",
        file_names(&ws),
        child.stderr()
    );
    await_content(&child, &orders, "http-8080: 8080");

    // A new version moved into place.
    ws.write_services_atomically(&services(9090, true));
    await_content(&child, &orders, "http-9090: 9090");

    // A write in place.
    ws.write_services(&services(9191, true));
    await_content(&child, &orders, "http-9191: 9191");

    // A service dropped by the registry loses its object, and only that one.
    ws.write_services_atomically(&services(9191, false));
    assert!(
        wait_until(DEADLINE, || !payments.exists()),
        "payments was never deleted; stderr:\n{}",
        child.stderr()
    );
    assert_eq!(file_names(&ws), expected_files(false));
    // The deletion's log line may trail the file's removal; it must not fall after `mark`.
    assert!(
        wait_until(DEADLINE, || log_counts(&child.stderr(), "deleted").contains(&1)),
        "the deletion was never logged; stderr:\n{}",
        child.stderr()
    );

    // A broken file keeps the last good state: the failure is logged, nothing deleted.
    let kept = ws.out_files();
    let mark = child.stderr().len();
    ws.write_services_atomically("services:\n  - name: orders\n    instances: [\n");
    let services_path = ws.services_path().display().to_string();
    assert!(
        wait_until(DEADLINE, || {
            let log = child.stderr();
            log[mark..]
                .lines()
                .any(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(&services_path))
        }),
        "the broken services file was never reported; stderr:\n{}",
        child.stderr()
    );
    assert!(
        holds_for(Duration::from_secs(1), || ws.out_files() == kept),
        "files changed after the services file broke; stderr:\n{}",
        child.stderr()
    );

    // Fixed again with one change: only that change is written, nothing was lost meanwhile.
    ws.write_services_atomically(&services(9292, false));
    await_content(&child, &orders, "http-9292: 9292");
    assert_eq!(
        ws.out_files()["mesh.serviceentry.legacy.reports.yaml"],
        kept["mesh.serviceentry.legacy.reports.yaml"]
    );
    assert!(reports.exists());
    let since_mark = || child.stderr()[mark..].to_string();
    assert!(
        wait_until(DEADLINE, || !log_counts(&since_mark(), "updated").is_empty()),
        "the repaired file's sync was never logged; stderr:\n{}",
        child.stderr()
    );
    let log = child.stderr();
    for key in ["created", "deleted"] {
        assert!(
            log_counts(&log[mark..], key).iter().all(|&n| n == 0),
            "{key} after the services file broke:\n{log}"
        );
    }

    child.terminate();
    let status = child.wait_timeout(DEADLINE);
    let log = child.stderr();
    let status = status.unwrap_or_else(|| panic!("run did not stop within 10 s of SIGTERM; stderr:\n{log}"));
    assert!(
        status.success(),
        "run exited with {status} after SIGTERM; stderr:\n{log}"
    );
    assert_eq!(
        file_names(&ws),
        expected_files(false),
        "stopping changed the output"
    );
}

#[test]
fn run_after_once_rewrites_nothing() {
    let ws = Workspace::with_services(&services(8080, true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();

    let mut child = ws.spawn_run();
    // A later change is applied after the initial pass, so once it shows, that pass is done.
    ws.write_services_atomically(&services(8181, true));
    await_content(&child, &ws.service_entry_file("legacy.orders"), "http-8181: 8181");

    let after = ws.out_files();
    for name in [
        "mesh.serviceentry.legacy.payments.yaml",
        "mesh.serviceentry.legacy.reports.yaml",
    ] {
        assert_eq!(
            after.get(name),
            before.get(name),
            "{name} was rewritten by run's first pass"
        );
    }
    let log = child.stderr();
    assert!(
        log_counts(&log, "created").iter().all(|&n| n == 0),
        "run created objects that existed:\n{log}"
    );

    child.terminate();
    let status = child.wait_timeout(DEADLINE).expect("run stops after SIGTERM");
    assert!(status.success(), "{status}; stderr:\n{}", child.stderr());
}

#[test]
fn run_keeps_the_objects_of_a_services_file_that_vanishes() {
    let ws = Workspace::with_services(&services(8080, true));
    let mut child = ws.spawn_run();
    assert!(
        wait_until(DEADLINE, || file_names(&ws) == expected_files(true)),
        "files never appeared; stderr:\n{}",
        child.stderr()
    );
    assert!(
        wait_until(DEADLINE, || log_counts(&child.stderr(), "created").contains(&3)),
        "the first sync was never logged; stderr:\n{}",
        child.stderr()
    );

    let kept = ws.out_files();
    let mark = child.stderr().len();
    std::fs::remove_file(ws.services_path()).expect("remove the services file");
    let services_path = ws.services_path().display().to_string();
    assert!(
        wait_until(DEADLINE, || {
            child.stderr()[mark..]
                .lines()
                .any(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(&services_path))
        }),
        "the missing services file was never reported; stderr:\n{}",
        child.stderr()
    );
    assert!(
        holds_for(Duration::from_secs(1), || ws.out_files() == kept),
        "files changed after the services file vanished; stderr:\n{}",
        child.stderr()
    );

    // It comes back (with a change) and is picked up again.
    ws.write_services(&services(8181, true));
    await_content(&child, &ws.service_entry_file("legacy.orders"), "http-8181: 8181");
    assert_eq!(file_names(&ws), expected_files(true));

    child.terminate();
    let status = child.wait_timeout(DEADLINE).expect("run stops after SIGTERM");
    assert!(status.success(), "{status}; stderr:\n{}", child.stderr());
}

#[test]
fn a_file_deleted_or_edited_by_hand_is_written_back_from_the_directory_watch() {
    let ws = Workspace::with_services(&services(8080, true));
    let mut child = ws.spawn_run();
    let orders = ws.service_entry_file("legacy.orders");
    let payments = ws.service_entry_file("legacy.payments");
    assert!(
        wait_until(DEADLINE, || file_names(&ws) == expected_files(true)),
        "files never appeared; stderr:\n{}",
        child.stderr()
    );
    let original = std::fs::read_to_string(&orders).unwrap();

    // Deleted by hand: back within 2 s (the resync would take 5 minutes).
    std::fs::remove_file(&orders).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || std::fs::read_to_string(&orders)
            .is_ok_and(|text| text == original)),
        "the deleted file never came back; stderr:\n{}",
        child.stderr()
    );

    // Edited by hand: the edit is undone.
    let edited = std::fs::read_to_string(&payments)
        .unwrap()
        .replace("8443", "1111");
    std::fs::write(&payments, &edited).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || std::fs::read_to_string(&payments)
            .is_ok_and(|text| text.contains("8443") && !text.contains("1111"))),
        "the hand edit was never undone; stderr:\n{}",
        child.stderr()
    );

    // A file someone else put there is not registry-sync's to touch.
    let foreign = ws.out_dir().join("notes.yaml");
    std::fs::write(&foreign, "just: notes\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "just: notes\n");

    child.terminate();
    let status = child.wait_timeout(DEADLINE).expect("run stops after SIGTERM");
    assert!(status.success(), "{status}; stderr:\n{}", child.stderr());
}
