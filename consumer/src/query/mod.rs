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
//!         println!("{}", p.profile.user_id);
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
use onramp_schemas::{Hints, Profile};
use serde::{Deserialize, Serialize};

use crate::store::{LinkConflict, Person, Store, StoreError};

mod decision;
mod funnel;
pub use decision::{decision, DecisionError};
pub use funnel::{format_duration_ms, funnel_stats, render_funnel, FunnelStats, StepStats};

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

/// A person as the read side shows it: the merged profile of all its ids (`user_id` is the
/// person id) with the ids it is made of. What `onramp export` writes per line and list
/// pages hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonView {
    /// The merged profile; its `user_id` is the person id.
    #[serde(flatten)]
    pub profile: Profile,
    /// The anonymous ids merged into it (the visits before sign-up, other devices).
    pub anonymous_ids: Vec<String>,
    /// Per partition holding any of its ids, that partition's checkpoint: every record of
    /// the person up to it is folded in.
    pub as_of_partitions: BTreeMap<u32, i64>,
    /// Other users' claims on its anonymous ids, and its own on ids another user owns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_conflicts: Vec<LinkConflict>,
}

impl From<Person> for PersonView {
    fn from(p: Person) -> Self {
        PersonView {
            profile: p.profile,
            anonymous_ids: p.anonymous_ids,
            as_of_partitions: p.as_of_partitions,
            link_conflicts: p.link_conflicts,
        }
    }
}

/// A person as JSON with its hints (judged at [`reference_time_ms`], or at its own last
/// event when no partition has a clock yet) and the id that was `asked` for: what `onramp
/// profile get` prints and `GET /v1/profiles/{id}` answers.
pub fn person_with_hints(store: &Store, person: Person, asked: &str) -> Result<serde_json::Value, StoreError> {
    Ok(person_with_hints_at(person, asked, reference_time_ms(store)?))
}

/// [`person_with_hints`] judged at `reference` (the latest watermark of the stores the
/// person was read from; `None`: the person's own last event).
pub fn person_with_hints_at(person: Person, asked: &str, reference: Option<i64>) -> serde_json::Value {
    let reference = reference.unwrap_or(person.profile.last_seen_ms);
    let hints = person.profile.hints(reference);
    let mut value = serde_json::to_value(PersonView::from(person)).unwrap_or_default();
    value["asked"] = serde_json::json!(asked);
    value["hints"] = serde_json::json!(hints);
    value
}

/// Parses an `active_since` filter (an RFC 3339 time) to epoch milliseconds.
pub fn parse_active_since(t: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|e| format!("`{t}` is not an RFC 3339 time: {e}"))
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

    /// Whether this hint is among `hints` (a profile's, judged at some reference time).
    pub fn is_in(self, hints: &Hints) -> bool {
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
            && self.hint.is_none_or(|h| h.is_in(&profile.hints(reference_ms)))
    }
}

/// One page of [`list_profiles`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfilePage {
    /// Matching persons, in person-id order.
    pub profiles: Vec<PersonView>,
    /// Pass it back to get the next page; `None` when no matching profile follows.
    pub next_cursor: Option<String>,
}

/// Lists the persons whose merged profile matches `filter`, in person-id order, strictly
/// after `cursor`, at most `limit` of them (clamped to `1..=MAX_PAGE_LIMIT`). An anonymous
/// id merged into a user is listed only as part of that user.
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
    for person in store.persons_after(cursor) {
        let person = person?;
        if !filter.matches(&person.profile, reference_ms) {
            continue;
        }
        if profiles.len() == limit {
            more = true;
            break;
        }
        profiles.push(PersonView::from(person));
    }
    let next_cursor = if more {
        profiles.last().map(|p| p.profile.user_id.clone())
    } else {
        None
    };
    Ok(ProfilePage { profiles, next_cursor })
}

/// Writes every person ([`PersonView`]) as one compact JSON line, in person-id order, and
/// returns how many it wrote. Time-dependent hints are not included, so the same store
/// always exports the same bytes.
pub fn export_lines(store: &Store, out: &mut impl Write) -> Result<u64, anyhow::Error> {
    let mut count = 0u64;
    for person in store.persons_after(None) {
        let person = PersonView::from(person?);
        write_line(out, &person, &person.profile.user_id)?;
        count += 1;
    }
    out.flush().context("flushing the export")?;
    Ok(count)
}

/// Writes every stored profile, one per id (an anonymous id and its user apart), as one
/// compact JSON line in id order: the store's contents exactly, a faithful backup.
pub fn export_id_lines(store: &Store, out: &mut impl Write) -> Result<u64, anyhow::Error> {
    let mut count = 0u64;
    for profile in store.profiles_after(None) {
        let profile = profile?;
        write_line(out, &profile, &profile.user_id)?;
        count += 1;
    }
    out.flush().context("flushing the export")?;
    Ok(count)
}

fn write_line(out: &mut impl Write, value: &impl Serialize, id: &str) -> Result<(), anyhow::Error> {
    serde_json::to_writer(&mut *out, value).with_context(|| format!("writing `{id}` as JSON"))?;
    out.write_all(b"\n").context("writing the export")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{Batch, StoreSettings};
    use onramp_schemas::profile::STALLED_AFTER_MS;
    use onramp_schemas::{Changes, Counters, FunnelStep, ProfileUpdate, StepChange};

    pub(crate) const DAY: i64 = STALLED_AFTER_MS;
    pub(crate) const FUNNEL: [&str; 3] = ["sign_up", "profile", "workspace"];

    pub(crate) fn funnel() -> Vec<String> {
        FUNNEL.iter().map(|s| s.to_string()).collect()
    }

    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
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
    pub(crate) struct Ev<'a> {
        pub(crate) user: &'a str,
        pub(crate) t: i64,
        pub(crate) step: Option<&'a str>,
        pub(crate) completes_onboarding: bool,
        pub(crate) features_used: u64,
    }

    pub(crate) fn ev<'a>(user: &'a str, t: i64, step: Option<&'a str>) -> Ev<'a> {
        Ev {
            user,
            t,
            step,
            completes_onboarding: false,
            features_used: 0,
        }
    }

    /// Commits `events` as one batch with distinct offsets after those already used.
    pub(crate) fn commit(store: &Store, events: &[Ev<'_>]) {
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
                ProfileUpdate::applied(
                    e.user,
                    offset,
                    format!("e{offset}"),
                    "step_completed",
                    e.t,
                    Some(Changes {
                        step,
                        onboarding_completed: e.completes_onboarding,
                        counters: Counters {
                            events: 1,
                            features_used: e.features_used,
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                )
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
        page.profiles.iter().map(|p| p.profile.user_id.as_str()).collect()
    }

    fn listed(store: &Store, filter: ProfileFilter) -> Vec<String> {
        let page = list_profiles(store, &filter, None, MAX_PAGE_LIMIT).expect("list");
        assert_eq!(page.next_cursor, None);
        page.profiles.into_iter().map(|p| p.profile.user_id).collect()
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
