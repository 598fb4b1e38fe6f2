//! Identity: which ids are one person.
//!
//! # Links
//! An applied event that carries both `user_id` and `anonymous_id` is a *claim*: the user
//! claims the anonymous id at (event time, partition, offset). The `links` tree keeps, per
//! anonymous id, each claiming user's smallest claim, smallest first, at most
//! [`MAX_CLAIMS`] of them; it is written in the same transaction as the batch that carried
//! the claim. The **owner** of an anonymous id is the user with the smallest claim. Keeping
//! each user's minimum, and the smallest [`MAX_CLAIMS`] of those, does not depend on the
//! order claims arrive in, so the owner is the same whichever partition commits first.
//! Every kept claim is indexed by its user in `link_claims` (`identity_prefix(user) ++
//! anonymous id`), so a person's anonymous ids and an erasure's links are found without a
//! scan. Claims beyond the first are *link conflicts*: counted (`link_conflicts`), shown on
//! the person, and never change who owns the id.
//!
//! # Persons
//! A **claimant** is an id that has made a claim: it was the `user_id` of an event that
//! carried an anonymous id, so it is a user id. A claimant is always its own person, even
//! when some other event named it as an anonymous id (a producer mixing up its ids, or an
//! attacker): without that rule ids could resolve in chains (`a_1 → u_1 → u_2`) or cycles
//! (`u_1 → u_2 → u_1`) and drop out of every person. Any other id's person is the owner of
//! its link, when it has one whose owner has a profile, and the id itself otherwise; one
//! hop, since an owner is a claimant. A person's ids are its person id and every anonymous
//! id it owns that is not a claimant. All of it is decided by the final set of claims, so
//! it does not depend on the order partitions committed in. Profiles stay stored per id — the fold is per
//! key and per partition, and an anonymous id and its user usually live on different
//! partitions — and the person's profile is assembled on read with [`Profile::merge`], which
//! is order-free, so the person never depends on which partition committed first.

use std::collections::BTreeMap;

use onramp_schemas::Profile;
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;

use super::staged::Staged;

use super::check::{show_key, Findings};
use super::{abort, add, fold_key, identity_prefix, ProblemKind, Store, StoreError};

/// Most users whose claims on one anonymous id are kept (the smallest ones).
pub const MAX_CLAIMS: usize = 8;

/// One user's claim on an anonymous id. Ordered by (event time, partition, offset, user):
/// the smallest claim owns the id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Claim {
    /// Event time of the claiming event, ms.
    pub at_ms: i64,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// The claiming user id.
    pub user: String,
}

/// The `links` value of an anonymous id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Each claiming user's smallest claim, smallest first, at most [`MAX_CLAIMS`].
    pub claims: Vec<Claim>,
}

impl Link {
    /// The user that owns the anonymous id.
    pub fn owner(&self) -> Option<&str> {
        self.claims.first().map(|c| c.user.as_str())
    }

    /// Claims beyond the owner's.
    pub fn conflicts(&self) -> u64 {
        self.claims.len().saturating_sub(1) as u64
    }

    /// Adds a claim: kept when it is the user's smallest and among the [`MAX_CLAIMS`]
    /// smallest users' claims. Returns the user whose claim was pushed out, if one was.
    fn claim(&mut self, claim: Claim) -> Option<String> {
        if let Some(i) = self.claims.iter().position(|c| c.user == claim.user) {
            if claim < self.claims[i] {
                self.claims[i] = claim;
                self.claims.sort();
            }
            return None;
        }
        self.claims.push(claim);
        self.claims.sort();
        if self.claims.len() > MAX_CLAIMS {
            self.claims.pop().map(|c| c.user)
        } else {
            None
        }
    }

    /// Removes `user`'s claim; true if it had one.
    pub(super) fn drop_user(&mut self, user: &str) -> bool {
        let before = self.claims.len();
        self.claims.retain(|c| c.user != user);
        self.claims.len() != before
    }
}

