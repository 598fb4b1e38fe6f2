//! The stored per-user profile and [`Profile::apply`], the one function that folds a
//! [`ProfileUpdate`] into it.
//!
//! The rules that make the fold correct under retries, restarts and disorder
//! (ARCHITECTURE.md, "The fold rules"):
//! - last-writer-wins values ([`Lww`]) keep the value with the greatest
//!   `(event time, offset)`, so a late event never overwrites a newer one; a tie (writes
//!   from two partitions) is decided by the value, never by commit order;
//! - "first" times (sign-up, step completion, first touch) keep the smallest event time;
//! - counters add up, which is order-free;
//! - `recent_events` keeps the [`RECENT_EVENTS`] greatest `(event time, offset, event id)`
//!   entries;
//! - updates whose outcome is not `applied` change nothing;
//! - [`Profile::merge`] combines the profiles of several ids (one person) field by field
//!   with the same rules, so the merged person does not depend on the order of the ids.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enriched::Device;
use crate::event::TraitValue;
use crate::update::{Acquisition, Counters, Outcome, Page, ProfileUpdate};

/// How many recent events a profile keeps.
pub const RECENT_EVENTS: usize = 10;
/// How many of a user's most recent event ids the fold remembers for dedup.
pub const DEDUP_IDS: usize = 32;
/// A user with no event for this long (by the reference time given to
/// [`Profile::hints`]) who has not completed onboarding is `stalled`.
pub const STALLED_AFTER_MS: i64 = 24 * 60 * 60 * 1000;
/// Feature uses that make a user `activated` even before onboarding is completed.
pub const ACTIVATED_FEATURE_USES: u64 = 3;

/// A value with the event time and offset that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Lww<T> {
    /// The value.
    pub value: T,
    /// Event time of the write, ms since the epoch.
    pub at_ms: i64,
    /// Offset of the write.
    pub offset: i64,
}

impl<T: Serialize> Lww<T> {
    /// Sets `slot` to `value` unless it already holds a write with a greater `(event time,
    /// offset)`. Equal `(event time, offset)` — possible only for writes from different
    /// partitions — are decided by the values' JSON, so the result never depends on which
    /// partition committed first.
    pub fn merge(slot: &mut Option<Lww<T>>, value: T, at_ms: i64, offset: i64) {
        Lww::join(slot, Some(Lww { value, at_ms, offset }));
    }

    /// Keeps in `slot` the greater of its write and `other`, in the one order every
    /// last-writer-wins value uses: `(event time, offset)`, then the value's JSON. That is
    /// a maximum in a total order (up to values with equal JSON, which are equal values), so
    /// `join` is associative, commutative and idempotent, with `None` as the identity.
    pub fn join(slot: &mut Option<Lww<T>>, other: Option<Lww<T>>) {
        if let Some(other) = other {
            if slot.as_ref().is_none_or(|cur| other.beats(cur)) {
                *slot = Some(other);
            }
        }
    }

    /// True when `self` is greater than `cur` in the order of [`Lww::join`].
    fn beats(&self, cur: &Lww<T>) -> bool {
        match (self.at_ms, self.offset).cmp(&(cur.at_ms, cur.offset)) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => json(&self.value) > json(&cur.value),
        }
    }
}

/// A value's JSON bytes: the order-free tie-break of writes with equal `(event time,
/// offset)` (possible only across partitions).
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// [`Lww::join`] for one trait of a trait map.
fn join_trait(traits: &mut BTreeMap<String, Lww<TraitValue>>, name: &str, write: Lww<TraitValue>) {
    match traits.get_mut(name) {
        Some(cur) => {
            if write.beats(cur) {
                *cur = write;
            }
        }
        None => {
            traits.insert(name.to_string(), write);
        }
    }
}

