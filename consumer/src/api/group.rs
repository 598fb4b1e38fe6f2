//! Reads across a group of consumers (`onramp run --members … --member …`).
//!
//! Each member's store holds the partitions it owns, and a person's ids usually live on
//! different partitions (an anonymous id and its user are keyed apart), so one member's
//! store may hold only part of a person: some of its profiles, some of the claims that
//! link its ids. `GET /v1/profiles/{id}` on a member of a group therefore resolves the
//! person over every member's store: for each id the resolution needs, it asks every
//! member for what its own store holds of that id (`GET /v1/parts/{id}`, answered from
//! the local store only, so a request never fans out twice) and merges the parts —
//! profiles with `Profile::merge`, links by keeping each user's smallest claim — both
//! order-free. The rules that decide the person are the store's own
//! ([`crate::store::person_in`]), run over the merged view, so every member answers with
//! the same person, and the same as one consumer's store would. A member that does not
//! answer makes the lookup fail with 503 `member_unavailable`: a person assembled from
//! the members that did answer could silently lack ids.
//!
//! Members call each other with this member's `--token` (the group shares one).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use onramp_schemas::Profile;
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::cluster::assignment::{Member, Members};
use crate::store::{IdentityView, Link, Store};

/// How long one member may take to answer a parts request.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole lookup may take (it asks every member for each id of the person).
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(10);
/// Group lookups running at once; more wait up to [`super::SCAN_QUEUE_WAIT`], then get
/// 503 `busy`. Each holds a blocking thread while members answer, so a member that hangs
/// can take at most this many of them.
pub const MAX_CONCURRENT_GROUP_READS: usize = 4;
/// Largest parts answer read from a member.
const MAX_PARTS_BYTES: u64 = 16 << 20;

/// This API's place in a group.
#[derive(Debug, Clone)]
pub struct GroupReads {
    /// Every member, with the URL of its read API.
    pub members: Members,
    /// This member's name.
    pub me: String,
}

/// What one store holds of one id (the body of `GET /v1/parts/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdParts {
    /// The member that answered (`--member`; `None` outside a group). Checked by the
    /// asking member: a URL that reaches the wrong member (or the same member twice)
    /// would count its profiles twice, since merging adds counters.
    #[serde(default)]
    pub member: Option<String>,
    /// The group it was started in (member names, sorted): members started with different
    /// `--members` would split partitions differently and count some twice.
    #[serde(default)]
    pub group: Option<String>,
    /// The id's stored profile.
    pub profile: Option<Profile>,
    /// The id's link, if it is an anonymous id some user claimed here.
    pub link: Option<Link>,
    /// The anonymous ids this store indexes as claimed by the id, with their links here.
    pub claimed: BTreeMap<String, Link>,
    /// Partitions holding the id's fold state, each with its checkpoint.
    pub held_on: BTreeMap<u32, i64>,
    /// The store's reference time for hints (the latest partition watermark), ms.
    pub reference_time_ms: Option<i64>,
}

/// What the local store holds of `id`; `reads`: this API's place in a group, if any.
pub fn local_parts(store: &Store, id: &str, reads: Option<&GroupReads>) -> Result<IdParts, ApiError> {
    let mut claimed = BTreeMap::new();
    for anonymous_id in store.claimed_by(id)? {
        if let Some(link) = store.link(&anonymous_id)? {
            claimed.insert(anonymous_id, link);
        }
    }
    Ok(IdParts {
        member: reads.map(|r| r.me.clone()),
        group: reads.map(|r| r.members.to_string()),
        profile: store.profile(id)?,
        link: store.link(id)?,
        claimed,
        held_on: store.held_on(id)?,
        reference_time_ms: crate::query::reference_time_ms(store)?,
    })
}

/// Most members asked at once for one id's parts (one thread each).
const PARALLEL_MEMBER_REQUESTS: usize = 16;

/// The group's stores seen as one: each id's parts fetched from every member once (the
/// other members asked in parallel), merged.
pub struct GroupView<'a> {
    reads: &'a GroupReads,
    local: &'a Store,
    fetcher: Fetcher<'a>,
    parts: RefCell<HashMap<String, IdParts>>,
    /// The store's partition count: members that own none of them hold nothing.
    partitions: u32,
}

/// Asks one member for its parts of one id (shared by the threads of one lookup).
struct Fetcher<'a> {
    reads: &'a GroupReads,
    token: Option<&'a str>,
    agent: ureq::Agent,
    deadline: Instant,
}