/// `link_claims` key of `user`'s claim on `anonymous_id`.
pub(super) fn claim_key(user: &str, anonymous_id: &str) -> Vec<u8> {
    let mut key = identity_prefix(user);
    key.extend_from_slice(anonymous_id.as_bytes());
    key
}

/// An applied update that carried both ids: `user` claims `anonymous_id`.
pub(super) struct ClaimSeen<'a> {
    pub user: &'a str,
    pub anonymous_id: String,
    pub at_ms: i64,
    pub offset: i64,
}

/// Records the claims a batch's applied updates made, inside the batch's transaction; adds
/// the change in conflicts to the `link_conflicts` counter and returns it.
pub(super) fn record_claims(
    links: &Staged<'_>,
    link_claims: &Staged<'_>,
    counters: &Staged<'_>,
    partition: u32,
    seen: &[ClaimSeen<'_>],
) -> Result<u64, ConflictableTransactionError<String>> {
    let mut changed: BTreeMap<&str, (u64, Link)> = BTreeMap::new();
    for u in seen {
        let anonymous_id = u.anonymous_id.as_str();
        if anonymous_id.is_empty() || anonymous_id == u.user || u.user.is_empty() {
            continue;
        }
        if !changed.contains_key(anonymous_id) {
            let link: Link = match links.get(anonymous_id.as_bytes())? {
                Some(v) => serde_json::from_slice(&v).map_err(abort)?,
                None => Link::default(),
            };
            changed.insert(anonymous_id, (link.conflicts(), link));
        }
        let (_, link) = changed.get_mut(anonymous_id).expect("inserted above");
        let had = link.claims.iter().any(|c| c.user == u.user);
        let claim = Claim {
            at_ms: u.at_ms,
            partition,
            offset: u.offset,
            user: u.user.to_string(),
        };
        let pushed_out = link.claim(claim);
        let kept = link.claims.iter().any(|c| c.user == u.user);
        if kept && !had {
            link_claims.insert(claim_key(u.user, anonymous_id), &[])?;
        }
        if let Some(out) = pushed_out.filter(|out| out != u.user) {
            link_claims.remove(claim_key(&out, anonymous_id))?;
        }
    }
    let mut conflicts_before = 0;
    let mut conflicts_after = 0;
    for (anonymous_id, (before, link)) in &changed {
        conflicts_before += before;
        conflicts_after += link.conflicts();
        links.insert(anonymous_id.as_bytes(), serde_json::to_vec(link).map_err(abort)?)?;
    }
    let added = conflicts_after.saturating_sub(conflicts_before);
    add(counters, "link_conflicts", added)?;
    Ok(added)
}

/// A link conflict as a person shows it: another user also claimed one of its anonymous ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkConflict {
    /// The anonymous id.
    pub anonymous_id: String,
    /// The user that owns it (this person's id, or the other person's when this person lost).
    pub owner: String,
    /// Every other user that claimed it.
    pub also_claimed_by: Vec<String>,
}

/// One person: its ids and the merged profile of all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Person {
    /// The person id: the user id, or the anonymous id of a visitor never linked.
    pub id: String,
    /// Anonymous ids the person owns, sorted.
    pub anonymous_ids: Vec<String>,
    /// The merged profile ([`Profile::merge`] of every id's profile; `user_id` is `id`).
    pub profile: Profile,
    /// The partitions that hold any of its ids, each with its checkpoint: every record of
    /// the person up to that offset is in `profile`.
    pub as_of_partitions: BTreeMap<u32, i64>,
    /// Claims other users made on this person's anonymous ids, and claims this person made
    /// on ids another user owns.
    pub link_conflicts: Vec<LinkConflict>,
}

