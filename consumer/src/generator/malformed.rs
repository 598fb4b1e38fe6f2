//! Malformed lines: the kinds the generator emits ([`Malformed`]), the reason validate
//! rejects each for, and how one is made from a well-formed event.

use onramp_schemas::event::EventKind;
use onramp_schemas::{Event, RejectReason};

use super::events::serialise;
use super::rng::Rng;

/// The kinds of malformed line the generator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// An event line cut off part way: not JSON.
    NotJson,
    /// A `type` that is not an event type (`signup`, `pageview`, …).
    UnknownType,
    /// Neither `user_id` nor `anonymous_id`.
    MissingIdentity,
    /// A property of the wrong JSON type (`"count":"three"`, `"target":true`, …).
    WrongPropertyType,
    /// A timestamp in 1970 (an unset client clock).
    Year1970,
}

impl Malformed {
    /// Every kind, in the order the generator picks from.
    pub const ALL: [Malformed; 5] = [
        Malformed::NotJson,
        Malformed::UnknownType,
        Malformed::MissingIdentity,
        Malformed::WrongPropertyType,
        Malformed::Year1970,
    ];

    /// The reason validate rejects this kind for.
    pub fn reason(self) -> RejectReason {
        match self {
            Malformed::NotJson => RejectReason::InvalidJson,
            Malformed::UnknownType => RejectReason::UnknownType,
            Malformed::MissingIdentity => RejectReason::MissingIdentity,
            Malformed::WrongPropertyType => RejectReason::SchemaViolation,
            Malformed::Year1970 => RejectReason::TimestampOutOfRange,
        }
    }
}

/// Near-miss type names, as a buggy client sends them.
static UNKNOWN_TYPES: [&str; 4] = ["signup", "pageview", "button_click", "trial_started"];

/// A malformed line of a uniformly chosen kind, made from `event` (which already carries
/// the line's own fresh id).
pub(super) fn malformed_line(rng: &mut Rng, mut event: Event) -> (Malformed, String) {
    let kind = rng.pick(&Malformed::ALL);
    let bad = match kind {
        Malformed::NotJson => {
            // A strict prefix of a JSON object is never JSON.
            let text = serialise(&event);
            let mut cut = text.len() / 3 + rng.below((text.len() / 3).max(1) as u64) as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_string()
        }
        Malformed::UnknownType => {
            let from = format!("\"type\":\"{}\"", event.type_name());
            let to = format!("\"type\":\"{}\"", rng.pick(&UNKNOWN_TYPES));
            serialise(&event).replacen(&from, &to, 1)
        }
        Malformed::MissingIdentity => {
            event.user_id = None;
            event.anonymous_id = None;
            serialise(&event)
        }
        Malformed::WrongPropertyType => {
            let (field, value) = match &event.kind {
                EventKind::SignUp(_) => ("email", "5"),
                EventKind::PageView(_) => ("path", "404"),
                EventKind::Click(_) => ("target", "true"),
                EventKind::StepCompleted(_) => ("step", "3"),
                EventKind::EmailVerified(_) => ("email", "false"),
                EventKind::Identify(_) => ("traits", "\"plan=team\""),
                EventKind::FeatureUsed(_) => ("feature", "[\"funnels\"]"),
                EventKind::InviteSent(_) => ("count", "\"three\""),
                EventKind::OnboardingCompleted(_) => ("flow", "1"),
            };
            with_properties(&serialise(&event), &format!("{{\"{field}\":{value}}}"))
        }
        Malformed::Year1970 => {
            // Only the date changes: the time of day stays as the event's text has it.
            event.timestamp = format!("1970-01-01{}", event.timestamp.get(10..).unwrap_or("T00:00:00Z"));
            serialise(&event)
        }
    };
    (kind, bad)
}

/// `text` with its `properties` object replaced by `properties`.
fn with_properties(text: &str, properties: &str) -> String {
    const KEY: &str = "\"properties\":";
    let Some(i) = text.find(KEY) else {
        return text.to_string();
    };
    let start = i + KEY.len();
    let end = json_value_len(&text[start..]).map_or(text.len(), |len| start + len);
    format!("{}{properties}{}", &text[..start], &text[end..])
}

/// Length of the JSON object or array that `s` starts with (strings in it skipped).
fn json_value_len(s: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in s.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}
