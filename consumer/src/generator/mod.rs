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
//! (`a_<n>`), after it `user_id` (`u_<n>`) only.
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
//! version that keeps this file's logic. `max_events` only cuts the stream: a shorter run is
//! a prefix of a longer one.
//!
//! The generator streams. It holds the users active right now in a [`BinaryHeap`] keyed by
//! each one's next event time (plus each one's next few planned actions), and a small buffer
//! of lines waiting to be emitted late, repeated or malformed — never the whole stream.
//! [`Generator::active_users`] and [`Generator::buffered_lines`] report both.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use onramp_schemas::event::{
    Click, Context, EmailVerified, EventKind, FeatureUsed, Identify, InviteSent, OnboardingCompleted, PageContext,
    PageView, SignUp, StepCompleted,
};
use onramp_schemas::{Event, RejectReason, TraitValue};
use serde::{Deserialize, Serialize};

/// Default [`GeneratorConfig::seed`].
pub const DEFAULT_SEED: u64 = 42;
/// Default [`GeneratorConfig::users`].
pub const DEFAULT_USERS: u64 = 2_000;
/// Default [`GeneratorConfig::start_ms`]: 2026-11-02T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_793_577_600_000;
/// Default [`GeneratorConfig::arrival_window_ms`]: 24 hours.
pub const DEFAULT_ARRIVAL_WINDOW_MS: i64 = 24 * HOUR_MS;
/// Default [`GeneratorConfig::hot_user_share`].
pub const DEFAULT_HOT_USER_SHARE: f64 = 0.002;
/// Default [`GeneratorConfig::bot_share`].
pub const DEFAULT_BOT_SHARE: f64 = 0.02;
/// Default [`GeneratorConfig::test_user_share`].
pub const DEFAULT_TEST_USER_SHARE: f64 = 0.005;
/// Default [`GeneratorConfig::late_share`].
pub const DEFAULT_LATE_SHARE: f64 = 0.03;
/// Default [`GeneratorConfig::duplicate_share`].
pub const DEFAULT_DUPLICATE_SHARE: f64 = 0.02;
/// Default [`GeneratorConfig::malformed_share`].
pub const DEFAULT_MALFORMED_SHARE: f64 = 0.01;

/// Number of funnel steps.
pub const FUNNEL_LEN: usize = 7;
/// The funnel the generator walks, in order: the enrich module's `DEFAULT_STEPS`.
pub const FUNNEL_STEPS: [&str; FUNNEL_LEN] = [
    "sign_up",
    "email_verified",
    "profile",
    "workspace",
    "invite_sent",
    "feature_used",
    "onboarding_completed",
];
/// Default [`GeneratorConfig::step_conversion`]: 70% of visitors sign up, 85% of those
/// verify their email, and so on; about 16% of visitors complete onboarding.
pub const DEFAULT_STEP_CONVERSION: [f64; FUNNEL_LEN] = [0.70, 0.85, 0.90, 0.85, 0.60, 0.80, 0.90];

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
/// Gaps longer than this between two events of a user start a new session (30 minutes).
pub const SESSION_GAP_MS: i64 = 30 * MINUTE_MS;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Chance that a user takes a break longer than [`SESSION_GAP_MS`] before a funnel step.
const SESSION_BREAK_SHARE: f64 = 0.08;
/// Chance that a landing URL carries UTM parameters.
const CAMPAIGN_SHARE: f64 = 0.35;
/// Chance that a landing page view has a referrer.
const REFERRER_SHARE: f64 = 0.5;
/// Extra events a hot user fires after onboarding (inclusive range).
const HOT_EVENTS: (i64, i64) = (200, 600);
/// Hot events are planned this many at a time, to keep each active user small.
const HOT_CHUNK: u32 = 16;
/// Pages a bot fetches (inclusive range).
const BOT_PAGES: (i64, i64) = (2, 25);

