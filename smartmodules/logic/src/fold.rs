//! The profile fold: turns each enriched event into one [`ProfileUpdate`], keeping only
//! the per-user state that needs history (session, dedup ids) for users active recently.
//!
//! # State and its bounds
//! - The state lives in [`FoldState`], in the SmartModule's memory for the life of the
//!   stream. The aggregate's accumulator is *not* a map of users: it is only read once,
//!   at the start, as a [`RestartSnapshot`].
//! - The partition's *watermark* is its robust event-time clock
//!   ([`onramp_schemas::clock`]): the greatest median of its recent event times, so one
//!   oddly dated event cannot move it.
//! - A user's state is *live* while `watermark - last_active <= state_ttl`. A user whose
//!   state is not live is treated exactly as a new user (`state_reset`), whether or not
//!   the memory has been reclaimed yet.
//! - At most `max_users` users are held per partition. When a new user would exceed it,
//!   the least recently active user (smallest `(last_active, user id)`, an order that does
//!   not depend on arrival, so a restarted stream evicts the same users) is evicted and
//!   the update counts it (`evicted_users`). Consequence for that user: their next event
//!   starts a new session and their dedup window is lost, exactly as after `state_ttl`.
//!   A flood of distinct ids (a bot, a load test) therefore costs bounded memory and O(log
//!   max_users) per event.
//!
//! # Events too far ahead
//! An event whose time is more than `max_ahead` beyond the partition's reference time is
//! quarantined: it is not folded, moves nothing but the clock's window, and its update is
//! `skipped` with kind `event_time_ahead` (the consumer stores it as a
//! `timestamp_out_of_range` reject). The reference is the record's timestamp when it has
//! one (in a Fluvio topic, the time the broker stored it), else the partition's watermark
//! (embedded runs, whose records carry none); a partition with no watermark yet (fewer
//! than a few events) quarantines nothing. `max_ahead = 0` turns this off.
//!
//! # Sessions
//! An event more than `session_timeout` after the user's latest event time starts a new
//! session; an event within it adds the gap (capped at `max_page_time`) to time spent;
//! a late event (older than the user's latest) adds nothing and starts nothing.
//!
//! # Dedup window
//! An event is a duplicate when its `event_id` is among the last
//! [`DEDUP_IDS`](onramp_schemas::profile::DEDUP_IDS) (32) ids of its user while the user's
//! state is live, i.e. the user had an event within `state_ttl` (default 6h) of the
//! partition's watermark. Duplicates change nothing.

use std::collections::{BTreeSet, HashMap};

use onramp_schemas::event::EventKind;
use onramp_schemas::{
    Acquisition, Changes, Counters, EnrichedEvent, Outcome, Page, PartitionClock, ProfileUpdate, RejectedEvent,
    RestartSnapshot, SkipKind, StepChange, UserFoldState, SNAPSHOT_VERSION,
};

use crate::params::{parse_bounded, parse_duration_ms, ParamError};
use crate::validate::event_email;
use crate::wire::read_enriched;

/// Param: gap of event time that ends a session.
pub const PARAM_SESSION_TIMEOUT: &str = "session_timeout";
/// Param: most time one gap between events adds to time spent.
pub const PARAM_MAX_PAGE_TIME: &str = "max_page_time";
/// Param: how long (in event time) a user's state is kept after their last event.
pub const PARAM_STATE_TTL: &str = "state_ttl";
/// Param: how far beyond the partition's reference time an event may be (0 = no limit).
pub const PARAM_MAX_AHEAD: &str = "max_ahead";
/// Param: most users whose state a partition's aggregate holds.
pub const PARAM_MAX_USERS: &str = "max_users";
/// Default `session_timeout`.
pub const DEFAULT_SESSION_TIMEOUT: &str = "30m";
/// Default `max_page_time`.
pub const DEFAULT_MAX_PAGE_TIME: &str = "10m";
/// Default `state_ttl`.
pub const DEFAULT_STATE_TTL: &str = "6h";
/// Default `max_ahead`.
pub const DEFAULT_MAX_AHEAD: &str = "1d";
/// Default `max_users`: about 150 MB of Wasm memory at 32 remembered ids of ~20 bytes.
pub const DEFAULT_MAX_USERS: u64 = 100_000;
/// Largest accepted `max_users`.
pub const MAX_MAX_USERS: u64 = 10_000_000;

