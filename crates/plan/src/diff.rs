use std::fmt::Write;

use registry_sync_istio::ObjectKey;

use crate::Plan;

impl Plan {
    /// The plan as text for `registry-sync plan` and for logs: one line per object that
    /// is written or needs attention, ordered by key so that two runs over the same state
    /// print the same text, then a summary line. Unchanged objects are only counted, so
    /// the text stays proportional to the change.
    pub fn render_diff(&self) -> String {
        self.render_diff_explained(&|_| None)
    }

    /// [`Plan::render_diff`], with what `why` says of a create, update or delete (the
    /// override rules that shaped it, the filter that left it out) added to its line.
    pub fn render_diff_explained(&self, why: &dyn Fn(&ObjectKey) -> Option<String>) -> String {
        let explained = |key: &ObjectKey, what: &str| match why(key) {
            Some(reason) => format!("({what}; {reason})"),
            None => format!("({what})"),
        };
        let mut lines: Vec<(ObjectKey, String)> =
            Vec::with_capacity(self.writes() + self.conflicts.len() + self.kept.len());
        lines.extend(self.creates.iter().map(|object| {
            let key = object.key();
            let line = format!("+ {key} {}", explained(&key, "create"));
            (key, line)
        }));
        lines.extend(self.updates.iter().map(|object| {
            let key = object.key();
            let line = format!("~ {key} {}", explained(&key, "update"));
            (key, line)
        }));
        lines.extend(
            self.deletes
                .iter()
                .map(|key| (key.clone(), format!("- {key} {}", explained(key, "delete")))),
        );
        lines.extend(
            self.conflicts
                .iter()
                .map(|c| (c.key.clone(), format!("! {} (conflict: {})", c.key, c.reason))),
        );
        lines.extend(self.kept.iter().map(|k| {
            let line = format!(
                "= kept {} (registry {:?} has not delivered a complete view)",
                k.key, k.registry
            );
            (k.key.clone(), line)
        }));
        lines.extend(self.orphans.iter().map(|o| {
            let line = format!(
                "? orphan {} (registry {:?} is no longer configured; `registry-sync prune` deletes it)",
                o.key, o.registry
            );
            (o.key.clone(), line)
        }));
        lines.extend(
            self.replacements
                .iter()
                .map(|r| (r.key.clone(), format!("= waits {} ({})", r.key, r.describe()))),
        );
        lines.extend(self.status.iter().map(|c| {
            let healthy = if c.healthy { "True" } else { "False" };
            (c.key.clone(), format!("h {} (status: Healthy={healthy})", c.key))
        }));
        lines.sort_by(|a, b| a.0.cmp(&b.0));

        let mut out = String::new();
        for (_, line) in lines {
            out.push_str(&line);
            out.push('\n');
        }
        let _ = write!(
            out,
            "{} to create, {} to update, {} to delete, {} unchanged, {} conflicts",
            self.creates.len(),
            self.updates.len(),
            self.deletes.len(),
            self.unchanged,
            self.conflicts.len(),
        );
        if !self.kept.is_empty() {
            let _ = write!(out, ", {} kept", self.kept.len());
        }
        if !self.orphans.is_empty() {
            let _ = write!(out, ", {} orphans", self.orphans.len());
        }
        if !self.status.is_empty() {
            let _ = write!(out, ", {} status patches", self.status.len());
        }
        if !self.replacements.is_empty() {
            let _ = write!(out, ", {} waiting for their successors", self.replacements.len());
        }
        for held_back in &self.held_back {
            let _ = write!(out, "\n! {}", held_back.describe());
        }
        out.push('\n');
        out
    }
}