/// The traffic generator's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed of the random generator: the same config gives the same lines, byte for byte.
    pub seed: u64,
    /// Distinct real (not bot, not test) visitors; each one that signs up gets a `u_<n>`
    /// id. Bots and test accounts come on top (see `bot_share`, `test_user_share`).
    pub users: u64,
    /// Stop after this many lines (every kind counts); `None` = when every visitor is done.
    pub max_events: Option<u64>,
    /// Event time of the first possible arrival, ms since the epoch.
    pub start_ms: i64,
    /// Visitors arrive uniformly over this much event time after `start_ms`, ms.
    pub arrival_window_ms: i64,
    /// Share of the `users` who are hot: after onboarding they fire hundreds of
    /// `feature_used` and `page_view` events (skew).
    pub hot_user_share: f64,
    /// Share of all visitors who are bots (crawler user agents, a few page views each);
    /// validate rejects their lines as `bot`.
    pub bot_share: f64,
    /// Share of all visitors who are test accounts (`test_` ids, emails at
    /// `onramp-test.invalid`); validate rejects their lines as `test_user`.
    pub test_user_share: f64,
    /// Share of event lines held back and emitted after later events: at most
    /// [`MAX_LATE_MS`] of event time and [`MAX_LATE_LINES`] lines late.
    pub late_share: f64,
    /// Share of event lines emitted a second time, unchanged (same `event_id`), 1 to
    /// [`MAX_DUPLICATE_LINES`] lines later, as a client retry would.
    pub duplicate_share: f64,
    /// Chance, per real user's event line, of an extra malformed line right after it (one of
    /// the [`Malformed`] kinds, chosen uniformly).
    pub malformed_share: f64,
    /// Per funnel step ([`FUNNEL_STEPS`] order): the chance that a real user who completed
    /// the previous step (for `sign_up`: who landed) completes this one. Hot users and test
    /// accounts complete every step.
    pub step_conversion: [f64; FUNNEL_LEN],
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: DEFAULT_SEED,
            users: DEFAULT_USERS,
            max_events: None,
            start_ms: DEFAULT_START_MS,
            arrival_window_ms: DEFAULT_ARRIVAL_WINDOW_MS,
            hot_user_share: DEFAULT_HOT_USER_SHARE,
            bot_share: DEFAULT_BOT_SHARE,
            test_user_share: DEFAULT_TEST_USER_SHARE,
            late_share: DEFAULT_LATE_SHARE,
            duplicate_share: DEFAULT_DUPLICATE_SHARE,
            malformed_share: DEFAULT_MALFORMED_SHARE,
            step_conversion: DEFAULT_STEP_CONVERSION,
        }
    }
}

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

/// The kinds of malformed line the generator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// An event line cut off part way: not JSON.
    NotJson,
    /// A `type` that is not an event type (`signup`, `pageview`, …).
    UnknownType,
    /// Neither `user_id` nor `anonymous_id`.
    MissingIdentity,
    /// A property of the wrong JSON type (`"count":"three"`, `"target":true`, …).
    WrongPropertyType,
    /// A timestamp in 1970 (an unset client clock).
    Year1970,
}

impl Malformed {
    /// Every kind, in the order the generator picks from.
    pub const ALL: [Malformed; 5] = [
        Malformed::NotJson,
        Malformed::UnknownType,
        Malformed::MissingIdentity,
        Malformed::WrongPropertyType,
        Malformed::Year1970,
    ];