/// The profile module's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldConfig {
    /// See [`PARAM_SESSION_TIMEOUT`].
    pub session_timeout_ms: i64,
    /// See [`PARAM_MAX_PAGE_TIME`].
    pub max_page_time_ms: i64,
    /// See [`PARAM_STATE_TTL`].
    pub state_ttl_ms: i64,
    /// See [`PARAM_MAX_AHEAD`]; 0 = no limit.
    pub max_ahead_ms: i64,
    /// See [`PARAM_MAX_USERS`].
    pub max_users: usize,
}

impl Default for FoldConfig {
    fn default() -> Self {
        FoldConfig::from_params(|_| None).expect("the defaults are valid")
    }
}

impl FoldConfig {
    /// Builds the config from params looked up by `get`. `state_ttl` must be at least
    /// `session_timeout` (a session cannot outlive the state that tracks it).
    pub fn from_params(get: impl Fn(&str) -> Option<String>) -> Result<Self, ParamError> {
        let read = |name: &'static str, default: &str, zero_ok: bool| {
            let v = get(name).unwrap_or_else(|| default.to_string());
            let ms = parse_duration_ms(name, &v)?;
            if ms < 0 || (ms == 0 && !zero_ok) {
                return Err(ParamError {
                    param: name,
                    value: v,
                    expected: "a duration greater than zero".into(),
                });
            }
            Ok(ms)
        };
        let max_users = match get(PARAM_MAX_USERS) {
            Some(v) => parse_bounded(PARAM_MAX_USERS, &v, 1, MAX_MAX_USERS)?,
            None => DEFAULT_MAX_USERS,
        };
        let cfg = FoldConfig {
            session_timeout_ms: read(PARAM_SESSION_TIMEOUT, DEFAULT_SESSION_TIMEOUT, false)?,
            max_page_time_ms: read(PARAM_MAX_PAGE_TIME, DEFAULT_MAX_PAGE_TIME, false)?,
            state_ttl_ms: read(PARAM_STATE_TTL, DEFAULT_STATE_TTL, false)?,
            max_ahead_ms: read(PARAM_MAX_AHEAD, DEFAULT_MAX_AHEAD, true)?,
            max_users: max_users as usize,
        };
        if cfg.state_ttl_ms < cfg.session_timeout_ms {
            return Err(ParamError {
                param: PARAM_STATE_TTL,
                value: get(PARAM_STATE_TTL).unwrap_or_else(|| DEFAULT_STATE_TTL.to_string()),
                expected: format!("a duration at least session_timeout ({} ms)", cfg.session_timeout_ms),
            });
        }
        Ok(cfg)
    }
}

/// The aggregate's state for one partition's stream.
#[derive(Debug, Clone, Default)]
pub struct FoldState {
    cfg: FoldConfig,
    clock: PartitionClock,
    users: HashMap<String, UserFoldState>,
    /// Every user in `users` by `(last_active, user id)`: expiry and capacity eviction take
    /// the least recently active first.
    by_activity: BTreeSet<(i64, String)>,
    /// Records at or below this offset were applied before the restart: skipped.
    resume_after: Option<i64>,
}

impl FoldState {
    /// An empty state.
    pub fn new(cfg: FoldConfig) -> Self {
        FoldState {
            cfg,
            ..Default::default()
        }
    }

    /// The state a [`RestartSnapshot`] describes.
    pub fn from_snapshot(cfg: FoldConfig, snapshot: RestartSnapshot) -> Self {
        let mut state = FoldState::new(cfg);
        state.clock = PartitionClock {
            recent_ms: snapshot.recent_ms,
            watermark_ms: snapshot.watermark_ms,
        };
        state.resume_after = snapshot.resume_after;
        for (user, fold) in snapshot.users {
            state.by_activity.insert((fold.last_active_ms, user.clone()));
            state.users.insert(user, fold);
        }
        state.evict(None);
        state
    }

