//! The identity of a record, defined once for the partitioner, the validate module and
//! the rejected-event record, and the strict JSON reading it rests on.
//!
//! A record's identity is its top-level `user_id` when that is a non-empty string, else
//! its top-level `anonymous_id` when that is a non-empty string; the same rule as
//! `Event::identity`, by which the fold keys its state. It exists only when the record is
//! read without ambiguity:
//! - the record is one JSON object (valid UTF-8 JSON, nesting within serde_json's limit
//!   of 128);
//! - no object in it, at any depth, repeats a key (`{"user_id":"a","user_id":"b"}` would
//!   be read as `b` by one JSON reader and `a`, or an error, by another);
//! - the identity is at most [`MAX_IDENTITY_BYTES`] long (validate rejects longer ones).
//!
//! A Protobuf record (marked 0x00 0x01, `onramp_schemas::proto`) has the same identity
//! rule over its decoded envelope, and none when it does not decode.
//!
//! Otherwise there is none, and the record goes round-robin (keyless). So for every record
//! `onramp-validate` accepts, [`record_identity`] equals the accepted event's
//! `Event::identity()`, and a user is never folded on two partitions.
//!
//! Cost: one pass over the record with serde_json's deserializer, without building a
//! JSON value. Keys are borrowed from the input unless they contain escapes; the keys of
//! the objects being read share one stack (one allocation per record), searched linearly
//! while an object has at most [`SMALL_OBJECT_KEYS`] keys; a larger object moves its keys
//! to a `BTreeSet` (O(log n) per key, and no hashing an attacker could collide). The
//! recursion depth is serde_json's own limit.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::iter;

use onramp_schemas::event::MAX_IDENTITY_BYTES;
use onramp_schemas::proto::{is_protobuf, record_user};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The identity of a raw record (see the module docs): `user_id`, else `anonymous_id`;
/// `None` when the record is not one unambiguous JSON object, or has no usable id.
pub fn record_identity(bytes: &[u8]) -> Option<String> {
    if is_protobuf(bytes) {
        return record_user(bytes).filter(|id| id.len() <= MAX_IDENTITY_BYTES);
    }
    let path = RefCell::new(Vec::new());
    let Node::Object(ids) = walk(bytes, &path).ok()? else {
        return None;
    };
    let id = ids
        .user_id
        .filter(|s| !s.is_empty())
        .or_else(|| ids.anonymous_id.filter(|s| !s.is_empty()))?;
    (id.len() <= MAX_IDENTITY_BYTES).then(|| id.into_owned())
}

/// The path of the first key (in document order) that an object of the JSON text `bytes`
/// repeats, such as `user_id`, `properties.traits.plan` or `items[2].id`; `None` when no
/// object repeats a key. Meant for a text already read as JSON: on other text it finds a
/// repeat only if one comes before the first syntax error.
pub fn duplicate_key(bytes: &[u8]) -> Option<String> {
    match strict_reading(bytes) {
        StrictReading::RepeatedKey(path) => Some(path),
        StrictReading::Clean | StrictReading::Invalid => None,
    }
}

/// What one strict reading of a record's JSON found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictReading {
    /// One JSON text that `serde_json::Value` reads too (valid UTF-8, numbers in range,
    /// nesting within 128), and no object repeats a key.
    Clean,
    /// An object repeats a key; the path of the first repeat.
    RepeatedKey(String),
    /// Not a JSON text `serde_json::Value` would read.
    Invalid,
}

/// Reads `bytes` once, strictly (see [`StrictReading`]). The same pass as
/// [`duplicate_key`]: serde_json's own parser, without building a value.
pub fn strict_reading(bytes: &[u8]) -> StrictReading {
    let path = RefCell::new(Vec::new());
    match walk(bytes, &path) {
        Ok(_) => StrictReading::Clean,
        Err(_) => {
            let segments = path.into_inner();
            if segments.is_empty() {
                StrictReading::Invalid
            } else {
                StrictReading::RepeatedKey(format_path(segments.iter().rev()))
            }
        }
    }
}

/// One step of a path, innermost first while an error unwinds.
enum Segment {
    Key(String),
    Index(usize),
}

fn format_path<'a>(segments: impl Iterator<Item = &'a Segment>) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// What the walk keeps of a value: the text of a string, the ids of the top-level object.
enum Node<'de> {
    Text(Cow<'de, str>),
    Object(Ids<'de>),
    Other,
}

#[derive(Default)]
struct Ids<'de> {
    user_id: Option<Cow<'de, str>>,
    anonymous_id: Option<Cow<'de, str>>,
}

/// Objects with at most this many keys are checked for repeats by a linear search.
pub const SMALL_OBJECT_KEYS: usize = 16;

