//! The deterministic onboarding traffic generator: an endless-looking but finite stream of
//! realistic event lines for `onramp run`, the tests and the benchmarks.
//!
//! Visitors arrive uniformly over [`GeneratorConfig::arrival_window_ms`]. Each lands with a
//! `page_view` (sometimes with UTM parameters and a referrer), browses a little, then walks
//! the default funnel ([`FUNNEL_STEPS`], the enrich module's `DEFAULT_STEPS`) with drop-off
//! at every step: `sign_up` (carries both `user_id` and `anonymous_id`), `email_verified`,
//! `step_completed {step: profile}`, `step_completed {step: workspace}` followed by
//! `identify`, `invite_sent`, `feature_used`, `onboarding_completed`. Page views and clicks
//! sit between the steps, with dwell times of seconds to minutes and now and then a break of
//! more than 30 minutes (a new session). Before sign-up events carry `anonymous_id`
//! (`a_<n>`), after it `user_id` (`u_<n>`) only — except, as identity traffic has them, the
//! `identify` events of one person in seven, who also uses a second device (`a_<n>_m`, linked
//! to them by those events), and the sign-up of one visitor in 97, made on the computer the
//! previous visitor used (it carries `a_<n-1>`: two users claim one anonymous id). Visitors
//! who drop off before sign-up stay anonymous persons.
//!
//! Mixed into the stream, as real traffic has them:
//! - hot users ([`GeneratorConfig::hot_user_share`]) who fire hundreds of `feature_used` and
//!   `page_view` events after onboarding (skew);
//! - bots ([`GeneratorConfig::bot_share`]) with crawler user agents: validate rejects them as
//!   `bot`;
//! - test accounts ([`GeneratorConfig::test_user_share`]) with `test_` ids: rejected as
//!   `test_user`;
//! - late lines ([`GeneratorConfig::late_share`]), emitted after later events: at most
//!   [`MAX_LATE_MS`] of event time and about [`MAX_LATE_LINES`] lines late;
//! - duplicates ([`GeneratorConfig::duplicate_share`]): the same line again 1 to
//!   [`MAX_DUPLICATE_LINES`] lines later, as a client retry sends it;
//! - malformed lines ([`GeneratorConfig::malformed_share`]) of the kinds in [`Malformed`],
//!   each rejected with a known reason.
//!
//! # Example
//!
//! ```
//! use onramp::generator::{Generator, GeneratorConfig};
//!
//! let cfg = GeneratorConfig { max_events: Some(3), ..GeneratorConfig::default() };
//! let lines: Vec<String> = Generator::new(cfg).collect();
//! assert_eq!(lines.len(), 3);
//! assert!(lines[0].starts_with(r#"{"event_id":"e_2a_0","type":"page_view""#));
//! ```
//!
//! With the default config the first line is:
//!
//! ```json
//! {"event_id":"e_2a_0","type":"page_view","properties":{"path":"/","url":"https://onramp.example/","title":"onramp - onboarding analytics"},"anonymous_id":"a_0","timestamp":"2026-11-02T00:00:03.532Z","context":{"user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1","locale":"ja-JP","page":{"path":"/"}}}
//! ```
//!
//! # Determinism and memory
//!
//! All randomness comes from one xoshiro256** generator seeded with splitmix64 from
//! [`GeneratorConfig::seed`], and only integer and exact floating-point operations decide
//! anything, so a config gives the same lines, byte for byte, on every platform and in every
//! version that keeps this module's logic. `max_events` only cuts the stream: a shorter run is
//! a prefix of a longer one.
//!
//! The generator streams. It holds the users active right now in a [`BinaryHeap`] keyed by
//! each one's next event time (plus each one's next few planned actions), and a small buffer
//! of lines waiting to be emitted late, repeated or malformed — never the whole stream.
//! [`Generator::active_users`] and [`Generator::buffered_lines`] report both.
//!
//! # Layout
//!
//! - `config`: [`GeneratorConfig`], its `DEFAULT_*` values and the funnel ([`FUNNEL_STEPS`]).
//! - `journeys`: a visitor — class, identity, funnel position — and their planned beats.
//! - `events`: the event a planned action sends, and its JSON line.
//! - `malformed`: the [`Malformed`] kinds and how each is made from an event.
//! - `delivery`: lines held back to go out late, repeated, or right after their source.
//! - `catalog`: the data tables (pages, features, user agents, locales, campaigns, …).
//! - `rng`: the seeded random generator every decision draws from.
//! - `time`: millisecond units and [`format_timestamp`].
//!
//! This module itself runs the stream: arrivals, the heap of active visitors, and the
//! order lines come out in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use onramp_schemas::{Event, RejectReason};

