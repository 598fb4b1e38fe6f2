//! The enriched event: what `onramp-enrich` emits and `onramp-profile` reads.
//!
//! It is the original event, field for field, plus one `enrichment` object.

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// An event plus what onramp derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrichedEvent {
    /// The event as received.
    #[serde(flatten)]
    pub event: Event,
    /// Derived fields.
    pub enrichment: Enrichment,
}

/// Fields derived from one event, with no outside lookups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Enrichment {
    /// What kind of event this is.
    pub category: Category,
    /// The event time in milliseconds since the Unix epoch (UTC).
    pub event_time_ms: i64,
    /// The event's UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The event's UTC hour, 0–23.
    pub hour: u8,
    /// The funnel step this event completes, if it completes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel: Option<FunnelStep>,
    /// UTM parameters from the page URL's query, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Campaign>,
    /// Host of the referring URL, lower-case, without `www.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_host: Option<String>,
    /// Device, OS and browser from the user agent.
    pub device: Device,
    /// The locale normalised to `ll` or `ll-RR` (`pt_br` → `pt-BR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The page path, from the properties or else from `context.page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_path: Option<String>,
}

/// Event categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// `sign_up`.
    Acquisition,
    /// `page_view`, `click`, `feature_used`.
    Engagement,
    /// `step_completed`, `email_verified`, `onboarding_completed`.
    Onboarding,
    /// `identify`.
    Identity,
    /// `invite_sent`.
    Growth,
}

/// A step of the onboarding funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FunnelStep {
    /// The step's name.
    pub step: String,
    /// Its position in the funnel, from 0.
    pub index: u32,
    /// How many steps the funnel has.
    pub total: u32,
    /// The step after it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// UTM campaign parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Campaign {
    /// `utm_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `utm_medium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// `utm_campaign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// `utm_term`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// `utm_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// What the user agent says about the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Device {
    /// Device class.
    pub class: DeviceClass,
    /// Operating system, if recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Browser, if recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
}

/// Device classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    /// A desktop or laptop browser.
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
    /// A crawler or script.
    Bot,
    /// No user agent, or one that says nothing recognisable.
    Unknown,
}