/// What the profile aggregate remembers about one user between events. It lives in the
/// SmartModule's memory and, so that a restart can rebuild it, in the consumer's store
/// (per partition: a user whose records reach several partitions has one per partition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UserFoldState {
    /// Greatest event time seen for the user, ms.
    pub last_active_ms: i64,
    /// The user's last [`DEDUP_IDS`] event ids, oldest first.
    pub recent_ids: Vec<String>,
}

impl UserFoldState {
    /// Records an accepted event.
    pub fn observe(&mut self, event_id: &str, event_time_ms: i64) {
        self.last_active_ms = self.last_active_ms.max(event_time_ms);
        if self.recent_ids.len() >= DEDUP_IDS {
            self.recent_ids.remove(0);
        }
        self.recent_ids.push(event_id.to_string());
    }

    /// True when `event_id` is among the remembered ids.
    pub fn has_seen(&self, event_id: &str) -> bool {
        self.recent_ids.iter().any(|id| id == event_id)
    }
}

/// A completed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StepProgress {
    /// Event time of the first completion, ms.
    pub first_completed_ms: i64,
    /// Position in the funnel, if it is a funnel step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The funnel step after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Progress through the funnel, derived from `steps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FunnelProgress {
    /// Steps in the funnel (0 until a funnel step is seen).
    pub total_steps: u32,
    /// Funnel steps completed.
    pub completed_steps: u32,
    /// `completed_steps` as a whole percentage of `total_steps`.
    pub progress_pct: u32,
    /// The furthest funnel step completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// The step after `current_step`; `None` at the end of the funnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

/// First touch: the earliest event (by event time, then offset) that carried campaign or
/// referrer information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirstTouch {
    /// Campaign and referrer.
    #[serde(flatten)]
    pub acquisition: Acquisition,
    /// Event time, ms.
    pub at_ms: i64,
    /// Offset.
    pub offset: i64,
}

impl FirstTouch {
    /// Keeps in `slot` the earlier of its first touch and `other`: smallest `(event time,
    /// offset)`, ties (two partitions) by the smaller acquisition JSON. A minimum in a
    /// total order, so order-free; shared by [`Profile::apply`] and [`Profile::merge`].
    fn join(slot: &mut Option<FirstTouch>, other: FirstTouch) {
        let earlier = match slot {
            Some(cur) => match (other.at_ms, other.offset).cmp(&(cur.at_ms, cur.offset)) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => json(&other.acquisition) < json(&cur.acquisition),
            },
            None => true,
        };
        if earlier {
            *slot = Some(other);
        }
    }
}

/// An entry of the recent-events list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecentEvent {
    /// Event id.
    pub event_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event time, ms.
    pub at_ms: i64,
    /// Offset.
    pub offset: i64,
}

/// How fresh a profile is: the greatest offset and event time folded into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AsOf {
    /// Greatest offset applied.
    pub offset: i64,
    /// Greatest event time applied, ms.
    pub event_time_ms: i64,
}

/// Derived, time-dependent labels; computed on read, never stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Hints {
    /// Onboarding not completed and no event for [`STALLED_AFTER_MS`].
    pub stalled: bool,
    /// Onboarding completed, or at least [`ACTIVATED_FEATURE_USES`] feature uses.
    pub activated: bool,
}

/// Everything onramp knows about one user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Profile {
    /// The user (or anonymous) id.
    pub user_id: String,
    /// Earliest event time, ms.
    pub first_seen_ms: i64,
    /// Latest event time, ms.
    pub last_seen_ms: i64,
    /// Event time of the sign-up, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_up_ms: Option<i64>,
    /// Event time of the email verification, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified_ms: Option<i64>,
    /// Event time onboarding was completed, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<i64>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Lww<String>>,
    /// The anonymous id linked to this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<Lww<String>>,
    /// Traits, last writer wins per trait.
    #[serde(default)]
    pub traits: BTreeMap<String, Lww<TraitValue>>,
    /// The last page viewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_page: Option<Lww<Page>>,
    /// Counters.
    pub counters: Counters,
    /// Steps completed, by name.
    #[serde(default)]
    pub steps: BTreeMap<String, StepProgress>,
    /// Funnel progress.
    pub funnel: FunnelProgress,
    /// First-touch acquisition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition: Option<FirstTouch>,
    /// The last device seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_device: Option<Lww<Device>>,
    /// The last locale seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Lww<String>>,
    /// The [`RECENT_EVENTS`] most recent events, newest first.
    #[serde(default)]
    pub recent_events: Vec<RecentEvent>,
    /// How fresh the profile is.
    pub as_of: AsOf,
}