    /// Parses an initial accumulator: empty means no snapshot.
    pub fn from_accumulator(cfg: FoldConfig, bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Ok(FoldState::new(cfg));
        }
        let snapshot: RestartSnapshot = serde_json::from_slice(bytes)
            .map_err(|e| format!("the initial accumulator is not a restart snapshot: {e}"))?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(format!(
                "restart snapshot version {} is not supported (expected {SNAPSHOT_VERSION})",
                snapshot.version
            ));
        }
        Ok(FoldState::from_snapshot(cfg, snapshot))
    }

    /// The snapshot of this state: the clock and every live user. Equal states give equal
    /// snapshots.
    pub fn snapshot(&self) -> RestartSnapshot {
        let users = self
            .users
            .iter()
            .filter(|(_, s)| self.is_live(s))
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect();
        RestartSnapshot {
            version: SNAPSHOT_VERSION,
            watermark_ms: self.clock.watermark_ms,
            recent_ms: self.clock.recent_ms.clone(),
            users,
            resume_after: None,
        }
    }

    /// Users held in memory (live or awaiting eviction).
    pub fn users_in_memory(&self) -> usize {
        self.users.len()
    }

    fn is_live(&self, s: &UserFoldState) -> bool {
        self.clock
            .watermark_ms
            .is_none_or(|w| w.saturating_sub(s.last_active_ms) <= self.cfg.state_ttl_ms)
    }

    /// Frees the memory of users whose state is no longer live, then, while more than
    /// `max_users` are held (or one more when `admitting` a new user), the least recently
    /// active. Returns how many live users were evicted for capacity. Each user is inserted
    /// and removed once per activity change: O(log max_users) amortised per event.
    fn evict(&mut self, admitting: Option<&str>) -> u32 {
        if let Some(w) = self.clock.watermark_ms {
            let horizon = w.saturating_sub(self.cfg.state_ttl_ms);
            while self.by_activity.first().is_some_and(|(t, _)| *t < horizon) {
                if let Some((_, user)) = self.by_activity.pop_first() {
                    self.users.remove(&user);
                }
            }
        }
        let room = usize::from(admitting.is_some_and(|u| !self.users.contains_key(u)));
        let mut evicted = 0;
        while self.users.len() + room > self.cfg.max_users {
            let Some((_, user)) = self.by_activity.pop_first() else {
                break;
            };
            self.users.remove(&user);
            evicted += 1;
        }
        evicted
    }

    /// Folds one record of the aggregate's input: an [`EnrichedEvent`] as JSON.
    /// `record_timestamp_ms` is the record's own timestamp, negative when it has none.
    /// Anything else (including a rejected-event record) gives a `skipped` update; never
    /// fails.
    pub fn fold_record(&mut self, value: &[u8], offset: i64, record_timestamp_ms: i64) -> ProfileUpdate {
        if let Some(after) = self.resume_after.filter(|&after| offset <= after) {
            return ProfileUpdate::skipped(
                offset,
                SkipKind::AlreadyApplied,
                format!("already applied before the stream resumed after offset {after}"),
            );
        }
        if let Some(event) = read_enriched(value) {
            return self.fold_event(&event, offset, record_timestamp_ms);
        }
        // The derived reader, for its error (and any record the flat one refuses).
        match serde_json::from_slice::<EnrichedEvent>(value) {
            Ok(event) => self.fold_event(&event, offset, record_timestamp_ms),
            Err(e) => {
                let reason = match serde_json::from_slice::<RejectedEvent>(value) {
                    Ok(r) => format!("rejected upstream: {}: {}", r.reason, r.detail),
                    Err(_) => format!("not an enriched event: {e}"),
                };
                ProfileUpdate::skipped(offset, SkipKind::NotEnriched, reason)
            }
        }
    }

    /// Folds one enriched event (see [`FoldState::fold_record`] for `record_timestamp_ms`).
    pub fn fold_event(&mut self, ev: &EnrichedEvent, offset: i64, record_timestamp_ms: i64) -> ProfileUpdate {
        let e = &ev.event;
        let t = ev.enrichment.event_time_ms;
        let user_id = e.identity().unwrap_or_default().to_string();
        if user_id.is_empty() {
            return ProfileUpdate::skipped(
                offset,
                SkipKind::MissingIdentity,
                "missing_identity: neither user_id nor anonymous_id is set",
            );
        }
        let mut update = ProfileUpdate::applied(user_id, offset, e.event_id.clone(), e.type_name(), t, None);
        let reference = if record_timestamp_ms >= 0 {
            Some(("the record's timestamp", record_timestamp_ms))
        } else {
            self.clock.watermark_ms.map(|w| ("the partition's watermark", w))
        };
        if let Some((what, at)) =
            reference.filter(|&(_, at)| self.cfg.max_ahead_ms > 0 && t.saturating_sub(at) > self.cfg.max_ahead_ms)
        {
            self.clock.observe(t);
            update.outcome = Outcome::Skipped;
            update.skip_kind = Some(SkipKind::EventTimeAhead);
            update.skip_reason = Some(format!(
                "event time {t} ms is {} ms ahead of {what} ({at} ms), more than max_ahead ({} ms): quarantined",
                t.saturating_sub(at),
                self.cfg.max_ahead_ms
            ));
            return update;
        }
        self.clock.observe(t);
        let watermark = self.clock.watermark_ms;
        let live = self
            .users
            .get(&update.user_id)
            .filter(|s| watermark.is_none_or(|w| w.saturating_sub(s.last_active_ms) <= self.cfg.state_ttl_ms));
        if live.is_some_and(|s| s.has_seen(&e.event_id)) {
            update.outcome = Outcome::Duplicate;
            return update;
        }
        let previous = live.map(|s| s.last_active_ms);

        // (sessions started, time spent added)
        let session = match previous {
            None => (1, 0),
            Some(last) if t > last.saturating_add(self.cfg.session_timeout_ms) => (1, 0),
            Some(last) if t >= last => (0, (t - last).min(self.cfg.max_page_time_ms) as u64),
            Some(_) => (0, 0),
        };
        let state_reset = previous.is_none();
        update.evicted_users = self.evict(Some(&update.user_id));
        if let Some(before) = self.users.get(&update.user_id).map(|s| s.last_active_ms) {
            self.by_activity.remove(&(before, update.user_id.clone()));
        }
        let user_state = self.users.entry(update.user_id.clone()).or_default();
        if state_reset {
            *user_state = UserFoldState::default();
        }
        user_state.observe(&e.event_id, t);
        self.by_activity
            .insert((user_state.last_active_ms, update.user_id.clone()));

        update.changes = Some(changes_for(ev, state_reset, session));
        update
    }
}

