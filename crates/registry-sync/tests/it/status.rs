//! End-to-end: the status page of a running `run`: every registry and sink, a skipped
//! instance with its reason, a conflict with a user's object, and a search.

use crate::support;

use std::time::Duration;

use support::*;

const SERVICES: &str = "\
services:
  - name: orders
    instances:
      - {address: 10.0.0.1, ports: {http: 8080}}
      - {address: 10.0.0.2, ports: {http: 8080, admin: 15000}}
  - name: payments
    instances:
      - {address: 10.0.1.1, ports: {https: 8443}}
";

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// `run` with the admin endpoint, once its first pass is reported; its address.
fn running(ws: &Workspace) -> (ChildGuard, String) {
    ws.write_config(&format!("{FILES_SINK_CONFIG}admin:\n  listen: 127.0.0.1:0\n"));
    let child = ws.spawn_run();
    let mut address = None;
    assert!(
        wait_until(DEADLINE, || {
            address = child
                .stderr()
                .lines()
                .find(|l| l.contains("serving /metrics"))
                .and_then(|l| l.split("address=").nth(1))
                .map(|a| a.trim().to_string());
            address.as_ref().is_some_and(|a| {
                serde_json::from_str::<serde_json::Value>(body(&http_get(a, "/status.json")))
                    .is_ok_and(|status| status["sinks"][0]["last_pass"].is_u64())
            })
        }),
        "no first pass reported:\n{}",
        child.stderr()
    );
    (child, address.unwrap())
}

#[test]
fn the_status_shows_registries_sinks_a_skipped_instance_and_a_conflict() {
    let ws = Workspace::with_services(SERVICES);
    ws.write(ws.service_entry_file("legacy.payments"), HAND_MADE);
    let (child, address) = running(&ws);

    let json: serde_json::Value = serde_json::from_str(body(&http_get(&address, "/status.json"))).unwrap();
    let registry = &json["registries"][0];
    assert_eq!(registry["name"], "legacy");
    assert_eq!(registry["kind"], "file");
    assert_eq!(registry["state"], "up");
    assert_eq!(registry["services"], 2);
    // The file was read once for the view: a request to the registry, in the last minute.
    assert!(registry["requests_per_minute"].as_u64() >= Some(1), "{json}");
    assert!(
        registry["requests"].as_u64() >= registry["requests_per_minute"].as_u64(),
        "{json}"
    );
    let reserved = &registry["skipped"]["reserved_port"];
    assert_eq!(reserved["count"], 1, "{json}");
    assert!(
        reserved["first"][0]
            .as_str()
            .unwrap()
            .contains("orders 10.0.0.2:8080,15000: port 15000 (\"admin\") is reserved"),
        "{json}"
    );
    let sink = &json["sinks"][0];
    assert!(sink["name"].as_str().unwrap().starts_with("files"), "{json}");
    assert_eq!(sink["created"], 1, "orders; payments is the user's");
    assert_eq!(
        sink["conflicts"][0]["object"], "ServiceEntry mesh/legacy.payments",
        "{json}"
    );

    let page = http_get(&address, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-type: text/html"), "{page}");
    for shown in [
        "<td>legacy</td>",
        "<span class=\"up\">up</span>",
        "1 reserved_port",
        "<code>ServiceEntry mesh/legacy.payments</code>",
        "http-equiv=\"refresh\"",
    ] {
        assert!(page.contains(shown), "{shown} missing:\n{page}");
    }

    let found = http_get(&address, "/?q=orders");
    for shown in [
        "<h3 class=\"host\">orders.legacy <small>in mesh</small></h3>",
        "<code>ServiceEntry mesh/legacy.orders</code>",
        "<td class=\"up\">published</td>",
        "no: port 15000 (&quot;admin&quot;) is reserved by Istio&#39;s sidecar",
    ] {
        assert!(found.contains(shown), "{shown} missing:\n{found}");
    }
    assert!(!found.contains("http-equiv=\"refresh\""));
    child.stop_cleanly();
}

#[test]
fn a_registry_that_fails_is_shown_down_with_its_reason_and_its_view_kept() {
    let ws = Workspace::with_services(SERVICES);
    let (child, address) = running(&ws);
    // A change reaches the sink: its lag is shown, nothing is pending.
    ws.write_services_atomically(&SERVICES.replace("10.0.1.1", "10.0.1.9"));
    let status = || -> serde_json::Value {
        serde_json::from_str(body(&http_get(&address, "/status.json"))).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || status()["sinks"][0]["change_lag_ms"]
            .is_u64()),
        "no change lag shown: {}",
        status()
    );
    assert_eq!(status()["sinks"][0]["pending"], 0);
    ws.write_services_atomically("services: [this is not\n");
    assert!(
        wait_until(Duration::from_secs(10), || {
            body(&http_get(&address, "/status.json")).contains("\"state\": \"down\"")
        }),
        "never shown down:\n{}",
        child.stderr()
    );
    let json: serde_json::Value = serde_json::from_str(body(&http_get(&address, "/status.json"))).unwrap();
    let registry = &json["registries"][0];
    assert!(
        registry["error"].as_str().unwrap().contains("services.yaml"),
        "{json}"
    );
    assert_eq!(registry["services"], 2, "the last view is kept");
    child.stop_cleanly();
}