impl Profile {
    /// An empty profile for `user_id`.
    pub fn new(user_id: impl Into<String>) -> Self {
        Profile {
            user_id: user_id.into(),
            first_seen_ms: i64::MAX,
            last_seen_ms: i64::MIN,
            as_of: AsOf {
                offset: -1,
                event_time_ms: i64::MIN,
            },
            ..Profile::default()
        }
    }

    /// Folds one update into the profile. Returns `false` (and changes nothing) for
    /// updates that are not `applied`.
    pub fn apply(&mut self, update: &ProfileUpdate) -> bool {
        let Some(changes) = update.changes.as_ref() else {
            return false;
        };
        if update.outcome != Outcome::Applied {
            return false;
        }
        let t = update.event_time_ms;
        let off = update.offset;

        self.first_seen_ms = self.first_seen_ms.min(t);
        self.last_seen_ms = self.last_seen_ms.max(t);
        self.as_of.offset = self.as_of.offset.max(off);
        self.as_of.event_time_ms = self.as_of.event_time_ms.max(t);

        self.counters.add(&changes.counters);

        if changes.signed_up {
            min_into(&mut self.signed_up_ms, t);
        }
        if changes.email_verified {
            min_into(&mut self.email_verified_ms, t);
        }
        if changes.onboarding_completed {
            min_into(&mut self.completed_ms, t);
        }
        if let Some(step) = &changes.step {
            let entry = self.steps.entry(step.name.clone()).or_insert_with(|| StepProgress {
                first_completed_ms: t,
                index: None,
                next: None,
            });
            entry.first_completed_ms = entry.first_completed_ms.min(t);
            if let Some(f) = &step.funnel {
                entry.index = Some(f.index);
                entry.next = f.next.clone();
                self.funnel.total_steps = self.funnel.total_steps.max(f.total);
            }
            self.derive_funnel();
        }
        if let Some(page) = &changes.page {
            Lww::merge(&mut self.last_page, page.clone(), t, off);
        }
        for (name, value) in &changes.traits {
            let write = Lww {
                value: value.clone(),
                at_ms: t,
                offset: off,
            };
            join_trait(&mut self.traits, name, write);
        }
        if let Some(email) = &changes.email {
            Lww::merge(&mut self.email, email.clone(), t, off);
        }
        if let Some(anon) = &changes.anonymous_id {
            Lww::merge(&mut self.anonymous_id, anon.clone(), t, off);
        }
        if let Some(acq) = &changes.acquisition {
            let touch = FirstTouch {
                acquisition: acq.clone(),
                at_ms: t,
                offset: off,
            };
            FirstTouch::join(&mut self.acquisition, touch);
        }
        if let Some(device) = &changes.device {
            Lww::merge(&mut self.last_device, device.clone(), t, off);
        }
        if let Some(locale) = &changes.locale {
            Lww::merge(&mut self.locale, locale.clone(), t, off);
        }
        self.push_recent(RecentEvent {
            event_id: update.event_id.clone(),
            event_type: update.event_type.clone().unwrap_or_default(),
            at_ms: t,
            offset: off,
        });
        true
    }

