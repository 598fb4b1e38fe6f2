//! Funnel statistics of a store: users per step, step-to-step conversion, median time
//! between steps, reject reasons, and per partition its events and heaviest keys (skew);
//! and their text rendering (`onramp stats`, `/v1/funnel`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{reference_time_ms, REJECTED_PREFIX};
use crate::store::{Store, StoreError};

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

/// Funnel statistics over every person in the store (an anonymous id merged into a user
/// counts once, as that user).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelStats {
    /// Persons.
    pub profiles: u64,
    /// Ids stored (a person is one user id and the anonymous ids linked to it).
    pub ids: u64,
    /// Persons with at least one anonymous id merged in (a visit before sign-up, a device).
    pub persons_with_anonymous_ids: u64,
    /// Persons that completed onboarding.
    pub completed: u64,
    /// Persons stalled at `reference_ms`.
    pub stalled: u64,
    /// Activated persons.
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
    /// Per partition: its checkpoint, events and heaviest keys.
    pub partitions: Vec<PartitionStats>,
}

/// One partition's share of the work (see `store::skew`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// Its committed checkpoint (the last offset consumed; -1: none).
    pub checkpoint: i64,
    /// Records counted on it: reached the aggregate or rejected (not those of an id already erased when they came).
    pub events: u64,
    /// `events` over all partitions' events (a fraction).
    pub share: f64,
    /// Its heaviest keys, heaviest first (at most [`crate::metrics::HOT_KEYS_SHOWN`]).
    pub hot_keys: Vec<HotKeyStats>,
    /// Records of its topic partition after the checkpoint, when the cluster was asked
    /// (`onramp stats` on a store fed by a topic, with the cluster reachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// A heavy key of a partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotKeyStats {
    /// The key (a user id).
    pub key: String,
    /// How `/metrics` names it (`Store::key_pseudonyms`).
    pub pseudonym: String,
    /// Estimated events: the true count plus at most `overcount`.
    pub events: u64,
    /// How much of `events` may be another key's.
    pub overcount: u64,
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
        ids: store.profile_count() as u64,
        persons_with_anonymous_ids: 0,
        completed: 0,
        stalled: 0,
        activated: 0,
        reference_ms,
        steps: Vec::new(),
        counters: BTreeMap::new(),
        reject_reasons: BTreeMap::new(),
        partitions: Vec::new(),
    };
    let mut users = vec![0u64; steps.len()];
    let mut deltas: Vec<Vec<i64>> = vec![Vec::new(); steps.len()];
    for person in store.persons_after(None) {
        let person = person?;
        stats.persons_with_anonymous_ids += u64::from(!person.anonymous_ids.is_empty());
        let profile = person.profile;
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
    let skew = store.skew()?;
    let checkpoints = store.checkpoints()?;
    let total: u64 = skew.values().map(|s| s.events).sum();
    let pseudonym = store.key_pseudonyms()?;
    for p in 0..store.partitions()?.unwrap_or(0) {
        let s = skew.get(&p).cloned().unwrap_or_default();
        stats.partitions.push(PartitionStats {
            partition: p,
            checkpoint: checkpoints.get(&p).map_or(-1, |c| c.offset),
            events: s.events,
            share: if total == 0 {
                0.0
            } else {
                s.events as f64 / total as f64
            },
            hot_keys: s
                .top(crate::metrics::HOT_KEYS_SHOWN)
                .into_iter()
                .map(|k| HotKeyStats {
                    key: k.key.clone(),
                    pseudonym: pseudonym(&k.key),
                    events: k.events,
                    overcount: k.overcount,
                })
                .collect(),
            lag: None,
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
    let _ = writeln!(
        out,
        "persons    {} (from {} ids; {} with an anonymous visit or device merged in; {} link conflicts)",
        stats.profiles,
        stats.ids,
        stats.persons_with_anonymous_ids,
        stats.counters.get("link_conflicts").copied().unwrap_or(0)
    );
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

    if !stats.partitions.is_empty() {
        let lags = stats.partitions.iter().any(|p| p.lag.is_some());
        out.push_str(if lags {
            "\npartition  checkpoint  lag       events  share  heaviest keys (events, or the range they are in)\n"
        } else {
            "\npartition  checkpoint  events  share  heaviest keys (events, or the range they are in)\n"
        });
        for p in &stats.partitions {
            let keys: Vec<String> = p
                .hot_keys
                .iter()
                .map(|k| match k.overcount {
                    // An id is whatever a producer sent: escaped, so it cannot move the cursor.
                    0 => format!("{} {}", k.key.escape_debug(), k.events),
                    over => format!("{} {}-{}", k.key.escape_debug(), k.events - over, k.events),
                })
                .collect();
            let lag = match (lags, p.lag) {
                (false, _) => String::new(),
                (true, Some(lag)) => format!("{lag:<8}  "),
                (true, None) => format!("{:<8}  ", "-"),
            };
            let _ = writeln!(
                out,
                "{:>9}  {:>10}  {lag}{:>6}  {:>4.1}%  {}",
                p.partition,
                p.checkpoint,
                p.events,
                p.share * 100.0,
                keys.join(", ")
            );
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::*;
    use crate::store::Batch;
    use onramp_schemas::{RejectReason, RejectedEvent};

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
}
