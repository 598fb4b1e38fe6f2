//! Judging a [`Condition`] on a person's profile at an event time `now`, and the next event
//! time at which a time condition can change its answer (the timer to set).

use onramp_schemas::{Profile, TraitValue};

use super::rules::{duration, Condition, CounterName};

impl Condition {
    /// True when the profile satisfies the condition at event time `now`. `member` answers
    /// `in_audience` (decision actions only).
    pub fn holds(&self, p: &Profile, now: i64, member: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Condition::All(list) => list.iter().all(|c| c.holds(p, now, member)),
            Condition::Any(list) => list.iter().any(|c| c.holds(p, now, member)),
            Condition::Not(c) => !c.holds(p, now, member),
            Condition::StepCompleted(s) => p.steps.contains_key(s),
            Condition::StepNotCompleted(s) => !p.steps.contains_key(s),
            Condition::CurrentStep(s) => p.funnel.current_step.as_deref() == Some(s.as_str()),
            Condition::Counter(b) => {
                let v = counter(p, b.name);
                b.at_least.is_none_or(|lo| v >= lo) && b.at_most.is_none_or(|hi| v <= hi)
            }
            Condition::Trait(t) => {
                let Some(value) = p.traits.get(&t.name) else {
                    return false;
                };
                let value = trait_json(&value.value);
                match (&t.equals, &t.one_of) {
                    (Some(want), _) => same(&value, want),
                    (None, Some(set)) => set.iter().any(|want| same(&value, want)),
                    (None, None) => false,
                }
            }
            Condition::Campaign(t) => {
                let Some(c) = p.acquisition.as_ref().and_then(|a| a.acquisition.campaign.as_ref()) else {
                    return false;
                };
                let ok =
                    |want: &Option<String>, got: &Option<String>| want.as_ref().is_none_or(|w| got.as_ref() == Some(w));
                ok(&t.source, &c.source) && ok(&t.medium, &c.medium) && ok(&t.campaign, &c.campaign)
            }
            Condition::ReferrerHost(h) => p
                .acquisition
                .as_ref()
                .and_then(|a| a.acquisition.referrer_host.as_deref())
                .is_some_and(|got| got.eq_ignore_ascii_case(h)),
            Condition::Device(class) => p.last_device.as_ref().is_some_and(|d| d.value.class == *class),
            Condition::Locale(want) => p.locale.as_ref().is_some_and(|l| {
                let got = l.value.to_ascii_lowercase();
                let want = want.to_ascii_lowercase();
                got == want || got.strip_prefix(&want).is_some_and(|rest| rest.starts_with('-'))
            }),
            Condition::SignedUp(b) => p.signed_up_ms.is_some() == *b,
            Condition::Completed(b) => p.completed_ms.is_some() == *b,
            Condition::EmailVerified(b) => p.email_verified_ms.is_some() == *b,
            Condition::SignedUpWithin(d) => {
                let d = duration(d).unwrap_or(0);
                p.signed_up_ms.is_some_and(|t| now.saturating_sub(t) <= d)
            }
            Condition::InactiveFor(d) => {
                let d = duration(d).unwrap_or(i64::MAX);
                p.last_seen_ms != i64::MIN && now.saturating_sub(p.last_seen_ms) >= d
            }
            Condition::InAudience(name) => member(name),
        }
    }

    /// The earliest event time after `now` at which a time condition in this one could
    /// change its answer for `p` with no new event: when `inactive_for` becomes true, when
    /// `signed_up_within` becomes false.
    pub fn next_change(&self, p: &Profile, now: i64) -> Option<i64> {
        let after = |t: i64| (t > now).then_some(t);
        match self {
            Condition::All(list) | Condition::Any(list) => list.iter().filter_map(|c| c.next_change(p, now)).min(),
            Condition::Not(c) => c.next_change(p, now),
            Condition::SignedUpWithin(d) => {
                let d = duration(d).ok()?;
                after(p.signed_up_ms?.saturating_add(d).saturating_add(1))
            }
            Condition::InactiveFor(d) => {
                let d = duration(d).ok()?;
                (p.last_seen_ms != i64::MIN)
                    .then(|| p.last_seen_ms.saturating_add(d))
                    .and_then(after)
            }
            _ => None,
        }
    }
}

fn counter(p: &Profile, name: CounterName) -> u64 {
    let c = &p.counters;
    match name {
        CounterName::Events => c.events,
        CounterName::PageViews => c.page_views,
        CounterName::Clicks => c.clicks,
        CounterName::Sessions => c.sessions,
        CounterName::TimeSpentMs => c.time_spent_ms,
        CounterName::StepsCompleted => c.steps_completed,
        CounterName::FeaturesUsed => c.features_used,
        CounterName::InvitesSent => c.invites_sent,
    }
}

fn trait_json(v: &TraitValue) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Equal values; numbers compare as numbers (`1` equals `1.0`).
fn same(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    match (got.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => got == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::Rules;
    use onramp_schemas::{Changes, ProfileUpdate};

    const H: i64 = 3_600_000;

    fn profile(traits: &[(&str, TraitValue)], locale: Option<&str>) -> Profile {
        let mut p = Profile::new("u");
        let changes = Changes {
            traits: traits.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            signed_up: true,
            locale: locale.map(str::to_string),
            ..Changes::default()
        };
        p.apply(&ProfileUpdate::applied("u", 0, "e0", "identify", 10 * H, Some(changes)));
        p
    }

    fn when(yaml: &str) -> Condition {
        let text = format!("audiences:\n  - name: x\n    version: 1\n    when: {yaml}\n");
        Rules::parse(&text, "test", None).unwrap().audiences[0].when.clone()
    }

    /// Proves traits compare numbers as numbers and text exactly, and locales by language.
    #[test]
    fn traits_and_locales_match_as_documented() {
        let p = profile(
            &[("seats", TraitValue::Int(5)), ("plan", TraitValue::Text("pro".into()))],
            Some("fr-CA"),
        );
        let no = |_: &str| false;
        assert!(when("{trait: {name: seats, equals: 5.0}}").holds(&p, 0, &no));
        assert!(!when("{trait: {name: seats, equals: \"5\"}}").holds(&p, 0, &no));
        assert!(when("{trait: {name: plan, in: [team, pro]}}").holds(&p, 0, &no));
        assert!(!when("{trait: {name: missing, equals: 1}}").holds(&p, 0, &no));
        assert!(when("{locale: fr}").holds(&p, 0, &no));
        assert!(when("{locale: FR-ca}").holds(&p, 0, &no));
        assert!(!when("{locale: f}").holds(&p, 0, &no));
    }

    /// Proves the time conditions flip exactly at their due times, and `next_change` names
    /// those times.
    #[test]
    fn time_conditions_flip_at_their_timer() {
        let p = profile(&[], None);
        let no = |_: &str| false;
        let idle = when("{all: [{signed_up: true}, {inactive_for: 2h}]}");
        assert!(!idle.holds(&p, 12 * H - 1, &no));
        assert!(idle.holds(&p, 12 * H, &no));
        assert_eq!(idle.next_change(&p, 10 * H), Some(12 * H));
        assert_eq!(idle.next_change(&p, 12 * H), None, "nothing changes after it is due");
        let fresh = when("{signed_up_within: 1h}");
        assert!(fresh.holds(&p, 11 * H, &no));
        assert!(!fresh.holds(&p, 11 * H + 1, &no));
        assert_eq!(fresh.next_change(&p, 10 * H), Some(11 * H + 1));
        assert_eq!(when("{not: {inactive_for: 2h}}").next_change(&p, 10 * H), Some(12 * H));
    }
}