    /// Combines `other`, the stored profile of another id of the same person (an anonymous
    /// id and the user id it was linked to), into `self`. The caller sets `user_id` on the
    /// result; `merge` leaves it as it is and reads nothing else from it.
    ///
    /// Every field is combined by a join (a commutative, associative operation, the same
    /// rule [`Profile::apply`] folds an update with), so `merge` is commutative and
    /// associative: the merged person is the same whatever order the ids' profiles are
    /// combined in, and merging the profiles of two sets of updates gives the profile of all
    /// of them. `Profile::new(_)` is the identity (apart from `user_id`):
    /// - `first_seen_ms`, `signed_up_ms`, `email_verified_ms`, `completed_ms`: the minimum
    ///   (over the `Some`s); `last_seen_ms` and both fields of `as_of`: the maximum;
    /// - `email`, `anonymous_id`, `last_page`, `last_device`, `locale` and each trait (keys
    ///   united): [`Lww::join`], the maximum by `(event time, offset, value JSON)`;
    /// - `counters`: [`Counters::add`] (saturating addition of naturals is associative);
    /// - `steps`: united by name; `first_completed_ms` the minimum; `(index, next)` the
    ///   minimum with `index: None` after every `Some`, so a funnel position beats none and
    ///   two positions (only if the funnel changed) resolve the same way in any order;
    ///   `funnel.total_steps` the maximum, the rest of `funnel` derived from them;
    /// - `acquisition`: the earliest first touch (the rule `apply` uses);
    /// - `recent_events`: the union, without repeats of one `(event id, offset, event
    ///   time)`, cut to the [`RECENT_EVENTS`] greatest by the key `apply` sorts them by.
    pub fn merge(&mut self, other: &Profile) {
        self.first_seen_ms = self.first_seen_ms.min(other.first_seen_ms);
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
        for (slot, theirs) in [
            (&mut self.signed_up_ms, other.signed_up_ms),
            (&mut self.email_verified_ms, other.email_verified_ms),
            (&mut self.completed_ms, other.completed_ms),
        ] {
            if let Some(t) = theirs {
                min_into(slot, t);
            }
        }
        Lww::join(&mut self.email, other.email.clone());
        Lww::join(&mut self.anonymous_id, other.anonymous_id.clone());
        Lww::join(&mut self.last_page, other.last_page.clone());
        Lww::join(&mut self.last_device, other.last_device.clone());
        Lww::join(&mut self.locale, other.locale.clone());
        for (name, write) in &other.traits {
            join_trait(&mut self.traits, name, write.clone());
        }
        self.counters.add(&other.counters);

        // A funnel position beats none; of two, the smaller (index, next). Order-free.
        fn position(s: &StepProgress) -> (bool, Option<u32>, Option<&str>) {
            (s.index.is_none(), s.index, s.next.as_deref())
        }
        for (name, theirs) in &other.steps {
            match self.steps.get_mut(name) {
                Some(ours) => {
                    ours.first_completed_ms = ours.first_completed_ms.min(theirs.first_completed_ms);
                    if position(theirs) < position(ours) {
                        ours.index = theirs.index;
                        ours.next = theirs.next.clone();
                    }
                }
                None => {
                    self.steps.insert(name.clone(), theirs.clone());
                }
            }
        }
        self.funnel.total_steps = self.funnel.total_steps.max(other.funnel.total_steps);
        self.derive_funnel();

        if let Some(touch) = &other.acquisition {
            FirstTouch::join(&mut self.acquisition, touch.clone());
        }

        let mut recent: Vec<RecentEvent> = self.recent_events.drain(..).collect();
        recent.extend(other.recent_events.iter().cloned());
        // Greatest key first; a repeat keeps the greatest event type, an order-free choice.
        recent.sort_by(|a, b| (recent_key(b), &b.event_type).cmp(&(recent_key(a), &a.event_type)));
        recent.dedup_by(|later, kept| recent_key(later) == recent_key(kept));
        recent.truncate(RECENT_EVENTS);
        self.recent_events = recent;

        self.as_of.offset = self.as_of.offset.max(other.as_of.offset);
        self.as_of.event_time_ms = self.as_of.event_time_ms.max(other.as_of.event_time_ms);
    }

