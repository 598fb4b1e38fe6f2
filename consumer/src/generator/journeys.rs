//! A visitor's journey: who they are (class, user agent, locale, name, plan), where they
//! are in the funnel, and the beats — actions with the gaps before them — planned a stretch
//! at a time: landing and browsing, each funnel step with its page views and clicks,
//! drop-off, breaks long enough to start a new session, a hot user's burst, a bot's crawl.
//!
//! What each action looks like as an event is up to [`super::events`].

use std::collections::VecDeque;

use super::catalog::{
    Feature, Page, APP_HOME, BOT_USER_AGENTS, EMAIL_DOMAINS, FEATURES, FIRST_NAMES, INVITE_PAGE, LANDING_PAGES,
    LOCALES, PLANS, PROFILE_PAGE, SIGNUP_PAGE, USER_AGENTS, VERIFY_PAGE, WORKSPACE_PAGE,
};
use super::config::FUNNEL_LEN;
use super::rng::Rng;
use super::time::{HOUR_MS, MINUTE_MS, SECOND_MS};
use super::LineKind;

/// Gaps longer than this between two events of a user start a new session (30 minutes).
pub const SESSION_GAP_MS: i64 = 30 * MINUTE_MS;

/// Chance that a user takes a break longer than [`SESSION_GAP_MS`] before a funnel step.
const SESSION_BREAK_SHARE: f64 = 0.08;
/// Extra events a hot user fires after onboarding (inclusive range).
const HOT_EVENTS: (i64, i64) = (200, 600);
/// Hot events are planned this many at a time, to keep each active user small.
const HOT_CHUNK: u32 = 16;
/// Pages a bot fetches (inclusive range).
const BOT_PAGES: (i64, i64) = (2, 25);

/// What sort of visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Real,
    Hot,
    Bot,
    Test,
}

impl Class {
    /// What this visitor's event lines are.
    pub(super) fn line_kind(self) -> LineKind {
        match self {
            Class::Real | Class::Hot => LineKind::Event,
            Class::Bot => LineKind::Bot,
            Class::Test => LineKind::TestUser,
        }
    }
}

/// Visitors of each class still to arrive; drawn without replacement so the totals are
/// exact.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClassCounts {
    pub(super) hot: u64,
    pub(super) real: u64,
    pub(super) bot: u64,
    pub(super) test: u64,
}

impl ClassCounts {
    pub(super) fn total(&self) -> u64 {
        self.hot + self.real + self.bot + self.test
    }

    /// The class of the next visitor to arrive.
    pub(super) fn take(&mut self, rng: &mut Rng) -> Class {
        let mut roll = rng.below(self.total());
        for (count, class) in [
            (&mut self.hot, Class::Hot),
            (&mut self.bot, Class::Bot),
            (&mut self.test, Class::Test),
            (&mut self.real, Class::Real),
        ] {
            if roll < *count {
                *count -= 1;
                return class;
            }
            roll -= *count;
        }
        Class::Real
    }
}

/// Where a visitor is in their journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The next funnel step to attempt (index into [`FUNNEL_STEPS`](super::FUNNEL_STEPS)).
    Funnel(usize),
    /// Onboarding done; hot users still have their burst to fire.
    Completed,
    /// Nothing more after the planned beats.
    Leaving,
}

/// One planned action, `gap_ms` after the previous one.
#[derive(Debug, Clone, Copy)]
struct Beat {
    gap_ms: i64,
    action: Action,
}

