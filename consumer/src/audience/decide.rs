//! Decisions: the next thing to show a person on a surface, and experiment variants.

use serde::Serialize;
use sha2::{Digest, Sha256};

use onramp_schemas::Profile;

use super::rules::{Experiment, Surface};

/// The answer of `GET /v1/profiles/{id}/decision?surface=NAME` and `onramp decide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The person decided for.
    pub person_id: String,
    /// The surface.
    pub surface: String,
    /// The action to show, `None` when no action applies or the person is held out.
    pub action: Option<String>,
    /// The rule that matched (the action's `rule`, else its name).
    pub rule: Option<String>,
    /// The action's rank in the surface (0 = first).
    pub rank: Option<usize>,
    /// The experiment and the person's variant, when the surface has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Assigned>,
    /// The person's audiences (the memberships the actions were judged with).
    pub audiences: Vec<String>,
    /// The event time the time conditions were judged at, ms.
    pub judged_at_ms: i64,
}

/// A person's variant in an experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assigned {
    /// Experiment name.
    pub name: String,
    /// Variant name.
    pub variant: String,
    /// The variant is a holdout: no action is shown.
    pub holdout: bool,
}

/// The variant of `person` in `experiment`: a stable hash of (person id, experiment name)
/// mapped onto the weights. The same person always gets the same variant; renaming the
/// experiment reshuffles.
pub fn assign(person: &str, experiment: &Experiment) -> Assigned {
    let mut h = Sha256::new();
    h.update(person.as_bytes());
    h.update([0u8]);
    h.update(experiment.name.as_bytes());
    let digest = h.finalize();
    let x = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let total: u64 = experiment.variants.iter().map(|v| u64::from(v.weight)).sum();
    // x * total / 2^64: uniform over 0..total with no modulo bias worth the name.
    let mut bucket = ((u128::from(x) * u128::from(total.max(1))) >> 64) as u64;
    let mut chosen = &experiment.variants[0];
    for v in &experiment.variants {
        if bucket < u64::from(v.weight) {
            chosen = v;
            break;
        }
        bucket -= u64::from(v.weight);
    }
    Assigned {
        name: experiment.name.clone(),
        variant: chosen.name.clone(),
        holdout: chosen.holdout,
    }
}

/// Decides `surface` for the person `person_id` with merged profile `profile`, member of
/// `audiences`, judged at event time `now`.
pub fn decide(surface: &Surface, person_id: &str, profile: &Profile, audiences: Vec<String>, now: i64) -> Decision {
    let experiment = surface.experiment.as_ref().map(|x| assign(person_id, x));
    let mut decision = Decision {
        person_id: person_id.to_string(),
        surface: surface.name.clone(),
        action: None,
        rule: None,
        rank: None,
        experiment,
        audiences,
        judged_at_ms: now,
    };
    if decision.experiment.as_ref().is_some_and(|a| a.holdout) {
        return decision;
    }
    let member = |name: &str| decision.audiences.iter().any(|a| a == name);
    let variant = decision.experiment.as_ref().map(|a| a.variant.as_str());
    let found = surface.actions.iter().enumerate().find(|(_, a)| {
        let in_variant = match (&a.variants, variant) {
            (Some(vs), Some(v)) => vs.iter().any(|x| x == v),
            (Some(_), None) => false,
            (None, _) => true,
        };
        in_variant && a.when.as_ref().is_none_or(|c| c.holds(profile, now, &member))
    });
    if let Some((rank, a)) = found {
        decision.action = Some(a.action.clone());
        decision.rule = Some(a.rule.clone().unwrap_or_else(|| a.action.clone()));
        decision.rank = Some(rank);
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::rules::Variant;

    fn experiment(weights: &[u32]) -> Experiment {
        Experiment {
            name: "x".into(),
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    name: format!("v{i}"),
                    weight: *w,
                    holdout: false,
                })
                .collect(),
        }
    }

    /// Proves assignment is stable and its split over 100,000 ids is within 1% of the
    /// weights (10/30/60).
    #[test]
    fn variants_split_by_weight_and_never_move() {
        let x = experiment(&[10, 30, 60]);
        let mut counts = [0u32; 3];
        for i in 0..100_000 {
            let id = format!("u_{i}");
            let a = assign(&id, &x);
            assert_eq!(a, assign(&id, &x), "assignment of {id} is stable");
            counts[a.variant[1..].parse::<usize>().unwrap()] += 1;
        }
        for (i, want) in [0.10, 0.30, 0.60].into_iter().enumerate() {
            let got = f64::from(counts[i]) / 100_000.0;
            assert!((got - want).abs() < 0.01, "variant {i}: {got} vs {want} ({counts:?})");
        }
        // Another experiment name reshuffles: not everyone keeps the same variant.
        let mut y = x.clone();
        y.name = "y".into();
        let moved = (0..1000)
            .filter(|i| assign(&format!("u_{i}"), &x).variant != assign(&format!("u_{i}"), &y).variant)
            .count();
        assert!(moved > 300, "{moved}");
    }
}
