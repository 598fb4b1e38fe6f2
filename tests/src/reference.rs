//! The reference fold: raw events → profiles, written plainly, with no SmartModule, no
//! `ProfileUpdate` and no `Profile::apply`. Tests compare the real pipeline against it.
//!
//! It computes each profile field straight from its definition over the user's accepted
//! events (a min, a max, a sum, "the value of the event with the greatest (time, offset)"),
//! so that an ordering or bookkeeping bug in the fold or in `Profile::apply` shows up.
//!
//! Two things it borrows on purpose: the per-event *gate* (`validate`, a stateless
//! yes/no) and the per-event *enrichment* (device, campaign, funnel position: stateless
//! functions with their own unit and golden tests). Everything stateful — dedup,
//! sessions, ordering, first/last, counters — is computed here independently.
//!
//! Its dedup is global (an `event_id` counts once per user, ever); the real fold's dedup
//! window is `state_ttl` and the user's 32 most recent ids. The two agree when duplicates
//! arrive within 32 events of the same user and within `state_ttl`, which is how the tests
//! and the traffic generator produce them. State expiry is modelled by its definition: an
//! event finds its user's state expired when the partition's watermark (itself included)
//! is more than `state_ttl` after the user's newest event time; such an event starts a new
//! session. The watermark is defined as the greatest lower median of the event times of
//! the partition's last 15 events (duplicates included), once there are 3; an event more
//! than `max_ahead` beyond the watermark before it is quarantined (not folded).
//!
//! # Persons
//! [`reference_persons`] folds every partition and then assembles persons by their
//! definition, without `Profile::merge` and without the store's links: an applied event
//! carrying both `user_id` and `anonymous_id` is a claim of the anonymous id by the user at
//! (event time, partition, offset); the user with the smallest claim owns it; a user that
//! made any claim is always its own person (even if another event named it as an anonymous
//! id); a person is such a user, or any other id nobody claimed, with every id it owns that
//! made no claim itself. Its profile is
//! computed once over the union of all its ids' events: a min, a max, a sum or "the value
//! of the greatest (time, offset)" over all of them, ties between partitions broken by the
//! value's JSON. Sessions and time spent are the one exception: the fold keeps them per id
//! and partition (an id's sessions do not know about another id's), so they are walked per
//! id and added.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use onramp_logic::enrich::{enrich, EnrichConfig};
use onramp_logic::validate::{event_email, validate, ValidateConfig};
use onramp_schemas::event::EventKind;
use onramp_schemas::profile::{AsOf, FirstTouch, FunnelProgress, RecentEvent, StepProgress, RECENT_EVENTS};
use onramp_schemas::{Acquisition, Counters, EnrichedEvent, Lww, Page, Profile};
use serde::Serialize;

/// Session and time-spent settings (the profile module's params).
#[derive(Debug, Clone, Copy)]
pub struct ReferenceConfig {
    /// `session_timeout`, ms.
    pub session_timeout_ms: i64,
    /// `max_page_time`, ms.
    pub max_page_time_ms: i64,
    /// `state_ttl`, ms.
    pub state_ttl_ms: i64,
    /// `max_ahead`, ms.
    pub max_ahead_ms: i64,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        ReferenceConfig {
            session_timeout_ms: 30 * 60_000,
            max_page_time_ms: 10 * 60_000,
            state_ttl_ms: 6 * 3_600_000,
            max_ahead_ms: 24 * 3_600_000,
        }
    }
}

/// One accepted, de-duplicated event of a user, in partition order.
struct Seen {
    offset: i64,
    t: i64,
    ev: EnrichedEvent,
    /// The user's state had expired when this event arrived.
    expired: bool,
}

/// Folds one partition's records (`(offset, value)` in offset order) into profiles.
pub fn reference_fold(records: &[(i64, Vec<u8>)], cfg: ReferenceConfig) -> BTreeMap<String, Profile> {
    applied_events(records, cfg)
        .into_iter()
        .map(|(user, events)| (user.clone(), profile_of(&user, &[events.as_slice()], cfg)))
        .collect()
}