impl<'a> GroupView<'a> {
    /// A view for one request.
    pub fn new(reads: &'a GroupReads, local: &'a Store, token: Option<&'a str>) -> Result<Self, ApiError> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect could land on another id's parts: an answer comes from the URL given.
            .max_redirects(0)
            .build()
            .into();
        Ok(GroupView {
            reads,
            local,
            fetcher: Fetcher {
                reads,
                token,
                agent,
                deadline: Instant::now() + LOOKUP_DEADLINE,
            },
            parts: RefCell::new(HashMap::new()),
            partitions: local.partitions()?.unwrap_or(0),
        })
    }

    /// The latest reference time of the stores asked so far.
    pub fn reference_time_ms(&self) -> Option<i64> {
        self.parts.borrow().values().filter_map(|p| p.reference_time_ms).max()
    }

    /// The merged parts of `id` over every member.
    fn merged(&self, id: &str) -> Result<IdParts, ApiError> {
        if let Some(p) = self.parts.borrow().get(id) {
            return Ok(p.clone());
        }
        let mut merged = local_parts(self.local, id, Some(self.reads))?;
        // A member that owns no partition consumes nothing (and refuses to start).
        let others: Vec<&Member> = self
            .reads
            .members
            .iter()
            .filter(|m| m.name != self.reads.me && !self.reads.members.owned(&m.name, self.partitions).is_empty())
            .collect();
        for some in others.chunks(PARALLEL_MEMBER_REQUESTS) {
            let fetcher = &self.fetcher;
            let answers: Vec<Result<IdParts, ApiError>> = std::thread::scope(|scope| {
                let asked: Vec<_> = some
                    .iter()
                    .map(|m| scope.spawn(move || fetcher.fetch(&m.name, &m.url, id)))
                    .collect();
                asked
                    .into_iter()
                    .map(|a| {
                        a.join()
                            .unwrap_or_else(|_| Err(ApiError::internal("a request to a member panicked")))
                    })
                    .collect()
            });
            for parts in answers {
                merge(&mut merged, parts?);
            }
        }
        self.parts.borrow_mut().insert(id.to_string(), merged.clone());
        Ok(merged)
    }
}

impl Fetcher<'_> {
    fn fetch(&self, name: &str, url: &str, id: &str) -> Result<IdParts, ApiError> {
        let unavailable = |why: String| {
            tracing::warn!(member = name, url, "a group read failed: {why}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "member_unavailable",
                format!("member `{name}` ({url}) holds part of the group's data and {why}; try again"),
            )
            .with_header("retry-after", "1")
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(unavailable(format!(
                "was not asked: the lookup used up its {} s",
                LOOKUP_DEADLINE.as_secs()
            )));
        }
        let mut request = self
            .agent
            .get(format!("{url}/v1/parts/{}", encode_segment(id)))
            .config()
            .timeout_global(Some(left.min(MEMBER_TIMEOUT)))
            .build();
        if let Some(token) = self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request
            .call()
            .map_err(|e| unavailable(format!("did not answer: {e}")))?;
        let status = response.status();
        // Configuration, not a passing failure: retrying cannot help.
        match status.as_u16() {
            401 | 403 => {
                return Err(misconfigured(format!(
                    "member `{name}` ({url}) refused this member's token ({status}): every member needs the same --token"
                )))
            }
            421 => {
                return Err(misconfigured(format!(
                    "member `{name}` does not answer to the host in its URL {url} (421): start it with --allow-host naming that host"
                )))
            }
            _ => {}
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_PARTS_BYTES)
            .read_to_string()
            .map_err(|e| unavailable(format!("sent an unreadable answer: {e}")))?;
        if !status.is_success() {
            let excerpt: String = body.chars().take(200).collect();
            return Err(unavailable(format!("answered {status}: {excerpt}")));
        }
        let parts: IdParts =
            serde_json::from_str(&body).map_err(|e| unavailable(format!("sent parts this build cannot read: {e}")))?;
        let ours = self.reads.members.to_string();
        match parts.member.as_deref() {
            Some(answered) if answered == name && parts.group.as_deref() == Some(ours.as_str()) => Ok(parts),
            Some(answered) if answered == name => Err(misconfigured(format!(
                "member `{name}` was started with --members naming {}, this one with {ours}: every member must be given the same list",
                parts.group.as_deref().unwrap_or("?").escape_debug()
            ))),
            Some(answered) => Err(misconfigured(format!(
                "the URL given for member `{name}` ({url}) reaches member `{}`; every member must be started with the same --members, each URL reaching its own member",
                answered.escape_debug()
            ))),
            None => Err(misconfigured(format!(
                "the URL given for member `{name}` ({url}) reaches an onramp that is not a member of a group (no --members)"
            ))),
        }
    }
}

