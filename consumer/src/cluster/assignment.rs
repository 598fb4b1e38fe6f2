//! Which member of a group of consumers owns which partition.
//!
//! `onramp run --source fluvio --members a=URL,b=URL,c=URL --member b` consumes only the
//! partitions member `b` owns. Ownership is rendezvous (highest-random-weight) hashing: each
//! (partition, member) pair gets a weight from a fixed hash, and a partition belongs to the
//! member with the highest weight. Adding a member moves to it exactly the partitions where
//! it now weighs most, and removing one moves only the partitions it owned; every other
//! partition keeps its owner. Every member computes the same table from the same flags, so
//! there is nothing to agree on at run time: membership is configuration, and Fluvio stays
//! the only distributed system.
//!
//! The hash is written out here (FNV-1a, then the SplitMix64 finaliser) rather than taken
//! from `std`, whose hasher may change between Rust releases: members built by different
//! compilers must still agree. A golden test pins the table.

use std::collections::BTreeSet;
use std::fmt;

/// One member of the group: its name (what `--member` gives) and the base URL of its read API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Letters, digits, `-` and `_`.
    pub name: String,
    /// `http://host:port` (no trailing slash).
    pub url: String,
}

/// The group, as `--members` lists it (order does not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members(Vec<Member>);

/// Most members in a group.
pub const MAX_MEMBERS: usize = 256;

impl Members {
    /// Parses `a=http://host:port,b=…`. Names must be unique; URLs must be `http://`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut members = Vec::new();
        let mut names = BTreeSet::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: a member is NAME=URL (e.g. b=http://10.0.0.2:8080)"))?;
            let (name, url) = (name.trim(), url.trim());
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "member name `{}`: use 1 to 64 letters, digits, `-` or `_`",
                    name.escape_debug()
                ));
            }
            // Members call each other without TLS (keep them on a private network).
            if url.starts_with("https://") {
                return Err(format!(
                    "member `{name}`: members talk without TLS; give an http:// URL on a private network"
                ));
            }
            let scheme = "http://";
            let rest = url
                .strip_prefix(scheme)
                .ok_or_else(|| {
                    format!(
                        "member `{name}`: the URL must start with http://, got `{}`",
                        url.escape_debug()
                    )
                })?
                .trim_end_matches('/');
            let url = format!("{scheme}{rest}");
            // A query, fragment or user:password would be mangled into every request (and
            // the password into logs).
            if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#' | '@' | '/')) {
                return Err(format!(
                    "member `{name}`: give the URL as http://host:port, without `{c}` (got `{}`)",
                    url.escape_debug()
                ));
            }
            if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("member `{name}`: `{}` names no host", url.escape_debug()));
            }
            if !names.insert(name.to_string()) {
                return Err(format!("member `{name}` is listed twice"));
            }
            members.push(Member {
                name: name.to_string(),
                url,
            });
        }
        if members.is_empty() {
            return Err("--members lists no member".into());
        }
        if members.len() > MAX_MEMBERS {
            return Err(format!(
                "--members lists {} members; at most {MAX_MEMBERS}",
                members.len()
            ));
        }
        // Two names reaching one API would each be asked for the same parts.
        for (i, a) in members.iter().enumerate() {
            if let Some(b) = members[i + 1..].iter().find(|b| b.url == a.url) {
                return Err(format!(
                    "members `{}` and `{}` have the same URL {}",
                    a.name, b.name, a.url
                ));
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Members(members))
    }

    /// The members, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.0.iter()
    }

    /// The member called `name`.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.0.iter().find(|m| m.name == name)
    }

    /// The member that owns `partition`: the highest weight, ties (never seen, but
    /// possible) to the smaller name.
    pub fn owner(&self, partition: u32) -> &Member {
        self.0
            .iter()
            .max_by(|a, b| {
                weight(partition, &a.name)
                    .cmp(&weight(partition, &b.name))
                    .then_with(|| b.name.cmp(&a.name))
            })
            .expect("a group has at least one member")
    }

    /// The partitions of `0..partitions` that `member` owns, ascending.
    pub fn owned(&self, member: &str, partitions: u32) -> Vec<u32> {
        (0..partitions).filter(|p| self.owner(*p).name == member).collect()
    }
}