/// A person of the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferencePerson {
    /// The anonymous ids it owns, sorted.
    pub anonymous_ids: Vec<String>,
    /// Anonymous ids it claimed that more than one user claimed (owned by it or not).
    pub conflicted_ids: BTreeSet<String>,
    /// Its profile, over every event of every id (`user_id` is the person id).
    pub profile: Profile,
}

/// Folds every partition (`partitions[p]`: partition `p`'s records in offset order) and
/// assembles persons, keyed by person id.
pub fn reference_persons(
    partitions: &[Vec<(i64, Vec<u8>)>],
    cfg: ReferenceConfig,
) -> BTreeMap<String, ReferencePerson> {
    let folded: Vec<BTreeMap<String, Vec<Seen>>> = partitions.iter().map(|r| applied_events(r, cfg)).collect();
    // Each user's smallest claim on each anonymous id.
    let mut claims: BTreeMap<&str, BTreeMap<&str, (i64, usize, i64)>> = BTreeMap::new();
    for (partition, by_id) in folded.iter().enumerate() {
        for seen in by_id.values().flatten() {
            let e = &seen.ev.event;
            let (Some(user), Some(anonymous)) = (e.user_id.as_deref(), e.anonymous_id.as_deref()) else {
                continue;
            };
            if user.is_empty() || anonymous.is_empty() || user == anonymous {
                continue;
            }
            let claim = (seen.t, partition, seen.offset);
            let slot = claims.entry(anonymous).or_default().entry(user).or_insert(claim);
            *slot = (*slot).min(claim);
        }
    }
    let owner = |anonymous: &str| -> Option<&str> {
        claims
            .get(anonymous)?
            .iter()
            .min_by_key(|(user, claim)| (**claim, **user))
            .map(|(user, _)| *user)
    };
    let claimants: BTreeSet<&str> = claims.values().flat_map(|users| users.keys().copied()).collect();
    let person_of = |id: &str| -> String {
        match owner(id) {
            Some(owner) if !claimants.contains(id) => owner.to_string(),
            _ => id.to_string(),
        }
    };
    // Each person's ids, with their events per partition.
    let mut persons: BTreeMap<String, Vec<(&str, &[Seen])>> = BTreeMap::new();
    for by_id in &folded {
        for (id, events) in by_id {
            let person = person_of(id);
            persons
                .entry(person)
                .or_default()
                .push((id.as_str(), events.as_slice()));
        }
    }
    persons
        .into_iter()
        .map(|(person, ids)| {
            // Every anonymous id it owns, whether or not any event came with that id alone.
            let anonymous_ids: BTreeSet<String> = claims
                .keys()
                .filter(|anonymous| !claimants.contains(*anonymous) && owner(anonymous) == Some(person.as_str()))
                .map(|anonymous| anonymous.to_string())
                .collect();
            let conflicted_ids = claims
                .iter()
                .filter(|(_, users)| users.len() > 1 && users.contains_key(person.as_str()))
                .map(|(anonymous, _)| anonymous.to_string())
                .collect();
            let groups: Vec<&[Seen]> = ids.iter().map(|(_, events)| *events).collect();
            let profile = profile_of(&person, &groups, cfg);
            let person_view = ReferencePerson {
                anonymous_ids: anonymous_ids.into_iter().collect(),
                conflicted_ids,
                profile,
            };
            (person, person_view)
        })
        .collect()
}

/// One partition's accepted, de-duplicated, not quarantined events per identity (the
/// events the fold applies), each with whether it found its identity's state expired.
fn applied_events(records: &[(i64, Vec<u8>)], cfg: ReferenceConfig) -> BTreeMap<String, Vec<Seen>> {
    let gate = ValidateConfig::default();
    let enrich_cfg = EnrichConfig::default();
    let mut by_user: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    let mut seen_ids: HashSet<(String, String)> = HashSet::new();
    let mut window: Vec<i64> = Vec::new();
    let mut watermark: Option<i64> = None;
    let mut user_last: BTreeMap<String, i64> = BTreeMap::new();
    for (offset, value) in records {
        let Ok(accepted) = validate(value, None, &gate) else {
            continue;
        };
        let Ok(ev) = enrich(accepted.event, &enrich_cfg) else {
            continue;
        };
        let user = ev.event.identity().unwrap_or_default().to_string();
        let t = accepted.event_time_ms;
        let ahead = watermark.is_some_and(|w| t - w > cfg.max_ahead_ms);
        window.push(t);
        if window.len() > 15 {
            window.remove(0);
        }
        if window.len() >= 3 {
            let mut sorted = window.clone();
            sorted.sort();
            let median = sorted[(sorted.len() - 1) / 2];
            watermark = Some(watermark.map_or(median, |w: i64| w.max(median)));
        }
        if ahead || !seen_ids.insert((user.clone(), ev.event.event_id.clone())) {
            continue;
        }
        let expired = user_last
            .get(&user)
            .is_some_and(|last| watermark.is_some_and(|w| w - last > cfg.state_ttl_ms));
        let last = user_last.entry(user.clone()).or_insert(t);
        *last = if expired { t } else { (*last).max(t) };
        by_user.entry(user).or_default().push(Seen {
            offset: *offset,
            t,
            ev,
            expired,
        });
    }
    by_user
}