fn misconfigured(why: String) -> ApiError {
    tracing::error!("group reads are misconfigured: {why}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "group_misconfigured", why)
}

/// Adds `other` (one member's parts of an id) to `into`; order-free.
fn merge(into: &mut IdParts, other: IdParts) {
    if let Some(p) = other.profile {
        match &mut into.profile {
            Some(mine) => mine.merge(&p),
            None => into.profile = Some(p),
        }
    }
    join_link(&mut into.link, other.link.as_ref());
    for (anonymous_id, link) in other.claimed {
        into.claimed.entry(anonymous_id).or_default().join(&link);
    }
    for (partition, offset) in other.held_on {
        into.held_on.entry(partition).or_insert(offset);
    }
    into.reference_time_ms = into.reference_time_ms.max(other.reference_time_ms);
}

fn join_link(into: &mut Option<Link>, other: Option<&Link>) {
    if let Some(other) = other {
        into.get_or_insert_with(Link::default).join(other);
    }
}

impl IdentityView for GroupView<'_> {
    type Error = ApiError;

    fn link(&self, anonymous_id: &str) -> Result<Option<Link>, ApiError> {
        Ok(self.merged(anonymous_id)?.link)
    }

    fn claims_of(&self, user: &str) -> Result<Vec<(String, Link)>, ApiError> {
        // An id one store indexes as claimed by `user` may have been pushed out of the
        // merged link by smaller claims that other stores saw: only kept claims count.
        let mut out = Vec::new();
        for anonymous_id in self.merged(user)?.claimed.into_keys() {
            if let Some(link) = self.link(&anonymous_id)? {
                if link.keeps(user) {
                    out.push((anonymous_id, link));
                }
            }
        }
        Ok(out)
    }

    fn profile(&self, id: &str) -> Result<Option<Profile>, ApiError> {
        Ok(self.merged(id)?.profile)
    }

    fn held_on(&self, id: &str) -> Result<BTreeMap<u32, i64>, ApiError> {
        Ok(self.merged(id)?.held_on)
    }
}

/// `id` as one URL path segment: everything but unreserved characters percent-encoded.
pub fn encode_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(claims: &[(i64, &str)]) -> Link {
        let mut l = Link::default();
        for (at, user) in claims {
            l.join(&Link {
                claims: vec![crate::store::Claim {
                    at_ms: *at,
                    partition: 0,
                    offset: *at,
                    user: user.to_string(),
                }],
            });
        }
        l
    }

    /// Merging members' parts gives the same whatever order the members answer in.
    #[test]
    fn parts_merge_in_any_order() {
        let mut a = IdParts {
            link: Some(link(&[(5, "u_b"), (9, "u_c")])),
            held_on: BTreeMap::from([(0, 10)]),
            reference_time_ms: Some(100),
            ..Default::default()
        };
        a.claimed.insert("a_1".into(), link(&[(3, "u_a")]));
        let b = IdParts {
            link: Some(link(&[(2, "u_a"), (7, "u_c")])),
            held_on: BTreeMap::from([(1, 20)]),
            reference_time_ms: Some(200),
            ..Default::default()
        };
        let (mut ab, mut ba) = (IdParts::default(), IdParts::default());
        merge(&mut ab, a.clone());
        merge(&mut ab, b.clone());
        merge(&mut ba, b);
        merge(&mut ba, a);
        assert_eq!(ab, ba);
        let owner = ab.link.as_ref().and_then(|l| l.owner().map(str::to_string));
        assert_eq!(
            owner.as_deref(),
            Some("u_a"),
            "the smallest claim over both stores owns"
        );
        assert_eq!(ab.link.unwrap().claims.len(), 3, "each user's smallest claim kept once");
        assert_eq!(ab.held_on, BTreeMap::from([(0, 10), (1, 20)]));
        assert_eq!(ab.reference_time_ms, Some(200));
    }

    #[test]
    fn ids_are_encoded_as_one_segment() {
        assert_eq!(encode_segment("u_1"), "u_1");
        assert_eq!(encode_segment("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