impl fmt::Display for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|m| m.name.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// The weight of (partition, member): FNV-1a 64 over the partition (u32 big-endian) and the
/// name's bytes, then the SplitMix64 finaliser so that close inputs spread.
pub fn weight(partition: u32, member: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in partition.to_be_bytes().iter().chain(member.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(names: &[&str]) -> Members {
        let spec: Vec<String> = names.iter().map(|n| format!("{n}=http://{n}:8080")).collect();
        Members::parse(&spec.join(",")).expect("valid members")
    }

    fn table(m: &Members, partitions: u32) -> Vec<String> {
        (0..partitions).map(|p| m.owner(p).name.clone()).collect()
    }

    /// The table members compute must not change between builds: members built at
    /// different times still agree on who owns what.
    #[test]
    fn the_table_is_pinned() {
        assert_eq!(weight(0, "a"), 0xfc67_1424_e4c7_597c, "the hash changed");
        assert_eq!(table(&group(&["n1", "n2"]), 4).join(","), "n1,n2,n2,n2");
        assert_eq!(table(&group(&["n1", "n2", "n3"]), 4).join(","), "n1,n2,n3,n2");
    }

    /// Order in the flag does not matter.
    #[test]
    fn listing_order_does_not_matter() {
        let ab = Members::parse("a=http://x:1,b=http://y:2").unwrap();
        let ba = Members::parse("b=http://y:2, a=http://x:1/").unwrap();
        assert_eq!(ab, ba);
        assert_eq!(table(&ab, 64), table(&ba, 64));
    }

    /// Adding a member moves to it only the partitions it now owns; removing one moves
    /// only the partitions it owned; nothing else changes owner.
    #[test]
    fn only_moved_partitions_change_owner() {
        let names = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"];
        for n in 1..names.len() {
            let before = table(&group(&names[..n]), 1024);
            let after = table(&group(&names[..=n]), 1024);
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    assert_eq!(a, names[n], "a partition moved between two old members");
                    moved += 1;
                }
            }
            // The newcomer takes about 1/(n+1) of the partitions.
            let expected = 1024.0 / (n + 1) as f64;
            assert!(
                (moved as f64 - expected).abs() < expected * 0.3,
                "{moved} moved to the member {n}, expected about {expected:.0}"
            );
            // Removing it again gives the old table back.
            assert_eq!(table(&group(&names[..n]), 1024), before);
        }
        // Removing a member from the middle moves only its partitions.
        let all = table(&group(&names), 1024);
        let without = table(&group(&["m0", "m1", "m2", "m4", "m5", "m6", "m7"]), 1024);
        for (a, w) in all.iter().zip(&without) {
            assert!(a == w || a == "m3", "{a} lost a partition it kept");
        }
    }

    /// Partitions spread evenly enough: each member of 2 to 8 owns within 25% of the mean
    /// over 4096 partitions, and within 2 partitions of a fair share never matters for 4.
    #[test]
    fn partitions_spread_within_bounds() {
        let names = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"];
        for n in 2..=names.len() {
            let g = group(&names[..n]);
            let mean = 4096.0 / n as f64;
            for name in &names[..n] {
                let owned = g.owned(name, 4096).len() as f64;
                assert!(
                    (owned - mean).abs() < mean * 0.25,
                    "{name} owns {owned} of 4096 with {n} members"
                );
            }
            // Every partition has exactly one owner.
            let total: usize = names[..n].iter().map(|m| g.owned(m, 4096).len()).sum();
            assert_eq!(total, 4096);
        }
    }

    /// Bad flags are refused with a reason.
    #[test]
    fn bad_member_lists_are_refused() {
        for (spec, why) in [
            ("", "no member"),
            ("a", "NAME=URL"),
            ("a=ftp://x", "http://"),
            ("a=https://x", "without TLS"),
            ("a=http://", "names no host"),
            ("a=http://x,a=http://y", "listed twice"),
            ("a=http://x:1?q=1", "without `?`"),
            ("a=http://u:pw@x:1", "without `@`"),
            ("a=http://x:1/api", "without `/`"),
            ("a=http://x:1,b=http://x:1/", "the same URL"),
            ("a b=http://x", "letters, digits"),
            ("=http://x", "letters, digits"),
            ("a=http://x y", "names no host"),
        ] {
            let err = Members::parse(spec).expect_err(spec);
            assert!(err.contains(why), "{spec}: {err}");
        }
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("m{i}=http://h{i}")).collect();
        assert!(Members::parse(&many.join(",")).unwrap_err().contains("at most"));
    }
}
