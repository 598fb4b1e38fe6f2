//! The profile fold: turns each enriched event into one [`ProfileUpdate`], keeping only
//! the per-user state that needs history (session, dedup ids) for users active recently.
//!
//! # State and its bounds (DESIGN.md rules 3–5)
//! - The state lives in [`FoldState`], in the SmartModule's memory for the life of the
//!   stream. The aggregate's accumulator is *not* a map of users: it is only read once,
//!   at the start, as a [`RestartSnapshot`].
//! - The partition's *watermark* is the greatest event time applied so far.
//! - A user's state is *live* while `watermark - last_active <= state_ttl`. A user whose
//!   state is not live is treated exactly as a new user (`state_reset`), whether or not
//!   the memory has been reclaimed yet; reclaiming is amortised O(1) per event through
//!   time buckets of [`EVICTION_BUCKET_MS`], so the cost per event does not depend on the
//!   number of users, and memory holds only users active within `state_ttl`.
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
//! partition's newest event time. Duplicates change nothing.

use std::collections::{BTreeMap, HashMap};

use onramp_schemas::event::EventKind;
use onramp_schemas::{
    Acquisition, Changes, Counters, EnrichedEvent, Outcome, Page, ProfileUpdate, RejectedEvent, RestartSnapshot,
    SkipKind, StepChange, UserFoldState, SNAPSHOT_VERSION,
};

use crate::params::{parse_duration_ms, ParamError};
use crate::validate::event_email;

/// Param: gap of event time that ends a session.
pub const PARAM_SESSION_TIMEOUT: &str = "session_timeout";
/// Param: most time one gap between events adds to time spent.
pub const PARAM_MAX_PAGE_TIME: &str = "max_page_time";
/// Param: how long (in event time) a user's state is kept after their last event.
pub const PARAM_STATE_TTL: &str = "state_ttl";
/// Default `session_timeout`.
pub const DEFAULT_SESSION_TIMEOUT: &str = "30m";
/// Default `max_page_time`.
pub const DEFAULT_MAX_PAGE_TIME: &str = "10m";
/// Default `state_ttl`.
pub const DEFAULT_STATE_TTL: &str = "6h";
/// Width of the eviction time buckets.
pub const EVICTION_BUCKET_MS: i64 = 60_000;