/// Reads `bytes` as one JSON text, failing on a repeated key. When it fails on a repeated
/// key, `path` holds that key's path, innermost segment first; on any other error it is
/// empty.
fn walk<'de>(bytes: &'de [u8], path: &RefCell<Vec<Segment>>) -> Result<Node<'de>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let keys = RefCell::new(Vec::with_capacity(SMALL_OBJECT_KEYS));
    let node = Walk {
        path,
        keys: &keys,
        top: true,
        text: false,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

/// Seed for one JSON value. `keys` holds the keys of the objects being read, outermost
/// first (each object's own above those of the objects it is in); `top` marks the
/// record itself, whose ids are kept, and `text` a field of it, whose text is kept.
#[derive(Clone, Copy)]
struct Walk<'p, 'de> {
    path: &'p RefCell<Vec<Segment>>,
    keys: &'p RefCell<Vec<Cow<'de, str>>>,
    top: bool,
    text: bool,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Node::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Node::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Node::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Node::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Other)
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        // Only the record's own fields are kept: no copy below them.
        Ok(if self.text {
            Node::Text(Cow::Owned(s.to_owned()))
        } else {
            Node::Other
        })
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let item = Walk {
            top: false,
            text: false,
            ..self
        };
        let mut index = 0;
        loop {
            match seq.next_element_seed(item) {
                Ok(Some(_)) => index += 1,
                Ok(None) => return Ok(Node::Other),
                Err(e) => return Err(self.unwind(e, Segment::Index(index))),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let value = Walk {
            top: false,
            text: self.top,
            ..self
        };
        // This object's keys: on the shared stack from `base` while few, else in `large`.
        // Values read in between push their own keys above ours and pop them when done.
        let base = self.keys.borrow().len();
        let mut large: Option<BTreeSet<Cow<'de, str>>> = None;
        let mut ids = Ids::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let repeated = match &large {
                Some(set) => set.contains(&key),
                None => self.keys.borrow()[base..].contains(&key),
            };
            if repeated {
                self.path.borrow_mut().push(Segment::Key(key.into_owned()));
                return Err(de::Error::custom("duplicate key"));
            }
            let node = match map.next_value_seed(value) {
                Ok(node) => node,
                Err(e) => return Err(self.unwind(e, Segment::Key(key.into_owned()))),
            };
            if self.top {
                let text = match node {
                    Node::Text(t) => Some(t),
                    _ => None,
                };
                match key.as_ref() {
                    "user_id" => ids.user_id = text,
                    "anonymous_id" => ids.anonymous_id = text,
                    _ => {}
                }
            }
            match &mut large {
                Some(set) => {
                    set.insert(key);
                }
                None => {
                    let mut keys = self.keys.borrow_mut();
                    if keys.len() - base < SMALL_OBJECT_KEYS {
                        keys.push(key);
                    } else {
                        large = Some(keys.drain(base..).chain(iter::once(key)).collect());
                    }
                }
            }
        }
        self.keys.borrow_mut().truncate(base);
        Ok(Node::Object(ids))
    }
}

impl Walk<'_, '_> {
    /// Passes an error up; when it is a repeated key below, adds this level to its path.
    fn unwind<E>(&self, e: E, segment: Segment) -> E {
        let mut path = self.path.borrow_mut();
        if !path.is_empty() {
            path.push(segment);
        }
        e
    }
}

