//! The read side of the store: profile listing with filters and a stable cursor, funnel
//! statistics, and export. Used by `onramp profile list`, `onramp stats`, `onramp export`
//! and the HTTP API.
//!
//! Nothing here prints: [`render_funnel`] returns text and [`export_lines`] writes to the
//! writer it is given.
//!
//! # Time
//! Hints (`stalled`, `activated`) depend on "now". Following the replay rule
//! (ARCHITECTURE.md), "now" is never the wall clock but [`reference_time_ms`]: the
//! greatest partition watermark, so the same store gives the same answers whenever it is
//! read.
//!
//! # Example
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use onramp::query::{funnel_stats, list_profiles, render_funnel, Hint, ProfileFilter};
//! use onramp::store::Store;
//! use onramp_logic::enrich::EnrichConfig;
//!
//! let store = Store::open_existing(std::path::Path::new("onramp-data"))?;
//! let filter = ProfileFilter { hint: Some("stalled".parse::<Hint>()?), ..ProfileFilter::default() };
//! let mut cursor = None;
//! loop {
//!     let page = list_profiles(&store, &filter, cursor.as_deref(), 100)?;
//!     for p in &page.profiles {
//!         println!("{}", p.user_id);
//!     }
//!     match page.next_cursor {
//!         Some(next) => cursor = Some(next),
//!         None => break,
//!     }
//! }
//! print!("{}", render_funnel(&funnel_stats(&store, &EnrichConfig::default().steps)?));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

use anyhow::Context as _;
use onramp_schemas::Profile;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Most profiles one page may hold; larger limits are clamped to it.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// The counter-name prefix the store uses for per-reason reject counts.
const REJECTED_PREFIX: &str = "rejected.";

/// "Now" for time-dependent hints: the greatest partition watermark (each partition's
/// robust event-time clock, so one oddly dated event cannot make everyone look stalled),
/// or `None` before any partition has one. Never the wall clock, so replays and later
/// reads agree.
pub fn reference_time_ms(store: &Store) -> Result<Option<i64>, StoreError> {
    Ok(store.checkpoints()?.values().filter_map(|c| c.max_event_time_ms).max())
}

/// The reference time to judge hints against; with no events applied nothing can be
/// stalled, which `i64::MIN` gives.
fn hint_reference(store: &Store) -> Result<i64, StoreError> {
    Ok(reference_time_ms(store)?.unwrap_or(i64::MIN))
}

/// A derived, time-dependent label to filter on (see [`Profile::hints`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hint {
    /// Onboarding not completed and no event for a day before the reference time.
    Stalled,
    /// Onboarding completed, or enough feature uses.
    Activated,
}

impl Hint {
    /// Every hint, in the order error messages list them.
    pub const ALL: [Hint; 2] = [Hint::Stalled, Hint::Activated];

