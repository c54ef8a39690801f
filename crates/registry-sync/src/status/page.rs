//! The status page: one server-rendered HTML document, no scripts, refreshing itself
//! every few seconds (not while it shows a search, which would lose the reader's place).

use std::fmt::Write;

use registry_sync_translate::Found;

use super::{Problem, Snapshot};

/// Seconds between refreshes of the page.
const REFRESH_SECONDS: u32 = 5;

/// Text made safe for HTML: every registry name, reason and label passes through here.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: u64, then: Option<u64>) -> String {
    match then {
        None => "never".into(),
        Some(then) => {
            let s = now.saturating_sub(then);
            match s {
                0..=119 => format!("{s} s ago"),
                120..=7199 => format!("{} min ago", s / 60),
                _ => format!("{} h ago", s / 3600),
            }
        }
    }
}

fn problems(out: &mut String, items: &[Problem]) {
    if items.is_empty() {
        out.push_str("none");
        return;
    }
    out.push_str("<ul>");
    for item in items {
        let _ = write!(
            out,
            "<li><code>{}</code>: {}</li>",
            esc(&item.object),
            esc(&item.reason)
        );
    }
    out.push_str("</ul>");
}

pub fn render(snapshot: &Snapshot, query: Option<&str>, found: Option<&Found>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let now = snapshot.now;
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    if query.is_none() {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">");
    }
    out.push_str(
        "<title>registry-sync</title><style>\
         body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
         table{border-collapse:collapse;margin-bottom:1.5em}\
         th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
         th{background:#f3f3f3}.up{color:#176b2c;font-weight:bold}.down{color:#b00020;font-weight:bold}\
         .waiting{color:#8a6d00}ul{margin:0;padding-left:1.2em}code{font-size:.9em}\
         </style></head><body>",
    );
    let leader = match snapshot.leader {
        Some(true) => "leader",
        Some(false) => "standby",
        None => "no election",
    };
    let _ = write!(
        out,
        "<h1>registry-sync <small>{}</small></h1><p>started {}, {leader}; this page refreshes every {REFRESH_SECONDS} s.</p>",
        esc(&snapshot.instance),
        ago(now, Some(snapshot.started)),
    );

    out.push_str("<h2>Registries</h2><table id=\"registries\"><tr><th>registry</th><th>kind</th><th>state</th><th>last complete view</th><th>services</th><th>instances</th><th>requests / min</th><th>skipped</th></tr>");
    for r in &snapshot.registries {
        let _ = write!(
            out,
            "<tr class=\"registry\" data-name=\"{name}\"><td>{name}</td><td>{}</td><td><span class=\"{state}\">{state}</span> since {}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"requests\" title=\"{} since start\">{}</td><td>",
            esc(&r.kind),
            ago(now, Some(r.since)),
            r.error.as_deref().map_or(String::new(), |e| match r.reason {
                Some(reason) => format!("<br>{reason}: {}", esc(e)),
                None => format!("<br>{}", esc(e)),
            }),
            ago(now, r.last_complete_view),
            r.services,
            r.instances,
            r.requests,
            r.requests_per_minute,
            name = esc(&r.name),
            state = r.state,
        );
        if r.skipped.is_empty() {
            out.push_str("none");
        }
        for (reason, summary) in &r.skipped {
            let _ = write!(out, "<b>{} {}</b><ul>", summary.count, esc(reason));
            for first in &summary.first {
                let _ = write!(out, "<li class=\"skipped\">{}</li>", esc(first));
            }
            if summary.count > summary.first.len() {
                let _ = write!(out, "<li>and {} more</li>", summary.count - summary.first.len());
            }
            out.push_str("</ul>");
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");

    out.push_str("<h2>Sinks</h2><table id=\"sinks\"><tr><th>sink</th><th>last pass</th><th>last write</th><th>change lag</th><th>pending</th><th>written</th><th>conflicts</th><th>quarantined</th><th>held back</th><th>waiting for successors</th></tr>");
    for s in &snapshot.sinks {
        let _ = write!(
            out,
            "<tr class=\"sink\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} created, {} updated, {} deleted, {} status</td><td class=\"conflicts\">",
            esc(&s.name),
            ago(now, s.last_pass),
            ago(now, s.last_write),
            s.change_lag_ms.map_or("–".to_string(), |ms| format!("{ms} ms")),
            s.pending,
            s.created,
            s.updated,
            s.deleted,
            s.status_patches,
        );
        problems(&mut out, &s.conflicts);
        out.push_str("</td><td>");
        problems(&mut out, &s.quarantined);
        out.push_str("</td><td>");
        if s.held_back.is_empty() {
            out.push_str("none");
        }
        for held in &s.held_back {
            let _ = write!(out, "<p>{}</p>", esc(held));
        }
        out.push_str("</td><td class=\"replacements\">");
        problems(&mut out, &s.replacements);
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");

    let _ = write!(
        out,
        "<h2>Search</h2><form method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" id=\"q\" value=\"{}\" placeholder=\"service, host or object\"> <button type=\"submit\">find</button></form>",
        esc(query.unwrap_or_default())
    );
    if let (Some(query), Some(found)) = (query, found) {
        search_results(&mut out, query, found);
    }
    out.push_str("</body></html>\n");
    out
}

fn search_results(out: &mut String, query: &str, found: &Found) {
    out.push_str("<div id=\"results\">");
    if found.is_empty() {
        let _ = write!(out, "<p>nothing named <code>{}</code>.</p>", esc(query));
    }
    for unplaced in &found.unplaced {
        let _ = write!(
            out,
            "<p class=\"unplaced\"><code>{}:{}</code> makes no objects: {}</p>",
            esc(&unplaced.registry),
            esc(&unplaced.service.key().to_string()),
            esc(&unplaced.why)
        );
    }
    for group in &found.groups {
        let _ = write!(
            out,
            "<h3 class=\"host\">{} <small>in {}</small></h3><p>objects: ",
            esc(&group.key.host),
            esc(&group.key.namespace)
        );
        let names: Vec<String> = group
            .objects
            .iter()
            .map(|o| format!("<code>{}</code>", esc(&o.key().to_string())))
            .collect();
        out.push_str(&names.join(", "));
        out.push_str("</p><ul class=\"rules\">");
        for rule in &group.rules {
            let _ = write!(out, "<li>{}</li>", esc(rule));
        }
        out.push_str("</ul><table class=\"instances\"><tr><th>registry:service</th><th>instance</th><th>address</th><th>published</th></tr>");
        for fate in &group.instances {
            let (class, what) = match &fate.published {
                Ok(how) => ("up", how.clone()),
                Err(why) => ("down", format!("no: {why}")),
            };
            let _ = write!(
                out,
                "<tr><td>{}:{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&fate.registry),
                esc(&fate.service),
                esc(&fate.instance),
                esc(&fate.address),
                esc(&what)
            );
        }
        if group.more_instances > 0 {
            let _ = write!(
                out,
                "<tr><td colspan=\"4\">and {} more instances (<code>registry-sync explain</code> lists the first {} too)</td></tr>",
                group.more_instances,
                registry_sync_translate::MAX_FATES
            );
        }
        for refused in &group.refused {
            let _ = write!(
                out,
                "<tr><td>{}:{}</td><td>{}</td><td></td><td class=\"down\">no: {}</td></tr>",
                esc(&refused.registry),
                esc(&refused.service),
                esc(refused.instance.as_deref().unwrap_or("(a record)")),
                esc(&refused.reason)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusBoard;

    #[test]
    fn everything_shown_is_escaped() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        let board = StatusBoard::default();
        board.configure("prod", [("<script>", "file")], ["files"]);
        board.registry_failed(
            "<script>",
            &registry_sync_sources::SourceFailure::new(
                registry_sync_sources::FailureReason::Unreachable,
                "no <b>route</b>",
            ),
        );
        let page = render(&board.snapshot(), Some("<x>"), Some(&Found::default()));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("unreachable: no &lt;b&gt;route&lt;/b&gt;"));
        assert!(page.contains("nothing named <code>&lt;x&gt;</code>"));
        assert!(
            !page.contains("http-equiv=\"refresh\""),
            "a search does not refresh away"
        );
        assert!(render(&board.snapshot(), None, None).contains("http-equiv=\"refresh\""));
    }
}
