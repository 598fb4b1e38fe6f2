//! Enrichment: derives, from one event alone, its category, funnel step, campaign,
//! referrer host, device, normalised locale and UTC date/hour.
//!
//! Device rules (first match wins, on the lower-cased user agent):
//! - class: `bot` if a bot word (`bot`, `crawler`, `spider`, `headless`) appears; `tablet`
//!   for `ipad`, `tablet`, or `android` without `mobile`; `mobile` for `mobi`, `iphone`,
//!   `android`; `desktop` for a recognised desktop OS; else `unknown`;
//! - os: iOS (`iphone`/`ipad`), Android, Windows, macOS (`mac os x`/`macintosh`),
//!   ChromeOS (`cros `), Linux;
//! - browser: Edge (`edg/`), Opera (`opr/`), Chrome (`chrome/`/`crios/`), Firefox
//!   (`firefox/`/`fxios/`), Safari (`safari/`).

use onramp_schemas::event::EventKind;
use onramp_schemas::{Campaign, Category, Device, DeviceClass, EnrichedEvent, Enrichment, Event, FunnelStep};

use crate::params::{parse_list, ParamError};
use crate::validate::{parse_timestamp, Rejection};

/// Param: the funnel, as an ordered comma-separated list of step names.
pub const PARAM_STEPS: &str = "steps";
/// The default onboarding funnel.
pub const DEFAULT_STEPS: &str =
    "sign_up,email_verified,profile,workspace,invite_sent,feature_used,onboarding_completed";
/// Most steps a funnel may have.
pub const MAX_STEPS: usize = 64;

/// The enrich module's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichConfig {
    /// Funnel steps in order.
    pub steps: Vec<String>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig::from_params(|_| None).expect("the defaults are valid")
    }
}

impl EnrichConfig {
    /// Builds the config from params looked up by `get`.
    pub fn from_params(get: impl Fn(&str) -> Option<String>) -> Result<Self, ParamError> {
        let raw = get(PARAM_STEPS).unwrap_or_else(|| DEFAULT_STEPS.to_string());
        let steps = parse_list(&raw);
        let mut seen = std::collections::BTreeSet::new();
        let unique = steps.iter().all(|s| seen.insert(s));
        if steps.is_empty() || steps.len() > MAX_STEPS || !unique {
            return Err(ParamError {
                param: PARAM_STEPS,
                value: raw,
                expected: format!("1 to {MAX_STEPS} distinct step names separated by commas"),
            });
        }
        Ok(EnrichConfig { steps })
    }

    /// The funnel position of `step`, if it is a funnel step.
    pub fn funnel_step(&self, step: &str) -> Option<FunnelStep> {
        let index = self.steps.iter().position(|s| s == step)?;
        Some(FunnelStep {
            step: step.to_string(),
            index: index as u32,
            total: self.steps.len() as u32,
            next: self.steps.get(index + 1).cloned(),
        })
    }
}

/// The name of the step an event completes, if it completes one: its own type for
/// `sign_up`, `email_verified`, `invite_sent`, `feature_used` and `onboarding_completed`;
/// the `step` property for `step_completed`.
pub fn step_name(event: &Event) -> Option<&str> {
    match &event.kind {
        EventKind::StepCompleted(s) => Some(s.step.as_str()),
        EventKind::SignUp(_)
        | EventKind::EmailVerified(_)
        | EventKind::InviteSent(_)
        | EventKind::FeatureUsed(_)
        | EventKind::OnboardingCompleted(_) => Some(event.type_name()),
        EventKind::PageView(_) | EventKind::Click(_) | EventKind::Identify(_) => None,
    }
}

/// Enriches one event. Fails only when its timestamp is not a valid event time (which
/// the validate module rejects first).
pub fn enrich(event: Event, cfg: &EnrichConfig) -> Result<EnrichedEvent, Rejection> {
    let event_time_ms = parse_timestamp(&event.timestamp)?;
    let (date, hour) = utc_date_hour(event_time_ms);
    let page = event.context.page.as_ref();
    let (prop_path, prop_url) = match &event.kind {
        EventKind::PageView(p) => (p.path.as_deref(), p.url.as_deref()),
        _ => (None, None),
    };
    let url = prop_url.or_else(|| page.and_then(|p| p.url.as_deref()));
    let page_path = prop_path
        .or_else(|| page.and_then(|p| p.path.as_deref()))
        .map(str::to_string)
        .or_else(|| url.and_then(url_path));
    let enrichment = Enrichment {
        category: category(&event.kind),
        event_time_ms,
        date,
        hour,
        funnel: step_name(&event).and_then(|s| cfg.funnel_step(s)),
        campaign: url.and_then(campaign),
        referrer_host: page.and_then(|p| p.referrer.as_deref()).and_then(host),
        device: device(event.context.user_agent.as_deref()),
        locale: event.context.locale.as_deref().and_then(normalise_locale),
        page_path,
    };
    Ok(EnrichedEvent { event, enrichment })
}

