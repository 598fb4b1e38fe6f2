//! A partition's event-time clock: the watermark that state expiry, the "too far ahead"
//! quarantine and the time-dependent hints are judged against.
//!
//! Event times come from producers and cannot be trusted one by one: a single event dated
//! 2099 must not make every other user of its partition look inactive for decades. So the
//! watermark is not the newest event time but a robust one: the greatest *lower median*
//! of the event times of the partition's last [`CLOCK_WINDOW`] events, defined once at
//! least [`CLOCK_MIN_EVENTS`] have been seen. Moving it takes a majority of the recent
//! events, so one outlier (or a few) anywhere in the stream never moves it, while a real
//! jump in time (the stream resumes after an idle day) moves it after
//! `CLOCK_WINDOW / 2 + 1` events.
//!
//! The fold in the SmartModule and the consumer's store both keep this clock for each
//! partition, observing the same events (applied, duplicate or quarantined) in offset
//! order, so the store can hand the aggregate its exact clock in a restart snapshot.

use serde::{Deserialize, Serialize};

/// How many recent event times the clock keeps.
pub const CLOCK_WINDOW: usize = 15;
/// How many events a partition needs before it has a watermark.
pub const CLOCK_MIN_EVENTS: usize = 3;

/// A partition's event-time clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PartitionClock {
    /// The event times of the partition's last [`CLOCK_WINDOW`] events, oldest first, ms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_ms: Vec<i64>,
    /// The greatest lower median of `recent_ms` so far, ms; `None` until
    /// [`CLOCK_MIN_EVENTS`] events were seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
}

impl PartitionClock {
    /// Records one event's time and moves the watermark if a majority of the window
    /// says so. O(1): the window has a fixed size.
    pub fn observe(&mut self, event_time_ms: i64) {
        // A clock read from a restart snapshot may hold any number of times: keep the
        // newest `CLOCK_WINDOW - 1`, so the window is full after this one.
        let excess = (self.recent_ms.len() + 1).saturating_sub(CLOCK_WINDOW);
        self.recent_ms.drain(..excess);
        self.recent_ms.push(event_time_ms);
        let n = self.recent_ms.len();
        if n < CLOCK_MIN_EVENTS {
            return;
        }
        let mut sorted = [0i64; CLOCK_WINDOW];
        sorted[..n].copy_from_slice(&self.recent_ms);
        let (_, median, _) = sorted[..n].select_nth_unstable((n - 1) / 2);
        let median = *median;
        self.watermark_ms = Some(self.watermark_ms.map_or(median, |w| w.max(median)));
    }

    /// The watermark, ms.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const FAR_FUTURE: i64 = 4_070_908_800_000; // 2099-01-01

    /// Proves one far-future event, first or anywhere later, never moves the watermark.
    #[test]
    fn one_outlier_never_moves_the_watermark() {
        for at in 0..20 {
            let mut c = PartitionClock::default();
            for i in 0..20 {
                c.observe(if i == at { FAR_FUTURE } else { 1_000 + i });
            }
            assert!(c.watermark_ms().unwrap() < 1_100, "outlier at {at}: {c:?}");
        }
    }

    /// Proves a real jump in time moves the watermark once a majority of the window agrees,
    /// and that it never goes back.
    #[test]
    fn a_majority_moves_it_and_it_never_goes_back() {
        let mut c = PartitionClock::default();
        assert_eq!(c.watermark_ms(), None);
        for i in 0..15 {
            c.observe(1_000 + i);
        }
        assert_eq!(c.watermark_ms(), Some(1_007));
        for i in 0..8 {
            c.observe(1_000_000 + i);
        }
        assert_eq!(c.watermark_ms(), Some(1_000_000));
        for _ in 0..15 {
            c.observe(5);
        }
        assert_eq!(c.watermark_ms(), Some(1_000_000), "late events do not move it back");
    }

    /// Proves a clock holding more than a window of times (a restart snapshot can say
    /// anything) keeps working on the newest ones instead of panicking (found by the
    /// `fold` fuzz target).
    #[test]
    fn an_overfull_window_is_trimmed() {
        let mut c = PartitionClock {
            recent_ms: (0..40).map(|i| if i < 30 { FAR_FUTURE } else { 1_000 + i }).collect(),
            watermark_ms: None,
        };
        c.observe(1_040);
        assert_eq!(c.recent_ms.len(), CLOCK_WINDOW);
        assert_eq!(c.recent_ms.last(), Some(&1_040));
        assert_eq!(
            c.watermark_ms(),
            Some(1_037),
            "the median of the newest 15: 11 ordinary, 4 far"
        );
        for i in 0..CLOCK_WINDOW as i64 {
            c.observe(2_000 + i);
        }
        assert_eq!(c.recent_ms, (2_000..2_000 + CLOCK_WINDOW as i64).collect::<Vec<_>>());
    }

    /// Proves the watermark needs a few events, so the very first event cannot define it.
    #[test]
    fn needs_a_few_events() {
        let mut c = PartitionClock::default();
        c.observe(FAR_FUTURE);
        c.observe(1_000);
        assert_eq!(c.watermark_ms(), None);
        c.observe(1_001);
        assert_eq!(c.watermark_ms(), Some(1_001));
    }
}
