//! The onboarding event envelope, version 1.
//!
//! On the wire an event is one JSON object:
//!
//! ```json
//! {"event_id":"e-1","type":"page_view","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z",
//!  "properties":{"path":"/welcome"},
//!  "context":{"user_agent":"Mozilla/5.0 (Macintosh) Firefox/120.0","locale":"en-US"}}
//! ```
//!
//! `type` selects the shape of `properties` (see [`EventKind`]); `properties` may be left
//! out when every property of that type is optional. Unknown top-level fields are ignored
//! (forward compatibility); unknown property fields are ignored too. No object may repeat
//! a key (JSON readers disagree on which one counts), and the ids have byte-length
//! bounds; the JSON Schema states them as `maxLength`, which counts characters, so it
//! accepts a little more than `onramp-validate` does for non-ASCII ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest accepted `event_id`, in bytes. Tighter than the other ids: the fold keeps each
/// live user's last 32 event ids in memory.
pub const MAX_EVENT_ID_BYTES: usize = 128;
/// Longest accepted `user_id` / `anonymous_id`, in bytes; a longer one is no identity.
pub const MAX_IDENTITY_BYTES: usize = 256;
/// Longest accepted `session_id`, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 256;
/// Most traits one `identify` event may carry.
pub const MAX_TRAITS: usize = 64;

/// One onboarding event, as produced by apps and SDKs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Event {
    /// Unique id of this event; retries of the same event reuse it (used for dedup). At
    /// most [`MAX_EVENT_ID_BYTES`] bytes.
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_EVENT_ID_BYTES)))]
    pub event_id: String,
    /// The event type and its properties.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The known user, once there is one. At most [`MAX_IDENTITY_BYTES`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_IDENTITY_BYTES)))]
    pub user_id: Option<String>,
    /// The device/browser id before sign-up; used as the identity when `user_id` is absent.
    /// At most [`MAX_IDENTITY_BYTES`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_IDENTITY_BYTES)))]
    pub anonymous_id: Option<String>,
    /// Event time, RFC 3339 (for example `2026-11-01T09:00:00.250Z`).
    pub timestamp: String,
    /// Session id set by the client, if any (onramp sessionises by event time itself).
    /// At most [`MAX_SESSION_ID_BYTES`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_SESSION_ID_BYTES)))]
    pub session_id: Option<String>,
    /// Where the event happened.
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    pub context: Context,
}

impl Event {
    /// The identity the event is keyed by: `user_id`, else `anonymous_id`; `None` when
    /// both are missing or empty.
    pub fn identity(&self) -> Option<&str> {
        self.user_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| self.anonymous_id.as_deref().filter(|s| !s.is_empty()))
    }

    /// The event's `type` as it appears on the wire.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }
}

/// The event types and their `properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "properties", rename_all = "snake_case")]
pub enum EventKind {
    /// A user created an account.
    SignUp(SignUp),
    /// A page was shown.
    PageView(PageView),
    /// Something was clicked.
    Click(Click),
    /// A form or wizard step was completed.
    StepCompleted(StepCompleted),
    /// The user verified their email address.
    EmailVerified(EmailVerified),
    /// Traits of the user (plan, role, company size, …).
    Identify(Identify),
    /// A product feature was used.
    FeatureUsed(FeatureUsed),
    /// The user invited someone.
    InviteSent(InviteSent),
    /// The user finished onboarding.
    OnboardingCompleted(OnboardingCompleted),
}

/// Every `type` value [`EventKind`] accepts, in declaration order.
pub const EVENT_TYPES: [&str; 9] = [
    "sign_up",
    "page_view",
    "click",
    "step_completed",
    "email_verified",
    "identify",
    "feature_used",
    "invite_sent",
    "onboarding_completed",
];

impl EventKind {
    /// The wire name of this type (one of [`EVENT_TYPES`]).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::SignUp(_) => "sign_up",
            EventKind::PageView(_) => "page_view",
            EventKind::Click(_) => "click",
            EventKind::StepCompleted(_) => "step_completed",
            EventKind::EmailVerified(_) => "email_verified",
            EventKind::Identify(_) => "identify",
            EventKind::FeatureUsed(_) => "feature_used",
            EventKind::InviteSent(_) => "invite_sent",
            EventKind::OnboardingCompleted(_) => "onboarding_completed",
        }
    }
}

/// `sign_up` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SignUp {
    /// How the account was created (`email`, `google`, `github`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The address signed up with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The plan chosen at sign-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// `page_view` properties; each falls back to `context.page` when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PageView {
    /// Path of the page, e.g. `/onboarding/profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Full URL, query included (UTM parameters are read from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Page title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `click` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Click {
    /// What was clicked (element id or label).
    pub target: String,
}

/// `step_completed` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StepCompleted {
    /// The step's name, e.g. `profile`, `workspace`.
    pub step: String,
    /// The form or wizard the step belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    /// Time the user spent on the step, as measured by the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `email_verified` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EmailVerified {
    /// The verified address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `identify` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Identify {
    /// Trait name → value; at most [`MAX_TRAITS`] per event. Last writer wins per trait,
    /// by event time.
    #[serde(default)]
    pub traits: BTreeMap<String, TraitValue>,
}

/// A trait's value: a JSON string, number or boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum TraitValue {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction or out of `i64` range.
    Float(f64),
    /// Text.
    Text(String),
}

/// `feature_used` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FeatureUsed {
    /// The feature's name.
    pub feature: String,
}

/// `invite_sent` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InviteSent {
    /// How many people were invited by this event (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// The role they were invited as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

fn one() -> u32 {
    1
}

/// `onboarding_completed` properties (none are required).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OnboardingCompleted {
    /// The onboarding flow that was completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
}

/// Where an event happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Context {
    /// The browser's or SDK's User-Agent string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The user's locale, e.g. `en-US` or `pt_br`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The client's IP address (kept as given; never used as a label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The page the event happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PageContext>,
}

impl Context {
    /// True when no context field is set (then it is left out of the JSON).
    pub fn is_empty(&self) -> bool {
        self == &Context::default()
    }
}

/// The page an event happened on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PageContext {
    /// Full URL, query included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Path part of the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The referring URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// Page title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}
