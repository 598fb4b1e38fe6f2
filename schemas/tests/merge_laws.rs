//! The laws of `Profile::merge`, property-tested on realistic profiles: each is built by
//! folding a random sequence of applied `ProfileUpdate`s into `Profile::new`, with event
//! times, offsets, traits, steps and values drawn from tiny sets so that ties in
//! `(event time, offset)` (normal across partitions) and in values are frequent, within a
//! profile and across the profiles being merged.
//!
//! `user_id` is the caller's to set on a merge, so every comparison first sets it to one
//! value; the rest of the profile is compared whole.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;

use onramp_schemas::{
    Acquisition, Campaign, Changes, Counters, Device, DeviceClass, FunnelStep, Page, Profile, ProfileUpdate,
    StepChange, TraitValue,
};
use proptest::prelude::*;

/// Cases per law.
const CASES: u32 = 1024;

/// Step names; the first four are the funnel, in order, and `tour` is outside it.
const STEPS: [&str; 5] = ["sign_up", "profile", "workspace", "invite", "tour"];

/// The funnel position the enrich module's (fixed) configuration gives a step.
fn configured(name: &str) -> Option<FunnelStep> {
    let index = STEPS[..4].iter().position(|s| *s == name)?;
    Some(FunnelStep {
        step: name.to_string(),
        index: index as u32,
        total: 4,
        next: STEPS[..4].get(index + 1).map(|s| s.to_string()),
    })
}

/// How the steps of the generated updates carry funnel positions.
#[derive(Debug, Clone, Copy)]
enum Funnel {
    /// As the enrich module gives them: one position per step name (or none).
    Configured,
    /// Anything, as if the funnel configuration changed between events.
    Arbitrary,
}

fn pick<T: Clone + std::fmt::Debug + 'static>(values: Vec<T>) -> impl Strategy<Value = T> {
    prop::sample::select(values)
}

fn text(values: &[&'static str]) -> impl Strategy<Value = String> {
    pick(values.to_vec()).prop_map(String::from)
}

fn arb_step(funnel: Funnel) -> impl Strategy<Value = StepChange> {
    let arbitrary = (0u32..4, 3u32..6, prop::option::of(text(&["profile", "workspace"])));
    (pick(STEPS.to_vec()), any::<bool>(), arbitrary).prop_map(move |(name, with, (index, total, next))| {
        let funnel = match funnel {
            Funnel::Configured => configured(name).filter(|_| with),
            Funnel::Arbitrary => with.then(|| FunnelStep {
                step: name.to_string(),
                index,
                total,
                next,
            }),
        };
        StepChange {
            name: name.to_string(),
            funnel,
        }
    })
}

fn arb_counters() -> impl Strategy<Value = Counters> {
    let small = || 0u64..3;
    // Now and then a huge time so that sums saturate.
    let time = prop_oneof![4 => 0u64..5_000, 1 => Just(u64::MAX / 2)];
    (small(), small(), small(), time, small(), small(), small()).prop_map(
        |(page_views, clicks, sessions, time_spent_ms, steps_completed, features_used, invites_sent)| Counters {
            events: 1,
            page_views,
            clicks,
            sessions,
            time_spent_ms,
            steps_completed,
            features_used,
            invites_sent,
        },
    )
}

fn arb_trait_value() -> impl Strategy<Value = TraitValue> {
    pick(vec![
        TraitValue::Text("free".into()),
        TraitValue::Text("pro".into()),
        TraitValue::Int(1),
        TraitValue::Int(2),
        TraitValue::Float(1.5),
        TraitValue::Bool(true),
    ])
}

fn arb_acquisition() -> impl Strategy<Value = Acquisition> {
    let campaign = prop::option::of(text(&["newsletter", "ads"]).prop_map(|source| Campaign {
        source: Some(source),
        ..Campaign::default()
    }));
    (campaign, prop::option::of(text(&["news.example", "search.example"]))).prop_map(|(campaign, referrer_host)| {
        Acquisition {
            campaign,
            referrer_host,
        }
    })
}

fn arb_device() -> impl Strategy<Value = Device> {
    (
        pick(vec![DeviceClass::Desktop, DeviceClass::Mobile]),
        prop::option::of(text(&["linux", "ios"])),
    )
        .prop_map(|(class, os)| Device {
            class,
            os,
            browser: None,
        })
}

fn arb_changes(funnel: Funnel) -> impl Strategy<Value = Changes> {
    let flags = (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c)| (a && b, b && c, a && c));
    let page = (
        prop::option::of(text(&["/", "/pricing"])),
        prop::option::of(text(&["Home"])),
    )
        .prop_map(|(path, title)| Page { path, title });
    let traits = prop::collection::btree_map(text(&["plan", "role", "seats"]), arb_trait_value(), 0..3);
    let ids = (
        prop::option::of(text(&["a@example.com", "b@example.com"])),
        prop::option::of(text(&["anon-1", "anon-2"])),
        prop::option::of(text(&["en-GB", "fr-FR"])),
    );
    (
        arb_counters(),
        flags,
        prop::option::of(arb_step(funnel)),
        prop::option::of(page),
        traits,
        ids,
        prop::option::weighted(0.3, arb_acquisition()),
        prop::option::of(arb_device()),
    )
        .prop_map(
            |(counters, (signed_up, email_verified, onboarding_completed), step, page, traits, ids, acq, device)| {
                let (email, anonymous_id, locale) = ids;
                Changes {
                    state_reset: false,
                    counters,
                    signed_up,
                    email_verified,
                    onboarding_completed,
                    step,
                    page,
                    traits,
                    email,
                    anonymous_id,
                    acquisition: acq,
                    device,
                    locale,
                }
            },
        )
}