/// The category of an event type.
pub fn category(kind: &EventKind) -> Category {
    match kind {
        EventKind::SignUp(_) => Category::Acquisition,
        EventKind::PageView(_) | EventKind::Click(_) | EventKind::FeatureUsed(_) => Category::Engagement,
        EventKind::StepCompleted(_) | EventKind::EmailVerified(_) | EventKind::OnboardingCompleted(_) => {
            Category::Onboarding
        }
        EventKind::Identify(_) => Category::Identity,
        EventKind::InviteSent(_) => Category::Growth,
    }
}

fn utc_date_hour(ms: i64) -> (String, u8) {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => (
            t.format("%Y-%m-%d").to_string(),
            t.format("%H").to_string().parse().unwrap_or(0),
        ),
        None => (String::new(), 0),
    }
}

/// The UTM parameters in a URL's query, if any is set.
pub fn campaign(url: &str) -> Option<Campaign> {
    let query = url.split('#').next()?.split_once('?')?.1;
    let mut c = Campaign::default();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        if v.is_empty() {
            continue;
        }
        let slot = match k {
            "utm_source" => &mut c.source,
            "utm_medium" => &mut c.medium,
            "utm_campaign" => &mut c.campaign,
            "utm_term" => &mut c.term,
            "utm_content" => &mut c.content,
            _ => continue,
        };
        slot.get_or_insert(v);
    }
    (c != Campaign::default()).then_some(c)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The host of a URL, lower-case, without a leading `www.` or a port.
pub fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?.split(':').next()?.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty() && url.contains("://")).then_some(host)
}

fn url_path(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
    Some(path.split(['?', '#']).next().unwrap_or("/").to_string())
}

/// Device class, OS and browser from a user agent (rules in the module docs).
pub fn device(user_agent: Option<&str>) -> Device {
    let Some(ua) = user_agent.map(str::to_ascii_lowercase) else {
        return Device {
            class: DeviceClass::Unknown,
            os: None,
            browser: None,
        };
    };
    let has = |s: &str| ua.contains(s);
    let os = if has("iphone") || has("ipad") {
        Some("iOS")
    } else if has("android") {
        Some("Android")
    } else if has("windows") {
        Some("Windows")
    } else if has("mac os x") || has("macintosh") {
        Some("macOS")
    } else if has("cros ") {
        Some("ChromeOS")
    } else if has("linux") {
        Some("Linux")
    } else {
        None
    };
    let browser = if has("edg/") {
        Some("Edge")
    } else if has("opr/") {
        Some("Opera")
    } else if has("chrome/") || has("crios/") {
        Some("Chrome")
    } else if has("firefox/") || has("fxios/") {
        Some("Firefox")
    } else if has("safari/") {
        Some("Safari")
    } else {
        None
    };
    let class = if has("bot") || has("crawler") || has("spider") || has("headless") {
        DeviceClass::Bot
    } else if has("ipad") || has("tablet") || (has("android") && !has("mobile")) {
        DeviceClass::Tablet
    } else if has("mobi") || has("iphone") || has("android") {
        DeviceClass::Mobile
    } else if os.is_some() {
        DeviceClass::Desktop
    } else {
        DeviceClass::Unknown
    };
    Device {
        class,
        os: os.map(str::to_string),
        browser: browser.map(str::to_string),
    }
}