    /// The reason validate rejects this kind for.
    pub fn reason(self) -> RejectReason {
        match self {
            Malformed::NotJson => RejectReason::InvalidJson,
            Malformed::UnknownType => RejectReason::UnknownType,
            Malformed::MissingIdentity => RejectReason::MissingIdentity,
            Malformed::WrongPropertyType => RejectReason::SchemaViolation,
            Malformed::Year1970 => RejectReason::TimestampOutOfRange,
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
    held: Vec<Held>,
    /// Lines emitted so far.
    emitted: u64,
}

impl Generator {
    /// A generator for `cfg`. Shares outside 0..=1 (or NaN) are clamped (NaN counts as 0);
    /// bots and test accounts together are capped at 95% of visitors.
    pub fn new(cfg: GeneratorConfig) -> Generator {
        let mut cfg = cfg;
        for share in [
            &mut cfg.hot_user_share,
            &mut cfg.bot_share,
            &mut cfg.test_user_share,
            &mut cfg.late_share,
            &mut cfg.duplicate_share,
            &mut cfg.malformed_share,
        ]
        .into_iter()
        .chain(cfg.step_conversion.iter_mut())
        {
            *share = clamp_share(*share);
        }
        cfg.arrival_window_ms = cfg.arrival_window_ms.max(0);
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
            held: Vec::new(),
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
            // With no fresh event to come, every held line is due.
            let upcoming = self.upcoming_ms();
            let emitted = self.emitted;
            let due = |h: &Held| h.due_line <= emitted || upcoming.is_none_or(|at| h.due_ms < at);
            if let Some(i) = self.held.iter().position(due) {
                let held = self.held.remove(i);
                return Some(self.emit(held.line, held.time_ms));
            }
            let (line, time_ms) = self.produce()?;
            if self.rng.chance(self.cfg.late_share) {
                let due_line = self.emitted + 1 + self.rng.below(MAX_LATE_LINES);
                let due_ms = time_ms.saturating_add(self.rng.range(5 * SECOND_MS, MAX_LATE_MS));
                let line = GeneratedLine { late: true, ..line };
                self.held.push(Held {
                    due_line,
                    due_ms,
                    time_ms,
                    line,
                });
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
            let visitor = self.new_visitor(n);
            self.active.push(Active { at, n, visitor });
            self.arrived += 1;
            self.next_arrival = self.arrival_time(self.arrived);
        }
    }

    fn new_visitor(&mut self, n: u64) -> Visitor {
        let class = self.left.take(&mut self.rng);
        let rng = &mut self.rng;
        let user_agent = match class {
            Class::Bot => rng.pick(&BOT_USER_AGENTS),
            _ => rng.pick(&USER_AGENTS),
        };
        let mut visitor = Visitor {
            n,
            class,
            user_agent,
            locale: rng.pick(&LOCALES),
            name: rng.pick(&FIRST_NAMES),
            domain: rng.pick(&EMAIL_DOMAINS),
            plan: rng.pick(&PLANS),
            signed_up: false,
            phase: Phase::Funnel(0),
            page: &LANDING_PAGES[0],
            page_since_ms: 0,
            hot_left: 0,
            beats: VecDeque::new(),
        };
        visitor.push(0, Action::Land);
        match class {
            Class::Bot => {
                visitor.phase = Phase::Leaving;
                for _ in 1..self.rng.range(BOT_PAGES.0, BOT_PAGES.1) {
                    let gap = self.rng.range(200, 3 * SECOND_MS);
                    let page = self.rng.pick_ref(&LANDING_PAGES);
                    visitor.push(gap, Action::View(page));
                }
            }
            Class::Hot | Class::Real | Class::Test => {
                if class == Class::Hot {
                    visitor.hot_left = self.rng.range(HOT_EVENTS.0, HOT_EVENTS.1) as u32;
                }
                for _ in 0..self.rng.below(4) {
                    let page = self.rng.pick_ref(&LANDING_PAGES);
                    let gap = self.dwell();
                    visitor.push(gap, Action::Click(page.nav));
                    let gap = self.quick();
                    visitor.push(gap, Action::View(page));
                }
            }
        }
        visitor
    }

    /// The next fresh event line (in event-time order) and its event time, plus maybe a
    /// malformed line held to follow it; `None` when every visitor is done.
    fn produce(&mut self) -> Option<(GeneratedLine, i64)> {
        loop {
            self.admit_arrivals();
            let Active { at, n, mut visitor } = self.active.pop()?;
            let Some(beat) = visitor.beats.pop_front() else {
                continue; // never: an active visitor always has a beat planned
            };
            let event = self.render(&mut visitor, beat.action, at);
            let kind = visitor.class.line_kind();
            if visitor.beats.is_empty() {
                self.plan_more(&mut visitor);
            }
            if let Some(next) = visitor.beats.front() {
                self.active.push(Active {
                    at: at.saturating_add(next.gap_ms),
                    n,
                    visitor,
                });
            }
            let text = serialise(&event);
            if kind == LineKind::Event && self.rng.chance(self.cfg.malformed_share) {
                let (malformed, bad) = self.malformed(event);
                self.held.push(Held {
                    due_line: self.emitted,
                    due_ms: i64::MIN,
                    time_ms: at,
                    line: GeneratedLine {
                        text: bad,
                        kind: LineKind::Malformed(malformed),
                        late: false,
                        duplicate: false,
                    },
                });
            }
            let line = GeneratedLine {
                text,
                kind,
                late: false,
                duplicate: false,
            };
            return Some((line, at));
        }
    }

    /// Counts `line` as emitted and maybe schedules a retry of it.
    fn emit(&mut self, line: GeneratedLine, time_ms: i64) -> GeneratedLine {
        self.emitted += 1;
        let is_event = !matches!(line.kind, LineKind::Malformed(_));
        if is_event && !line.duplicate && self.rng.chance(self.cfg.duplicate_share) {
            let due_line = self.emitted + self.rng.below(MAX_DUPLICATE_LINES);
            let due_ms = time_ms.saturating_add(self.rng.range(SECOND_MS, MAX_DUPLICATE_MS));
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
        line
    }

    /// Plans `v`'s next stretch of beats; leaves none when the visitor is done.
    fn plan_more(&mut self, v: &mut Visitor) {
        match v.phase {
            Phase::Funnel(step) => {
                let rate = match v.class {
                    Class::Real => self.cfg.step_conversion.get(step).copied().unwrap_or(0.0),
                    Class::Hot | Class::Test | Class::Bot => 1.0,
                };
                if !self.rng.chance(rate) {
                    v.phase = Phase::Leaving;
                    for _ in 0..self.rng.below(3) {
                        let page = if v.signed_up {
                            &APP_HOME
                        } else {
                            self.rng.pick_ref(&LANDING_PAGES)
                        };
                        let gap = self.dwell();
                        v.push(gap, Action::View(page));
                    }
                    return;
                }
                v.phase = if step + 1 < FUNNEL_LEN {
                    Phase::Funnel(step + 1)
                } else {
                    Phase::Completed
                };
                let opening = if self.rng.chance(SESSION_BREAK_SHARE) {
                    self.rng.range(SESSION_GAP_MS + MINUTE_MS, 8 * HOUR_MS)
                } else {
                    self.dwell()
                };
                self.plan_step(v, step, opening);
            }
            Phase::Completed if v.hot_left > 0 => {
                let n = v.hot_left.min(HOT_CHUNK);
                v.hot_left -= n;
                for _ in 0..n {
                    let feature = self.rng.pick_ref(&FEATURES);
                    let gap = self.rng.range(SECOND_MS, 20 * SECOND_MS);
                    let action = if self.rng.chance(0.5) {
                        Action::View(&feature.page)
                    } else {
                        Action::Feature(feature.name)
                    };
                    v.push(gap, action);
                }
            }
            Phase::Completed => {
                v.phase = Phase::Leaving;
                for _ in 0..self.rng.below(4) {
                    let feature = self.rng.pick_ref(&FEATURES);
                    let gap = self.dwell();
                    v.push(gap, Action::View(&feature.page));
                    let gap = self.dwell();
                    v.push(gap, Action::Feature(feature.name));
                }
            }
            Phase::Leaving => {}
        }
    }

    /// The beats of funnel step `step`; `opening` is the gap before the first one.
    fn plan_step(&mut self, v: &mut Visitor, step: usize, opening: i64) {
        match step {
            0 => {
                v.push(opening, Action::View(&SIGNUP_PAGE));
                let gap = self.dwell();
                v.push(gap, Action::Click("signup_submit"));
                let gap = self.quick();
                v.push(gap, Action::SignUp);
            }
            1 => {
                // Redirected to "check your inbox"; the verification follows from the mail.
                let gap = self.quick();
                v.push(gap, Action::View(&VERIFY_PAGE));
                let inbox = if opening > SESSION_GAP_MS {
                    opening
                } else {
                    self.rng.range(20 * SECOND_MS, 10 * MINUTE_MS)
                };
                v.push(inbox, Action::EmailVerified);
            }
            2 => {
                v.push(opening, Action::View(&PROFILE_PAGE));
                let gap = self.dwell();
                v.push(gap, Action::Click("profile_role"));
                let gap = self.dwell();
                v.push(gap, Action::Click("profile_continue"));
                let gap = self.quick();
                v.push(gap, Action::Step("profile"));
            }
            3 => {
                v.push(opening, Action::View(&WORKSPACE_PAGE));
                let gap = self.dwell();
                v.push(gap, Action::Click("workspace_create"));
                let gap = self.quick();
                v.push(gap, Action::Step("workspace"));
                let gap = self.quick();
                v.push(gap, Action::Identify);
            }
            4 => {
                v.push(opening, Action::View(&INVITE_PAGE));
                let gap = self.dwell();
                v.push(gap, Action::Click("invite_send"));
                let gap = self.quick();
                v.push(gap, Action::Invite);
            }
            5 => {
                let feature = self.rng.pick_ref(&FEATURES);
                v.push(opening, Action::View(&feature.page));
                let gap = self.dwell();
                v.push(gap, Action::Feature(feature.name));
            }
            _ => {
                v.push(opening, Action::View(&APP_HOME));
                let gap = self.quick();
                v.push(gap, Action::Completed);
            }
        }
    }

    /// Time on a page: mostly seconds, sometimes a minute or a few.
    fn dwell(&mut self) -> i64 {
        let roll = self.rng.below(100);
        if roll < 55 {
            self.rng.range(SECOND_MS, 15 * SECOND_MS)
        } else if roll < 90 {
            self.rng.range(15 * SECOND_MS, 90 * SECOND_MS)
        } else {
            self.rng.range(90 * SECOND_MS, 5 * MINUTE_MS)
        }
    }

    /// The gap between an action and what it triggers (a submit and its server event).
    fn quick(&mut self) -> i64 {
        self.rng.range(150, 1_500)
    }

    fn new_event_id(&mut self) -> String {
        let id = format!("{}{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        id
    }

    /// The event for `action` by `v` at `at`.
    fn render(&mut self, v: &mut Visitor, action: Action, at: i64) -> Event {
        let mut referrer = None;
        let kind = match action {
            Action::Land => {
                let page = self.rng.pick_ref(&LANDING_PAGES);
                v.page = page;
                v.page_since_ms = at;
                let mut url = format!("{BASE_URL}{}", page.path);
                if v.class != Class::Bot && self.rng.chance(CAMPAIGN_SHARE) {
                    let (source, medium, campaign) = self.rng.pick(&CAMPAIGNS);
                    url.push_str(&format!(
                        "?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
                    ));
                }
                if self.rng.chance(REFERRER_SHARE) {
                    referrer = Some(self.rng.pick(&REFERRERS).to_string());
                }
                EventKind::PageView(PageView {
                    path: Some(page.path.to_string()),
                    url: Some(url),
                    title: Some(page.title.to_string()),
                })
            }
            Action::View(page) => {
                v.page = page;
                v.page_since_ms = at;
                EventKind::PageView(PageView {
                    path: Some(page.path.to_string()),
                    url: Some(format!("{BASE_URL}{}", page.path)),
                    title: Some(page.title.to_string()),
                })
            }
            Action::Click(target) => EventKind::Click(Click {
                target: target.to_string(),
            }),
            Action::SignUp => EventKind::SignUp(SignUp {
                method: Some(self.rng.pick(&SIGN_UP_METHODS).to_string()),
                email: Some(v.email()),
                plan: Some(v.plan.to_string()),
            }),
            Action::EmailVerified => EventKind::EmailVerified(EmailVerified { email: Some(v.email()) }),
            Action::Step(step) => EventKind::StepCompleted(StepCompleted {
                step: step.to_string(),
                form: Some("onboarding".to_string()),
                duration_ms: Some((at - v.page_since_ms).max(0) as u64),
            }),
            Action::Identify => {
                let mut traits = BTreeMap::new();
                traits.insert("plan".to_string(), TraitValue::Text(v.plan.to_string()));
                let role = self.rng.pick(&ROLES).to_string();
                traits.insert("role".to_string(), TraitValue::Text(role));
                let size = self.rng.pick(&COMPANY_SIZES).to_string();
                traits.insert("company_size".to_string(), TraitValue::Text(size));
                EventKind::Identify(Identify { traits })
            }
            Action::Invite => EventKind::InviteSent(InviteSent {
                count: self.rng.range(1, 5) as u32,
                role: Some(self.rng.pick(&INVITE_ROLES).to_string()),
            }),
            Action::Feature(feature) => EventKind::FeatureUsed(FeatureUsed {
                feature: feature.to_string(),
            }),
            Action::Completed => EventKind::OnboardingCompleted(OnboardingCompleted {
                flow: Some("self_serve".to_string()),
            }),
        };
        let prefix = if v.class == Class::Test { "test_" } else { "" };
        let user_id = v.signed_up.then(|| format!("{prefix}u_{}", v.n));
        let (user_id, anonymous_id) = match action {
            Action::SignUp => (Some(format!("{prefix}u_{}", v.n)), Some(format!("{prefix}a_{}", v.n))),
            _ if v.signed_up => (user_id, None),
            _ => (None, Some(format!("{prefix}a_{}", v.n))),
        };
        if matches!(action, Action::SignUp) {
            v.signed_up = true;
        }
        Event {
            event_id: self.new_event_id(),
            kind,
            user_id,
            anonymous_id,
            timestamp: format_timestamp(at),
            session_id: None,
            context: Context {
                user_agent: Some(v.user_agent.to_string()),
                locale: Some(v.locale.to_string()),
                ip: None,
                page: Some(PageContext {
                    path: Some(v.page.path.to_string()),
                    referrer,
                    ..PageContext::default()
                }),
            },
        }
    }

    /// A malformed line made from `event`, given a fresh id.
    fn malformed(&mut self, mut event: Event) -> (Malformed, String) {
        let kind = self.rng.pick(&Malformed::ALL);
        event.event_id = self.new_event_id();
        let bad = match kind {
            Malformed::NotJson => {
                // A strict prefix of a JSON object is never JSON.
                let text = serialise(&event);
                let mut cut = text.len() / 3 + self.rng.below((text.len() / 3).max(1) as u64) as usize;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text[..cut].to_string()
            }
            Malformed::UnknownType => {
                let from = format!("\"type\":\"{}\"", event.type_name());
                let to = format!("\"type\":\"{}\"", self.rng.pick(&UNKNOWN_TYPES));
                serialise(&event).replacen(&from, &to, 1)
            }
            Malformed::MissingIdentity => {
                event.user_id = None;
                event.anonymous_id = None;
                serialise(&event)
            }
            Malformed::WrongPropertyType => {
                let (field, value) = match &event.kind {
                    EventKind::SignUp(_) => ("email", "5"),
                    EventKind::PageView(_) => ("path", "404"),
                    EventKind::Click(_) => ("target", "true"),
                    EventKind::StepCompleted(_) => ("step", "3"),
                    EventKind::EmailVerified(_) => ("email", "false"),
                    EventKind::Identify(_) => ("traits", "\"plan=team\""),
                    EventKind::FeatureUsed(_) => ("feature", "[\"funnels\"]"),
                    EventKind::InviteSent(_) => ("count", "\"three\""),
                    EventKind::OnboardingCompleted(_) => ("flow", "1"),
                };
                with_properties(&serialise(&event), &format!("{{\"{field}\":{value}}}"))
            }
            Malformed::Year1970 => {
                event.timestamp = format!("1970-01-01{}", event.timestamp.get(10..).unwrap_or("T00:00:00Z"));
                serialise(&event)
            }
        };
        (kind, bad)
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.next_line().map(|line| line.text)
    }
}

fn serialise(event: &Event) -> String {
    serde_json::to_string(event).expect("an Event always serialises")
}

/// `text` with its `properties` object replaced by `properties`.
fn with_properties(text: &str, properties: &str) -> String {
    const KEY: &str = "\"properties\":";
    let Some(i) = text.find(KEY) else {
        return text.to_string();
    };
    let start = i + KEY.len();
    let end = json_value_len(&text[start..]).map_or(text.len(), |len| start + len);
    format!("{}{properties}{}", &text[..start], &text[end..])
}

/// Length of the JSON object or array that `s` starts with (strings in it skipped).
fn json_value_len(s: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in s.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn clamp_share(share: f64) -> f64 {
    if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    }
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds: `2026-11-02T09:15:03.250Z`.
pub fn format_timestamp(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / HOUR_MS,
        rem / MINUTE_MS % 60,
        rem / SECOND_MS % 60,
        rem % SECOND_MS
    )
}

/// The proleptic Gregorian (year, month, day) of a day number (days since 1970-01-01);
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// xoshiro256** seeded through splitmix64: small, fast, and fixed forever (unlike a
/// library's default generator).
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut state = seed;
        let mut splitmix = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [splitmix(), splitmix(), splitmix(), splitmix()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo).max(0) as u64 + 1;
        lo + self.below(span) as i64
    }

    /// True with probability `p` (exact: 53 random bits against `p`).
    fn chance(&mut self, p: f64) -> bool {
        const UNIT: f64 = 1.0 / (1u64 << 53) as f64;
        ((self.next_u64() >> 11) as f64 * UNIT) < p
    }

    /// A uniformly chosen item.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick_ref(items)
    }

    /// A reference to a uniformly chosen item.
    fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What sort of visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Real,
    Hot,
    Bot,
    Test,
}

impl Class {
    fn line_kind(self) -> LineKind {
        match self {
            Class::Real | Class::Hot => LineKind::Event,
            Class::Bot => LineKind::Bot,
            Class::Test => LineKind::TestUser,
        }
    }
}

/// Visitors of each class still to arrive; drawn without replacement so the totals are
/// exact.
#[derive(Debug, Clone, Copy)]
struct ClassCounts {
    hot: u64,
    real: u64,
    bot: u64,
    test: u64,
}

impl ClassCounts {
    fn total(&self) -> u64 {
        self.hot + self.real + self.bot + self.test
    }