    fn push_recent(&mut self, entry: RecentEvent) {
        let pos = self
            .recent_events
            .iter()
            .position(|e| recent_key(e) < recent_key(&entry))
            .unwrap_or(self.recent_events.len());
        self.recent_events.insert(pos, entry);
        self.recent_events.truncate(RECENT_EVENTS);
    }

    fn derive_funnel(&mut self) {
        let mut completed = 0u32;
        let mut furthest: Option<(u32, &String, &Option<String>)> = None;
        for (name, step) in &self.steps {
            if let Some(index) = step.index {
                completed += 1;
                if furthest.is_none_or(|(i, _, _)| index > i) {
                    furthest = Some((index, name, &step.next));
                }
            }
        }
        let f = &mut self.funnel;
        f.completed_steps = completed;
        f.progress_pct = (completed * 100).checked_div(f.total_steps).unwrap_or(0).min(100);
        f.current_step = furthest.map(|(_, name, _)| name.clone());
        f.next_step = furthest.and_then(|(_, _, next)| next.clone());
    }

    /// Derived labels, judged against `reference_ms` (an event or record time, e.g. the
    /// partition's newest event time; never the wall clock, so replays agree).
    pub fn hints(&self, reference_ms: i64) -> Hints {
        let completed = self.completed_ms.is_some();
        Hints {
            stalled: !completed && reference_ms.saturating_sub(self.last_seen_ms) >= STALLED_AFTER_MS,
            activated: completed || self.counters.features_used >= ACTIVATED_FEATURE_USES,
        }
    }
}

/// The order of the recent-events list (greatest first). The event id breaks ties of events
/// from different partitions, so the list does not depend on the order they arrive in.
fn recent_key(e: &RecentEvent) -> (i64, i64, &str) {
    (e.at_ms, e.offset, &e.event_id)
}

