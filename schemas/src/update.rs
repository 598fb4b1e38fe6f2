//! `ProfileUpdate`: what `onramp-profile` emits for every event it reads.
//!
//! One update per input record, keyed by user id. It carries the record's offset and the
//! event time, and the changes that one event makes; [`crate::Profile::apply`] folds it
//! into the stored profile. Updates are small and independent of how many users exist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enriched::{Campaign, Device, FunnelStep};
use crate::event::TraitValue;

/// The aggregate's output for one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProfileUpdate {
    /// The user the update is for (`user_id`, else `anonymous_id`); empty when skipped
    /// before an identity was known.
    pub user_id: String,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// What the aggregate did with the record.
    pub outcome: Outcome,
    /// Why the record was skipped, in words (only for `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Why the record was skipped, for machines (only for `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_kind: Option<SkipKind>,
    /// The event's id (empty when skipped before it was known).
    #[serde(default)]
    pub event_id: String,
    /// The event's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The event time, ms since the Unix epoch (0 when skipped).
    #[serde(default)]
    pub event_time_ms: i64,
    /// Live users the aggregate evicted, least recently active first, to stay within its
    /// `max_users` when it admitted this record's user (each loses its session and dedup
    /// window, as after `state_ttl`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evicted_users: u32,
    /// The changes to apply (only for `applied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ProfileUpdate {
    /// The update of a record the aggregate folded: `changes` to apply to `user_id`'s
    /// profile (none yet: the aggregate fills them in as it folds).
    pub fn applied(
        user_id: impl Into<String>,
        offset: i64,
        event_id: impl Into<String>,
        event_type: impl Into<String>,
        event_time_ms: i64,
        changes: Option<Changes>,
    ) -> Self {
        ProfileUpdate {
            user_id: user_id.into(),
            offset,
            outcome: Outcome::Applied,
            skip_reason: None,
            skip_kind: None,
            event_id: event_id.into(),
            event_type: Some(event_type.into()),
            event_time_ms,
            evicted_users: 0,
            changes,
        }
    }

    /// The update of a record the aggregate did not fold.
    pub fn skipped(offset: i64, kind: SkipKind, reason: impl Into<String>) -> Self {
        ProfileUpdate {
            user_id: String::new(),
            offset,
            outcome: Outcome::Skipped,
            skip_reason: Some(reason.into()),
            skip_kind: Some(kind),
            event_id: String::new(),
            event_type: None,
            event_time_ms: 0,
            evicted_users: 0,
            changes: None,
        }
    }

    /// True when the aggregate refused its restart snapshot: nothing is folded on the
    /// stream, and a consumer must stop rather than commit past it.
    pub fn refused_snapshot(&self) -> bool {
        self.skip_kind == Some(SkipKind::RefusedSnapshot)
    }
}

/// Why the aggregate skipped a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// At or below the restart snapshot's `resume_after`: the store already holds it.
    AlreadyApplied,
    /// The record is not an enriched event (e.g. a rejected-event record).
    NotEnriched,
    /// The event has neither `user_id` nor `anonymous_id`.
    MissingIdentity,
    /// The initial accumulator is not a valid restart snapshot, so nothing is folded on
    /// this stream: the consumer stops instead of committing past it.
    RefusedSnapshot,
    /// The event time is too far ahead of the partition's reference time; the event is
    /// quarantined (stored as a `timestamp_out_of_range` reject) and moves no watermark.
    EventTimeAhead,
    /// The SPU fed the record a second time (after cutting a fetch at `max_bytes`) and the
    /// aggregate no longer holds the update it gave the first time: the consumer must
    /// reopen the stream from its checkpoint instead of committing it.
    ReplayEvicted,
}

/// What the aggregate did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Folded into the profile.
    Applied,
    /// Same `event_id` already seen for this user inside the dedup window; changes nothing.
    Duplicate,
    /// The record was not an enriched event (see `skip_reason`); changes nothing.
    Skipped,
}

/// The changes one accepted event makes to its user's profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Changes {
    /// The user's fold state was started afresh (first event, or evicted after
    /// `state_ttl` of inactivity): the profile's fold state is reset before this event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_reset: bool,
    /// Counter increments, sessions (0 or 1: this event starts one) and time spent (the
    /// gap since the user's previous event, capped) included.
    pub counters: Counters,
    /// The event is a sign-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed_up: bool,
    /// The event is an email verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
    /// The event completes onboarding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub onboarding_completed: bool,
    /// The step this event completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepChange>,
    /// The page the user is on (page views only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
    /// Traits set by this event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, TraitValue>,
    /// The user's email address, if the event gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The anonymous id, when the event carries both ids (links the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// Campaign / referrer, when the event carries any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition: Option<Acquisition>,
    /// The device, when the event has a user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// The normalised locale, when the event has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// Counters. In an update they are increments; in a profile, totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Counters {
    /// Accepted events.
    pub events: u64,
    /// `page_view` events.
    pub page_views: u64,
    /// `click` events.
    pub clicks: u64,
    /// Sessions started.
    pub sessions: u64,
    /// Time spent, ms (sum of capped gaps between events of one session).
    pub time_spent_ms: u64,
    /// `step_completed` events.
    pub steps_completed: u64,
    /// `feature_used` events.
    pub features_used: u64,
    /// People invited.
    pub invites_sent: u64,
}

impl Counters {
    /// Adds `other` to `self`, saturating.
    pub fn add(&mut self, other: &Counters) {
        self.events = self.events.saturating_add(other.events);
        self.page_views = self.page_views.saturating_add(other.page_views);
        self.clicks = self.clicks.saturating_add(other.clicks);
        self.sessions = self.sessions.saturating_add(other.sessions);
        self.time_spent_ms = self.time_spent_ms.saturating_add(other.time_spent_ms);
        self.steps_completed = self.steps_completed.saturating_add(other.steps_completed);
        self.features_used = self.features_used.saturating_add(other.features_used);
        self.invites_sent = self.invites_sent.saturating_add(other.invites_sent);
    }
}

/// A completed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StepChange {
    /// The step's name.
    pub name: String,
    /// Where it is in the funnel, if it is a funnel step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel: Option<FunnelStep>,
}

/// A page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Page {
    /// Path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Where a user came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Acquisition {
    /// UTM parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Campaign>,
    /// Referrer host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_host: Option<String>,
}
