//! The rules file (`--rules rules.yaml`): audiences over the person profile and decision
//! surfaces, parsed with serde and checked before anything starts.
//!
//! Every field is documented in the README ("Audiences, triggers and decisions") and shown
//! in `rules.example.yaml` at the repository root, which is also the built-in rule set a
//! store gets when no `--rules` is given (`stalled` and `activated`).
//!
//! A bad file is one [`RulesError`] that names the audience or surface, the field path
//! inside it and what is wrong; unknown fields are errors, so a typo never silently turns
//! a condition off.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use onramp_schemas::DeviceClass;

/// The built-in rules: what a store evaluates when no `--rules` was ever given.
pub const DEFAULT_RULES: &str = include_str!("../../../rules.example.yaml");

/// Longest audience, surface, action, experiment or variant name (names appear in URLs
/// and in the store's keys).
pub const MAX_NAME_LEN: usize = 64;

/// Largest rules file read.
pub const MAX_RULES_BYTES: u64 = 1 << 20;

/// Most audiences, and most surfaces, one file may define.
pub const MAX_RULES: usize = 256;

/// A parsed, checked rules file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rules {
    /// Audiences, in file order (names unique).
    pub audiences: Vec<Audience>,
    /// Decision surfaces, by name.
    pub surfaces: BTreeMap<String, Surface>,
    /// The file's text, as stored in the store's meta.
    #[serde(skip)]
    pub text: String,
}

/// The rules file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    audiences: Vec<serde_yaml::Value>,
    #[serde(default)]
    surfaces: Vec<serde_yaml::Value>,
}

/// A named, versioned audience: the persons whose profile satisfies `when`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// Name (`[a-z0-9_-]`, at most [`MAX_NAME_LEN`]).
    pub name: String,
    /// Version, a whole number ≥ 1; bump it when `when` changes, so consumers of the
    /// transitions can tell memberships of different definitions apart.
    pub version: u32,
    /// What the audience is for (shown by `onramp audiences`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The condition.
    pub when: Condition,
}

/// A condition on a person's profile, judged at an event time `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every condition holds (an empty list is refused).
    All(Vec<Condition>),
    /// At least one condition holds (an empty list is refused).
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// The step (funnel or not) was completed.
    StepCompleted(String),
    /// The step was not completed.
    StepNotCompleted(String),
    /// The furthest funnel step completed is this one.
    CurrentStep(String),
    /// A counter within bounds.
    Counter(CounterBound),
    /// A trait equals a value, or is one of a set.
    Trait(TraitTest),
    /// First-touch campaign fields equal these (each given field must match).
    Campaign(CampaignTest),
    /// First-touch referrer host equals this.
    ReferrerHost(String),
    /// The last device's class.
    Device(DeviceClass),
    /// The last locale equals this, or starts with it and `-` (`fr` matches `fr-CA`).
    Locale(String),
    /// Signed up (`true`) or not yet (`false`).
    SignedUp(bool),
    /// Onboarding completed (`true`) or not (`false`).
    Completed(bool),
    /// Email verified (`true`) or not (`false`).
    EmailVerified(bool),
    /// Signed up, at most this long before `now` (a duration: `30m`, `24h`, `7d`).
    SignedUpWithin(String),
    /// No event of the person for at least this long before `now`.
    InactiveFor(String),
    /// Decision actions only: the person is a member of this audience.
    InAudience(String),
}

/// `counter: {name: features_used, at_least: 3}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterBound {
    /// Which counter.
    pub name: CounterName,
    /// Lower bound, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<u64>,
    /// Upper bound, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<u64>,
}

/// The profile's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterName {
    /// Accepted events.
    Events,
    /// `page_view` events.
    PageViews,
    /// `click` events.
    Clicks,
    /// Sessions.
    Sessions,
    /// Time spent, ms.
    TimeSpentMs,
    /// `step_completed` events.
    StepsCompleted,
    /// `feature_used` events.
    FeaturesUsed,
    /// People invited.
    InvitesSent,
}