fn min_into(slot: &mut Option<i64>, t: i64) {
    *slot = Some(slot.map_or(t, |cur| cur.min(t)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::{Changes, StepChange};
    use crate::FunnelStep;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn update(id: &str, offset: i64, t: i64, changes: Changes) -> ProfileUpdate {
        ProfileUpdate::applied("u", offset, id, "identify", t, Some(changes))
    }

    fn trait_change(v: &str) -> Changes {
        Changes {
            traits: [("plan".to_string(), TraitValue::Text(v.into()))].into(),
            counters: Counters {
                events: 1,
                ..Counters::default()
            },
            ..Changes::default()
        }
    }

    #[test]
    fn late_writes_never_overwrite_newer_ones() {
        let mut p = Profile::new("u");
        p.apply(&update("a", 0, 2_000, trait_change("pro")));
        p.apply(&update("b", 1, 1_000, trait_change("free")));
        assert_eq!(p.traits["plan"].value, TraitValue::Text("pro".into()));
        // equal event time: the greater offset wins
        p.apply(&update("c", 2, 2_000, trait_change("team")));
        assert_eq!(p.traits["plan"].value, TraitValue::Text("team".into()));
        assert_eq!((p.first_seen_ms, p.last_seen_ms, p.counters.events), (1_000, 2_000, 3));
    }

    #[test]
    fn value_fields_do_not_depend_on_apply_order() {
        let ups = [
            update("a", 0, 3_000, trait_change("x")),
            update("b", 1, 1_000, trait_change("y")),
            update("c", 2, 2_000, trait_change("z")),
        ];
        let mut forward = Profile::new("u");
        ups.iter().for_each(|u| {
            forward.apply(u);
        });
        let mut backward = Profile::new("u");
        ups.iter().rev().for_each(|u| {
            backward.apply(u);
        });
        assert_eq!(forward.traits, backward.traits);
        assert_eq!(forward.counters, backward.counters);
        assert_eq!(forward.recent_events, backward.recent_events);
        assert_eq!(forward.recent_events[0].event_id, "a", "newest first");
    }

    #[test]
    fn steps_keep_the_first_completion_and_derive_progress() {
        let mut p = Profile::new("u");
        p.apply(&update("a", 0, 5_000, step("profile", 1, Some("workspace"))));
        p.apply(&update("b", 1, 4_000, step("profile", 1, Some("workspace"))));
        p.apply(&update("c", 2, 3_000, step("sign_up", 0, Some("profile"))));
        assert_eq!(p.steps["profile"].first_completed_ms, 4_000);
        assert_eq!(p.funnel.completed_steps, 2);
        assert_eq!(p.funnel.progress_pct, 50);
        assert_eq!(p.funnel.current_step.as_deref(), Some("profile"));
        assert_eq!(p.funnel.next_step.as_deref(), Some("workspace"));
    }

    #[test]
    fn duplicates_and_skips_change_nothing() {
        let mut p = Profile::new("u");
        p.apply(&update("a", 0, 1_000, trait_change("x")));
        let before = p.clone();
        let mut dup = update("a", 1, 1_000, trait_change("y"));
        dup.outcome = Outcome::Duplicate;
        assert!(!p.apply(&dup));
        assert_eq!(p, before);
    }

    /// Proves the aggregate's per-user state keeps the last ids and starts afresh on reset.
    #[test]
    fn fold_state_keeps_the_last_ids() {
        let mut f = UserFoldState::default();
        for i in 0..(DEDUP_IDS as i64 + 5) {
            f.observe(&format!("e{i}"), 1_000 + i);
        }
        assert_eq!(f.recent_ids.len(), DEDUP_IDS);
        assert_eq!(f.recent_ids[0], "e5");
        assert!(f.has_seen("e36") && !f.has_seen("e4"));
        assert_eq!(f.last_active_ms, 1_000 + DEDUP_IDS as i64 + 4);
    }

    fn step(name: &str, index: u32, next: Option<&str>) -> Changes {
        Changes {
            step: Some(StepChange {
                name: name.into(),
                funnel: Some(FunnelStep {
                    step: name.into(),
                    index,
                    total: 4,
                    next: next.map(String::from),
                }),
            }),
            ..Changes::default()
        }
    }

    fn merged(a: &Profile, b: &Profile) -> Profile {
        let mut m = a.clone();
        m.merge(b);
        m.user_id = "person".into();
        m
    }

    /// Proves merging an anonymous visitor's profile with the signed-up user's gives the
    /// person: earliest first touch and first seen, latest values, summed counters, both
    /// steps, in either order.
    #[test]
    fn merge_combines_a_visitor_and_a_user() {
        let mut anon = Profile::new("anon");
        let touch = Acquisition {
            referrer_host: Some("news.example".into()),
            ..Acquisition::default()
        };
        let visit = Changes {
            acquisition: Some(touch.clone()),
            counters: Counters {
                events: 1,
                page_views: 1,
                ..Counters::default()
            },
            ..step("landing", 0, Some("sign_up"))
        };
        anon.apply(&ProfileUpdate::applied(
            "anon",
            4,
            "a1",
            "page_view",
            1_000,
            Some(visit),
        ));
        anon.apply(&update("a2", 5, 3_000, trait_change("free")));
        let mut user = Profile::new("user");
        let sign_up = Changes {
            signed_up: true,
            email: Some("p@example.com".into()),
            anonymous_id: Some("anon".into()),
            ..step("sign_up", 1, None)
        };
        user.apply(&update("u1", 0, 2_000, sign_up));
        user.apply(&update("u2", 1, 2_500, trait_change("pro")));

        let person = merged(&anon, &user);
        assert_eq!(person, merged(&user, &anon));
        assert_eq!((person.first_seen_ms, person.last_seen_ms), (1_000, 3_000));
        assert_eq!(person.signed_up_ms, Some(2_000));
        assert_eq!(person.email.as_ref().map(|e| e.value.as_str()), Some("p@example.com"));
        assert_eq!(
            person.traits["plan"].value,
            TraitValue::Text("free".into()),
            "the later write"
        );
        assert_eq!(person.acquisition.as_ref().map(|t| &t.acquisition), Some(&touch));
        assert_eq!((person.counters.events, person.counters.page_views), (3, 1));
        assert_eq!(person.funnel.completed_steps, 2);
        assert_eq!(person.funnel.current_step.as_deref(), Some("sign_up"));
        let ids: Vec<&str> = person.recent_events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["a2", "u2", "u1", "a1"]);
        assert_eq!(
            person.as_of,
            AsOf {
                offset: 5,
                event_time_ms: 3_000
            }
        );
        assert_eq!(
            merged(&person, &Profile::new("x")),
            person,
            "the empty profile is the identity"
        );
    }

    /// Proves equal (event time, offset) on two ids' profiles (two partitions) is decided by
    /// the value, as `apply` decides it, whichever profile is merged into which.
    #[test]
    fn merge_breaks_ties_by_value_as_apply_does() {
        let mut a = Profile::new("a");
        a.apply(&update("x", 7, 1_000, trait_change("free")));
        let mut b = Profile::new("b");
        b.apply(&update("y", 7, 1_000, trait_change("pro")));
        let mut both = Profile::new("person");
        both.apply(&update("y", 7, 1_000, trait_change("pro")));
        both.apply(&update("x", 7, 1_000, trait_change("free")));
        assert_eq!(merged(&a, &b), both);
        assert_eq!(merged(&b, &a), both);
        assert_eq!(both.traits["plan"].value, TraitValue::Text("pro".into()));
    }

    /// Proves a step's funnel position survives a merge with a profile that completed the
    /// step without one, and that two different positions resolve to the smaller.
    #[test]
    fn merge_keeps_a_funnel_position() {
        let mut with = Profile::new("a");
        with.apply(&update("x", 0, 2_000, step("profile", 1, Some("workspace"))));
        let mut without = Profile::new("b");
        let plain = Changes {
            step: Some(StepChange {
                name: "profile".into(),
                funnel: None,
            }),
            ..Changes::default()
        };
        without.apply(&update("y", 0, 1_000, plain));
        let m = merged(&without, &with);
        assert_eq!(m, merged(&with, &without));
        assert_eq!(m.steps["profile"].first_completed_ms, 1_000);
        assert_eq!(m.steps["profile"].index, Some(1));
        assert_eq!(m.funnel.next_step.as_deref(), Some("workspace"));

        let mut moved = Profile::new("c");
        moved.apply(&update("z", 0, 3_000, step("profile", 2, None)));
        assert_eq!(merged(&m, &moved).steps["profile"].index, Some(1));
        assert_eq!(merged(&moved, &m).steps["profile"].index, Some(1));
    }

    /// Proves recent events are united once each and cut to the greatest, newest first.
    #[test]
    fn merge_keeps_the_newest_recent_events_once() {
        let mut a = Profile::new("a");
        let mut b = Profile::new("b");
        for i in 0..RECENT_EVENTS as i64 {
            a.apply(&update(&format!("a{i}"), i, 1_000 + 2 * i, Changes::default()));
            b.apply(&update(&format!("b{i}"), i, 1_001 + 2 * i, Changes::default()));
        }
        // The same event stored for both ids changes nothing.
        b.apply(&update("a9", 9, 1_018, Changes::default()));
        let m = merged(&a, &b);
        assert_eq!(m, merged(&b, &a));
        let ids: Vec<&str> = m.recent_events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["b9", "a9", "b8", "a8", "b7", "a7", "b6", "a6", "b5", "a5"]);
    }

    #[test]
    fn hints_use_a_reference_time() {
        let mut p = Profile::new("u");
        p.apply(&update("a", 0, 1_000, Changes::default()));
        assert!(!p.hints(1_000 + STALLED_AFTER_MS - 1).stalled);
        assert!(p.hints(1_000 + STALLED_AFTER_MS).stalled);
        assert!(!p.hints(0).activated);
    }
}
