//! Delivery out of order: the buffer of lines held back — late lines, client retries
//! (duplicates) and malformed lines waiting to follow their source — and when each falls
//! due.
//!
//! The generator decides which lines to hold ([`GeneratorConfig::late_share`],
//! [`GeneratorConfig::duplicate_share`], [`GeneratorConfig::malformed_share`]); this module
//! decides how long they wait.
//!
//! [`GeneratorConfig::late_share`]: super::GeneratorConfig::late_share
//! [`GeneratorConfig::duplicate_share`]: super::GeneratorConfig::duplicate_share
//! [`GeneratorConfig::malformed_share`]: super::GeneratorConfig::malformed_share

use super::rng::Rng;
use super::time::{MINUTE_MS, SECOND_MS};
use super::GeneratedLine;

/// A late line is emitted at most this many lines after its place in the stream (unless
/// several held lines fall due at once).
pub const MAX_LATE_LINES: u64 = 64;
/// A late line is emitted before any event more than this much event time after its own
/// (4 minutes).
pub const MAX_LATE_MS: i64 = 4 * MINUTE_MS;
/// A duplicate follows its original within this many lines (unless several held lines fall
/// due at once).
pub const MAX_DUPLICATE_LINES: u64 = 8;
/// A duplicate is emitted before any event more than this much event time after its
/// original (2 minutes).
pub const MAX_DUPLICATE_MS: i64 = 2 * MINUTE_MS;

/// A line waiting in the buffer: emitted once `due_line` lines are out, or once the next
/// fresh event is later than `due_ms`, whichever comes first.
#[derive(Debug)]
pub(super) struct Held {
    due_line: u64,
    due_ms: i64,
    /// Event time of the line (for the retry of a late line).
    pub(super) time_ms: i64,
    pub(super) line: GeneratedLine,
}

/// The held lines, in the order they were held (the first due among them goes first).
#[derive(Debug, Default)]
pub(super) struct HeldLines {
    held: Vec<Held>,
}

impl HeldLines {
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Takes the first held line that is due, `emitted` lines out and the next fresh event
    /// at `upcoming_ms`; with no fresh event to come, every held line is due.
    pub(super) fn take_due(&mut self, emitted: u64, upcoming_ms: Option<i64>) -> Option<Held> {
        let due = |h: &Held| h.due_line <= emitted || upcoming_ms.is_none_or(|at| h.due_ms < at);
        let i = self.held.iter().position(due)?;
        Some(self.held.remove(i))
    }

    /// Holds `line` (event time `time_ms`) back to be emitted late: up to
    /// [`MAX_LATE_LINES`] lines and [`MAX_LATE_MS`] of event time after its place, where
    /// `emitted` lines are out.
    pub(super) fn hold_late(&mut self, rng: &mut Rng, line: GeneratedLine, time_ms: i64, emitted: u64) {
        let due_line = emitted + 1 + rng.below(MAX_LATE_LINES);
        let due_ms = time_ms.saturating_add(rng.range(5 * SECOND_MS, MAX_LATE_MS));
        let line = GeneratedLine { late: true, ..line };
        self.held.push(Held {
            due_line,
            due_ms,
            time_ms,
            line,
        });
    }

    /// Holds a retry of `line` (event time `time_ms`), just emitted as line number
    /// `emitted`: up to [`MAX_DUPLICATE_LINES`] lines and [`MAX_DUPLICATE_MS`] of event time
    /// later.
    pub(super) fn hold_retry(&mut self, rng: &mut Rng, line: &GeneratedLine, time_ms: i64, emitted: u64) {
        let due_line = emitted + rng.below(MAX_DUPLICATE_LINES);
        let due_ms = time_ms.saturating_add(rng.range(SECOND_MS, MAX_DUPLICATE_MS));
        let copy = GeneratedLine {
            text: line.text.clone(),
            kind: line.kind,
            late: false,
            duplicate: true,
        };
        self.held.push(Held {
            due_line,
            due_ms,
            time_ms,
            line: copy,
        });
    }

    /// Holds `line` (made from an event at `time_ms`) to go out right after that event,
    /// `emitted` lines being out before it.
    pub(super) fn hold_next(&mut self, line: GeneratedLine, time_ms: i64, emitted: u64) {
        self.held.push(Held {
            due_line: emitted,
            due_ms: i64::MIN,
            time_ms,
            line,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::testing::{default_run, event_time};
    use crate::generator::LineKind;

    /// Every duplicate repeats, byte for byte, one of the few lines just before it.
    #[test]
    fn duplicates_repeat_a_recent_line() {
        let lines = default_run();
        let mut duplicates = 0;
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.duplicate) {
            duplicates += 1;
            let recent = &lines[i.saturating_sub(2 * MAX_DUPLICATE_LINES as usize)..i];
            assert!(
                recent.iter().any(|r| r.text == line.text),
                "line {i} repeats nothing recent"
            );
        }
        assert!(duplicates > 100, "{duplicates} duplicates");
    }

    /// Lines come in event-time order except late lines, which trail the newest event
    /// time seen by at most `MAX_LATE_MS`; some really are out of order.
    #[test]
    fn late_lines_are_out_of_order_by_minutes() {
        let mut newest = i64::MIN;
        let mut out_of_order = 0;
        for line in default_run() {
            if matches!(line.kind, LineKind::Malformed(_)) || line.duplicate {
                continue;
            }
            let t = event_time(&line.text);
            if line.late {
                assert!(newest - t <= MAX_LATE_MS, "{} ms late: {}", newest - t, line.text);
                out_of_order += usize::from(t < newest);
            } else {
                assert!(t >= newest, "an on-time line went back in time: {}", line.text);
            }
            newest = newest.max(t);
        }
        assert!(out_of_order > 50, "{out_of_order} lines out of order");
    }
}
