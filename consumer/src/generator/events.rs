//! From a visitor's action to what goes on the wire: the [`Event`] it sends (type and
//! properties, `user_id` / `anonymous_id`, timestamp, context with user agent, locale,
//! page and referrer) and that event's JSON line.

use std::collections::BTreeMap;

use onramp_schemas::event::{
    Click, Context, EmailVerified, EventKind, FeatureUsed, Identify, InviteSent, OnboardingCompleted, PageContext,
    PageView, SignUp, StepCompleted,
};
use onramp_schemas::{Event, TraitValue};

use super::catalog::{Page, CAMPAIGNS, COMPANY_SIZES, INVITE_ROLES, LANDING_PAGES, REFERRERS, ROLES, SIGN_UP_METHODS};
use super::journeys::{Action, Class, Visitor};
use super::rng::Rng;
use super::time::format_timestamp;

/// Chance that a landing URL carries UTM parameters.
const CAMPAIGN_SHARE: f64 = 0.35;
/// Chance that a landing page view has a referrer.
const REFERRER_SHARE: f64 = 0.5;

/// The event `v` sends for `action` at `at`, with id `event_id`; keeps track of the page
/// `v` is on and of their sign-up.
pub(super) fn render(rng: &mut Rng, v: &mut Visitor, action: Action, at: i64, event_id: String) -> Event {
    let mut referrer = None;
    let kind = match action {
        Action::Land => {
            let page = rng.pick_ref(&LANDING_PAGES);
            let mut url = page.url();
            if v.class != Class::Bot && rng.chance(CAMPAIGN_SHARE) {
                let (source, medium, campaign) = rng.pick(&CAMPAIGNS);
                url.push_str(&format!(
                    "?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
                ));
            }
            if rng.chance(REFERRER_SHARE) {
                referrer = Some(rng.pick(&REFERRERS).to_string());
            }
            view(v, page, url, at)
        }
        Action::View(page) => view(v, page, page.url(), at),
        Action::Click(target) => EventKind::Click(Click {
            target: target.to_string(),
        }),
        Action::SignUp => EventKind::SignUp(SignUp {
            method: Some(rng.pick(&SIGN_UP_METHODS).to_string()),
            email: Some(v.email()),
            plan: Some(v.plan.to_string()),
        }),
        Action::EmailVerified => EventKind::EmailVerified(EmailVerified { email: Some(v.email()) }),
        Action::Step(step) => EventKind::StepCompleted(StepCompleted {
            step: step.to_string(),
            form: Some("onboarding".to_string()),
            duration_ms: Some((at - v.page_since_ms).max(0) as u64),
        }),
        Action::Identify => {
            let mut traits = BTreeMap::new();
            traits.insert("plan".to_string(), TraitValue::Text(v.plan.to_string()));
            let role = rng.pick(&ROLES).to_string();
            traits.insert("role".to_string(), TraitValue::Text(role));
            let size = rng.pick(&COMPANY_SIZES).to_string();
            traits.insert("company_size".to_string(), TraitValue::Text(size));
            EventKind::Identify(Identify { traits })
        }
        Action::Invite => EventKind::InviteSent(InviteSent {
            count: rng.range(1, 5) as u32,
            role: Some(rng.pick(&INVITE_ROLES).to_string()),
        }),
        Action::Feature(feature) => EventKind::FeatureUsed(FeatureUsed {
            feature: feature.to_string(),
        }),
        Action::Completed => EventKind::OnboardingCompleted(OnboardingCompleted {
            flow: Some("self_serve".to_string()),
        }),
    };
    // Sign-up links the two ids; before it a visitor is anonymous, after it known. A person
    // with a second device links it when they identify there; a sign-up on a shared
    // computer carries the previous visitor's anonymous id (a link conflict).
    let (user_id, anonymous_id) = match action {
        Action::SignUp => (Some(v.user_id()), Some(v.sign_up_anonymous_id())),
        Action::Identify if v.signed_up => (Some(v.user_id()), v.second_device_id()),
        _ if v.signed_up => (Some(v.user_id()), None),
        _ => (None, Some(v.anonymous_id())),
    };
    if matches!(action, Action::SignUp) {
        v.signed_up = true;
    }
    Event {
        event_id,
        kind,
        user_id,
        anonymous_id,
        timestamp: format_timestamp(at),
        session_id: None,
        context: Context {
            user_agent: Some(v.user_agent.to_string()),
            locale: Some(v.locale.to_string()),
            ip: None,
            page: Some(PageContext {
                path: Some(v.page.path.to_string()),
                referrer,
                ..PageContext::default()
            }),
        },
    }
}

/// The page view of `page` at `url`; `v` is on `page` from `at`.
fn view(v: &mut Visitor, page: &'static Page, url: String, at: i64) -> EventKind {
    v.page = page;
    v.page_since_ms = at;
    EventKind::PageView(PageView {
        path: Some(page.path.to_string()),
        url: Some(url),
        title: Some(page.title.to_string()),
    })
}

/// The JSON line of `event`.
pub(super) fn serialise(event: &Event) -> String {
    serde_json::to_string(event).expect("an Event always serialises")
}
