//! Progress of long passes: a bar on a terminal, plain log lines otherwise (a file, a
//! pipe, a container's log), so a cold sync of thousands of objects says how far it is
//! and how long is left instead of going quiet.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Passes with fewer writes finish before anyone waits for them.
pub const MIN_WRITES: usize = 200;

/// How often a line is logged (or the bar redrawn) while a pass runs.
const EVERY: Duration = Duration::from_secs(1);

/// One sink's pass of `total` writes.
pub struct WriteProgress {
    sink: String,
    total: usize,
    started: Instant,
    bar: Option<ProgressBar>,
    /// Writes the sink reports done so far, where it counts them.
    done: Option<Arc<AtomicUsize>>,
}

/// Bars are drawn only when the binary allows them (text logs, see [`allow_bars`]) and
/// stderr is a terminal.
static BARS: AtomicBool = AtomicBool::new(false);

/// Lets progress draw bars on a terminal (the binary, with text logs).
pub fn allow_bars(allowed: bool) {
    BARS.store(allowed, Ordering::Relaxed);
}

fn on_terminal() -> bool {
    BARS.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

impl WriteProgress {
    /// `None` for a pass too small to report.
    pub fn start(sink: &str, total: usize, done: Option<Arc<AtomicUsize>>) -> Option<WriteProgress> {
        if total < MIN_WRITES {
            return None;
        }
        let bar = on_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} writes, {per_sec}, {eta} left")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(sink.to_string());
            bar
        });
        if bar.is_none() {
            tracing::info!(sink, writes = total, "applying {total} writes");
        }
        Some(WriteProgress {
            sink: sink.to_string(),
            total,
            started: Instant::now(),
            bar,
            done,
        })
    }

    pub fn interval() -> Duration {
        EVERY
    }

    /// Called every [`WriteProgress::interval`] while the pass runs.
    pub fn tick(&self) {
        let Some(done) = self
            .done
            .as_ref()
            .map(|d| d.load(Ordering::Relaxed).min(self.total))
        else {
            return;
        };
        match &self.bar {
            Some(bar) => bar.set_position(done as u64),
            None => {
                let elapsed = self.started.elapsed().as_secs_f64();
                let rate = done as f64 / elapsed.max(0.001);
                let left = if rate > 0.0 {
                    format!("{:.0} s", (self.total - done) as f64 / rate)
                } else {
                    "unknown".into()
                };
                tracing::info!(
                    sink = %self.sink,
                    "applied {done} of {} writes, {rate:.0}/s, {left} left",
                    self.total
                );
            }
        }
    }

    pub fn finish(self, written: usize) {
        let elapsed = self.started.elapsed();
        let rate = written as f64 / elapsed.as_secs_f64().max(0.001);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tracing::info!(
            sink = %self.sink,
            "applied {written} of {} writes in {:.1} s, {rate:.0}/s",
            self.total,
            elapsed.as_secs_f64()
        );
    }
}

/// Registries read so far by a one-shot command.
pub struct ReadProgress {
    total: usize,
    read: usize,
    bar: Option<ProgressBar>,
}

impl ReadProgress {
    pub fn start(total: usize) -> ReadProgress {
        let bar = (on_terminal() && total > 1).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template("registries [{bar:30}] {pos}/{len} read, {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        });
        ReadProgress { total, read: 0, bar }
    }

    pub fn read(&mut self, registry: &str, objects_so_far: usize) {
        self.read += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{objects_so_far} objects planned"));
                bar.set_position(self.read as u64);
            }
            None => tracing::info!(
                registry,
                "registries read: {} of {}, {objects_so_far} objects planned",
                self.read,
                self.total
            ),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
