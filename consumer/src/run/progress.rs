//! Progress of a long command: a spinner with a message on a terminal, a log line every
//! [`PROGRESS_LOG_EVERY`] otherwise (so a log file shows a run is alive without flooding).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often progress is logged when stderr is not a terminal.
pub const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// A spinner on a terminal, periodic log lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: Cell<Instant>,
}

impl Progress {
    /// A spinner when `bar` (stderr is a terminal), else log lines.
    pub fn new(bar: bool) -> Self {
        let bar = bar.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b
        });
        Progress {
            bar,
            last_log: Cell::new(Instant::now()),
        }
    }

    /// Shows where the command is: `describe` is called only when something is shown.
    pub fn tick(&self, describe: impl FnOnce() -> String) {
        match &self.bar {
            Some(b) => b.set_message(describe()),
            None if self.last_log.get().elapsed() >= PROGRESS_LOG_EVERY => {
                self.last_log.set(Instant::now());
                tracing::info!("progress: {}", describe());
            }
            None => {}
        }
    }

    /// Clears the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
