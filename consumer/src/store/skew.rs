//! Skew: per partition, how many events it carried and its heaviest keys.
//!
//! A hot key (a bot, a load test, one huge account) makes one partition, one fold state and
//! one person do most of the work. Each partition keeps a space-saving sketch
//! (Metwally et al.) of [`HOT_KEYS_KEPT`] keys in the `skew` tree, updated in the commit's
//! transaction from the records of the batch, one at a time in offset order:
//!
//! - a kept key's count goes up by one;
//! - a new key takes a free slot with count 1, or else replaces the kept key with the
//!   smallest count (ties: the smallest key), inheriting that count + 1 and recording the
//!   inherited part as its `overcount`.
//!
//! So memory is bounded whatever arrives, every key with more than `events / 64` events
//! is kept, and a kept key's count is its true count plus at most its `overcount`. An
//! erasure frees slots ([`PartitionSkew::forget`]); a key that takes a freed slot may have
//! been evicted before, so it starts at `floor` (the largest count ever evicted, which
//! bounds every key not kept) plus one, with `floor` as its overcount. Because records are
//! taken one at a time in offset order (updates and rejects interleaved as in the
//! partition) and the sketch commits with the checkpoint, the sketch is the same whatever
//! the batching, restarts or crashes. A store written before the sketch existed starts it
//! at its next commit (its `events` then count from there).
//!
//! `/metrics` labels keys by a pseudonym ([`super::Store::key_pseudonym`]), not the id:
//! what a scraper stored cannot be erased. `onramp stats` shows the ids with their
//! pseudonyms.
//!
//! What counts: every record that reached the aggregate (applied, duplicate or skipped)
//! under its key (the user id), and every reject, under the identity it names if any.
//! Records of erased ids are not counted, and an erasure removes the person's ids from
//! every sketch. Keys over [`HOT_KEY_MAX_BYTES`] and rejects naming no identity count in
//! `events` but are not kept.

use serde::{Deserialize, Serialize};

/// Keys kept per partition.
pub const HOT_KEYS_KEPT: usize = 64;
/// Keys longer than this count in the partition's events but are not kept.
pub const HOT_KEY_MAX_BYTES: usize = 256;

/// One partition's events and heaviest keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSkew {
    /// Records counted (see the module docs).
    pub events: u64,
    /// The largest count a replaced key had: no key outside the sketch has more events.
    #[serde(default)]
    pub floor: u64,
    /// The sketch, in no particular order (see [`PartitionSkew::top`]).
    pub keys: Vec<HotKey>,
}

/// A kept key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    /// The key (a user id).
    pub key: String,
    /// Its estimated events: its true count plus at most `overcount`.
    pub events: u64,
    /// The count it inherited when it replaced another key (0: `events` is exact).
    pub overcount: u64,
}

impl PartitionSkew {
    /// Counts one record of `key` (`None`: a record naming no key).
    pub fn observe(&mut self, key: Option<&str>) {
        self.events += 1;
        let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= HOT_KEY_MAX_BYTES) else {
            return;
        };
        if let Some(k) = self.keys.iter_mut().find(|k| k.key == key) {
            k.events += 1;
            return;
        }
        if self.keys.len() < HOT_KEYS_KEPT {
            self.keys.push(HotKey {
                key: key.to_string(),
                events: self.floor + 1,
                overcount: self.floor,
            });
            return;
        }
        let Some(min) = self
            .keys
            .iter_mut()
            .min_by(|a, b| a.events.cmp(&b.events).then_with(|| a.key.cmp(&b.key)))
        else {
            return;
        };
        self.floor = self.floor.max(min.events);
        *min = HotKey {
            key: key.to_string(),
            events: min.events + 1,
            overcount: min.events,
        };
    }

    /// The `n` heaviest kept keys, heaviest first (ties: by key).
    pub fn top(&self, n: usize) -> Vec<&HotKey> {
        let mut keys: Vec<&HotKey> = self.keys.iter().collect();
        keys.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.key.cmp(&b.key)));
        keys.truncate(n);
        keys
    }

    /// Drops `ids` from the kept keys (an erasure); how many were kept.
    pub fn forget(&mut self, ids: &[String]) -> u64 {
        let before = self.keys.len();
        self.keys.retain(|k| !ids.contains(&k.key));
        (before - self.keys.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the space-saving guarantees on a skewed stream: every key with more than
    /// events/64 events is kept, each kept count is within its overcount of the truth, and
    /// memory stays at 64 keys whatever the number of distinct keys.
    #[test]
    fn heavy_keys_are_kept_with_bounded_error() {
        let mut s = PartitionSkew::default();
        let mut truth = std::collections::HashMap::<String, u64>::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A bot on every 5th record, a big account on every 50th, 20,000 ordinary users.
            let key = if i % 5 == 0 {
                "bot".to_string()
            } else if i % 50 == 1 {
                "big_account".to_string()
            } else {
                format!("u_{}", x % 20_000)
            };
            *truth.entry(key.clone()).or_default() += 1;
            s.observe(Some(&key));
        }
        assert_eq!(s.events, 200_000);
        assert!(s.keys.len() <= HOT_KEYS_KEPT);
        let top = s.top(2);
        assert_eq!((top[0].key.as_str(), top[1].key.as_str()), ("bot", "big_account"));
        for k in &s.keys {
            let t = truth[&k.key];
            assert!(k.events >= t && k.events - t <= k.overcount, "{k:?} true {t}");
        }
        for (key, t) in &truth {
            if *t > s.events / HOT_KEYS_KEPT as u64 {
                assert!(s.keys.iter().any(|k| &k.key == key), "{key} ({t} events) was dropped");
            }
        }
    }

    /// Proves a key taking a slot an erasure freed is still bracketed: it may have been
    /// evicted before with more events than it now shows.
    #[test]
    fn a_key_returning_after_an_erasure_keeps_its_bounds() {
        let mut s = PartitionSkew::default();
        let mut truth = std::collections::HashMap::<String, u64>::new();
        let mut feed = |s: &mut PartitionSkew, key: &str, n: u64| {
            for _ in 0..n {
                *truth.entry(key.to_string()).or_default() += 1;
                s.observe(Some(key));
            }
        };
        feed(&mut s, "early", 50);
        for i in 0..HOT_KEYS_KEPT {
            feed(&mut s, &format!("k{i}"), 60);
        }
        assert!(!s.keys.iter().any(|k| k.key == "early"), "evicted");
        assert_eq!(s.forget(&["k0".to_string()]), 1);
        feed(&mut s, "early", 1);
        let early = s.keys.iter().find(|k| k.key == "early").unwrap();
        assert!(early.events >= 51 && early.events - early.overcount <= 51, "{early:?}");
    }

    /// Proves erasure removes the ids and long keys are counted but not kept.
    #[test]
    fn forgotten_and_overlong_keys_are_not_kept() {
        let mut s = PartitionSkew::default();
        s.observe(Some("a"));
        s.observe(Some("b"));
        s.observe(Some(&"x".repeat(HOT_KEY_MAX_BYTES + 1)));
        s.observe(None);
        assert_eq!(s.events, 4);
        assert_eq!(s.forget(&["a".to_string()]), 1);
        assert_eq!(s.forget(&["a".to_string()]), 0);
        assert_eq!(s.keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