/// The profile module's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldConfig {
    /// See [`PARAM_SESSION_TIMEOUT`].
    pub session_timeout_ms: i64,
    /// See [`PARAM_MAX_PAGE_TIME`].
    pub max_page_time_ms: i64,
    /// See [`PARAM_STATE_TTL`].
    pub state_ttl_ms: i64,
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
        let read = |name: &'static str, default: &str| {
            let v = get(name).unwrap_or_else(|| default.to_string());
            let ms = parse_duration_ms(name, &v)?;
            if ms <= 0 {
                return Err(ParamError {
                    param: name,
                    value: v,
                    expected: "a duration greater than zero".into(),
                });
            }
            Ok(ms)
        };
        let cfg = FoldConfig {
            session_timeout_ms: read(PARAM_SESSION_TIMEOUT, DEFAULT_SESSION_TIMEOUT)?,
            max_page_time_ms: read(PARAM_MAX_PAGE_TIME, DEFAULT_MAX_PAGE_TIME)?,
            state_ttl_ms: read(PARAM_STATE_TTL, DEFAULT_STATE_TTL)?,
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
    watermark_ms: Option<i64>,
    users: HashMap<String, UserFoldState>,
    /// Eviction buckets: bucket number → users whose `last_active` fell in it when pushed.
    buckets: BTreeMap<i64, Vec<String>>,
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
        state.watermark_ms = snapshot.watermark_ms;
        state.resume_after = snapshot.resume_after;
        for (user, fold) in snapshot.users {
            state.push_bucket(&user, fold.last_active_ms);
            state.users.insert(user, fold);
        }
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

    /// The snapshot of this state: every live user. Equal states give equal snapshots.
    pub fn snapshot(&self) -> RestartSnapshot {
        let users = self
            .users
            .iter()
            .filter(|(_, s)| self.is_live(s))
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect();
        RestartSnapshot {
            version: SNAPSHOT_VERSION,
            watermark_ms: self.watermark_ms,
            users,
            resume_after: None,
        }
    }

    /// Users held in memory (live or awaiting eviction).
    pub fn users_in_memory(&self) -> usize {
        self.users.len()
    }

    fn is_live(&self, s: &UserFoldState) -> bool {
        self.watermark_ms
            .is_none_or(|w| w.saturating_sub(s.last_active_ms) <= self.cfg.state_ttl_ms)
    }

    fn push_bucket(&mut self, user: &str, last_active_ms: i64) {
        self.buckets
            .entry(last_active_ms.div_euclid(EVICTION_BUCKET_MS))
            .or_default()
            .push(user.to_string());
    }

    /// Frees the memory of users whose state is no longer live. Each user is pushed to a
    /// bucket at most once per bucket it becomes active in, and popped once: amortised O(1).
    fn evict(&mut self) {
        let Some(w) = self.watermark_ms else { return };
        let horizon = w.saturating_sub(self.cfg.state_ttl_ms);
        while let Some(entry) = self.buckets.first_entry() {
            // Every time in the bucket is before `horizon`: all its users are expired
            // unless they were active again since (then they sit in a later bucket too).
            if (entry.key() + 1) * EVICTION_BUCKET_MS > horizon {
                break;
            }
            for user in entry.remove() {
                if self.users.get(&user).is_some_and(|s| s.last_active_ms < horizon) {
                    self.users.remove(&user);
                }
            }
        }
    }

    /// Folds one record of the aggregate's input: an [`EnrichedEvent`] as JSON. Anything
    /// else (including a rejected-event record) gives a `skipped` update; never fails.
    pub fn fold_record(&mut self, value: &[u8], offset: i64) -> ProfileUpdate {
        if let Some(after) = self.resume_after.filter(|&after| offset <= after) {
            return ProfileUpdate::skipped(
                offset,
                SkipKind::AlreadyApplied,
                format!("already applied before the stream resumed after offset {after}"),
            );
        }
        match serde_json::from_slice::<EnrichedEvent>(value) {
            Ok(event) => self.fold_event(&event, offset),
            Err(e) => {
                let reason = match serde_json::from_slice::<RejectedEvent>(value) {
                    Ok(r) => format!("rejected upstream: {}: {}", r.reason, r.detail),
                    Err(_) => format!("not an enriched event: {e}"),
                };
                ProfileUpdate::skipped(offset, SkipKind::NotEnriched, reason)
            }
        }
    }

    /// Folds one enriched event.
    pub fn fold_event(&mut self, ev: &EnrichedEvent, offset: i64) -> ProfileUpdate {
        let e = &ev.event;
        let t = ev.enrichment.event_time_ms;
        let mut update = ProfileUpdate {
            user_id: e.identity().unwrap_or_default().to_string(),
            offset,
            outcome: Outcome::Applied,
            skip_reason: None,
            skip_kind: None,
            event_id: e.event_id.clone(),
            event_type: Some(e.type_name().to_string()),
            event_time_ms: t,
            changes: None,
        };
        if update.user_id.is_empty() {
            return ProfileUpdate::skipped(
                offset,
                SkipKind::MissingIdentity,
                "missing_identity: neither user_id nor anonymous_id is set",
            );
        }
        let watermark = self.watermark_ms.map_or(t, |w| w.max(t));
        let live = self
            .users
            .get(&update.user_id)
            .filter(|s| watermark.saturating_sub(s.last_active_ms) <= self.cfg.state_ttl_ms);
        if live.is_some_and(|s| s.has_seen(&e.event_id)) {
            update.outcome = Outcome::Duplicate;
            return update;
        }
        let previous = live.map(|s| s.last_active_ms);
        self.watermark_ms = Some(watermark);

        // (sessions started, time spent added)
        let session = match previous {
            None => (1, 0),
            Some(last) if t > last.saturating_add(self.cfg.session_timeout_ms) => (1, 0),
            Some(last) if t >= last => (0, (t - last).min(self.cfg.max_page_time_ms) as u64),
            Some(_) => (0, 0),
        };
        let state_reset = previous.is_none();
        let user_state = self.users.entry(update.user_id.clone()).or_default();
        if state_reset {
            *user_state = UserFoldState::default();
        }
        let bucket_before = (!state_reset).then(|| user_state.last_active_ms.div_euclid(EVICTION_BUCKET_MS));
        user_state.observe(&e.event_id, t);
        let last_active = user_state.last_active_ms;
        if bucket_before != Some(last_active.div_euclid(EVICTION_BUCKET_MS)) {
            let user = update.user_id.clone();
            self.push_bucket(&user, last_active);
        }
        self.evict();

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
            let c = s.fold_event(&pv(id, "u", ts), offset).changes.unwrap();
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
        s.fold_event(&pv("a", "u", "2026-11-01T09:00:00Z"), 0);
        let dup = s.fold_event(&pv("a", "u", "2026-11-01T09:00:00Z"), 1);
        assert_eq!(dup.outcome, Outcome::Duplicate);
        assert!(dup.changes.is_none());
        // the same id for another user is not a duplicate
        assert_eq!(
            s.fold_event(&pv("a", "v", "2026-11-01T09:00:00Z"), 2).outcome,
            Outcome::Applied
        );
    }

    #[test]
    fn state_expires_after_ttl_of_event_time_and_memory_is_reclaimed() {
        let mut s = FoldState::new(FoldConfig::default());
        s.fold_event(&pv("a", "old", "2026-11-01T00:00:00Z"), 0);
        for i in 0..10 {
            s.fold_event(&pv(&format!("x{i}"), &format!("u{i}"), "2026-11-01T07:00:00Z"), 1 + i);
        }
        assert_eq!(s.users_in_memory(), 10, "`old` is 7h behind the watermark and evicted");
        let again = s.fold_event(&pv("a", "old", "2026-11-01T07:00:01Z"), 20);
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
            .map(|(i, e)| whole.fold_event(e, i as i64))
            .collect();

        let mut first = FoldState::new(FoldConfig::default());
        let mut got: Vec<_> = events[..17]
            .iter()
            .enumerate()
            .map(|(i, e)| first.fold_event(e, i as i64))
            .collect();
        let bytes = serde_json::to_vec(&first.snapshot()).unwrap();
        let mut second = FoldState::from_accumulator(FoldConfig::default(), &bytes).unwrap();
        got.extend(
            events[17..]
                .iter()
                .enumerate()
                .map(|(i, e)| second.fold_event(e, 17 + i as i64)),
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
            .map(|(i, e)| whole.fold_event(e, i as i64))
            .collect();

        let mut first = FoldState::new(FoldConfig::default());
        for (i, e) in events[..12].iter().enumerate() {
            first.fold_record(&serde_json::to_vec(e).unwrap(), i as i64);
        }
        let mut snapshot = first.snapshot();
        snapshot.resume_after = Some(11);
        let mut second =
            FoldState::from_accumulator(FoldConfig::default(), &serde_json::to_vec(&snapshot).unwrap()).unwrap();
        // Re-delivered from offset 8: 8..=11 are skipped, 12.. fold normally.
        for (i, e) in events.iter().enumerate().skip(8) {
            let u = second.fold_record(&serde_json::to_vec(e).unwrap(), i as i64);
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
            let u = s.fold_record(junk, 7);
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