mod catalog;
mod config;
mod delivery;
mod events;
mod journeys;
mod malformed;
mod rng;
#[cfg(test)]
mod testing;
mod time;

pub use config::{
    GeneratorConfig, DEFAULT_ARRIVAL_WINDOW_MS, DEFAULT_BOT_SHARE, DEFAULT_DUPLICATE_SHARE, DEFAULT_HOT_USER_SHARE,
    DEFAULT_LATE_SHARE, DEFAULT_MALFORMED_SHARE, DEFAULT_SEED, DEFAULT_START_MS, DEFAULT_STEP_CONVERSION,
    DEFAULT_TEST_USER_SHARE, DEFAULT_USERS, FUNNEL_LEN, FUNNEL_STEPS,
};
pub use delivery::{MAX_DUPLICATE_LINES, MAX_DUPLICATE_MS, MAX_LATE_LINES, MAX_LATE_MS};
pub use journeys::SESSION_GAP_MS;
pub use malformed::Malformed;
pub use time::format_timestamp;

use delivery::HeldLines;
use journeys::{ClassCounts, Visitor};
use rng::Rng;

/// What a generated line is, and so what validate must say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// A real user's event: accepted.
    Event,
    /// A bot's event: rejected as `bot`.
    Bot,
    /// A test account's event: rejected as `test_user`.
    TestUser,
    /// A malformed line: rejected with [`Malformed::reason`].
    Malformed(Malformed),
}

impl LineKind {
    /// The reason validate (with default params) rejects such a line for; `None` if it
    /// accepts it.
    pub fn expected_reject(self) -> Option<RejectReason> {
        match self {
            LineKind::Event => None,
            LineKind::Bot => Some(RejectReason::Bot),
            LineKind::TestUser => Some(RejectReason::TestUser),
            LineKind::Malformed(m) => Some(m.reason()),
        }
    }
}

/// One generated line with what the generator knows about it (for tests and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedLine {
    /// The JSON line, without a trailing newline.
    pub text: String,
    /// What it is.
    pub kind: LineKind,
    /// Held back and emitted after lines with later event times.
    pub late: bool,
    /// A repeat of an earlier line, byte for byte.
    pub duplicate: bool,
}

impl GeneratedLine {
    /// A line in its place: neither late nor a repeat.
    fn fresh(text: String, kind: LineKind) -> GeneratedLine {
        GeneratedLine {
            text,
            kind,
            late: false,
            duplicate: false,
        }
    }
}

/// The onboarding traffic generator; iterate it for JSON lines.
#[derive(Debug)]
pub struct Generator {
    /// The config, shares clamped to 0..=1.
    cfg: GeneratorConfig,
    rng: Rng,
    /// `e_<seed hex>_`.
    id_prefix: String,
    /// Sequence number of the next event id.
    next_id: u64,
    /// Visitors of each class not yet arrived.
    left: ClassCounts,
    /// All visitors, of every class.
    visitors: u64,
    /// Visitors arrived so far (the next one's number).
    arrived: u64,
    /// Arrival time of the next visitor, if any is left.
    next_arrival: Option<i64>,
    /// Visitors with events still to come, earliest next event first.
    active: BinaryHeap<Active>,
    /// Lines waiting to be emitted late, repeated, or (malformed) right away.
    held: HeldLines,
    /// Lines emitted so far.
    emitted: u64,
}

impl Generator {
    /// A generator for `cfg`. Shares outside 0..=1 (or NaN) are clamped (NaN counts as 0);
    /// bots and test accounts together are capped at 95% of visitors.
    pub fn new(cfg: GeneratorConfig) -> Generator {
        let cfg = cfg.clamped();
        let real_share = (1.0 - cfg.bot_share - cfg.test_user_share).max(0.05);
        let users = cfg.users as f64;
        let hot = ((users * cfg.hot_user_share).round() as u64).min(cfg.users);
        let left = ClassCounts {
            hot,
            real: cfg.users - hot,
            bot: (users * cfg.bot_share / real_share).round() as u64,
            test: (users * cfg.test_user_share / real_share).round() as u64,
        };
        let mut generator = Generator {
            rng: Rng::new(cfg.seed),
            id_prefix: format!("e_{:x}_", cfg.seed),
            next_id: 0,
            visitors: left.total(),
            left,
            arrived: 0,
            next_arrival: None,
            active: BinaryHeap::new(),
            held: HeldLines::default(),
            emitted: 0,
            cfg,
        };
        generator.next_arrival = generator.arrival_time(0);
        generator
    }

