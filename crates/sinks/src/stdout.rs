//! Plans printed as a YAML stream, for `render`, for piping into `kubectl apply -f -`, and
//! for tests that want to see exactly what would be written.

use std::collections::BTreeMap;
use std::io::{self, Write};

use registry_sync_istio::{HeldObject, IstioObject, ObjectKey, render_object};
use registry_sync_plan::Plan;
use tracing::warn;

use crate::{ApplyReport, Sink, SinkError};

/// Holds only what it printed in this process: a stream cannot be read back, so a new
/// process starts empty and prints everything once.
pub struct StdoutSink<W: Write> {
    out: W,
    held: BTreeMap<ObjectKey, HeldObject>,
}

impl StdoutSink<io::Stdout> {
    pub fn stdout() -> StdoutSink<io::Stdout> {
        StdoutSink::new(io::stdout())
    }
}

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W) -> StdoutSink<W> {
        StdoutSink {
            out,
            held: BTreeMap::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Renders before writing, so an object that cannot be rendered prints nothing
    /// rather than half a document.
    fn print(&mut self, object: &IstioObject, report: &mut ApplyReport) -> Result<bool, SinkError> {
        let yaml = match render_object(object) {
            Ok(yaml) => yaml,
            Err(error) => {
                warn!(key = %object.key(), %error, "could not print the object");
                report.failed.push((object.key(), error.to_string()));
                return Ok(false);
            }
        };
        let mut document = String::with_capacity(yaml.len() + 5);
        document.push_str("---\n");
        document.push_str(&yaml);
        if !document.ends_with('\n') {
            document.push('\n');
        }
        self.out
            .write_all(document.as_bytes())
            .map_err(|source| SinkError::Output { source })?;
        self.held.insert(object.key(), HeldObject::written(object));
        Ok(true)
    }
}

impl<W: Write> Sink for StdoutSink<W> {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        let mut report = ApplyReport::default();
        for object in &plan.creates {
            if self.print(object, &mut report)? {
                report.created += 1;
            }
        }
        for object in &plan.updates {
            if self.print(object, &mut report)? {
                report.updated += 1;
            }
        }
        for key in &plan.deletes {
            writeln!(self.out, "# deleted: {key}").map_err(|source| SinkError::Output { source })?;
            self.held.remove(key);
            report.deleted += 1;
        }
        self.out.flush().map_err(|source| SinkError::Output { source })?;
        Ok(report)
    }
}
