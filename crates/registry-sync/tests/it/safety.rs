//! End-to-end safety through the binary and the files sink: a merged host keeps the
//! endpoints of a registry that is down, the mass-change guard holds an estate whose
//! every instance turns unhealthy, and objects of a removed registry wait for `prune`.

use crate::support;

use support::*;

/// Two file registries that publish `orders` on one host in one namespace.
const MERGED_CONFIG: &str = "\
registries:
  - name: alpha
    kind: file
    path: alpha.yaml
    hosts: \"{service}.shared\"
    namespace: mesh
  - name: beta
    kind: file
    path: beta.yaml
    hosts: \"{service}.shared\"
    namespace: mesh
sinks:
  files:
    dir: out
";

fn orders_at(address: &str) -> String {
    format!(
        "services:\n  - name: orders\n    instances:\n      - address: {address}\n        ports: {{http: 8080}}\n"
    )
}

const BROKEN: &str = "services:\n  - name: [\n";

fn merged_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write_config(MERGED_CONFIG);
    ws.write("alpha.yaml", &orders_at("10.0.0.1"));
    ws.write("beta.yaml", &orders_at("10.0.0.2"));
    ws
}

fn service_entries(ws: &Workspace) -> Vec<Object> {
    ws.out_files()
        .keys()
        .filter(|name| name.contains(".serviceentry."))
        .map(|name| parse_object(&ws.out_dir().join(name)))
        .collect()
}

fn addresses(object: &Object) -> Vec<String> {
    let mut addresses: Vec<String> = object.spec.endpoints.iter().map(|e| e.address.clone()).collect();
    addresses.sort();
    addresses
}

#[test]
fn a_merged_host_keeps_both_registries_endpoints_when_either_is_broken_at_start() {
    let ws = merged_workspace();
    assert_eq!(ws.cmd("once").code(), Some(0));
    let entries = service_entries(&ws);
    assert_eq!(entries.len(), 1, "one entry for the shared host");
    assert_eq!(addresses(&entries[0]), ["10.0.0.1", "10.0.0.2"]);
    let before = ws.out_files();

    for broken in ["alpha.yaml", "beta.yaml"] {
        ws.write(broken, BROKEN);
        let out = ws.cmd("once");
        assert_eq!(out.code(), Some(1), "the broken registry is reported: {out}");
        assert_eq!(
            ws.out_files(),
            before,
            "with {broken} broken, nothing was rewritten and no second entry appeared:\n{out}"
        );
        let plan = ws.cmd("plan");
        assert!(plan.stdout.contains("= kept"), "{plan}");
        let address = if broken == "alpha.yaml" {
            "10.0.0.1"
        } else {
            "10.0.0.2"
        };
        ws.write(broken, &orders_at(address));
    }

    // Both answer again: a change in one of them flows.
    ws.write("beta.yaml", &orders_at("10.0.0.3"));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let entries = service_entries(&ws);
    assert_eq!(entries.len(), 1);
    assert_eq!(addresses(&entries[0]), ["10.0.0.1", "10.0.0.3"]);
}

#[test]
fn run_restarted_with_a_merged_contributor_down_keeps_the_entry_as_held() {
    let ws = merged_workspace();
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();
    ws.write("alpha.yaml", BROKEN);
    let run = ws.spawn_run();
    // beta answers and is planned; alpha never does.
    assert!(
        wait_until(std::time::Duration::from_secs(10), || run
            .stderr()
            .contains("watching")),
        "{}",
        run.stderr()
    );
    assert!(
        holds_for(std::time::Duration::from_secs(2), || ws.out_files() == before),
        "the merged entry was rewritten while alpha was down:\n{}",
        run.stderr()
    );
    // alpha comes back: the entry follows both again.
    ws.write_atomically("alpha.yaml", &orders_at("10.0.0.9"));
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            service_entries(&ws)
                .first()
                .is_some_and(|e| addresses(e) == ["10.0.0.2", "10.0.0.9"])
        }),
        "{}",
        run.stderr()
    );
}

fn estate(healthy: bool) -> String {
    let mut text = String::from("services:\n");
    for service in ["orders", "payments", "reports"] {
        text.push_str(&format!("  - name: {service}\n    instances:\n"));
        for n in 1..=3 {
            text.push_str(&format!(
                "      - address: 10.0.{}.{n}\n        ports: {{http: 8080}}\n        healthy: {healthy}\n",
                service.len()
            ));
        }
    }
    text
}