impl Store {
    /// The link of an anonymous id, if any user claimed it.
    pub fn link(&self, anonymous_id: &str) -> Result<Option<Link>, StoreError> {
        match self.links.get(anonymous_id.as_bytes()).map_err(|e| self.sled(e))? {
            Some(v) => Ok(Some(self.decode("links", anonymous_id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Whether `id` has made a claim (is a user id; see the module docs).
    pub fn is_claimant(&self, id: &str) -> Result<bool, StoreError> {
        match self.link_claims.scan_prefix(identity_prefix(id)).next() {
            Some(item) => item.map(|_| true).map_err(|e| self.sled(e)),
            None => Ok(false),
        }
    }

    /// The person id of `id`: the owner of its link when `id` is not a claimant and the
    /// owner has a profile, else `id` itself.
    pub fn person_id(&self, id: &str) -> Result<String, StoreError> {
        person_id_in(self, id)
    }

    /// The anonymous ids `user` claimed, with their links (owned by `user` or not).
    pub(super) fn claims_of(&self, user: &str) -> Result<Vec<(String, Link)>, StoreError> {
        let mut out = Vec::new();
        for anonymous_id in self.claimed_by(user)? {
            if let Some(link) = self.link(&anonymous_id)? {
                out.push((anonymous_id, link));
            }
        }
        Ok(out)
    }

    /// The anonymous ids this store indexes as claimed by `user` (`link_claims`).
    pub fn claimed_by(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let prefix = identity_prefix(user);
        let mut out = Vec::new();
        for item in self.link_claims.scan_prefix(&prefix) {
            let (k, _) = item.map_err(|e| self.sled(e))?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// The partitions holding fold state of `id`, each with its checkpoint (-1: none).
    pub fn held_on(&self, id: &str) -> Result<BTreeMap<u32, i64>, StoreError> {
        let mut held = BTreeMap::new();
        for partition in 0..self.partitions()?.unwrap_or(0) {
            if self
                .fold_state
                .contains_key(fold_key(partition, id))
                .map_err(|e| self.sled(e))?
            {
                held.insert(partition, self.checkpoint(partition)?.map_or(-1, |c| c.offset));
            }
        }
        Ok(held)
    }

    /// The person `id` belongs to (any of its ids), or `None` when no id of it has a profile.
    pub fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
        person_in(self, id)
    }

    /// Every person, in person-id order, starting after `after`: each profile whose id is
    /// its own person id. A person's anonymous ids are listed under it, never on their own,
    /// and every profile belongs to exactly one listed person.
    pub fn persons_after(&self, after: Option<&str>) -> impl Iterator<Item = Result<Person, StoreError>> + '_ {
        self.profiles_after(after).filter_map(move |item| {
            let own = item.and_then(|p| {
                if self.person_id(&p.user_id)? != p.user_id {
                    return Ok(None); // listed under its owner
                }
                self.person(&p.user_id)
            });
            own.transpose()
        })
    }
}

/// Checks (`onramp check`) of the `links` and `link_claims` trees.
impl Store {
    /// One `links` entry: decodes, claims sorted with one per user and at most
    /// [`MAX_CLAIMS`], each indexed in `link_claims`. Returns its conflicts.
    pub(super) fn check_link(&self, f: &mut Findings, k: &[u8], v: &[u8]) -> Result<u64, StoreError> {
        let key = show_key("links", k);
        let link: Link = match serde_json::from_slice(v) {
            Ok(l) => l,
            Err(e) => {
                f.add(ProblemKind::BadValue, "links", key, format!("not a link: {e}"));
                return Ok(0);
            }
        };
        let mut users: Vec<&str> = link.claims.iter().map(|c| c.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        if link.claims.is_empty()
            || link.claims.len() > MAX_CLAIMS
            || users.len() != link.claims.len()
            || !link.claims.is_sorted()
        {
            f.add(
                ProblemKind::BadValue,
                "links",
                key.clone(),
                format!(
                    "expected 1 to {MAX_CLAIMS} claims, sorted, one per user; found {}",
                    link.claims.len()
                ),
            );
        }
        for c in &link.claims {
            let indexed = self
                .link_claims
                .contains_key(claim_key(&c.user, &String::from_utf8_lossy(k)))
                .map_err(|e| self.sled(e))?;
            if !indexed {
                f.add(
                    ProblemKind::MissingIndex,
                    "links",
                    key.clone(),
                    format!("the claim of `{}` has no link_claims entry", c.user),
                );
            }
        }
        Ok(link.conflicts())
    }

    /// One `link_claims` entry: names a user whose claim the anonymous id's link keeps.
    pub(super) fn check_claim(&self, f: &mut Findings, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        let key = show_key("link_claims", k);
        let split = (k.len() >= 4)
            .then(|| u32::from_be_bytes([k[0], k[1], k[2], k[3]]) as usize)
            .filter(|n| 4 + n <= k.len())
            .map(|n| (&k[4..4 + n], &k[4 + n..]));
        let Some((user, anonymous_id)) = split else {
            f.add(
                ProblemKind::BadKey,
                "link_claims",
                key,
                "expected user length (4 bytes) ++ user ++ anonymous id".into(),
            );
            return Ok(());
        };
        if !v.is_empty() {
            f.add(
                ProblemKind::BadValue,
                "link_claims",
                key.clone(),
                format!("expected an empty value, found {} bytes", v.len()),
            );
        }
        let user = String::from_utf8_lossy(user);
        let claimed = match self.links.get(anonymous_id).map_err(|e| self.sled(e))? {
            // An undecodable link is reported when the links tree is walked.
            Some(v) => serde_json::from_slice::<Link>(&v)
                .map(|l| l.claims.iter().any(|c| c.user == user))
                .unwrap_or(true),
            None => false,
        };
        if !claimed {
            f.add(
                ProblemKind::DanglingIndex,
                "link_claims",
                key,
                format!(
                    "no kept claim of `{user}` on `{}`",
                    String::from_utf8_lossy(anonymous_id)
                ),
            );
        }
        Ok(())
    }
}

/// What resolving a person reads. A store answers from itself; a group of consumers
/// (`api::group`) answers by merging what every member's store holds, so the same rules
/// ([`person_id_in`], [`person_in`]) decide persons on one store and across members.
pub trait IdentityView {
    /// What a read can fail with.
    type Error: From<StoreError>;
    /// The link of an anonymous id: each claiming user's smallest claim, smallest first.
    fn link(&self, anonymous_id: &str) -> Result<Option<Link>, Self::Error>;
    /// The anonymous ids `user` claimed whose link still keeps its claim, with the links.
    fn claims_of(&self, user: &str) -> Result<Vec<(String, Link)>, Self::Error>;
    /// Whether `id` has made a claim that is kept.
    fn is_claimant(&self, id: &str) -> Result<bool, Self::Error> {
        Ok(!self.claims_of(id)?.is_empty())
    }
    /// The profile stored for `id`.
    fn profile(&self, id: &str) -> Result<Option<Profile>, Self::Error>;
    /// Whether `id` has a profile.
    fn has_profile(&self, id: &str) -> Result<bool, Self::Error> {
        Ok(self.profile(id)?.is_some())
    }
    /// The partitions holding fold state of `id`, each with its checkpoint.
    fn held_on(&self, id: &str) -> Result<BTreeMap<u32, i64>, Self::Error>;
}

impl IdentityView for Store {
    type Error = StoreError;

    fn link(&self, anonymous_id: &str) -> Result<Option<Link>, StoreError> {
        Store::link(self, anonymous_id)
    }

    fn claims_of(&self, user: &str) -> Result<Vec<(String, Link)>, StoreError> {
        Store::claims_of(self, user)
    }

    fn is_claimant(&self, id: &str) -> Result<bool, StoreError> {
        Store::is_claimant(self, id)
    }

    fn profile(&self, id: &str) -> Result<Option<Profile>, StoreError> {
        Store::profile(self, id)
    }

    fn has_profile(&self, id: &str) -> Result<bool, StoreError> {
        self.profiles.contains_key(id.as_bytes()).map_err(|e| self.sled(e))
    }

    fn held_on(&self, id: &str) -> Result<BTreeMap<u32, i64>, StoreError> {
        Store::held_on(self, id)
    }
}

impl Link {
    /// Adds every claim of `other` (another store's link of the same anonymous id): the
    /// result is the link one store would hold had it seen both stores' claims.
    pub fn join(&mut self, other: &Link) {
        for claim in &other.claims {
            self.claim(claim.clone());
        }
    }

    /// Whether `user`'s claim is kept.
    pub fn keeps(&self, user: &str) -> bool {
        self.claims.iter().any(|c| c.user == user)
    }
}

/// The person id of `id` in `view`: the owner of its link when `id` is not a claimant and
/// the owner has a profile, else `id` itself.
pub fn person_id_in<V: IdentityView + ?Sized>(view: &V, id: &str) -> Result<String, V::Error> {
    let Some(owner) = view.link(id)?.and_then(|l| l.owner().map(str::to_string)) else {
        return Ok(id.to_string());
    };
    if owner == id || !view.has_profile(&owner)? || view.is_claimant(id)? {
        return Ok(id.to_string());
    }
    Ok(owner)
}

/// The person `id` belongs to in `view`, or `None` when no id of it has a profile.
pub fn person_in<V: IdentityView + ?Sized>(view: &V, id: &str) -> Result<Option<Person>, V::Error> {
    let person_id = person_id_in(view, id)?;
    let mut anonymous_ids = Vec::new();
    let mut link_conflicts = Vec::new();
    for (anonymous_id, link) in view.claims_of(&person_id)? {
        let owner = link.owner().unwrap_or_default().to_string();
        if link.conflicts() > 0 {
            link_conflicts.push(LinkConflict {
                anonymous_id: anonymous_id.clone(),
                also_claimed_by: link.claims.iter().skip(1).map(|c| c.user.clone()).collect(),
                owner: owner.clone(),
            });
        }
        if owner == person_id && !view.is_claimant(&anonymous_id)? {
            anonymous_ids.push(anonymous_id);
        }
    }
    let mut profile = Profile::new(&person_id);
    let mut found = false;
    let mut as_of_partitions = BTreeMap::new();
    for id in std::iter::once(&person_id).chain(&anonymous_ids) {
        if let Some(p) = view.profile(id)? {
            found = true;
            profile.merge(&p);
        }
        for (partition, offset) in view.held_on(id)? {
            as_of_partitions.entry(partition).or_insert(offset);
        }
    }
    if !found {
        return Ok(None);
    }
    Ok(Some(Person {
        id: person_id,
        anonymous_ids,
        profile,
        as_of_partitions,
        link_conflicts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(at_ms: i64, partition: u32, offset: i64, user: &str) -> Claim {
        Claim {
            at_ms,
            partition,
            offset,
            user: user.into(),
        }
    }

    /// Proves the owner and the kept claims of an anonymous id do not depend on the order
    /// claims arrive in, including past the cap.
    #[test]
    fn the_smallest_claim_owns_whatever_the_order() {
        let claims: Vec<Claim> = (0..12)
            .map(|i| {
                claim(
                    1_000 - (i * 37 % 11) as i64,
                    (i % 3) as u32,
                    i as i64,
                    &format!("u_{}", i % 10),
                )
            })
            .collect();
        let mut expected: Option<Link> = None;
        for rotation in 0..claims.len() {
            for reversed in [false, true] {
                let mut order = claims.clone();
                order.rotate_left(rotation);
                if reversed {
                    order.reverse();
                }
                let mut link = Link::default();
                for c in order {
                    link.claim(c);
                }
                assert!(link.claims.len() <= MAX_CLAIMS);
                match &expected {
                    None => expected = Some(link),
                    Some(e) => assert_eq!(&link, e),
                }
            }
        }
        let link = expected.unwrap();
        let owner = claims.iter().min().unwrap();
        assert_eq!(link.owner(), Some(owner.user.as_str()));
    }

    #[test]
    fn a_user_keeps_only_its_smallest_claim() {
        let mut link = Link::default();
        link.claim(claim(5, 0, 9, "u_1"));
        link.claim(claim(3, 1, 2, "u_2"));
        link.claim(claim(1, 0, 4, "u_1"));
        assert_eq!(link.owner(), Some("u_1"));
        assert_eq!(link.claims.len(), 2);
        assert_eq!(link.conflicts(), 1);
        assert!(link.drop_user("u_1"));
        assert_eq!(link.owner(), Some("u_2"));
    }
}