/// Debian's chromium, headless, on one URL: what it rendered (`--dump-dom`) or a
/// screenshot. Fails naming the package when it is not installed (`scripts/test`
/// installs it).
fn chromium(profile: &std::path::Path, action: &str, url: &str) -> String {
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}): install Debian's `chromium` package (scripts/test does)")
        });
    assert!(output.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_real_browser_shows_the_registries_a_conflict_a_skipped_instance_and_finds_a_service() {
    let ws = Workspace::with_services(SERVICES);
    ws.write(ws.service_entry_file("legacy.payments"), HAND_MADE);
    let (child, address) = running(&ws);
    let profile = tempfile::tempdir().unwrap();

    let dom = chromium(profile.path(), "--dump-dom", &format!("http://{address}/"));
    for shown in [
        "<tr class=\"registry\" data-name=\"legacy\">",
        "<span class=\"up\">up</span>",
        "<code>ServiceEntry mesh/legacy.payments</code>",
        "<li class=\"skipped\">orders 10.0.0.2:8080,15000: port 15000 (\"admin\") is reserved by Istio's sidecar</li>",
        "<form method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" id=\"q\"",
    ] {
        assert!(dom.contains(shown), "the browser does not show {shown}:\n{dom}");
    }

    // What the search form submits: GET /?q=<what was typed>.
    let results = chromium(
        profile.path(),
        "--dump-dom",
        &format!("http://{address}/?q=orders"),
    );
    for shown in [
        "<h3 class=\"host\">orders.legacy <small>in mesh</small></h3>",
        "<td class=\"up\">published</td>",
        "value=\"orders\"",
    ] {
        assert!(
            results.contains(shown),
            "the search does not show {shown}:\n{results}"
        );
    }

    // A screenshot as the browser paints it; STATUS_SCREENSHOT keeps one (docs/).
    let shot = std::env::var("STATUS_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| profile.path().join("status.png"));
    chromium(
        profile.path(),
        &format!("--screenshot={}", shot.display()),
        &format!("http://{address}/?q=orders"),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    child.stop_cleanly();
}

/// A service of 10,000 instances, each refused (a reserved port): explaining it tells
/// 10,000 fates against 10,000 refusals.
fn huge_refused_service() -> String {
    let mut text = String::from(
        "services:\n  - name: orders\n    instances:\n      - {address: 10.0.0.1, ports: {http: 8080}}\n  - name: huge\n    instances:\n",
    );
    for n in 0..10_000u32 {
        let [_, a, b, c] = (n + 1).to_be_bytes();
        text.push_str(&format!(
            "      - {{address: 10.{a}.{b}.{c}, ports: {{admin: 15000}}}}\n"
        ));
    }
    text
}

#[test]
fn searches_of_a_huge_service_never_hold_up_a_registry_change_or_the_probes() {
    let ws = Workspace::with_services(&huge_refused_service());
    let (child, address) = running(&ws);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let searchers: Vec<_> = (0..6)
        .map(|_| {
            let (stop, address) = (std::sync::Arc::clone(&stop), address.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = http_get(&address, "/?q=huge");
                    answers.push(response.lines().next().unwrap_or_default().to_string());
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A registry change lands while the searches run, and the probes answer.
    ws.write_services_atomically(&huge_refused_service().replace("name: orders", "name: late"));
    let late = ws.service_entry_file("legacy.late");
    // Reading and translating the file again takes seconds in a debug build.
    let landed = wait_until(3 * DEADLINE, || late.exists());
    let healthz = http_get(&address, "/healthz");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<String> = searchers.into_iter().flat_map(|s| s.join().unwrap()).collect();
    assert!(landed, "the change waited for the searches:\n{}", child.stderr());
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.1 503")),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|a| a.starts_with("HTTP/1.1 200")),
        "{answers:?}"
    );
    // A search lists the first thousand fates and counts the rest.
    let page = http_get(&address, "/?q=huge");
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "{}",
        &page[..page.len().min(500)]
    );
    assert!(
        page.contains("and 9000 more instances"),
        "{}",
        &page[..page.len().min(2000)]
    );
}