    /// The next line with what it is; `None` at the end of the stream.
    pub fn next_line(&mut self) -> Option<GeneratedLine> {
        if self.cfg.max_events.is_some_and(|max| self.emitted >= max) {
            return None;
        }
        loop {
            if let Some(held) = self.held.take_due(self.emitted, self.upcoming_ms()) {
                return Some(self.emit(held.line, held.time_ms));
            }
            let (line, time_ms) = self.produce()?;
            if self.rng.chance(self.cfg.late_share) {
                self.held.hold_late(&mut self.rng, line, time_ms, self.emitted);
                continue;
            }
            return Some(self.emit(line, time_ms));
        }
    }

    /// Visitors with events still to come (the generator's main state).
    pub fn active_users(&self) -> usize {
        self.active.len()
    }

    /// Lines held back to be emitted late, repeated or right after their source.
    pub fn buffered_lines(&self) -> usize {
        self.held.len()
    }

    /// Lines emitted so far.
    pub fn lines_emitted(&self) -> u64 {
        self.emitted
    }

    /// All visitors the stream will have: `users` plus bots and test accounts.
    pub fn visitors(&self) -> u64 {
        self.visitors
    }

    /// Event time of the next fresh event (a visitor's next beat or the next arrival).
    fn upcoming_ms(&self) -> Option<i64> {
        let top = self.active.peek().map(|a| a.at);
        match (top, self.next_arrival) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arrival time of visitor `i`: uniform within its own slice of the arrival window, so
    /// arrivals come in order and spread uniformly.
    fn arrival_time(&mut self, i: u64) -> Option<i64> {
        if i >= self.visitors {
            return None;
        }
        let window = self.cfg.arrival_window_ms as i128;
        let visitors = self.visitors as i128;
        let from = (i as i128 * window / visitors) as i64;
        let to = ((i as i128 + 1) * window / visitors) as i64;
        let jitter = self.rng.below((to - from).max(1) as u64) as i64;
        Some(self.cfg.start_ms.saturating_add(from + jitter))
    }

    /// Lets in every visitor who arrives no later than the earliest active one's next event.
    fn admit_arrivals(&mut self) {
        while let Some(at) = self.next_arrival {
            if self.active.peek().is_some_and(|a| a.at < at) {
                return;
            }
            let n = self.arrived;
            let class = self.left.take(&mut self.rng);
            let visitor = Visitor::arrive(n, class, &mut self.rng);
            self.active.push(Active { at, n, visitor });
            self.arrived += 1;
            self.next_arrival = self.arrival_time(self.arrived);
        }
    }

    /// The next fresh event line (in event-time order) and its event time, plus maybe a
    /// malformed line held to follow it; `None` when every visitor is done.
    fn produce(&mut self) -> Option<(GeneratedLine, i64)> {
        loop {
            self.admit_arrivals();
            let Active { at, n, mut visitor } = self.active.pop()?;
            let Some(action) = visitor.next_action() else {
                continue; // never: an active visitor always has a beat planned
            };
            let event_id = self.new_event_id();
            let event = events::render(&mut self.rng, &mut visitor, action, at, event_id);
            let kind = visitor.class.line_kind();
            if let Some(gap_ms) = visitor.plan_next(&mut self.rng, &self.cfg.step_conversion) {
                self.active.push(Active {
                    at: at.saturating_add(gap_ms),
                    n,
                    visitor,
                });
            }
            let text = events::serialise(&event);
            if kind == LineKind::Event && self.rng.chance(self.cfg.malformed_share) {
                let event = Event {
                    event_id: self.new_event_id(),
                    ..event
                };
                let (malformed, bad) = malformed::malformed_line(&mut self.rng, event);
                let line = GeneratedLine::fresh(bad, LineKind::Malformed(malformed));
                self.held.hold_next(line, at, self.emitted);
            }
            return Some((GeneratedLine::fresh(text, kind), at));
        }
    }

    /// Counts `line` as emitted and maybe schedules a retry of it.
    fn emit(&mut self, line: GeneratedLine, time_ms: i64) -> GeneratedLine {
        self.emitted += 1;
        let is_event = !matches!(line.kind, LineKind::Malformed(_));
        if is_event && !line.duplicate && self.rng.chance(self.cfg.duplicate_share) {
            self.held.hold_retry(&mut self.rng, &line, time_ms, self.emitted);
        }
        line
    }

    fn new_event_id(&mut self) -> String {
        let id = format!("{}{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        id
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.next_line().map(|line| line.text)
    }
}

/// A heap entry: a visitor keyed by their next event time (ties: lower visitor number
/// first). Ordered so that [`BinaryHeap`] (a max-heap) pops the earliest.
#[derive(Debug)]
struct Active {
    at: i64,
    n: u64,
    visitor: Visitor,
}

impl PartialEq for Active {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.n) == (other.at, other.n)
    }
}