/// `trait: {name: plan, equals: pro}` or `trait: {name: plan, in: [pro, team]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitTest {
    /// Trait name.
    pub name: String,
    /// The value it must equal (text, number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// The values it may take.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
}

/// `campaign: {source: google, medium: cpc, campaign: spring}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignTest {
    /// `utm_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `utm_medium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// `utm_campaign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// A decision surface: ranked actions, the first whose condition holds is the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surface {
    /// Name (`[a-z0-9_-]`).
    pub name: String,
    /// An experiment splitting persons into variants; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
    /// Actions, best first.
    pub actions: Vec<Action>,
}

/// One ranked action of a surface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// What to show (`invite_your_team`).
    pub action: String,
    /// The rule's name, given back in the answer (defaults to the action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// When it applies; absent = always (a fallback at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// Only for persons assigned to these variants (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<String>>,
}

/// Variants assigned by a stable hash of (person id, experiment name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Experiment name (part of the hash: renaming it reshuffles everyone).
    pub name: String,
    /// Variants with whole-number weights.
    pub variants: Vec<Variant>,
}

/// One variant of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Variant name.
    pub name: String,
    /// Weight, a whole number ≥ 1 (shares are weight / sum of weights).
    pub weight: u32,
    /// A holdout gets no action at all (the answer says so).
    #[serde(default)]
    pub holdout: bool,
}

/// A rules file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules file {file}: {place}: {problem}")]
pub struct RulesError {
    /// The file (or `built-in`).
    pub file: String,
    /// `audience `stalled` (audiences[0]), field when.all[1]`.
    pub place: String,
    /// What is wrong.
    pub problem: String,
}

impl Rules {
    /// The built-in rules.
    pub fn builtin() -> Rules {
        Rules::parse(DEFAULT_RULES, "built-in", None).expect("the built-in rules parse")
    }