#[test]
fn every_instance_turning_unhealthy_at_once_is_held_back_until_confirmed() {
    let ws = Workspace::with_services(&estate(true));
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();

    ws.write_services(&estate(false));
    let held = ws.cmd("once");
    assert_eq!(held.code(), Some(3), "exit 3: changes held back\n{held}");
    assert!(held.stderr.contains("mass change held back"), "{held}");
    assert!(held.stderr.contains("0 of its 9 endpoints"), "{held}");
    assert_eq!(ws.out_files(), before, "no entry was emptied");
    let plan = ws.cmd("plan");
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.starts_with("! registry \"legacy\"")),
        "{plan}"
    );

    let confirmed = once_confirmed(&ws);
    assert_eq!(confirmed.code(), Some(0), "{confirmed}");
    for entry in service_entries(&ws) {
        assert!(entry.spec.endpoints.is_empty(), "{:?}", entry.metadata.name);
    }
}

#[test]
fn objects_of_a_renamed_registry_are_listed_as_orphans_and_deleted_only_by_prune() {
    let ws = merged_workspace();
    ws.write(
        "beta.yaml",
        "services:\n  - name: payments\n    instances:\n      - address: 10.0.5.1\n        ports: {http: 80}\n",
    );
    assert_eq!(ws.cmd("once").code(), Some(0));
    let beta_file = "mesh.serviceentry.beta.payments.yaml";
    assert!(ws.out_files().contains_key(beta_file), "{:?}", ws.out_files());

    // Renamed: the new name's object appears, the old one is kept and reported.
    ws.write_config(&MERGED_CONFIG.replace("name: beta", "name: gamma"));
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");
    assert!(once.stderr.contains("registry-sync prune"), "{once}");
    assert!(ws.out_files().contains_key(beta_file), "deleted without prune");
    assert!(
        ws.out_files()
            .contains_key("mesh.serviceentry.gamma.payments.yaml")
    );
    let plan = ws.cmd("plan");
    assert!(
        plan.stdout
            .contains("? orphan ServiceEntry mesh/beta.payments (registry \"beta\" is no longer configured"),
        "{plan}"
    );

    let prune = ws.cmd("prune");
    assert_eq!(prune.code(), Some(0), "{prune}");
    assert!(!ws.out_files().contains_key(beta_file), "survived prune");
    assert!(
        ws.out_files()
            .contains_key("mesh.serviceentry.gamma.payments.yaml")
    );
    assert_eq!(ws.cmd("plan").code(), Some(0), "nothing left to do");
}

#[test]
fn prune_refuses_while_a_registry_fails() {
    let ws = merged_workspace();
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();
    ws.write("beta.yaml", BROKEN);
    let prune = ws.cmd("prune");
    assert_eq!(prune.code(), Some(1), "{prune}");
    assert_eq!(ws.out_files(), before);
}

fn once_confirmed(ws: &Workspace) -> Output {
    registry_sync(
        ws.path(),
        [
            std::ffi::OsStr::new("once"),
            std::ffi::OsStr::new("--confirm-mass-delete"),
            std::ffi::OsStr::new("--config"),
            ws.config_path().as_os_str(),
        ],
    )
}

#[test]
fn an_erosion_held_by_one_once_stays_held_in_the_next_until_confirmed() {
    let ws = Workspace::with_services(&services_of(20));
    assert_eq!(ws.cmd("once").code(), Some(0));
    ws.write_services(&services_of(11));
    assert_eq!(ws.cmd("once").code(), Some(0), "20 → 11 goes ahead");
    assert_eq!(service_entries(&ws).len(), 11);
    ws.write_services(&services_of(8));
    // Every `once` is a new process: the peak of 20 comes from the memory the guard
    // keeps beside the objects.
    for attempt in 0..2 {
        let held = ws.cmd("once");
        assert_eq!(
            held.code(),
            Some(3),
            "attempt {attempt}: 11 → 8 of a peak of 20 is held\n{held}"
        );
        assert!(held.stderr.contains("leave 8 of its 20 objects"), "{held}");
        assert_eq!(service_entries(&ws).len(), 11);
    }
    let plan = ws.cmd("plan");
    assert!(plan.stdout.contains("leave 8 of its 20 objects"), "{plan}");

    assert_eq!(once_confirmed(&ws).code(), Some(0));
    assert_eq!(service_entries(&ws).len(), 8);
    // Confirmed: the memory starts afresh, and 8 → 6 is judged against 8.
    ws.write_services(&services_of(6));
    let next = ws.cmd("once");
    assert_eq!(next.code(), Some(0), "{next}");
    assert_eq!(service_entries(&ws).len(), 6);
}