    /// The name used on the command line, in query strings and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Hint::Stalled => "stalled",
            Hint::Activated => "activated",
        }
    }

    fn holds(self, profile: &Profile, reference_ms: i64) -> bool {
        let hints = profile.hints(reference_ms);
        match self {
            Hint::Stalled => hints.stalled,
            Hint::Activated => hints.activated,
        }
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hint name that is not one of [`Hint::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hint `{0}`; expected one of: stalled, activated")]
pub struct UnknownHint(pub String);

impl FromStr for Hint {
    type Err = UnknownHint;

    /// Parses `stalled` or `activated` (ASCII case and surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Hint::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownHint(s.to_string()))
    }
}

/// Which profiles to list. Every field that is set must match; the default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileFilter {
    /// Profiles whose furthest completed funnel step (`funnel.current_step`) is this.
    pub step: Option<String>,
    /// Profiles that have completed this step (funnel or not), whatever came after.
    pub completed_step: Option<String>,
    /// Profiles with this hint, judged against [`reference_time_ms`].
    pub hint: Option<Hint>,
    /// `true`: profiles that completed onboarding; `false`: those that did not.
    pub completed: Option<bool>,
    /// Profiles whose latest event time (`last_seen_ms`) is at or after this, ms.
    pub active_since_ms: Option<i64>,
}

impl ProfileFilter {
    /// True when `profile` passes every set condition; hints are judged at `reference_ms`.
    pub fn matches(&self, profile: &Profile, reference_ms: i64) -> bool {
        self.step
            .as_ref()
            .is_none_or(|s| profile.funnel.current_step.as_ref() == Some(s))
            && self
                .completed_step
                .as_ref()
                .is_none_or(|s| profile.steps.contains_key(s))
            && self.completed.is_none_or(|c| profile.completed_ms.is_some() == c)
            && self.active_since_ms.is_none_or(|t| profile.last_seen_ms >= t)
            && self.hint.is_none_or(|h| h.holds(profile, reference_ms))
    }
}

/// One page of [`list_profiles`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfilePage {
    /// Matching profiles, in user-id order.
    pub profiles: Vec<Profile>,
    /// Pass it back to get the next page; `None` when no matching profile follows.
    pub next_cursor: Option<String>,
}

/// Lists the profiles matching `filter`, in user-id order, strictly after `cursor`, at most
/// `limit` of them (clamped to `1..=MAX_PAGE_LIMIT`).
///
/// The cursor is opaque to callers: pass back the `next_cursor` of the previous page, or
/// `None` for the first. `next_cursor` is set only when at least one more matching profile
/// follows the page (the scan looks one match ahead), so the last page has none.
///
/// Pages are stable while writes continue: profiles are keyed and scanned by user id and
/// the cursor is the last user id returned, exclusive. A profile that exists throughout a
/// listing therefore appears exactly once — no duplicates, no gaps — even if it or others
/// are updated, or new users arrive, between pages. (A user created behind the cursor is
/// simply not in this listing; one created ahead of it is. Hints are judged against the
/// reference time when each page is read, so a `hint` filter may change its verdict for
/// profiles not yet listed as new events arrive.)
pub fn list_profiles(
    store: &Store,
    filter: &ProfileFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<ProfilePage, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE_LIMIT);
    let reference_ms = hint_reference(store)?;
    let mut profiles = Vec::new();
    let mut more = false;
    for profile in store.profiles_after(cursor) {
        let profile = profile?;
        if !filter.matches(&profile, reference_ms) {
            continue;
        }
        if profiles.len() == limit {
            more = true;
            break;
        }
        profiles.push(profile);
    }
    let next_cursor = if more {
        profiles.last().map(|p| p.user_id.clone())
    } else {
        None
    };
    Ok(ProfilePage { profiles, next_cursor })
}

/// One funnel step's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    /// The step.
    pub step: String,
    /// Profiles that completed it.
    pub users: u64,
    /// `users` divided by the previous step's `users` (a fraction, 1.0 = 100 %); `None`
    /// for the first step or when the previous step has no users.
    pub conversion_from_previous: Option<f64>,
    /// Median, over profiles that completed both this step and the previous one, of the
    /// time between their first completions, ms (the mean of the two middle values when
    /// their number is even). Negative when most did the steps out of order. `None` for
    /// the first step or when no profile completed both.
    pub median_ms_from_previous: Option<i64>,
}

/// Funnel statistics over every profile in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelStats {
    /// Profiles.
    pub profiles: u64,
    /// Profiles that completed onboarding.
    pub completed: u64,
    /// Profiles stalled at `reference_ms`.
    pub stalled: u64,
    /// Activated profiles.
    pub activated: u64,
    /// The time hints were judged at ([`reference_time_ms`]); `None` for an empty store.
    pub reference_ms: Option<i64>,
    /// The funnel steps, in funnel order.
    pub steps: Vec<StepStats>,
    /// The store's counters (events in, accepted, applied, duplicates, skipped, rejected,
    /// rejected.<reason>).
    pub counters: BTreeMap<String, u64>,
    /// Rejected events by reason (the `rejected.<reason>` counters).
    pub reject_reasons: BTreeMap<String, u64>,
}

/// Computes [`FunnelStats`] for the funnel `steps` (in order — e.g.
/// `onramp_logic::enrich::EnrichConfig::default().steps`, or the run's `steps` param) in
/// one pass over all profiles. Memory is O(steps) plus one time delta per user and step
/// for the medians.
pub fn funnel_stats(store: &Store, steps: &[String]) -> Result<FunnelStats, StoreError> {
    let reference_ms = reference_time_ms(store)?;
    let judge_at = reference_ms.unwrap_or(i64::MIN);
    let mut stats = FunnelStats {
        profiles: 0,
        completed: 0,
        stalled: 0,
        activated: 0,
        reference_ms,
        steps: Vec::new(),
        counters: BTreeMap::new(),
        reject_reasons: BTreeMap::new(),
    };
    let mut users = vec![0u64; steps.len()];
    let mut deltas: Vec<Vec<i64>> = vec![Vec::new(); steps.len()];
    for profile in store.profiles_after(None) {
        let profile = profile?;
        stats.profiles += 1;
        stats.completed += u64::from(profile.completed_ms.is_some());
        let hints = profile.hints(judge_at);
        stats.stalled += u64::from(hints.stalled);
        stats.activated += u64::from(hints.activated);
        let mut previous: Option<i64> = None;
        for (i, step) in steps.iter().enumerate() {
            let this = profile.steps.get(step).map(|s| s.first_completed_ms);
            if let Some(t) = this {
                users[i] += 1;
                if let Some(p) = previous {
                    deltas[i].push(t.saturating_sub(p));
                }
            }
            previous = this;
        }
    }
    for (i, step) in steps.iter().enumerate() {
        let previous_users = i.checked_sub(1).map(|p| users[p]);
        stats.steps.push(StepStats {
            step: step.clone(),
            users: users[i],
            conversion_from_previous: previous_users.filter(|&p| p > 0).map(|p| users[i] as f64 / p as f64),
            median_ms_from_previous: median(&mut deltas[i]),
        });
    }
    stats.counters = store.counters()?;
    stats.reject_reasons = stats
        .counters
        .iter()
        .filter_map(|(name, n)| {
            name.strip_prefix(REJECTED_PREFIX)
                .map(|reason| (reason.to_string(), *n))
        })
        .collect();
    Ok(stats)
}

/// The median of `values` (the mean of the two middle ones for an even count), sorting
/// them in place.
fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(values[mid])
    } else {
        let sum = i128::from(values[mid - 1]) + i128::from(values[mid]);
        // The mean of two i64 values is an i64.
        Some(i64::try_from(sum.div_euclid(2)).unwrap_or_default())
    }
}

/// Renders [`FunnelStats`] as a plain-text table: each step with its users, conversion
/// from the previous step and median time from the previous step; then the totals and
/// the reject reasons, most frequent first.
pub fn render_funnel(stats: &FunnelStats) -> String {
    use std::fmt::Write as _;

    let headers = ["step", "users", "conversion", "median from previous"];
    let rows: Vec<[String; 4]> = stats
        .steps
        .iter()
        .map(|s| {
            [
                s.step.clone(),
                s.users.to_string(),
                s.conversion_from_previous
                    .map_or_else(|| "-".to_string(), |c| format!("{:.1}%", c * 100.0)),
                s.median_ms_from_previous
                    .map_or_else(|| "-".to_string(), format_duration_ms),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 4]| {
        let [step, users, conversion, median] = cells;
        let text = format!(
            "{step:<w0$}  {users:>w1$}  {conversion:>w2$}  {median}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }

    let share = |n: u64| match stats.profiles {
        0 => String::new(),
        total => format!(" ({:.1}%)", n as f64 * 100.0 / total as f64),
    };
    out.push('\n');
    let _ = writeln!(out, "profiles   {}", stats.profiles);
    let _ = writeln!(out, "completed  {}{}", stats.completed, share(stats.completed));
    let _ = writeln!(out, "activated  {}{}", stats.activated, share(stats.activated));
    let _ = writeln!(out, "stalled    {}{}", stats.stalled, share(stats.stalled));
    match stats.reference_ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(at) => {
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let _ = writeln!(out, "(hints judged at {at}, the newest event time in the store)");
        }
        None => out.push_str("(no events applied yet)\n"),
    }

    let counter = |name: &str| stats.counters.get(name).copied().unwrap_or(0);
    out.push('\n');
    let _ = writeln!(
        out,
        "events in {}, accepted {}, applied {}, duplicates {}, skipped {}, rejected {}",
        counter("events_in"),
        counter("accepted"),
        counter("applied"),
        counter("duplicates"),
        counter("skipped"),
        counter("rejected"),
    );

    if !stats.reject_reasons.is_empty() {
        let mut reasons: Vec<(&String, &u64)> = stats.reject_reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let width = reasons.iter().map(|(r, _)| r.chars().count()).max().unwrap_or(0);
        let count_width = reasons.iter().map(|(_, n)| n.to_string().len()).max().unwrap_or(0);
        out.push_str("\nreject reasons\n");
        for (reason, n) in reasons {
            let _ = writeln!(out, "  {reason:<width$}  {n:>count_width$}");
        }
    }
    out
}

/// A duration for people: `850ms`, `42s`, `3m 12s`, `1h 05m`, `2d 03h`.
pub fn format_duration_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let s = ms / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if ms < 1000 {
        format!("{sign}{ms}ms")
    } else if s < 60 {
        format!("{sign}{s}s")
    } else if m < 60 {
        format!("{sign}{m}m {:02}s", s % 60)
    } else if h < 24 {
        format!("{sign}{h}h {:02}m", m % 60)
    } else {
        format!("{sign}{d}d {:02}h", h % 24)
    }
}

/// Writes every profile as one compact JSON line, in user-id order (the store's key
/// order), and returns how many it wrote. The lines are the stored profiles exactly —
/// time-dependent hints are not included — so the output is a faithful backup.
pub fn export_lines(store: &Store, out: &mut impl Write) -> Result<u64, anyhow::Error> {
    let mut count = 0u64;
    for profile in store.profiles_after(None) {
        let profile = profile?;
        serde_json::to_writer(&mut *out, &profile)
            .with_context(|| format!("writing profile `{}` as JSON", profile.user_id))?;
        out.write_all(b"\n").context("writing the export")?;
        count += 1;
    }
    out.flush().context("flushing the export")?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, StoreSettings};
    use onramp_schemas::profile::STALLED_AFTER_MS;
    use onramp_schemas::{
        Changes, Counters, FunnelStep, Outcome, ProfileUpdate, RejectReason, RejectedEvent, StepChange,
    };

    const DAY: i64 = STALLED_AFTER_MS;
    const FUNNEL: [&str; 3] = ["sign_up", "profile", "workspace"];

    fn funnel() -> Vec<String> {
        FUNNEL.iter().map(|s| s.to_string()).collect()
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = StoreSettings {
            partitions: 1,
            chain_params: "test".into(),
        };
        let store = Store::open(dir.path(), &settings).expect("open store");
        (dir, store)
    }

    /// An event for `user` at `t`, completing `step` (a funnel step of [`FUNNEL`], or any
    /// other name) when given.
    struct Ev<'a> {
        user: &'a str,
        t: i64,
        step: Option<&'a str>,
        completes_onboarding: bool,
        features_used: u64,
    }

    fn ev<'a>(user: &'a str, t: i64, step: Option<&'a str>) -> Ev<'a> {
        Ev {
            user,
            t,
            step,
            completes_onboarding: false,
            features_used: 0,
        }
    }

    /// Commits `events` as one batch with distinct offsets after those already used.
    fn commit(store: &Store, events: &[Ev<'_>]) {
        let start = store.checkpoint(0).expect("checkpoint").map_or(0, |c| c.offset + 1);
        let updates: Vec<ProfileUpdate> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let offset = start + i as i64;
                let step = e.step.map(|name| {
                    let index = FUNNEL.iter().position(|s| *s == name);
                    StepChange {
                        name: name.to_string(),
                        funnel: index.map(|index| FunnelStep {
                            step: name.to_string(),
                            index: index as u32,
                            total: FUNNEL.len() as u32,
                            next: FUNNEL.get(index + 1).map(|s| s.to_string()),
                        }),
                    }
                });
                ProfileUpdate {
                    user_id: e.user.to_string(),
                    offset,
                    outcome: Outcome::Applied,
                    skip_reason: None,
                    skip_kind: None,
                    event_id: format!("e{offset}"),
                    event_type: Some("step_completed".into()),
                    event_time_ms: e.t,
                    evicted_users: 0,
                    changes: Some(Changes {
                        step,
                        onboarding_completed: e.completes_onboarding,
                        counters: Counters {
                            events: 1,
                            features_used: e.features_used,
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                }
            })
            .collect();
        let batch = Batch {
            partition: 0,
            last_offset: start + events.len() as i64 - 1,
            events_in: events.len() as u64,
            updates,
            rejects: Vec::new(),
            input: None,
        };
        store.commit(&batch).expect("commit");
    }

    fn ids(page: &ProfilePage) -> Vec<&str> {
        page.profiles.iter().map(|p| p.user_id.as_str()).collect()
    }

    fn listed(store: &Store, filter: ProfileFilter) -> Vec<String> {
        let page = list_profiles(store, &filter, None, MAX_PAGE_LIMIT).expect("list");
        assert_eq!(page.next_cursor, None);
        page.profiles.into_iter().map(|p| p.user_id).collect()
    }

    /// Paging through 25 profiles 10 at a time returns each exactly once, in user-id
    /// order, and only the last page lacks a cursor.
    #[test]
    fn pages_cover_every_profile_once_in_order() {
        let (_dir, store) = temp_store();
        // Committed out of order, to show the listing order is the user-id order.
        let users: Vec<String> = (0..25).rev().map(|i| format!("user-{i:02}")).collect();
        commit(
            &store,
            &users.iter().map(|u| ev(u, 1_000, Some("sign_up"))).collect::<Vec<_>>(),
        );

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut sizes = Vec::new();
        loop {
            let page = list_profiles(&store, &ProfileFilter::default(), cursor.as_deref(), 10).expect("list");
            sizes.push(page.profiles.len());
            seen.extend(ids(&page).into_iter().map(str::to_string));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("user-{i:02}")).collect();
        assert_eq!(seen, expected);
        assert_eq!(sizes, vec![10, 10, 5]);
    }

    /// When the last page is exactly full, it has no cursor (no empty extra page), and a
    /// page that is full because of a filter gets one only if another match follows.
    #[test]
    fn cursor_only_when_a_match_follows() {
        let (_dir, store) = temp_store();
        let users: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
        commit(
            &store,
            &users.iter().map(|u| ev(u, 1_000, Some("sign_up"))).collect::<Vec<_>>(),
        );
        // u05 goes further than sign_up.
        commit(&store, &[ev("u05", 2_000, Some("profile"))]);

        let first = list_profiles(&store, &ProfileFilter::default(), None, 10).expect("list");
        assert_eq!(first.next_cursor.as_deref(), Some("u09"));
        let second = list_profiles(&store, &ProfileFilter::default(), Some("u09"), 10).expect("list");
        assert_eq!(second.profiles.len(), 10);
        assert_eq!(second.next_cursor, None);

        let filter = ProfileFilter {
            step: Some("profile".into()),
            ..ProfileFilter::default()
        };
        let only = list_profiles(&store, &filter, None, 1).expect("list");
        assert_eq!(ids(&only), ["u05"]);
        assert_eq!(only.next_cursor, None);
    }

    /// Writes between pages neither duplicate nor skip profiles that existed throughout:
    /// updates to listed profiles and new users behind the cursor do not reappear, new
    /// users ahead of it are listed once.
    #[test]
    fn pages_are_stable_while_writes_continue() {
        let (_dir, store) = temp_store();
        let users: Vec<String> = (0..6).map(|i| format!("u{}", i * 2)).collect(); // u0 u2 … u10
        commit(
            &store,
            &users.iter().map(|u| ev(u, 1_000, Some("sign_up"))).collect::<Vec<_>>(),
        );

        let first = list_profiles(&store, &ProfileFilter::default(), None, 3).expect("list");
        assert_eq!(ids(&first), ["u0", "u10", "u2"]);
        // Meanwhile: a listed profile changes, a user appears behind the cursor and one ahead.
        commit(
            &store,
            &[
                ev("u0", 2_000, Some("profile")),
                ev("u1", 2_000, None),
                ev("u3", 2_000, None),
            ],
        );
        let second = list_profiles(&store, &ProfileFilter::default(), first.next_cursor.as_deref(), 3).expect("list");
        assert_eq!(ids(&second), ["u3", "u4", "u6"]);
        let third = list_profiles(&store, &ProfileFilter::default(), second.next_cursor.as_deref(), 3).expect("list");
        assert_eq!(ids(&third), ["u8"]);
        assert_eq!(third.next_cursor, None);
    }

    /// The limit is clamped to 1..=MAX_PAGE_LIMIT.
    #[test]
    fn limit_is_clamped() {
        let (_dir, store) = temp_store();
        let users: Vec<String> = (0..=MAX_PAGE_LIMIT).map(|i| format!("u{i:04}")).collect();
        commit(&store, &users.iter().map(|u| ev(u, 1_000, None)).collect::<Vec<_>>());

        let zero = list_profiles(&store, &ProfileFilter::default(), None, 0).expect("list");
        assert_eq!(ids(&zero), ["u0000"]);
        assert_eq!(zero.next_cursor.as_deref(), Some("u0000"));

        let huge = list_profiles(&store, &ProfileFilter::default(), None, usize::MAX).expect("list");
        assert_eq!(huge.profiles.len(), MAX_PAGE_LIMIT);
        assert_eq!(huge.next_cursor.as_deref(), Some("u0999"));
        let rest = list_profiles(
            &store,
            &ProfileFilter::default(),
            huge.next_cursor.as_deref(),
            usize::MAX,
        )
        .expect("list");
        assert_eq!(ids(&rest), ["u1000"]);
        assert_eq!(rest.next_cursor, None);
    }

    /// A small store for the filter tests; the partition's watermark (the greatest median
    /// of its recent event times) ends at 1 day, so that is the reference time for hints.
    ///
    /// | user | events | current step | stalled | activated | last seen |
    /// |---|---|---|---|---|---|
    /// | a | sign_up @0 | sign_up | yes | no | 0 |
    /// | b | sign_up @0, profile @1.5d | profile | no | no | 1.5d |
    /// | c | sign_up @1d, profile @1d+1, workspace @2d (completes onboarding) | workspace | no | yes | 2d |
    /// | d | sign_up @0.5d with 3 feature uses | sign_up | yes | yes | 0.5d |
    fn filter_store() -> (tempfile::TempDir, Store) {
        let (dir, store) = temp_store();
        commit(
            &store,
            &[
                ev("a", 0, Some("sign_up")),
                ev("b", 0, Some("sign_up")),
                ev("c", DAY, Some("sign_up")),
                Ev {
                    features_used: 3,
                    ..ev("d", DAY / 2, Some("sign_up"))
                },
            ],
        );
        commit(
            &store,
            &[
                ev("b", DAY * 3 / 2, Some("profile")),
                ev("c", DAY + 1, Some("profile")),
                Ev {
                    completes_onboarding: true,
                    ..ev("c", 2 * DAY, Some("workspace"))
                },
            ],
        );
        (dir, store)
    }

    /// Each filter selects exactly the profiles the table above says, and filters combine.
    #[test]
    fn filters_select_the_expected_profiles() {
        let (_dir, store) = filter_store();
        let f = ProfileFilter::default;
        assert_eq!(listed(&store, f()), ["a", "b", "c", "d"]);
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    step: Some("sign_up".into()),
                    ..f()
                }
            ),
            ["a", "d"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    step: Some("profile".into()),
                    ..f()
                }
            ),
            ["b"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    completed_step: Some("sign_up".into()),
                    ..f()
                }
            ),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    completed_step: Some("profile".into()),
                    ..f()
                }
            ),
            ["b", "c"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    completed_step: Some("nope".into()),
                    ..f()
                }
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    completed: Some(true),
                    ..f()
                }
            ),
            ["c"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    completed: Some(false),
                    ..f()
                }
            ),
            ["a", "b", "d"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    active_since_ms: Some(DAY * 3 / 2),
                    ..f()
                }
            ),
            ["b", "c"]
        );
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    hint: Some(Hint::Activated),
                    ..f()
                }
            ),
            ["c", "d"]
        );
        let both = ProfileFilter {
            step: Some("sign_up".into()),
            hint: Some(Hint::Activated),
            ..f()
        };
        assert_eq!(listed(&store, both), ["d"]);
    }

    /// `stalled` is judged against the partitions' watermark, not the wall clock (by the
    /// wall clock every incomplete profile here would be stalled, `b` included) nor the
    /// single newest event (2 days, by which `d` would be stalled too).
    #[test]
    fn stalled_is_judged_against_the_reference_time() {
        let (_dir, store) = filter_store();
        assert_eq!(reference_time_ms(&store).expect("reference"), Some(DAY));
        assert_eq!(
            listed(
                &store,
                ProfileFilter {
                    hint: Some(Hint::Stalled),
                    ..ProfileFilter::default()
                }
            ),
            ["a"]
        );
    }

    /// An empty store has no reference time and lists nothing.
    #[test]
    fn empty_store_lists_nothing() {
        let (_dir, store) = temp_store();
        assert_eq!(reference_time_ms(&store).expect("reference"), None);
        let page = list_profiles(&store, &ProfileFilter::default(), None, 10).expect("list");
        assert!(page.profiles.is_empty());
        assert_eq!(page.next_cursor, None);
    }

    /// Hints parse from their names, case-insensitively, and an unknown name is an error
    /// that lists the valid ones.
    #[test]
    fn hints_parse_with_a_clear_error() {
        assert_eq!("stalled".parse::<Hint>(), Ok(Hint::Stalled));
        assert_eq!(" Activated ".parse::<Hint>(), Ok(Hint::Activated));
        let err = "idle".parse::<Hint>().expect_err("unknown hint").to_string();
        assert_eq!(err, "unknown hint `idle`; expected one of: stalled, activated");
    }

    /// Funnel numbers on a known dataset, worked out by hand:
    ///
    /// | user | sign_up | profile | workspace |
    /// |---|---|---|---|
    /// | u1 | 0 | 60 000 (+1m) | 3 660 000 (+1h, completes onboarding) |
    /// | u2 | 0 | 120 000 (+2m) | |
    /// | u3 | 10 000 | 190 000 (+3m) | 7 390 000 (+2h) |
    /// | u4 | 0 | | |
    /// | u5 | | 500 (no sign_up: no delta) | |
    /// | u6 | 20 000 | | |
    ///
    /// sign_up 5 users; profile 4 (80 % of 5), median of 1m, 2m, 3m = 2m; workspace 2
    /// (50 % of 4), median of 1h and 2h = 1h 30m.
    #[test]
    fn funnel_stats_on_a_known_dataset() {
        let (_dir, store) = temp_store();
        commit(
            &store,
            &[
                ev("u1", 0, Some("sign_up")),
                ev("u1", 60_000, Some("profile")),
                Ev {
                    completes_onboarding: true,
                    ..ev("u1", 3_660_000, Some("workspace"))
                },
                ev("u2", 0, Some("sign_up")),
                ev("u2", 120_000, Some("profile")),
                ev("u3", 10_000, Some("sign_up")),
                ev("u3", 190_000, Some("profile")),
                ev("u3", 7_390_000, Some("workspace")),
                ev("u4", 0, Some("sign_up")),
                ev("u5", 500, Some("profile")),
                ev("u6", 20_000, Some("sign_up")),
            ],
        );
        let rejected = |reason| RejectedEvent {
            reason,
            detail: String::new(),
            payload: "{}".into(),
            payload_bytes: 2,
            payload_sha256: String::new(),
            identity: None,
            offset: None,
        };
        store
            .commit(&Batch {
                partition: 0,
                last_offset: 20,
                events_in: 3,
                updates: Vec::new(),
                rejects: vec![
                    (18, rejected(RejectReason::InvalidJson)),
                    (19, rejected(RejectReason::Bot)),
                    (20, rejected(RejectReason::Bot)),
                ],
                input: None,
            })
            .expect("commit rejects");

        let stats = funnel_stats(&store, &funnel()).expect("stats");
        assert_eq!((stats.profiles, stats.completed), (6, 1));
        // The partition's robust watermark (the greatest median of its recent event times),
        // not the single newest event (7 390 000 ms).
        assert_eq!(stats.reference_ms, Some(60_000));
        // Nobody is a day behind it; only u1 completed onboarding.
        assert_eq!((stats.stalled, stats.activated), (0, 1));
        let step = |name: &str, users, conversion, median| StepStats {
            step: name.into(),
            users,
            conversion_from_previous: conversion,
            median_ms_from_previous: median,
        };
        assert_eq!(
            stats.steps,
            [
                step("sign_up", 5, None, None),
                step("profile", 4, Some(0.8), Some(120_000)),
                step("workspace", 2, Some(0.5), Some(5_400_000)),
            ]
        );
        assert_eq!(
            stats.reject_reasons,
            BTreeMap::from([("bot".to_string(), 2), ("invalid_json".to_string(), 1)])
        );
        assert_eq!(stats.counters.get("events_in"), Some(&14));
        assert_eq!(stats.counters.get("rejected"), Some(&3));

        let text = render_funnel(&stats);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "step       users  conversion  median from previous");
        assert_eq!(rows[1], "sign_up        5           -  -");
        assert_eq!(rows[2], "profile        4       80.0%  2m 00s");
        assert_eq!(rows[3], "workspace      2       50.0%  1h 30m");
        assert!(text.contains("completed  1 (16.7%)"), "{text}");
        assert!(
            text.contains("events in 14, accepted 11, applied 11, duplicates 0, skipped 0, rejected 3"),
            "{text}"
        );
        let bot = text.find("  bot ").expect("bot listed");
        let invalid = text.find("  invalid_json ").expect("invalid_json listed");
        assert!(bot < invalid, "reasons sorted by count:\n{text}");
        // The JSON form the CLI's --json and the HTTP API use.
        let json = serde_json::to_value(&stats).expect("json");
        assert_eq!(json["steps"][2]["median_ms_from_previous"], 5_400_000);
    }

    /// Funnel statistics of an empty store are all zeros with no conversions or medians.
    #[test]
    fn funnel_stats_of_an_empty_store() {
        let (_dir, store) = temp_store();
        let stats = funnel_stats(&store, &funnel()).expect("stats");
        assert_eq!(stats.profiles, 0);
        assert!(stats
            .steps
            .iter()
            .all(|s| s.users == 0 && s.conversion_from_previous.is_none()));
        assert!(render_funnel(&stats).contains("(no events applied yet)"));
    }

    /// Medians: odd and even counts, out-of-order (negative) deltas, no overflow.
    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5, 1, 3]), Some(3));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut [-10, -20]), Some(-15));
        assert_eq!(median(&mut [i64::MAX, i64::MAX]), Some(i64::MAX));
    }

    /// Durations render compactly at the right unit.
    #[test]
    fn durations_render_for_people() {
        assert_eq!(format_duration_ms(850), "850ms");
        assert_eq!(format_duration_ms(42_000), "42s");
        assert_eq!(format_duration_ms(192_000), "3m 12s");
        assert_eq!(format_duration_ms(3_900_000), "1h 05m");
        assert_eq!(format_duration_ms(2 * 86_400_000 + 3 * 3_600_000), "2d 03h");
        assert_eq!(format_duration_ms(-60_000), "-1m 00s");
    }

    /// Export writes one compact JSON line per profile, sorted by user id, each the
    /// stored profile, and returns the count.
    #[test]
    fn export_is_sorted_one_line_per_profile() {
        let (_dir, store) = temp_store();
        commit(
            &store,
            &[
                ev("zed", 1, Some("sign_up")),
                ev("amy", 2, None),
                ev("mo", 3, Some("profile")),
            ],
        );
        let mut out = Vec::new();
        let n = export_lines(&store, &mut out).expect("export");
        assert_eq!(n, 3);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let profiles: Vec<Profile> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("a profile per line"))
            .collect();
        assert_eq!(
            profiles.iter().map(|p| p.user_id.as_str()).collect::<Vec<_>>(),
            ["amy", "mo", "zed"]
        );
        for p in &profiles {
            assert_eq!(Some(p), store.profile(&p.user_id).expect("lookup").as_ref());
        }
    }
}