/// What a visitor does next; each action is one event.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    /// The first page view, with campaign and referrer.
    Land,
    View(&'static Page),
    Click(&'static str),
    SignUp,
    EmailVerified,
    Step(&'static str),
    Identify,
    Invite,
    Feature(&'static str),
    Completed,
}

/// A visitor with events still to come.
#[derive(Debug)]
pub(super) struct Visitor {
    /// The visitor's number: their ids are `a_<n>` and `u_<n>`.
    pub(super) n: u64,
    pub(super) class: Class,
    pub(super) user_agent: &'static str,
    pub(super) locale: &'static str,
    name: &'static str,
    domain: &'static str,
    pub(super) plan: &'static str,
    pub(super) signed_up: bool,
    phase: Phase,
    /// The page the visitor is on.
    pub(super) page: &'static Page,
    /// When they arrived on it.
    pub(super) page_since_ms: i64,
    /// Burst events a hot user has still to plan.
    hot_left: u32,
    /// Planned beats; never empty while the visitor is active.
    beats: VecDeque<Beat>,
}

impl Visitor {
    /// Visitor number `n`, of class `class`, as they arrive: a landing page view planned,
    /// then a little browsing (for a bot: a crawl of the public site, and nothing more).
    pub(super) fn arrive(n: u64, class: Class, rng: &mut Rng) -> Visitor {
        let user_agent = match class {
            Class::Bot => rng.pick(&BOT_USER_AGENTS),
            _ => rng.pick(&USER_AGENTS),
        };
        let mut visitor = Visitor {
            n,
            class,
            user_agent,
            locale: rng.pick(&LOCALES),
            name: rng.pick(&FIRST_NAMES),
            domain: rng.pick(&EMAIL_DOMAINS),
            plan: rng.pick(&PLANS),
            signed_up: false,
            phase: Phase::Funnel(0),
            page: &LANDING_PAGES[0],
            page_since_ms: 0,
            hot_left: 0,
            beats: VecDeque::new(),
        };
        visitor.push(0, Action::Land);
        match class {
            Class::Bot => {
                visitor.phase = Phase::Leaving;
                for _ in 1..rng.range(BOT_PAGES.0, BOT_PAGES.1) {
                    let gap = rng.range(200, 3 * SECOND_MS);
                    let page = rng.pick_ref(&LANDING_PAGES);
                    visitor.push(gap, Action::View(page));
                }
            }
            Class::Hot | Class::Real | Class::Test => {
                if class == Class::Hot {
                    visitor.hot_left = rng.range(HOT_EVENTS.0, HOT_EVENTS.1) as u32;
                }
                for _ in 0..rng.below(4) {
                    let page = rng.pick_ref(&LANDING_PAGES);
                    let gap = dwell(rng);
                    visitor.push(gap, Action::Click(page.nav));
                    let gap = quick(rng);
                    visitor.push(gap, Action::View(page));
                }
            }
        }
        visitor
    }

    /// Takes the next planned action; there is one while the visitor is active.
    pub(super) fn next_action(&mut self) -> Option<Action> {
        self.beats.pop_front().map(|beat| beat.action)
    }

    /// The gap before the visitor's next action, planning their next stretch first if
    /// nothing is planned; `None` when they are done. `conversion` is the config's
    /// `step_conversion`.
    pub(super) fn plan_next(&mut self, rng: &mut Rng, conversion: &[f64; FUNNEL_LEN]) -> Option<i64> {
        if self.beats.is_empty() {
            self.plan_more(rng, conversion);
        }
        self.beats.front().map(|beat| beat.gap_ms)
    }

    /// `u_<n>`, `test_u_<n>` for a test account.
    pub(super) fn user_id(&self) -> String {
        format!("{}u_{}", self.id_prefix(), self.n)
    }

    /// `a_<n>`, `test_a_<n>` for a test account.
    pub(super) fn anonymous_id(&self) -> String {
        format!("{}a_{}", self.id_prefix(), self.n)
    }

    /// The anonymous id of a second device, for about one person in seven: their identify
    /// events after sign-up carry it, which links it to them.
    pub(super) fn second_device_id(&self) -> Option<String> {
        (self.n % 7 == 3).then(|| format!("{}a_{}_m", self.id_prefix(), self.n))
    }

    /// The anonymous id the sign-up carries: the visit's own, except for about one visitor
    /// in 97, who signs up on a computer the previous visitor used, so that anonymous id is
    /// claimed by two users (a link conflict, decided by the earliest claim).
    pub(super) fn sign_up_anonymous_id(&self) -> String {
        if self.n % 97 == 5 {
            format!("{}a_{}", self.id_prefix(), self.n - 1)
        } else {
            self.anonymous_id()
        }
    }

    fn id_prefix(&self) -> &'static str {
        if self.class == Class::Test {
            "test_"
        } else {
            ""
        }
    }

    pub(super) fn email(&self) -> String {
        match self.class {
            Class::Test => format!("qa.{}@onramp-test.invalid", self.n),
            _ => format!("{}.{}@{}", self.name, self.n, self.domain),
        }
    }

    fn push(&mut self, gap_ms: i64, action: Action) {
        self.beats.push_back(Beat { gap_ms, action });
    }

    /// Plans the next stretch of beats; leaves none when the visitor is done.
    fn plan_more(&mut self, rng: &mut Rng, conversion: &[f64; FUNNEL_LEN]) {
        match self.phase {
            Phase::Funnel(step) => {
                let rate = match self.class {
                    Class::Real => conversion.get(step).copied().unwrap_or(0.0),
                    Class::Hot | Class::Test | Class::Bot => 1.0,
                };
                if !rng.chance(rate) {
                    self.phase = Phase::Leaving;
                    for _ in 0..rng.below(3) {
                        let page = if self.signed_up {
                            &APP_HOME
                        } else {
                            rng.pick_ref(&LANDING_PAGES)
                        };
                        let gap = dwell(rng);
                        self.push(gap, Action::View(page));
                    }
                    return;
                }
                self.phase = if step + 1 < FUNNEL_LEN {
                    Phase::Funnel(step + 1)
                } else {
                    Phase::Completed
                };
                let opening = if rng.chance(SESSION_BREAK_SHARE) {
                    rng.range(SESSION_GAP_MS + MINUTE_MS, 8 * HOUR_MS)
                } else {
                    dwell(rng)
                };
                self.plan_step(rng, step, opening);
            }
            Phase::Completed if self.hot_left > 0 => {
                let n = self.hot_left.min(HOT_CHUNK);
                self.hot_left -= n;
                for _ in 0..n {
                    let feature = rng.pick_ref(&FEATURES);
                    let gap = rng.range(SECOND_MS, 20 * SECOND_MS);
                    let action = if rng.chance(0.5) {
                        Action::View(&feature.page)
                    } else {
                        Action::Feature(feature.name)
                    };
                    self.push(gap, action);
                }
            }
            Phase::Completed => {
                self.phase = Phase::Leaving;
                for _ in 0..rng.below(4) {
                    let feature = rng.pick_ref(&FEATURES);
                    let gap = dwell(rng);
                    self.use_feature(rng, feature, gap);
                }
            }
            Phase::Leaving => {}
        }
    }

    /// The beats of funnel step `step`; `opening` is the gap before the first one.
    fn plan_step(&mut self, rng: &mut Rng, step: usize, opening: i64) {
        match step {
            0 => {
                self.push(opening, Action::View(&SIGNUP_PAGE));
                let gap = dwell(rng);
                self.push(gap, Action::Click("signup_submit"));
                let gap = quick(rng);
                self.push(gap, Action::SignUp);
            }
            1 => {
                // Redirected to "check your inbox"; the verification follows from the mail.
                let gap = quick(rng);
                self.push(gap, Action::View(&VERIFY_PAGE));
                let inbox = if opening > SESSION_GAP_MS {
                    opening
                } else {
                    rng.range(20 * SECOND_MS, 10 * MINUTE_MS)
                };
                self.push(inbox, Action::EmailVerified);
            }
            2 => {
                self.push(opening, Action::View(&PROFILE_PAGE));
                let gap = dwell(rng);
                self.push(gap, Action::Click("profile_role"));
                let gap = dwell(rng);
                self.push(gap, Action::Click("profile_continue"));
                let gap = quick(rng);
                self.push(gap, Action::Step("profile"));
            }
            3 => {
                self.push(opening, Action::View(&WORKSPACE_PAGE));
                let gap = dwell(rng);
                self.push(gap, Action::Click("workspace_create"));
                let gap = quick(rng);
                self.push(gap, Action::Step("workspace"));
                let gap = quick(rng);
                self.push(gap, Action::Identify);
            }
            4 => {
                self.push(opening, Action::View(&INVITE_PAGE));
                let gap = dwell(rng);
                self.push(gap, Action::Click("invite_send"));
                let gap = quick(rng);
                self.push(gap, Action::Invite);
            }
            5 => {
                let feature = rng.pick_ref(&FEATURES);
                self.use_feature(rng, feature, opening);
            }
            _ => {
                self.push(opening, Action::View(&APP_HOME));
                let gap = quick(rng);
                self.push(gap, Action::Completed);
            }
        }
    }

    /// Plans a visit to `feature`: its page `gap_ms` after the previous beat, then, a dwell
    /// later, the feature used.
    fn use_feature(&mut self, rng: &mut Rng, feature: &'static Feature, gap_ms: i64) {
        self.push(gap_ms, Action::View(&feature.page));
        let gap = dwell(rng);
        self.push(gap, Action::Feature(feature.name));
    }
}

/// Time on a page: mostly seconds, sometimes a minute or a few.
fn dwell(rng: &mut Rng) -> i64 {
    let roll = rng.below(100);
    if roll < 55 {
        rng.range(SECOND_MS, 15 * SECOND_MS)
    } else if roll < 90 {
        rng.range(15 * SECOND_MS, 90 * SECOND_MS)
    } else {
        rng.range(90 * SECOND_MS, 5 * MINUTE_MS)
    }
}

/// The gap between an action and what it triggers (a submit and its server event).
fn quick(rng: &mut Rng) -> i64 {
    rng.range(150, 1_500)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use onramp_logic::enrich::step_name;
    use onramp_logic::validate::{parse_event, validate, ValidateConfig};

    use super::*;
    use crate::generator::testing::{assert_near, default_run, event_time, run, share};
    use crate::generator::{GeneratorConfig, FUNNEL_STEPS};

    /// Each funnel step is completed by no more users than the one before; about 70% of
    /// users sign up; hot users make the busiest user fire hundreds of events.
    #[test]
    fn funnel_declines_and_hot_users_skew() {
        let cfg = GeneratorConfig::default();
        let validate_cfg = ValidateConfig::default();
        let mut completed: Vec<HashSet<String>> = vec![HashSet::new(); FUNNEL_LEN];
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for line in default_run().iter().filter(|l| l.kind == LineKind::Event) {
            let event = validate(line.text.as_bytes(), None, &validate_cfg).unwrap().event;
            let id = event.identity().unwrap().to_string();
            if let Some(i) = step_name(&event).and_then(|s| FUNNEL_STEPS.iter().position(|f| *f == s)) {
                completed[i].insert(id.clone());
            }
            *per_user.entry(id).or_default() += 1;
        }
        let counts: Vec<usize> = completed.iter().map(HashSet::len).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
        assert!(counts[FUNNEL_LEN - 1] > 0, "{counts:?}");
        assert_near(
            "sign-up rate",
            share(counts[0], cfg.users as usize),
            cfg.step_conversion[0],
        );
        let busiest = per_user.values().max().copied().unwrap_or(0);
        assert!(busiest >= 200, "busiest user has {busiest} events");
    }

    /// Distinct `u_` ids never exceed `users`, and most users who sign up get one.
    #[test]
    fn user_ids_are_bounded_by_users() {
        for users in [10, 500] {
            let cfg = GeneratorConfig {
                users,
                ..GeneratorConfig::default()
            };
            let ids: HashSet<String> = run(cfg)
                .iter()
                .filter_map(|l| parse_event(l.text.as_bytes()).ok())
                .filter_map(|e| e.user_id)
                .filter(|id| id.starts_with("u_"))
                .collect();
            assert!(ids.len() as u64 <= users, "{} > {users}", ids.len());
            assert!(ids.len() as u64 >= users / 3, "only {} of {users}", ids.len());
        }
    }

    /// Some users come back after a break longer than `SESSION_GAP_MS` (a new session),
    /// while most gaps are seconds to minutes.
    #[test]
    fn some_users_take_session_breaks() {
        let mut last: HashMap<String, i64> = HashMap::new();
        let (mut gaps, mut breaks) = (0, 0);
        for line in default_run()
            .iter()
            .filter(|l| l.kind == LineKind::Event && !l.late && !l.duplicate)
        {
            let event = parse_event(line.text.as_bytes()).unwrap();
            let visitor = event
                .identity()
                .unwrap()
                .trim_start_matches(['a', 'u', '_'])
                .to_string();
            let t = event_time(&line.text);
            if let Some(previous) = last.insert(visitor, t) {
                gaps += 1;
                breaks += usize::from(t - previous > SESSION_GAP_MS);
            }
        }
        assert!(breaks > 20, "{breaks} breaks");
        assert!(breaks * 50 < gaps, "{breaks} breaks in {gaps} gaps");
    }
}
