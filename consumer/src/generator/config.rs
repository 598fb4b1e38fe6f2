//! What a caller can set: [`GeneratorConfig`] with its defaults (the `DEFAULT_*`
//! constants, which the CLI shows too), the funnel the generator walks, and how a config is
//! made safe to run (shares clamped to 0..=1).

use serde::{Deserialize, Serialize};

use super::time::HOUR_MS;

/// Default [`GeneratorConfig::seed`].
pub const DEFAULT_SEED: u64 = 42;
/// Default [`GeneratorConfig::users`].
pub const DEFAULT_USERS: u64 = 2_000;
/// Default [`GeneratorConfig::start_ms`]: 2026-11-02T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_793_577_600_000;
/// Default [`GeneratorConfig::arrival_window_ms`]: 24 hours.
pub const DEFAULT_ARRIVAL_WINDOW_MS: i64 = 24 * HOUR_MS;
/// Default [`GeneratorConfig::hot_user_share`].
pub const DEFAULT_HOT_USER_SHARE: f64 = 0.002;
/// Default [`GeneratorConfig::bot_share`].
pub const DEFAULT_BOT_SHARE: f64 = 0.02;
/// Default [`GeneratorConfig::test_user_share`].
pub const DEFAULT_TEST_USER_SHARE: f64 = 0.005;
/// Default [`GeneratorConfig::late_share`].
pub const DEFAULT_LATE_SHARE: f64 = 0.03;
/// Default [`GeneratorConfig::duplicate_share`].
pub const DEFAULT_DUPLICATE_SHARE: f64 = 0.02;
/// Default [`GeneratorConfig::malformed_share`].
pub const DEFAULT_MALFORMED_SHARE: f64 = 0.01;

/// Number of funnel steps.
pub const FUNNEL_LEN: usize = 7;
/// The funnel the generator walks, in order: the enrich module's `DEFAULT_STEPS`.
pub const FUNNEL_STEPS: [&str; FUNNEL_LEN] = [
    "sign_up",
    "email_verified",
    "profile",
    "workspace",
    "invite_sent",
    "feature_used",
    "onboarding_completed",
];
/// Default [`GeneratorConfig::step_conversion`]: 70% of visitors sign up, 85% of those
/// verify their email, and so on; about 16% of visitors complete onboarding.
pub const DEFAULT_STEP_CONVERSION: [f64; FUNNEL_LEN] = [0.70, 0.85, 0.90, 0.85, 0.60, 0.80, 0.90];

/// The traffic generator's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed of the random generator: the same config gives the same lines, byte for byte.
    pub seed: u64,
    /// Distinct real (not bot, not test) visitors; each one that signs up gets a `u_<n>`
    /// id. Bots and test accounts come on top (see `bot_share`, `test_user_share`).
    pub users: u64,
    /// Stop after this many lines (every kind counts); `None` = when every visitor is done.
    pub max_events: Option<u64>,
    /// Event time of the first possible arrival, ms since the epoch.
    pub start_ms: i64,
    /// Visitors arrive uniformly over this much event time after `start_ms`, ms.
    pub arrival_window_ms: i64,
    /// Share of the `users` who are hot: after onboarding they fire hundreds of
    /// `feature_used` and `page_view` events (skew).
    pub hot_user_share: f64,
    /// Share of all visitors who are bots (crawler user agents, a few page views each);
    /// validate rejects their lines as `bot`.
    pub bot_share: f64,
    /// Share of all visitors who are test accounts (`test_` ids, emails at
    /// `onramp-test.invalid`); validate rejects their lines as `test_user`.
    pub test_user_share: f64,
    /// Share of event lines held back and emitted after later events: at most
    /// [`MAX_LATE_MS`](super::MAX_LATE_MS) of event time and
    /// [`MAX_LATE_LINES`](super::MAX_LATE_LINES) lines late.
    pub late_share: f64,
    /// Share of event lines emitted a second time, unchanged (same `event_id`), 1 to
    /// [`MAX_DUPLICATE_LINES`](super::MAX_DUPLICATE_LINES) lines later, as a client retry
    /// would.
    pub duplicate_share: f64,
    /// Chance, per real user's event line, of an extra malformed line right after it (one of
    /// the [`Malformed`](super::Malformed) kinds, chosen uniformly).
    pub malformed_share: f64,
    /// Per funnel step ([`FUNNEL_STEPS`] order): the chance that a real user who completed
    /// the previous step (for `sign_up`: who landed) completes this one. Hot users and test
    /// accounts complete every step.
    pub step_conversion: [f64; FUNNEL_LEN],
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: DEFAULT_SEED,
            users: DEFAULT_USERS,
            max_events: None,
            start_ms: DEFAULT_START_MS,
            arrival_window_ms: DEFAULT_ARRIVAL_WINDOW_MS,
            hot_user_share: DEFAULT_HOT_USER_SHARE,
            bot_share: DEFAULT_BOT_SHARE,
            test_user_share: DEFAULT_TEST_USER_SHARE,
            late_share: DEFAULT_LATE_SHARE,
            duplicate_share: DEFAULT_DUPLICATE_SHARE,
            malformed_share: DEFAULT_MALFORMED_SHARE,
            step_conversion: DEFAULT_STEP_CONVERSION,
        }
    }
}

impl GeneratorConfig {
    /// The config as the generator runs it: every share and step conversion clamped to
    /// 0..=1 (NaN counts as 0), a negative arrival window as 0.
    pub(super) fn clamped(mut self) -> GeneratorConfig {
        for share in [
            &mut self.hot_user_share,
            &mut self.bot_share,
            &mut self.test_user_share,
            &mut self.late_share,
            &mut self.duplicate_share,
            &mut self.malformed_share,
        ]
        .into_iter()
        .chain(self.step_conversion.iter_mut())
        {
            *share = clamp_share(*share);
        }
        self.arrival_window_ms = self.arrival_window_ms.max(0);
        self
    }
}

fn clamp_share(share: f64) -> f64 {
    if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use onramp_logic::enrich::DEFAULT_STEPS;

    use super::*;

    /// The generator walks exactly the enrich module's default funnel.
    #[test]
    fn funnel_steps_are_the_enrich_defaults() {
        assert_eq!(FUNNEL_STEPS.join(","), DEFAULT_STEPS);
    }

    /// The config reads from JSON with defaults for what is left out, and refuses unknown
    /// fields.
    #[test]
    fn config_reads_from_json() {
        let cfg: GeneratorConfig = serde_json::from_str(r#"{"seed":7,"max_events":10}"#).unwrap();
        assert_eq!((cfg.seed, cfg.max_events, cfg.users), (7, Some(10), DEFAULT_USERS));
        assert!(serde_json::from_str::<GeneratorConfig>(r#"{"user":7}"#).is_err());
    }
}