    /// Parses and checks a rules file. `steps`, when given, are the funnel steps the store
    /// folds with: `current_step` must name one of them.
    pub fn parse(text: &str, file: &str, steps: Option<&[String]>) -> Result<Rules, RulesError> {
        let err = |place: String, problem: String| RulesError {
            file: file.to_string(),
            place,
            problem,
        };
        let parsed: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| err("the file".into(), e.to_string()))?;
        if parsed.is_null() {
            return Err(err(
                "the file".into(),
                "it is empty; to judge no audiences, write `audiences: []`".into(),
            ));
        }
        let raw: RulesFile = serde_yaml::from_value(parsed).map_err(|e| err("the file".into(), e.to_string()))?;
        if raw.audiences.len() > MAX_RULES || raw.surfaces.len() > MAX_RULES {
            return Err(err(
                "the file".into(),
                format!("at most {MAX_RULES} audiences and {MAX_RULES} surfaces"),
            ));
        }
        let mut audiences: Vec<Audience> = Vec::new();
        for (i, value) in raw.audiences.into_iter().enumerate() {
            let place = |field: &str| describe("audience", &value, "audiences", i, field);
            let audience: Audience = typed(&value).map_err(|(f, p)| err(place(&f), p))?;
            check_name(&audience.name).map_err(|p| err(place("name"), p))?;
            if audiences.iter().any(|a| a.name == audience.name) {
                return Err(err(
                    place("name"),
                    format!("a second audience named `{}`", audience.name),
                ));
            }
            if audience.version == 0 {
                return Err(err(place("version"), "must be 1 or more".into()));
            }
            check_condition(&audience.when, steps, None).map_err(|(f, p)| err(place(&format!("when{f}")), p))?;
            audiences.push(audience);
        }
        let names: BTreeSet<&str> = audiences.iter().map(|a| a.name.as_str()).collect();
        let mut surfaces = BTreeMap::new();
        for (i, value) in raw.surfaces.into_iter().enumerate() {
            let place = |field: &str| describe("surface", &value, "surfaces", i, field);
            let surface: Surface = typed(&value).map_err(|(f, p)| err(place(&f), p))?;
            check_name(&surface.name).map_err(|p| err(place("name"), p))?;
            if surfaces.contains_key(&surface.name) {
                return Err(err(place("name"), format!("a second surface named `{}`", surface.name)));
            }
            if surface.actions.is_empty() {
                return Err(err(place("actions"), "a surface needs at least one action".into()));
            }
            let variants: Option<Vec<&str>> = match &surface.experiment {
                Some(x) => {
                    check_name(&x.name).map_err(|p| err(place("experiment.name"), p))?;
                    if x.variants.is_empty() {
                        return Err(err(
                            place("experiment.variants"),
                            "an experiment needs at least one variant".into(),
                        ));
                    }
                    let mut seen = BTreeSet::new();
                    for (j, v) in x.variants.iter().enumerate() {
                        let field = format!("experiment.variants[{j}]");
                        check_name(&v.name).map_err(|p| err(place(&format!("{field}.name")), p))?;
                        if !seen.insert(v.name.as_str()) {
                            return Err(err(
                                place(&format!("{field}.name")),
                                format!("a second variant named `{}`", v.name),
                            ));
                        }
                        if v.weight == 0 {
                            return Err(err(place(&format!("{field}.weight")), "must be 1 or more".into()));
                        }
                    }
                    Some(x.variants.iter().map(|v| v.name.as_str()).collect())
                }
                None => None,
            };
            let mut rule_names = BTreeSet::new();
            for (j, action) in surface.actions.iter().enumerate() {
                let field = format!("actions[{j}]");
                let rule = action.rule.as_deref().unwrap_or(&action.action);
                if !rule_names.insert(rule) {
                    return Err(err(
                        place(&format!("{field}.rule")),
                        format!(
                            "a second action answering with rule `{rule}` (answers name their rule: give each its own)"
                        ),
                    ));
                }
                check_name(&action.action).map_err(|p| err(place(&format!("{field}.action")), p))?;
                if let Some(when) = &action.when {
                    check_condition(when, steps, Some(&names))
                        .map_err(|(f, p)| err(place(&format!("{field}.when{f}")), p))?;
                }
                if let Some(vs) = &action.variants {
                    let Some(known) = &variants else {
                        return Err(err(
                            place(&format!("{field}.variants")),
                            "the surface has no experiment".into(),
                        ));
                    };
                    if let Some(v) = vs.iter().find(|v| !known.contains(&v.as_str())) {
                        return Err(err(
                            place(&format!("{field}.variants")),
                            format!("unknown variant `{v}`; the experiment has: {}", known.join(", ")),
                        ));
                    }
                }
            }
            surfaces.insert(surface.name.clone(), surface);
        }
        Ok(Rules {
            audiences,
            surfaces,
            text: text.to_string(),
        })
    }

    /// The audience named `name`.
    pub fn audience(&self, name: &str) -> Option<&Audience> {
        self.audiences.iter().find(|a| a.name == name)
    }
}

/// One entry of the file as its type; the error is (field path, problem). Through JSON:
/// serde_yaml reads an enum from a parsed value only in its `!tag` form, while the file
/// writes conditions as one-key maps (`all: [...]`).
fn typed<T: serde::de::DeserializeOwned>(value: &serde_yaml::Value) -> Result<T, (String, String)> {
    let json = serde_json::to_value(value).map_err(|e| (String::new(), e.to_string()))?;
    serde_path_to_error::deserialize(json).map_err(|e| (e.path().to_string(), e.inner().to_string()))
}

/// `audience `stalled` (audiences[0]), field when.all[1]`.
fn describe(kind: &str, value: &serde_yaml::Value, list: &str, i: usize, field: &str) -> String {
    let name = value
        .get("name")
        .and_then(|n| n.as_str())
        .map(|n| format!("`{n}` "))
        .unwrap_or_default();
    let field = if field.is_empty() || field == "." {
        String::new()
    } else {
        format!(", field {field}")
    };
    format!("{kind} {name}({list}[{i}]){field}")
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!("`{name}` may hold only a-z, 0-9, `_` and `-`"));
    }
    Ok(())
}

