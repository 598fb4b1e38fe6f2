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
//! - updates whose outcome is not `applied` change nothing.

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
        let newer = match slot {
            Some(cur) => match (at_ms, offset).cmp(&(cur.at_ms, cur.offset)) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => {
                    serde_json::to_vec(&value).unwrap_or_default() > serde_json::to_vec(&cur.value).unwrap_or_default()
                }
            },
            None => true,
        };
        if newer {
            *slot = Some(Lww { value, at_ms, offset });
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
            let mut slot = self.traits.remove(name);
            Lww::merge(&mut slot, value.clone(), t, off);
            if let Some(v) = slot {
                self.traits.insert(name.clone(), v);
            }
        }
        if let Some(email) = &changes.email {
            Lww::merge(&mut self.email, email.clone(), t, off);
        }
        if let Some(anon) = &changes.anonymous_id {
            Lww::merge(&mut self.anonymous_id, anon.clone(), t, off);
        }
        if let Some(acq) = &changes.acquisition {
            let earlier = match &self.acquisition {
                Some(cur) => match (t, off).cmp(&(cur.at_ms, cur.offset)) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    // Same time and offset on two partitions: an order-free choice.
                    std::cmp::Ordering::Equal => {
                        serde_json::to_vec(acq).unwrap_or_default()
                            < serde_json::to_vec(&cur.acquisition).unwrap_or_default()
                    }
                },
                None => true,
            };
            if earlier {
                self.acquisition = Some(FirstTouch {
                    acquisition: acq.clone(),
                    at_ms: t,
                    offset: off,
                });
            }
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

    fn push_recent(&mut self, entry: RecentEvent) {
        // The event id breaks ties of events from different partitions: order-free.
        let key = |e: &RecentEvent| (e.at_ms, e.offset, e.event_id.clone());
        let pos = self
            .recent_events
            .iter()
            .position(|e| key(e) < key(&entry))
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
        let step = |name: &str, index: u32, next: Option<&str>| Changes {
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
        };
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

    #[test]
    fn hints_use_a_reference_time() {
        let mut p = Profile::new("u");
        p.apply(&update("a", 0, 1_000, Changes::default()));
        assert!(!p.hints(1_000 + STALLED_AFTER_MS - 1).stalled);
        assert!(p.hints(1_000 + STALLED_AFTER_MS).stalled);
        assert!(!p.hints(0).activated);
    }
}