    fn take(&mut self, rng: &mut Rng) -> Class {
        let mut roll = rng.below(self.total());
        for (count, class) in [
            (&mut self.hot, Class::Hot),
            (&mut self.bot, Class::Bot),
            (&mut self.test, Class::Test),
            (&mut self.real, Class::Real),
        ] {
            if roll < *count {
                *count -= 1;
                return class;
            }
            roll -= *count;
        }
        Class::Real
    }
}

/// Where a visitor is in their journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The next funnel step to attempt (index into [`FUNNEL_STEPS`]).
    Funnel(usize),
    /// Onboarding done; hot users still have their burst to fire.
    Completed,
    /// Nothing more after the planned beats.
    Leaving,
}

/// One planned action, `gap_ms` after the previous one.
#[derive(Debug, Clone, Copy)]
struct Beat {
    gap_ms: i64,
    action: Action,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// The first page view, with campaign and referrer.
    Land,
    View(&'static Page),
    Click(&'static str),
    SignUp,
    EmailVerified,
    Step(&'static str),
    Identify,
    Invite,
    Feature(&'static str),
    Completed,
}

/// A visitor with events still to come.
#[derive(Debug)]
struct Visitor {
    n: u64,
    class: Class,
    user_agent: &'static str,
    locale: &'static str,
    name: &'static str,
    domain: &'static str,
    plan: &'static str,
    signed_up: bool,
    phase: Phase,
    /// The page the visitor is on.
    page: &'static Page,
    /// When they arrived on it.
    page_since_ms: i64,
    /// Burst events a hot user has still to plan.
    hot_left: u32,
    /// Planned beats; never empty while the visitor is active.
    beats: VecDeque<Beat>,
}

impl Visitor {
    fn push(&mut self, gap_ms: i64, action: Action) {
        self.beats.push_back(Beat { gap_ms, action });
    }

    fn email(&self) -> String {
        match self.class {
            Class::Test => format!("qa.{}@onramp-test.invalid", self.n),
            _ => format!("{}.{}@{}", self.name, self.n, self.domain),
        }
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

/// A line waiting in the buffer: emitted once `due_line` lines are out, or once the next
/// fresh event is later than `due_ms`, whichever comes first.
#[derive(Debug)]
struct Held {
    due_line: u64,
    due_ms: i64,
    /// Event time of the line (for the retry of a late line).
    time_ms: i64,
    line: GeneratedLine,
}

const BASE_URL: &str = "https://onramp.example";

/// A page of the site or app.
#[derive(Debug)]
struct Page {
    path: &'static str,
    title: &'static str,
    /// The navigation link that leads to it.
    nav: &'static str,
}

const fn page(path: &'static str, title: &'static str, nav: &'static str) -> Page {
    Page { path, title, nav }
}

static LANDING_PAGES: [Page; 5] = [
    page("/", "onramp - onboarding analytics", "nav_home"),
    page("/pricing", "Pricing", "nav_pricing"),
    page("/features", "Features", "nav_features"),
    page(
        "/blog/activation-metrics",
        "Five activation metrics that matter",
        "nav_blog",
    ),
    page("/customers", "Customers", "nav_customers"),
];
static SIGNUP_PAGE: Page = page("/signup", "Create your account", "cta_signup");
static VERIFY_PAGE: Page = page("/onboarding/verify", "Check your inbox", "nav_verify");
static PROFILE_PAGE: Page = page("/onboarding/profile", "About you", "nav_profile");
static WORKSPACE_PAGE: Page = page("/onboarding/workspace", "Create your workspace", "nav_workspace");
static INVITE_PAGE: Page = page("/onboarding/invite", "Invite your team", "nav_invite");
static APP_HOME: Page = page("/app", "Home", "nav_app");

/// A product feature and its page.
#[derive(Debug)]
struct Feature {
    name: &'static str,
    page: Page,
}

static FEATURES: [Feature; 5] = [
    Feature {
        name: "dashboards",
        page: page("/app/dashboards", "Dashboards", "nav_dashboards"),
    },
    Feature {
        name: "funnels",
        page: page("/app/funnels", "Funnels", "nav_funnels"),
    },
    Feature {
        name: "segments",
        page: page("/app/segments", "Segments", "nav_segments"),
    },
    Feature {
        name: "alerts",
        page: page("/app/alerts", "Alerts", "nav_alerts"),
    },
    Feature {
        name: "csv_export",
        page: page("/app/exports", "Exports", "nav_exports"),
    },
];

/// Real browsers: desktop, mobile and tablet.
static USER_AGENTS: [&str; 10] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
];

/// Crawlers and scripts; each matches one of validate's default bot patterns.
static BOT_USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "python-requests/2.32.3",
    "curl/8.5.0",
];

/// Locales as clients send them (some not normalised).
static LOCALES: [&str; 10] = [
    "en-US", "en-US", "en-US", "en_us", "en-GB", "de-DE", "fr", "pt_br", "es-419", "ja-JP",
];

static REFERRERS: [&str; 6] = [
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://www.linkedin.com/",
    "https://t.co/x9Ab3",
    "https://duckduckgo.com/",
    "https://github.com/",
];

/// (utm_source, utm_medium, utm_campaign).
static CAMPAIGNS: [(&str, &str, &str); 6] = [
    ("google", "cpc", "brand_search"),
    ("newsletter", "email", "nov_digest"),
    ("linkedin", "social", "launch_week"),
    ("twitter", "social", "launch_week"),
    ("producthunt", "referral", "ph_launch"),
    ("partner_acme", "affiliate", "q4_partners"),
];

static FIRST_NAMES: [&str; 10] = [
    "maria", "li", "ahmed", "sofia", "john", "priya", "kenji", "olga", "diego", "fatima",
];
static EMAIL_DOMAINS: [&str; 7] = [
    "gmail.com",
    "outlook.com",
    "acme.io",
    "globex.com",
    "initech.io",
    "hey.com",
    "proton.me",
];
static SIGN_UP_METHODS: [&str; 3] = ["email", "google", "github"];
static PLANS: [&str; 3] = ["free", "free", "team_trial"];
static ROLES: [&str; 5] = ["engineer", "product", "marketing", "founder", "operations"];
static COMPANY_SIZES: [&str; 5] = ["1-10", "11-50", "51-200", "201-1000", "1000+"];
static INVITE_ROLES: [&str; 2] = ["member", "admin"];
/// Near-miss type names, as a buggy client sends them.
static UNKNOWN_TYPES: [&str; 4] = ["signup", "pageview", "button_click", "trial_started"];

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::Instant;

    use onramp_logic::enrich::{step_name, DEFAULT_STEPS};
    use onramp_logic::validate::{parse_event, parse_timestamp, validate, ValidateConfig};

    use super::*;

    fn run(cfg: GeneratorConfig) -> Vec<GeneratedLine> {
        let mut generator = Generator::new(cfg);
        std::iter::from_fn(|| generator.next_line()).collect()
    }

    fn default_run() -> Vec<GeneratedLine> {
        run(GeneratorConfig::default())
    }

    /// Event time of a well-formed line.
    fn event_time(text: &str) -> i64 {
        parse_timestamp(&parse_event(text.as_bytes()).unwrap().timestamp).unwrap()
    }

    fn share(part: usize, whole: usize) -> f64 {
        part as f64 / whole as f64
    }

    fn assert_near(what: &str, actual: f64, configured: f64) {
        assert!(
            (configured * 0.5..=configured * 1.5).contains(&actual),
            "{what}: {actual:.4}, configured {configured}"
        );
    }

    /// The generator walks exactly the enrich module's default funnel.
    #[test]
    fn funnel_steps_are_the_enrich_defaults() {
        assert_eq!(FUNNEL_STEPS.join(","), DEFAULT_STEPS);
    }

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

    /// Each funnel step is completed by no more users than the one before; about 70% of
    /// users sign up; hot users make the busiest user fire hundreds of events.
    #[test]
    fn funnel_declines_and_hot_users_skew() {
        let cfg = GeneratorConfig::default();
        let validate_cfg = ValidateConfig::default();
        let mut completed: Vec<HashSet<String>> = vec![HashSet::new(); FUNNEL_LEN];
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for line in default_run().iter().filter(|l| l.kind == LineKind::Event) {
            let event = validate(line.text.as_bytes(), None, &validate_cfg).unwrap().event;
            let id = event.identity().unwrap().to_string();
            if let Some(i) = step_name(&event).and_then(|s| FUNNEL_STEPS.iter().position(|f| *f == s)) {
                completed[i].insert(id.clone());
            }
            *per_user.entry(id).or_default() += 1;
        }
        let counts: Vec<usize> = completed.iter().map(HashSet::len).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
        assert!(counts[FUNNEL_LEN - 1] > 0, "{counts:?}");
        assert_near(
            "sign-up rate",
            share(counts[0], cfg.users as usize),
            cfg.step_conversion[0],
        );
        let busiest = per_user.values().max().copied().unwrap_or(0);
        assert!(busiest >= 200, "busiest user has {busiest} events");
    }

    /// Distinct `u_` ids never exceed `users`, and most users who sign up get one.
    #[test]
    fn user_ids_are_bounded_by_users() {
        for users in [10, 500] {
            let cfg = GeneratorConfig {
                users,
                ..GeneratorConfig::default()
            };
            let ids: HashSet<String> = run(cfg)
                .iter()
                .filter_map(|l| parse_event(l.text.as_bytes()).ok())
                .filter_map(|e| e.user_id)
                .filter(|id| id.starts_with("u_"))
                .collect();
            assert!(ids.len() as u64 <= users, "{} > {users}", ids.len());
            assert!(ids.len() as u64 >= users / 3, "only {} of {users}", ids.len());
        }
    }

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

    /// Some users come back after a break longer than `SESSION_GAP_MS` (a new session),
    /// while most gaps are seconds to minutes.
    #[test]
    fn some_users_take_session_breaks() {
        let mut last: HashMap<String, i64> = HashMap::new();
        let (mut gaps, mut breaks) = (0, 0);
        for line in default_run()
            .iter()
            .filter(|l| l.kind == LineKind::Event && !l.late && !l.duplicate)
        {
            let event = parse_event(line.text.as_bytes()).unwrap();
            let visitor = event
                .identity()
                .unwrap()
                .trim_start_matches(['a', 'u', '_'])
                .to_string();
            let t = event_time(&line.text);
            if let Some(previous) = last.insert(visitor, t) {
                gaps += 1;
                breaks += usize::from(t - previous > SESSION_GAP_MS);
            }
        }
        assert!(breaks > 20, "{breaks} breaks");
        assert!(breaks * 50 < gaps, "{breaks} breaks in {gaps} gaps");
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

    /// Timestamps are RFC 3339 UTC with milliseconds and parse back to the same instant.
    #[test]
    fn timestamps_round_trip() {
        assert_eq!(format_timestamp(DEFAULT_START_MS), "2026-11-02T00:00:00.000Z");
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(951_782_400_000 + 3_723_250),
            "2000-02-29T01:02:03.250Z"
        );
        // 2000-01-01 to 2099 in steps of a prime number of ms (~3.3 days).
        let mut ms = 946_684_800_000;
        while ms < 4_102_444_800_000 {
            assert_eq!(
                parse_timestamp(&format_timestamp(ms)).unwrap(),
                ms,
                "{}",
                format_timestamp(ms)
            );
            ms += 287_999_957;
        }
    }

    /// The config reads from JSON with defaults for what is left out, and refuses unknown
    /// fields.
    #[test]
    fn config_reads_from_json() {
        let cfg: GeneratorConfig = serde_json::from_str(r#"{"seed":7,"max_events":10}"#).unwrap();
        assert_eq!((cfg.seed, cfg.max_events, cfg.users), (7, Some(10), DEFAULT_USERS));
        assert!(serde_json::from_str::<GeneratorConfig>(r#"{"user":7}"#).is_err());
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