/// Checks a condition; the error is (field path below it, problem).
fn check_condition(
    c: &Condition,
    steps: Option<&[String]>,
    audiences: Option<&BTreeSet<&str>>,
) -> Result<(), (String, String)> {
    let bad = |field: &str, problem: String| Err((field.to_string(), problem));
    match c {
        Condition::All(list) | Condition::Any(list) => {
            let key = if matches!(c, Condition::All(_)) { "all" } else { "any" };
            if list.is_empty() {
                return bad(&format!(".{key}"), "an empty list (say what it should hold)".into());
            }
            for (i, inner) in list.iter().enumerate() {
                check_condition(inner, steps, audiences).map_err(|(f, p)| (format!(".{key}[{i}]{f}"), p))?;
            }
            Ok(())
        }
        Condition::Not(inner) => check_condition(inner, steps, audiences).map_err(|(f, p)| (format!(".not{f}"), p)),
        Condition::StepCompleted(s) | Condition::StepNotCompleted(s) => {
            if s.is_empty() {
                return bad("", "an empty step name".into());
            }
            Ok(())
        }
        Condition::CurrentStep(s) => match steps {
            Some(steps) if !steps.iter().any(|x| x == s) => bad(
                ".current_step",
                format!("`{s}` is not a funnel step; the funnel is: {}", steps.join(", ")),
            ),
            _ => Ok(()),
        },
        Condition::Counter(b) => match (b.at_least, b.at_most) {
            (None, None) => bad(".counter", "give at_least, at_most or both".into()),
            (Some(lo), Some(hi)) if lo > hi => bad(".counter", format!("at_least {lo} is above at_most {hi}")),
            _ => Ok(()),
        },
        Condition::Trait(t) => {
            if t.name.is_empty() {
                return bad(".trait.name", "an empty trait name".into());
            }
            let values: Vec<&serde_json::Value> = match (&t.equals, &t.one_of) {
                (Some(v), None) => vec![v],
                (None, Some(vs)) if !vs.is_empty() => vs.iter().collect(),
                (None, Some(_)) => return bad(".trait.in", "an empty list".into()),
                _ => return bad(".trait", "give exactly one of equals or in".into()),
            };
            match values.iter().find(|v| !(v.is_string() || v.is_number() || v.is_boolean())) {
                Some(v) => bad(".trait", format!("{v} is not a text, number or boolean")),
                None => Ok(()),
            }
        }
        Condition::Campaign(t) => {
            if t.source.is_none() && t.medium.is_none() && t.campaign.is_none() {
                return bad(".campaign", "give source, medium or campaign".into());
            }
            Ok(())
        }
        Condition::SignedUpWithin(d) => duration(d).map(|_| ()).map_err(|p| (".signed_up_within".into(), p)),
        Condition::InactiveFor(d) => match duration(d) {
            Ok(0) => bad(".inactive_for", "must be more than 0".into()),
            Ok(_) => Ok(()),
            Err(p) => bad(".inactive_for", p),
        },
        Condition::InAudience(name) => match audiences {
            None => bad(
                ".in_audience",
                "only decision actions may test membership (an audience defined by another would make evaluation order matter)".into(),
            ),
            Some(known) if !known.contains(name.as_str()) => bad(".in_audience", format!("no audience named `{name}`")),
            Some(_) => Ok(()),
        },
        Condition::ReferrerHost(_) | Condition::Device(_) | Condition::Locale(_) | Condition::SignedUp(_) | Condition::Completed(_) | Condition::EmailVerified(_) => Ok(()),
    }
}

/// A duration (`500ms`, `45s`, `30m`, `6h`, `7d`) in ms.
pub fn duration(text: &str) -> Result<i64, String> {
    onramp_logic::params::parse_duration_ms("duration", text).map_err(|e| e.to_string())
}
