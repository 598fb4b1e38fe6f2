//! Events as Protobuf: the envelope of `schemas/proto/onramp/v1/event.proto`, and the
//! conversions between it and [`Event`].
//!
//! A Protobuf record on the topic is [`PROTOBUF_MAGIC`] (0x00 0x01) followed by an encoded
//! [`v1::Event`]; any other record is read as JSON. JSON text never starts with 0x00, so
//! the two forms can share a topic and a record says which it is by its first two bytes.
//! Both bytes are needed: junk that merely starts with 0x00 (a run of NULs) is still
//! `invalid_json`, as it always was, and a future envelope version gets its own marker.
//!
//! [`v1`] is generated from the `.proto` by prost-build and committed (the SmartModules
//! build without `protoc`); `schemas/tests/proto.rs` regenerates it and fails when the
//! committed file differs. The conversions are exact both ways: an event converted to
//! Protobuf and back is the same event ([`to_proto`], [`from_proto`]), which is what makes
//! a Protobuf event mean what its JSON twin means.

use std::collections::BTreeMap;

use crate::event::{
    Click, Context, EmailVerified, EventKind, FeatureUsed, Identify, InviteSent, OnboardingCompleted, PageContext,
    PageView, SignUp, StepCompleted, TraitValue,
};
use crate::Event;

/// The types generated from `onramp/v1/event.proto`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!("onramp.v1.rs");
}

/// The first two bytes of a Protobuf record: 0x00 (never the start of JSON text), then
/// the envelope version (1).
pub const PROTOBUF_MAGIC: [u8; 2] = [0x00, 0x01];

/// True when a record is marked Protobuf (it starts with [`PROTOBUF_MAGIC`]); it is then
/// read as Protobuf only, whatever follows. Any other record is JSON.
pub fn is_protobuf(record: &[u8]) -> bool {
    record.starts_with(&PROTOBUF_MAGIC)
}

/// `event` as a Protobuf record: [`PROTOBUF_MAGIC`] and the encoded envelope.
pub fn encode_record(event: &Event) -> Vec<u8> {
    use prost::Message;
    let message = to_proto(event);
    let mut out = Vec::with_capacity(PROTOBUF_MAGIC.len() + message.encoded_len());
    out.extend_from_slice(&PROTOBUF_MAGIC);
    message.encode(&mut out).expect("a Vec grows to any length");
    out
}

/// Why a Protobuf record is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Not an encoded envelope v1 (no marker, or the encoding is wrong).
    Undecodable(String),
    /// Decoded, but not an event: `(field path, what is wrong)`.
    NotAnEvent(String, String),
}

/// Reads a Protobuf record (starting with [`PROTOBUF_MAGIC`]) as an event.
pub fn decode_record(record: &[u8]) -> Result<Event, ProtoError> {
    use prost::Message;
    let Some(body) = record.strip_prefix(&PROTOBUF_MAGIC) else {
        return Err(ProtoError::Undecodable(
            "no Protobuf marker (the record does not start with 0x00 0x01)".into(),
        ));
    };
    let message = v1::Event::decode(body).map_err(|e| ProtoError::Undecodable(e.to_string()))?;
    from_proto(message)
}

/// An event as its Protobuf envelope.
pub fn to_proto(event: &Event) -> v1::Event {
    use v1::event::Properties as P;
    let properties = match &event.kind {
        EventKind::SignUp(s) => P::SignUp(v1::SignUp {
            method: s.method.clone(),
            email: s.email.clone(),
            plan: s.plan.clone(),
        }),
        EventKind::PageView(p) => P::PageView(v1::PageView {
            path: p.path.clone(),
            url: p.url.clone(),
            title: p.title.clone(),
        }),
        EventKind::Click(c) => P::Click(v1::Click {
            target: c.target.clone(),
        }),
        EventKind::StepCompleted(s) => P::StepCompleted(v1::StepCompleted {
            step: s.step.clone(),
            form: s.form.clone(),
            duration_ms: s.duration_ms,
        }),
        EventKind::EmailVerified(e) => P::EmailVerified(v1::EmailVerified { email: e.email.clone() }),
        EventKind::Identify(i) => P::Identify(v1::Identify {
            traits: i
                .traits
                .iter()
                .map(|(name, value)| (name.clone(), trait_to_proto(value)))
                .collect(),
        }),
        EventKind::FeatureUsed(f) => P::FeatureUsed(v1::FeatureUsed {
            feature: f.feature.clone(),
        }),
        EventKind::InviteSent(i) => P::InviteSent(v1::InviteSent {
            // Unset means 1: a 1 is left out, as the JSON default is.
            count: (i.count != 1).then_some(i.count),
            role: i.role.clone(),
        }),
        EventKind::OnboardingCompleted(o) => P::OnboardingCompleted(v1::OnboardingCompleted { flow: o.flow.clone() }),
    };
    let c = &event.context;
    v1::Event {
        event_id: event.event_id.clone(),
        user_id: event.user_id.clone(),
        anonymous_id: event.anonymous_id.clone(),
        timestamp: event.timestamp.clone(),
        session_id: event.session_id.clone(),
        context: (!c.is_empty()).then(|| v1::Context {
            user_agent: c.user_agent.clone(),
            locale: c.locale.clone(),
            ip: c.ip.clone(),
            page: c.page.as_ref().map(|p| v1::PageContext {
                url: p.url.clone(),
                path: p.path.clone(),
                referrer: p.referrer.clone(),
                title: p.title.clone(),
            }),
        }),
        properties: Some(properties),
    }
}