/// `en_us` → `en-US`, `FR` → `fr`; anything else that is not `ll[-RR]` (2–3 letter
/// language, 2-letter or 3-digit region) → `None`.
pub fn normalise_locale(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let mut parts = raw.split(['-', '_']);
    let lang = parts.next()?;
    let region = parts.next();
    if parts.next().is_some() || !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let lang = lang.to_ascii_lowercase();
    match region {
        None => Some(lang),
        Some(r) if r.len() == 2 && r.chars().all(|c| c.is_ascii_alphabetic()) => {
            Some(format!("{lang}-{}", r.to_ascii_uppercase()))
        }
        Some(r) if r.len() == 3 && r.chars().all(|c| c.is_ascii_digit()) => Some(format!("{lang}-{r}")),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::parse_event;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn funnel_steps_have_index_and_next() {
        let cfg = EnrichConfig::default();
        let f = cfg.funnel_step("email_verified").unwrap();
        assert_eq!((f.index, f.total, f.next.as_deref()), (1, 7, Some("profile")));
        assert_eq!(cfg.funnel_step("onboarding_completed").unwrap().next, None);
        assert!(cfg.funnel_step("nope").is_none());
    }

    #[test]
    fn bad_steps_param_is_refused() {
        for bad in ["", " , ", "a,b,a"] {
            let e = EnrichConfig::from_params(|_| Some(bad.to_string())).unwrap_err();
            assert_eq!(e.param, PARAM_STEPS);
        }
    }

    #[test]
    fn campaign_from_query() {
        let c =
            campaign("https://app.example/signup?utm_source=google&utm_medium=cpc&utm_campaign=spring%20sale&x=1#top")
                .unwrap();
        assert_eq!(c.source.as_deref(), Some("google"));
        assert_eq!(c.medium.as_deref(), Some("cpc"));
        assert_eq!(c.campaign.as_deref(), Some("spring sale"));
        assert!(campaign("https://app.example/signup?x=1").is_none());
        assert!(campaign("https://app.example/?utm_source=%").is_some());
        assert!(campaign("https://app.example/?utm_source=%e").is_some());
    }

    #[test]
    fn hosts() {
        assert_eq!(host("https://www.Google.com/search?q=x").as_deref(), Some("google.com"));
        assert_eq!(
            host("http://user@news.ycombinator.com:8080/item").as_deref(),
            Some("news.ycombinator.com")
        );
        assert_eq!(host("not a url"), None);
    }

    #[test]
    fn devices() {
        let iphone = device(Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1"));
        assert_eq!(
            (iphone.class, iphone.os.as_deref(), iphone.browser.as_deref()),
            (DeviceClass::Mobile, Some("iOS"), Some("Safari"))
        );
        let win = device(Some(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36 Edg/120.0",
        ));
        assert_eq!(
            (win.class, win.os.as_deref(), win.browser.as_deref()),
            (DeviceClass::Desktop, Some("Windows"), Some("Edge"))
        );
        let tab = device(Some(
            "Mozilla/5.0 (Linux; Android 13; SM-X700) Chrome/120.0 Safari/537.36",
        ));
        assert_eq!(tab.class, DeviceClass::Tablet);
        assert_eq!(device(None).class, DeviceClass::Unknown);
        assert_eq!(device(Some("Googlebot/2.1")).class, DeviceClass::Bot);
    }

    #[test]
    fn locales() {
        assert_eq!(normalise_locale("pt_br").as_deref(), Some("pt-BR"));
        assert_eq!(normalise_locale("FR").as_deref(), Some("fr"));
        assert_eq!(normalise_locale("es-419").as_deref(), Some("es-419"));
        assert_eq!(normalise_locale("klingon"), None);
        assert_eq!(normalise_locale("en-US-x"), None);
    }

    #[test]
    fn enrich_a_page_view() {
        let raw = br#"{"event_id":"e1","type":"page_view","user_id":"u1","timestamp":"2026-11-01T23:30:00+01:00","properties":{"url":"https://app.example/welcome?utm_source=newsletter"},"context":{"locale":"en_gb","page":{"referrer":"https://www.google.com/"}}}"#;
        let e = enrich(parse_event(raw).unwrap(), &EnrichConfig::default())
            .unwrap()
            .enrichment;
        assert_eq!((e.date.as_str(), e.hour), ("2026-11-01", 22));
        assert_eq!(e.category, Category::Engagement);
        assert_eq!(e.page_path.as_deref(), Some("/welcome"));
        assert_eq!(e.campaign.unwrap().source.as_deref(), Some("newsletter"));
        assert_eq!(e.referrer_host.as_deref(), Some("google.com"));
        assert_eq!(e.locale.as_deref(), Some("en-GB"));
        assert!(e.funnel.is_none());
    }
}