/// Seed for an object key: borrowed from the input unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{validate, ValidateConfig};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const GOOD: &str = r#"{"event_id":"e1","type":"page_view","user_id":"u_1","anonymous_id":"a_1","timestamp":"2026-11-01T09:00:00Z","properties":{"path":"/"},"context":{"locale":"en-US","page":{"path":"/"}}}"#;

    /// Proves the identity is user_id, else anonymous_id, non-empty strings only, and
    /// that escapes are decoded as any JSON reader decodes them.
    #[test]
    fn identity_is_user_id_else_anonymous_id() {
        assert_eq!(record_identity(GOOD.as_bytes()).as_deref(), Some("u_1"));
        assert_eq!(
            record_identity(br#"{"user_id":"","anonymous_id":"a"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            record_identity(br#"{"user_id":null,"anonymous_id":"a"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            record_identity(br#"{"user_id":5,"anonymous_id":"a"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            record_identity(br#"{"anonymous_id":"a","user_id":"u"}"#).as_deref(),
            Some("u")
        );
        assert_eq!(record_identity(br#"{"user_id":"u\u005f1"}"#).as_deref(), Some("u_1"));
        assert_eq!(record_identity(br#"{"user_id":5}"#), None);
        assert_eq!(record_identity(br#"{"user_id":""}"#), None);
        assert_eq!(record_identity(br#"{"properties":{"user_id":"nested"}}"#), None);
    }

    /// Proves records that are not one JSON object have no identity.
    #[test]
    fn non_objects_have_no_identity() {
        for bad in [
            &b"not json"[..],
            b"",
            b"[{\"user_id\":\"u\"}]",
            b"\"u\"",
            b"{\"user_id\":\"u\"} trailing",
            b"{\"user_id\":\"u\"",
            &[b'{', b'"', 0xff, b'"', b':', b'1', b'}'],
        ] {
            assert_eq!(record_identity(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!(r#"{{"user_id":"u","x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(record_identity(deep.as_bytes()), None, "deeper than serde_json's limit");
    }

    /// Proves a key repeated in any object, at any depth, leaves the record without an
    /// identity, including a repeat spelled with an escape.
    #[test]
    fn duplicate_keys_anywhere_leave_no_identity() {
        for dup in [
            r#"{"user_id":"X","type":"click","user_id":"X"}"#,
            r#"{"user_id":"X","user_id":"Y"}"#,
            r#"{"user_id":"X","user\u005fid":"Y"}"#,
            r#"{"user_id":"X","properties":{"a":1,"a":1}}"#,
            r#"{"user_id":"X","context":{"page":{"path":"/","path":"/"}}}"#,
            r#"{"user_id":"X","items":[{"k":1},{"k":1,"k":2}]}"#,
        ] {
            assert_eq!(record_identity(dup.as_bytes()), None, "{dup}");
        }
        assert_eq!(
            record_identity(br#"{"user_id":"X","items":[{"k":1},{"k":1}]}"#).as_deref(),
            Some("X"),
            "the same key in two objects is no repeat"
        );
    }

    /// Proves the identity obeys validate's length bound on ids.
    #[test]
    fn identities_longer_than_the_bound_are_none() {
        let at = format!(r#"{{"user_id":"{}"}}"#, "u".repeat(MAX_IDENTITY_BYTES));
        assert_eq!(
            record_identity(at.as_bytes()).map(|s| s.len()),
            Some(MAX_IDENTITY_BYTES)
        );
        let over = format!(
            r#"{{"user_id":"{}","anonymous_id":"a"}}"#,
            "u".repeat(MAX_IDENTITY_BYTES + 1)
        );
        assert_eq!(record_identity(over.as_bytes()), None);
    }

    /// Proves repeats are found in objects larger than the linear-search size, whether the
    /// repeat comes before or after the switch, and next to nested objects.
    #[test]
    fn repeats_in_large_objects() {
        let object = |n: usize, repeat: Option<usize>| {
            let mut keys: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{{"k{i}":1}}"#)).collect();
            if let Some(i) = repeat {
                keys.push(format!(r#""k{i}":2"#));
            }
            format!(r#"{{"user_id":"u",{}}}"#, keys.join(","))
        };
        for n in [
            1,
            SMALL_OBJECT_KEYS - 1,
            SMALL_OBJECT_KEYS,
            SMALL_OBJECT_KEYS + 1,
            1_000,
        ] {
            assert_eq!(
                record_identity(object(n, None).as_bytes()).as_deref(),
                Some("u"),
                "{n} keys"
            );
            for i in [0, n / 2, n - 1] {
                assert_eq!(
                    duplicate_key(object(n, Some(i)).as_bytes()),
                    Some(format!("k{i}")),
                    "{n} keys, k{i} repeated"
                );
            }
        }
        let many_objects = format!(r#"{{"user_id":"u","a":[{}]}}"#, vec![r#"{"k":1,"j":2}"#; 100].join(","));
        assert_eq!(record_identity(many_objects.as_bytes()).as_deref(), Some("u"));
    }

    /// Proves the duplicate's path names the repeated key through objects and arrays.
    #[test]
    fn duplicate_key_paths() {
        let cases = [
            (r#"{"user_id":"X","user_id":"X"}"#, Some("user_id")),
            (
                r#"{"properties":{"traits":{"plan":"a","plan":"b"}}}"#,
                Some("properties.traits.plan"),
            ),
            (r#"{"items":[{"k":1},{"id":1,"id":2}]}"#, Some("items[1].id")),
            (r#"[[{"a":1,"a":1}]]"#, Some("[0][0].a")),
            (r#"{"a":{"b":1},"a":{"b":1,"b":1}}"#, Some("a")),
            (r#"{"a":{"b":1,"b":1},"a":1}"#, Some("a.b")),
            (r#"{"a":1,"b":{"a":1}}"#, None),
            ("not json", None),
        ];
        for (json, want) in cases {
            assert_eq!(duplicate_key(json.as_bytes()).as_deref(), want, "{json}");
        }
    }

    /// Proves the identity agrees with validate on every record validate accepts, over
    /// variations of ids, key order, escapes and repeats.
    #[test]
    fn agrees_with_validate_on_accepted_records() {
        let cfg = ValidateConfig::default();
        let ids = [
            r#""user_id":"u_1""#,
            r#""user_id":"""#,
            r#""user_id":null"#,
            r#""anonymous_id":"a_1""#,
            r#""anonymous_id":"a\u005f1""#,
            r#""anonymous_id":"""#,
            r#""user_id":"u_2","user_id":"u_3""#,
        ];
        let mut accepted = 0;
        for a in ids {
            for b in ids {
                let rec = format!(
                    r#"{{{a},"event_id":"e","type":"click","timestamp":"2026-11-01T09:00:00Z","properties":{{"target":"b"}},{b}}}"#
                );
                let identity = record_identity(rec.as_bytes());
                if let Ok(ok) = validate(rec.as_bytes(), None, &cfg) {
                    accepted += 1;
                    assert_eq!(identity.as_deref(), ok.event.identity(), "{rec}");
                }
            }
        }
        assert!(accepted > 10, "only {accepted} variations accepted");
    }
}