fn trait_to_proto(value: &TraitValue) -> v1::TraitValue {
    use v1::trait_value::Value as V;
    v1::TraitValue {
        value: Some(match value {
            TraitValue::Bool(b) => V::Bool(*b),
            TraitValue::Int(i) => V::Int(*i),
            TraitValue::Float(f) => V::Float(*f),
            TraitValue::Text(t) => V::Text(t.clone()),
        }),
    }
}

/// A Protobuf envelope as an event, refusing what JSON cannot say: no event type (no
/// `properties` field set), a trait with no value, a trait that is not a finite number.
pub fn from_proto(message: v1::Event) -> Result<Event, ProtoError> {
    use v1::event::Properties as P;
    let not_an_event = |path: &str, what: &str| ProtoError::NotAnEvent(path.to_string(), what.to_string());
    let kind = match message.properties {
        None => {
            return Err(not_an_event(
                "type",
                "no event type: none of the `properties` fields is set (an event type newer than this onramp arrives as an unknown field)",
            ))
        }
        Some(P::SignUp(s)) => EventKind::SignUp(SignUp {
            method: s.method,
            email: s.email,
            plan: s.plan,
        }),
        Some(P::PageView(p)) => EventKind::PageView(PageView {
            path: p.path,
            url: p.url,
            title: p.title,
        }),
        Some(P::Click(c)) => EventKind::Click(Click { target: c.target }),
        Some(P::StepCompleted(s)) => EventKind::StepCompleted(StepCompleted {
            step: s.step,
            form: s.form,
            duration_ms: s.duration_ms,
        }),
        Some(P::EmailVerified(e)) => EventKind::EmailVerified(EmailVerified { email: e.email }),
        Some(P::Identify(i)) => {
            let mut traits = BTreeMap::new();
            for (name, value) in i.traits {
                let value = trait_from_proto(value)
                    .map_err(|what| not_an_event(&format!("properties.traits.{name}"), what))?;
                traits.insert(name, value);
            }
            EventKind::Identify(Identify { traits })
        }
        Some(P::FeatureUsed(f)) => EventKind::FeatureUsed(FeatureUsed { feature: f.feature }),
        Some(P::InviteSent(i)) => EventKind::InviteSent(InviteSent {
            count: i.count.unwrap_or(1),
            role: i.role,
        }),
        Some(P::OnboardingCompleted(o)) => EventKind::OnboardingCompleted(OnboardingCompleted { flow: o.flow }),
    };
    let context = message
        .context
        .map(|c| Context {
            user_agent: c.user_agent,
            locale: c.locale,
            ip: c.ip,
            page: c.page.map(|p| PageContext {
                url: p.url,
                path: p.path,
                referrer: p.referrer,
                title: p.title,
            }),
        })
        .unwrap_or_default();
    Ok(Event {
        event_id: message.event_id,
        kind,
        user_id: message.user_id,
        anonymous_id: message.anonymous_id,
        timestamp: message.timestamp,
        session_id: message.session_id,
        context,
    })
}

fn trait_from_proto(value: v1::TraitValue) -> Result<TraitValue, &'static str> {
    use v1::trait_value::Value as V;
    match value.value {
        None => Err("no value set"),
        Some(V::Bool(b)) => Ok(TraitValue::Bool(b)),
        Some(V::Int(i)) => Ok(TraitValue::Int(i)),
        // JSON has no NaN or infinity: such a trait could not be written on.
        Some(V::Float(f)) if !f.is_finite() => Err("not a finite number"),
        Some(V::Float(f)) => Ok(TraitValue::Float(f)),
        Some(V::Text(t)) => Ok(TraitValue::Text(t)),
    }
}

/// The identity of a Protobuf record, by the JSON rule (`user_id` if non-empty, else
/// `anonymous_id` if non-empty); `None` when it does not decode. The length bound is the
/// caller's, as for JSON.
pub fn record_user(record: &[u8]) -> Option<String> {
    let event = decode_record(record).ok()?;
    event.identity().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Proves the magic byte can never start a JSON text: JSON text starts with
    /// whitespace, `{`, `[`, `"`, a digit, `-`, `t`, `f` or `n`.
    #[test]
    fn json_never_looks_like_protobuf() {
        for json in [
            &b"{}"[..],
            b" {}",
            b"\n{}",
            b"[]",
            b"\"x\"",
            b"1",
            b"-1",
            b"true",
            b"null",
        ] {
            assert!(!is_protobuf(json));
        }
        assert!(is_protobuf(&[0x00, 0x01]));
        assert!(!is_protobuf(&[0x00]) && !is_protobuf(&[0x00, 0x00]) && !is_protobuf(&[0x00, 0x02]));
    }
}