/// The latest (by event time, then offset, then the value's JSON) of the values `f` gives.
fn latest<T: Serialize>(events: &[&Seen], f: impl Fn(&Seen) -> Option<T>) -> Option<Lww<T>> {
    events
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t, s.offset, json(&v), v)))
        .max_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)))
        .map(|(at_ms, offset, _, value)| Lww { value, at_ms, offset })
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

fn first_time(events: &[&Seen], f: impl Fn(&Seen) -> bool) -> Option<i64> {
    events.iter().filter(|s| f(s)).map(|s| s.t).min()
}

/// The profile of `id` over `groups`: the applied events of each of its ids on one
/// partition, in partition order.
fn profile_of(id: &str, groups: &[&[Seen]], cfg: ReferenceConfig) -> Profile {
    let events: Vec<&Seen> = groups.iter().flat_map(|g| g.iter()).collect();
    let events = events.as_slice();
    let kind = |s: &Seen| s.ev.event.kind.clone();
    let mut p = Profile::new(id);
    p.first_seen_ms = events.iter().map(|s| s.t).min().unwrap_or_default();
    p.last_seen_ms = events.iter().map(|s| s.t).max().unwrap_or_default();
    p.signed_up_ms = first_time(events, |s| matches!(kind(s), EventKind::SignUp(_)));
    p.email_verified_ms = first_time(events, |s| matches!(kind(s), EventKind::EmailVerified(_)));
    p.completed_ms = first_time(events, |s| matches!(kind(s), EventKind::OnboardingCompleted(_)));
    p.email = latest(events, |s| event_email(&s.ev.event).map(str::to_string));
    p.anonymous_id = latest(events, |s| {
        let e = &s.ev.event;
        e.user_id.as_ref().filter(|u| !u.is_empty())?;
        e.anonymous_id.clone().filter(|a| !a.is_empty())
    });
    let mut trait_names: Vec<String> = Vec::new();
    for s in events {
        if let EventKind::Identify(i) = &s.ev.event.kind {
            trait_names.extend(i.traits.keys().cloned());
        }
    }
    for name in trait_names {
        let value = latest(events, |s| match &s.ev.event.kind {
            EventKind::Identify(i) => i.traits.get(&name).cloned(),
            _ => None,
        });
        if let Some(v) = value {
            p.traits.insert(name, v);
        }
    }
    p.last_page = latest(events, |s| match &s.ev.event.kind {
        EventKind::PageView(pv) => Some(Page {
            path: s.ev.enrichment.page_path.clone(),
            title: pv
                .title
                .clone()
                .or_else(|| s.ev.event.context.page.as_ref().and_then(|pg| pg.title.clone())),
        }),
        _ => None,
    });
    let count = |f: &dyn Fn(&EventKind) -> u64| events.iter().map(|s| f(&s.ev.event.kind)).sum::<u64>();
    p.counters = Counters {
        events: events.len() as u64,
        page_views: count(&|k| matches!(k, EventKind::PageView(_)) as u64),
        clicks: count(&|k| matches!(k, EventKind::Click(_)) as u64),
        steps_completed: count(&|k| matches!(k, EventKind::StepCompleted(_)) as u64),
        features_used: count(&|k| matches!(k, EventKind::FeatureUsed(_)) as u64),
        invites_sent: count(&|k| match k {
            EventKind::InviteSent(i) => u64::from(i.count),
            _ => 0,
        }),
        ..Counters::default()
    };
    // Sessions, walking each id's events in partition order.
    for group in groups {
        let mut latest_t: Option<i64> = None;
        for s in group.iter() {
            if s.expired {
                latest_t = None;
            }
            match latest_t {
                None => p.counters.sessions += 1,
                Some(last) if s.t > last + cfg.session_timeout_ms => p.counters.sessions += 1,
                Some(last) if s.t >= last => p.counters.time_spent_ms += (s.t - last).min(cfg.max_page_time_ms) as u64,
                Some(_) => {}
            }
            latest_t = Some(latest_t.map_or(s.t, |l| l.max(s.t)));
        }
    }
    // Steps: the step an event completes, with its first completion time and its funnel
    // position (every event of a step gives the same one under one funnel; the smallest).
    for s in events {
        let name = match &s.ev.event.kind {
            EventKind::StepCompleted(sc) => Some(sc.step.clone()),
            _ => s.ev.enrichment.funnel.as_ref().map(|f| f.step.clone()),
        };
        let Some(name) = name else { continue };
        let funnel = s.ev.enrichment.funnel.as_ref();
        let entry = p.steps.entry(name).or_insert(StepProgress {
            first_completed_ms: s.t,
            index: None,
            next: None,
        });
        entry.first_completed_ms = entry.first_completed_ms.min(s.t);
        if let Some(f) = funnel {
            if entry.index.is_none() || (Some(f.index), f.next.as_deref()) < (entry.index, entry.next.as_deref()) {
                entry.index = Some(f.index);
                entry.next = f.next.clone();
            }
        }
    }
    let total = events
        .iter()
        .filter_map(|s| s.ev.enrichment.funnel.as_ref().map(|f| f.total))
        .max()
        .unwrap_or(0);
    let funnel_steps: Vec<(&String, &StepProgress)> = p.steps.iter().filter(|(_, st)| st.index.is_some()).collect();
    let furthest = funnel_steps.iter().max_by_key(|(_, st)| st.index);
    p.funnel = FunnelProgress {
        total_steps: total,
        completed_steps: funnel_steps.len() as u32,
        progress_pct: (funnel_steps.len() as u32 * 100)
            .checked_div(total)
            .unwrap_or(0)
            .min(100),
        current_step: furthest.map(|(n, _)| (*n).clone()),
        next_step: furthest.and_then(|(_, st)| st.next.clone()),
    };
    p.acquisition = events
        .iter()
        .filter(|s| s.ev.enrichment.campaign.is_some() || s.ev.enrichment.referrer_host.is_some())
        .map(|s| FirstTouch {
            acquisition: Acquisition {
                campaign: s.ev.enrichment.campaign.clone(),
                referrer_host: s.ev.enrichment.referrer_host.clone(),
            },
            at_ms: s.t,
            offset: s.offset,
        })
        .min_by_key(|touch| (touch.at_ms, touch.offset, json(&touch.acquisition)));
    p.last_device = latest(events, |s| {
        s.ev.event
            .context
            .user_agent
            .as_ref()
            .map(|_| s.ev.enrichment.device.clone())
    });
    p.locale = latest(events, |s| s.ev.enrichment.locale.clone());
    // The newest events, by (time, offset, event id); one entry per such key.
    let mut recent: Vec<RecentEvent> = events
        .iter()
        .map(|s| RecentEvent {
            event_id: s.ev.event.event_id.clone(),
            event_type: s.ev.event.type_name().to_string(),
            at_ms: s.t,
            offset: s.offset,
        })
        .collect();
    recent.sort_by(|a, b| {
        (b.at_ms, b.offset, &b.event_id, &b.event_type).cmp(&(a.at_ms, a.offset, &a.event_id, &a.event_type))
    });
    recent.dedup_by(|later, kept| {
        (later.at_ms, later.offset, &later.event_id) == (kept.at_ms, kept.offset, &kept.event_id)
    });
    recent.truncate(RECENT_EVENTS);
    p.recent_events = recent;
    p.as_of = AsOf {
        offset: events.iter().map(|s| s.offset).max().unwrap_or(-1),
        event_time_ms: p.last_seen_ms,
    };
    p
}