/// The profile changes one event makes; `session` is (sessions started, time spent added).
fn changes_for(ev: &EnrichedEvent, state_reset: bool, (sessions, time_spent_ms): (u64, u64)) -> Changes {
    let e = &ev.event;
    let en = &ev.enrichment;
    let mut c = Changes {
        state_reset,
        counters: Counters {
            events: 1,
            sessions,
            time_spent_ms,
            ..Counters::default()
        },
        email: event_email(e).map(str::to_string),
        device: e.context.user_agent.as_ref().map(|_| en.device.clone()),
        locale: en.locale.clone(),
        ..Changes::default()
    };
    if e.user_id.as_deref().is_some_and(|u| !u.is_empty()) {
        c.anonymous_id = e.anonymous_id.clone().filter(|a| !a.is_empty());
    }
    if en.campaign.is_some() || en.referrer_host.is_some() {
        c.acquisition = Some(Acquisition {
            campaign: en.campaign.clone(),
            referrer_host: en.referrer_host.clone(),
        });
    }
    let step = |name: &str| StepChange {
        name: name.to_string(),
        funnel: en.funnel.clone(),
    };
    match &e.kind {
        EventKind::SignUp(_) => c.signed_up = true,
        EventKind::PageView(p) => {
            c.counters.page_views = 1;
            let title = p
                .title
                .clone()
                .or_else(|| e.context.page.as_ref().and_then(|pg| pg.title.clone()));
            c.page = Some(Page {
                path: en.page_path.clone(),
                title,
            });
        }
        EventKind::Click(_) => c.counters.clicks = 1,
        EventKind::StepCompleted(s) => {
            c.counters.steps_completed = 1;
            c.step = Some(step(&s.step));
        }
        EventKind::EmailVerified(_) => c.email_verified = true,
        EventKind::Identify(i) => c.traits = i.traits.clone(),
        EventKind::FeatureUsed(_) => c.counters.features_used = 1,
        EventKind::InviteSent(i) => c.counters.invites_sent = u64::from(i.count),
        EventKind::OnboardingCompleted(_) => c.onboarding_completed = true,
    }
    if c.step.is_none() {
        if let Some(f) = &en.funnel {
            c.step = Some(step(&f.step));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::{enrich, EnrichConfig};
    use crate::validate::parse_event;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ev(id: &str, user: &str, ts: &str, kind: &str) -> EnrichedEvent {
        let raw = format!(r#"{{"event_id":"{id}","user_id":"{user}","timestamp":"{ts}",{kind}}}"#);
        enrich(parse_event(raw.as_bytes()).unwrap(), &EnrichConfig::default()).unwrap()
    }
    fn pv(id: &str, user: &str, ts: &str) -> EnrichedEvent {
        ev(id, user, ts, r#""type":"page_view","properties":{"path":"/p"}"#)
    }

    #[test]
    fn sessions_and_time_spent() {
        let mut s = FoldState::new(FoldConfig::default());
        let mut session = |id: &str, ts: &str, offset: i64| {
            let c = s.fold_event(&pv(id, "u", ts), offset, -1).changes.unwrap();
            (c.counters.sessions, c.counters.time_spent_ms, c.state_reset)
        };
        assert_eq!(session("a", "2026-11-01T09:00:00Z", 0), (1, 0, true));
        assert_eq!(session("b", "2026-11-01T09:02:00Z", 1), (0, 120_000, false));
        assert_eq!(
            session("c", "2026-11-01T09:25:00Z", 2),
            (0, 600_000, false),
            "gap capped at max_page_time"
        );
        assert_eq!(
            session("d", "2026-11-01T09:01:00Z", 3),
            (0, 0, false),
            "a late event adds nothing"
        );
        assert_eq!(
            session("e", "2026-11-01T10:00:00Z", 4),
            (1, 0, false),
            "new session after the timeout"
        );
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut s = FoldState::new(FoldConfig::default());
        s.fold_event(&pv("a", "u", "2026-11-01T09:00:00Z"), 0, -1);
        let dup = s.fold_event(&pv("a", "u", "2026-11-01T09:00:00Z"), 1, -1);
        assert_eq!(dup.outcome, Outcome::Duplicate);
        assert!(dup.changes.is_none());
        // the same id for another user is not a duplicate
        assert_eq!(
            s.fold_event(&pv("a", "v", "2026-11-01T09:00:00Z"), 2, -1).outcome,
            Outcome::Applied
        );
    }

    #[test]
    fn state_expires_after_ttl_of_event_time_and_memory_is_reclaimed() {
        let mut s = FoldState::new(FoldConfig::default());
        s.fold_event(&pv("a", "old", "2026-11-01T00:00:00Z"), 0, -1);
        for i in 0..10 {
            s.fold_event(
                &pv(&format!("x{i}"), &format!("u{i}"), "2026-11-01T07:00:00Z"),
                1 + i,
                -1,
            );
        }
        assert_eq!(s.users_in_memory(), 10, "`old` is 7h behind the watermark and evicted");
        let again = s.fold_event(&pv("a", "old", "2026-11-01T07:00:01Z"), 20, -1);
        assert_eq!(again.outcome, Outcome::Applied, "dedup window is state_ttl");
        assert!(again.changes.unwrap().state_reset);
    }

    #[test]
    fn snapshot_restores_the_same_behaviour() {
        let events: Vec<EnrichedEvent> = (0..40)
            .map(|i| {
                pv(
                    &format!("e{}", i % 30),
                    &format!("u{}", i % 3),
                    &format!("2026-11-01T09:{:02}:00Z", i),
                )
            })
            .collect();
        let mut whole = FoldState::new(FoldConfig::default());
        let expected: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| whole.fold_event(e, i as i64, -1))
            .collect();

        let mut first = FoldState::new(FoldConfig::default());
        let mut got: Vec<_> = events[..17]
            .iter()
            .enumerate()
            .map(|(i, e)| first.fold_event(e, i as i64, -1))
            .collect();
        let bytes = serde_json::to_vec(&first.snapshot()).unwrap();
        let mut second = FoldState::from_accumulator(FoldConfig::default(), &bytes).unwrap();
        got.extend(
            events[17..]
                .iter()
                .enumerate()
                .map(|(i, e)| second.fold_event(e, 17 + i as i64, -1)),
        );
        assert_eq!(got, expected);
    }

    /// Proves a stream that resumes before the checkpoint (a Fluvio SPU resumes at the start
    /// of the producer batch) changes nothing for the records already applied: they are
    /// skipped without touching the state, and the rest folds as if never interrupted.
    #[test]
    fn records_at_or_below_resume_after_are_skipped_without_state_change() {
        let events: Vec<EnrichedEvent> = (0..20)
            .map(|i| {
                pv(
                    &format!("e{i}"),
                    &format!("u{}", i % 2),
                    &format!("2026-11-01T09:{i:02}:00Z"),
                )
            })
            .collect();
        let mut whole = FoldState::new(FoldConfig::default());
        let expected: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| whole.fold_event(e, i as i64, -1))
            .collect();

        let mut first = FoldState::new(FoldConfig::default());
        for (i, e) in events[..12].iter().enumerate() {
            first.fold_record(&serde_json::to_vec(e).unwrap(), i as i64, -1);
        }
        let mut snapshot = first.snapshot();
        snapshot.resume_after = Some(11);
        let mut second =
            FoldState::from_accumulator(FoldConfig::default(), &serde_json::to_vec(&snapshot).unwrap()).unwrap();
        // Re-delivered from offset 8: 8..=11 are skipped, 12.. fold normally.
        for (i, e) in events.iter().enumerate().skip(8) {
            let u = second.fold_record(&serde_json::to_vec(e).unwrap(), i as i64, -1);
            if i <= 11 {
                assert_eq!(u.outcome, Outcome::Skipped);
                assert!(u.skip_reason.unwrap().contains("resumed after offset 11"));
            } else {
                assert_eq!(u, expected[i], "offset {i}");
            }
        }
    }

    #[test]
    fn anything_else_is_skipped_not_an_error() {
        let mut s = FoldState::new(FoldConfig::default());
        for junk in [
            &b""[..],
            b"null",
            b"{}",
            &[0xff, 0x00],
            br#"{"reason":"bot","detail":"d","payload":"p"}"#,
        ] {
            let u = s.fold_record(junk, 7, -1);
            assert_eq!((u.outcome, u.offset), (Outcome::Skipped, 7));
            assert!(u.skip_reason.is_some());
        }
    }

    #[test]
    fn bad_accumulators_and_params_are_clear_errors() {
        assert!(FoldState::from_accumulator(FoldConfig::default(), b"{}")
            .unwrap_err()
            .contains("restart snapshot"));
        assert!(FoldState::from_accumulator(FoldConfig::default(), br#"{"version":9}"#)
            .unwrap_err()
            .contains("version 9"));
        let e = FoldConfig::from_params(|k| (k == PARAM_STATE_TTL).then(|| "5m".to_string())).unwrap_err();
        assert_eq!(e.param, PARAM_STATE_TTL);
        let e = FoldConfig::from_params(|k| (k == PARAM_SESSION_TIMEOUT).then(|| "soon".to_string())).unwrap_err();
        assert_eq!(e.param, PARAM_SESSION_TIMEOUT);
        let e = FoldConfig::from_params(|k| (k == PARAM_SESSION_TIMEOUT).then(|| "12h".to_string())).unwrap_err();
        assert_eq!(
            (e.param, e.value.as_str()),
            (PARAM_STATE_TTL, DEFAULT_STATE_TTL),
            "names the default in force"
        );
    }
}