/// Up to 24 applied updates with event ids `{prefix}{i}` (unique across the profiles of
/// one test, as event ids are), small event times and offsets (ties are frequent).
fn arb_updates(prefix: &'static str, funnel: Funnel) -> impl Strategy<Value = Vec<ProfileUpdate>> {
    let one = (
        0i64..6,
        0i64..6,
        pick(vec!["page_view", "identify", "step_completed"]),
        arb_changes(funnel),
    );
    prop::collection::vec(one, 0..24).prop_map(move |ops| {
        ops.into_iter()
            .enumerate()
            .map(|(i, (t, offset, kind, changes))| {
                ProfileUpdate::applied("u", offset, format!("{prefix}{i}"), kind, 1_000 * t, Some(changes))
            })
            .collect()
    })
}

fn fold<'a>(id: &str, updates: impl IntoIterator<Item = &'a ProfileUpdate>) -> Profile {
    let mut p = Profile::new(id);
    for u in updates {
        assert!(p.apply(u));
    }
    p
}

/// A profile as stored for one id, with any funnel positions.
fn arb_profile(prefix: &'static str) -> impl Strategy<Value = Profile> {
    prop_oneof![
        arb_updates(prefix, Funnel::Configured),
        arb_updates(prefix, Funnel::Arbitrary)
    ]
    .prop_map(move |ups| fold(prefix, &ups))
}

/// `a` merged with `b`, as the person "p".
fn merge(a: &Profile, b: &Profile) -> Profile {
    let mut m = a.clone();
    m.merge(b);
    m.user_id = "p".into();
    m
}

fn person(p: &Profile) -> Profile {
    Profile {
        user_id: "p".into(),
        ..p.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Law 1: the merged person does not depend on which profile is merged into which.
    #[test]
    fn merge_is_commutative(a in arb_profile("a"), b in arb_profile("b")) {
        prop_assert_eq!(merge(&a, &b), merge(&b, &a));
    }

    /// Law 2: nor on how the merges are grouped.
    #[test]
    fn merge_is_associative(a in arb_profile("a"), b in arb_profile("b"), c in arb_profile("c")) {
        prop_assert_eq!(merge(&merge(&a, &b), &c), merge(&a, &merge(&b, &c)));
    }

    /// Law 3: the empty profile changes nothing, on either side.
    #[test]
    fn the_empty_profile_is_the_identity(a in arb_profile("a")) {
        prop_assert_eq!(merge(&a, &Profile::new("other")), person(&a));
        prop_assert_eq!(merge(&Profile::new("other"), &a), person(&a));
    }

    /// Law 4: merging the profiles of two sets of updates equals applying all of them, in
    /// any order, to one profile. Every field is compared.
    ///
    /// The updates carry the funnel positions of one configuration (a step name always
    /// has the same position, or none). With positions that change between events `apply`
    /// itself is not order-free — it keeps the position of the update applied last — so
    /// no merge could agree with it; `merge` then resolves them order-free (laws 1–3 use
    /// such updates too).
    #[test]
    fn merge_agrees_with_apply(
        (u1, u2, shuffled) in (arb_updates("a", Funnel::Configured), arb_updates("b", Funnel::Configured))
            .prop_flat_map(|(u1, u2)| {
                let all: Vec<ProfileUpdate> = u1.iter().chain(&u2).cloned().collect();
                (Just(u1), Just(u2), Just(all).prop_shuffle())
            })
    ) {
        let merged = merge(&fold("anon", &u1), &fold("user", &u2));
        prop_assert_eq!(&merged, &fold("p", u1.iter().chain(&u2)));
        prop_assert_eq!(&merged, &fold("p", &shuffled));
    }
}

/// Proves the generators make the ties the laws are about: across profiles, equal
/// `(event time, offset)` with different values of one trait, and steps with and
/// without funnel positions.
#[test]
fn generated_profiles_tie() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut trait_ties, mut with_position, mut without_position) = (0, 0, 0);
    for _ in 0..200 {
        let a = arb_profile("a").new_tree(&mut runner).unwrap().current();
        let b = arb_profile("b").new_tree(&mut runner).unwrap().current();
        for (name, x) in &a.traits {
            if let Some(y) = b.traits.get(name) {
                trait_ties += usize::from((x.at_ms, x.offset) == (y.at_ms, y.offset) && x.value != y.value);
            }
        }
        for s in a.steps.values() {
            *if s.index.is_some() {
                &mut with_position
            } else {
                &mut without_position
            } += 1;
        }
    }
    let seen: BTreeMap<&str, usize> = [
        ("trait ties", trait_ties),
        ("with position", with_position),
        ("without position", without_position),
    ]
    .into();
    assert!(seen.values().all(|n| *n >= 10), "{seen:?}");
}