impl Eq for Active {}

impl PartialOrd for Active {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Active {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.n).cmp(&(self.at, self.n))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Instant;

    use onramp_logic::validate::{parse_event, validate, ValidateConfig};

    use super::testing::{assert_near, default_run, share};
    use super::*;

    /// Same config, same lines byte for byte; another seed gives other lines.
    #[test]
    fn same_seed_same_lines_other_seed_differs() {
        let first = |seed| -> Vec<String> {
            Generator::new(GeneratorConfig {
                seed,
                ..GeneratorConfig::default()
            })
            .take(5_000)
            .collect()
        };
        let a = first(42);
        assert_eq!(a.len(), 5_000);
        assert_eq!(a, first(42));
        let b = first(43);
        assert_ne!(a, b);
        assert!(b[0].starts_with(r#"{"event_id":"e_2b_0","#), "{}", b[0]);
    }

    /// The first line for the default config never changes (the generator is stable
    /// across versions and platforms; update this only on purpose, with the module docs).
    #[test]
    fn first_line_is_pinned() {
        let first = Generator::new(GeneratorConfig::default()).next().unwrap();
        assert_eq!(first, PINNED_FIRST_LINE);
    }

    const PINNED_FIRST_LINE: &str = r#"{"event_id":"e_2a_0","type":"page_view","properties":{"path":"/","url":"https://onramp.example/","title":"onramp - onboarding analytics"},"anonymous_id":"a_0","timestamp":"2026-11-02T00:00:03.532Z","context":{"user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1","locale":"ja-JP","page":{"path":"/"}}}"#;

    /// Validate accepts every real user's line and rejects every bot, test and malformed
    /// line with the intended reason; sign-up carries both ids, later events `user_id` only.
    #[test]
    fn every_line_gets_its_intended_verdict() {
        let cfg = ValidateConfig::default();
        let lines = default_run();
        let mut accepted = 0;
        for line in &lines {
            let verdict = validate(line.text.as_bytes(), None, &cfg);
            match (line.kind.expected_reject(), verdict) {
                (None, Ok(ok)) => {
                    accepted += 1;
                    let e = ok.event;
                    assert!(e.anonymous_id.as_deref().is_some_and(|a| a.starts_with("a_")) || e.user_id.is_some());
                    if e.type_name() == "sign_up" {
                        assert!(e.user_id.is_some() && e.anonymous_id.is_some(), "{}", line.text);
                    } else if e.type_name() == "identify" && e.anonymous_id.is_some() {
                        assert!(e.user_id.is_some() && e.anonymous_id.as_deref().is_some_and(|a| a.ends_with("_m")));
                    } else if e.user_id.is_some() {
                        assert!(e.anonymous_id.is_none(), "{}", line.text);
                    }
                }
                (Some(reason), Err(r)) => assert_eq!(r.reason, reason, "{}: {}", line.text, r.detail),
                (expected, got) => panic!("expected {expected:?}, got {got:?} for {}", line.text),
            }
        }
        assert!(accepted > lines.len() * 9 / 10, "{accepted} of {}", lines.len());
    }

    /// Bots, test accounts, malformed, late and duplicate lines come in roughly the
    /// configured shares, and every malformed kind occurs.
    #[test]
    fn shares_are_roughly_as_configured() {
        let cfg = GeneratorConfig::default();
        let visitors = Generator::new(cfg.clone()).visitors();
        let lines = default_run();
        let ids_of = |kind: LineKind| -> HashSet<String> {
            lines
                .iter()
                .filter(|l| l.kind == kind)
                .filter_map(|l| parse_event(l.text.as_bytes()).ok())
                .filter_map(|e| e.anonymous_id.or(e.user_id))
                .map(|id| {
                    id.trim_start_matches("test_")
                        .trim_start_matches(['a', 'u', '_'])
                        .to_string()
                })
                .collect()
        };
        assert_near(
            "bot visitors",
            share(ids_of(LineKind::Bot).len(), visitors as usize),
            cfg.bot_share,
        );
        assert_near(
            "test visitors",
            share(ids_of(LineKind::TestUser).len(), visitors as usize),
            cfg.test_user_share,
        );
        let count = |f: &dyn Fn(&GeneratedLine) -> bool| lines.iter().filter(|l| f(l)).count();
        let malformed = count(&|l| matches!(l.kind, LineKind::Malformed(_)));
        assert_near("malformed lines", share(malformed, lines.len()), cfg.malformed_share);
        assert_near("late lines", share(count(&|l| l.late), lines.len()), cfg.late_share);
        assert_near(
            "duplicate lines",
            share(count(&|l| l.duplicate), lines.len()),
            cfg.duplicate_share,
        );
        for kind in Malformed::ALL {
            assert!(count(&|l| l.kind == LineKind::Malformed(kind)) > 0, "no {kind:?} line");
        }
    }

    /// Proves the traffic has identity: some persons link a second device, some sign-ups
    /// carry another visitor's anonymous id.
    #[test]
    fn identity_traffic_has_second_devices_and_shared_ids() {
        let lines = default_run();
        let events: Vec<onramp_schemas::Event> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(&l.text).ok())
            .collect();
        let second_devices = events
            .iter()
            .filter(|e| e.user_id.is_some() && e.anonymous_id.as_deref().is_some_and(|a| a.ends_with("_m")))
            .count();
        let shared = events
            .iter()
            .filter(|e| e.type_name() == "sign_up")
            .filter(|e| {
                let (u, a) = (
                    e.user_id.as_deref().unwrap_or(""),
                    e.anonymous_id.as_deref().unwrap_or(""),
                );
                u.trim_start_matches("test_").trim_start_matches("u_")
                    != a.trim_start_matches("test_").trim_start_matches("a_")
            })
            .count();
        assert!(
            second_devices > 0 && shared > 0,
            "{second_devices} second-device links, {shared} shared sign-ups"
        );
    }

    /// `max_events` stops the stream after exactly that many lines, a prefix of the full run.
    #[test]
    fn max_events_cuts_a_prefix() {
        let cfg = GeneratorConfig {
            max_events: Some(1_234),
            ..GeneratorConfig::default()
        };
        let cut: Vec<String> = Generator::new(cfg).collect();
        let full: Vec<String> = Generator::new(GeneratorConfig::default()).take(1_500).collect();
        assert_eq!(cut.len(), 1_234);
        assert_eq!(cut[..], full[..1_234]);
        let none = GeneratorConfig {
            max_events: Some(0),
            ..GeneratorConfig::default()
        };
        assert_eq!(Generator::new(none).count(), 0);
    }

    /// Over 200k lines the generator holds only the currently active users and a few
    /// dozen buffered lines.
    #[test]
    fn state_stays_small_over_200k_lines() {
        let cfg = GeneratorConfig {
            users: 20_000,
            max_events: Some(200_000),
            ..GeneratorConfig::default()
        };
        let mut generator = Generator::new(cfg);
        let (mut lines, mut peak_active, mut peak_buffered) = (0, 0, 0);
        while generator.next_line().is_some() {
            lines += 1;
            peak_active = peak_active.max(generator.active_users());
            peak_buffered = peak_buffered.max(generator.buffered_lines());
        }
        assert_eq!(lines, 200_000);
        assert!(peak_active < 2_000, "peak {peak_active} active users");
        assert!(
            peak_buffered <= 2 * MAX_LATE_LINES as usize,
            "peak {peak_buffered} buffered lines"
        );
    }

    /// Throughput, for humans: `cargo test -p onramp --release --lib generator -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput_1m_lines() {
        let cfg = GeneratorConfig {
            users: 100_000,
            max_events: Some(1_000_000),
            ..GeneratorConfig::default()
        };
        let start = Instant::now();
        let mut generator = Generator::new(cfg);
        let (mut lines, mut bytes, mut peak_active) = (0u64, 0usize, 0);
        while let Some(line) = generator.next() {
            lines += 1;
            bytes += line.len() + 1;
            if lines % 1_000 == 0 {
                peak_active = peak_active.max(generator.active_users());
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{lines} lines, {:.1} MB in {secs:.2} s: {:.0} lines/s, {:.1} MB/s; peak {peak_active} active users",
            bytes as f64 / 1e6,
            lines as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
}
