//! The endpoints. Nothing here blocks an async worker: reads that iterate profiles run on
//! the blocking pool behind the scan semaphore ([`scan`]), erasure (a transaction and a
//! flush) on the blocking pool; single-key lookups stay inline.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::group::{local_parts, GroupView, MAX_CONCURRENT_GROUP_READS};
use super::stream::{Item, Streamed};
use super::{ApiError, AppState, Hub, BUSY_RETRY_AFTER_SECS, SCAN_QUEUE_WAIT};
use crate::query::{self, Hint, ProfileFilter};
use crate::store::person_in;
use crate::store::Store;

/// A request's query parameters; a missing, unknown or malformed one is a 400 `bad_query`
/// that says which, for every endpoint alike.
pub(super) struct ValidQuery<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| ValidQuery(params))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
    }
}

/// Runs `f`, a read that may iterate the whole store, on the blocking pool once one of
/// the [`super::MAX_CONCURRENT_SCANS`] slots is free; 503 `busy` if none frees up within
/// [`SCAN_QUEUE_WAIT`]. The slot is held until `f` returns, even if the client left.
async fn scan<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
{
    let store = state.hub.store()?;
    let slot = match tokio::time::timeout(SCAN_QUEUE_WAIT, state.scans.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            state.hub.metrics.request_refused("busy");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{} profile scans are already running and none finished within {} ms; retry after {BUSY_RETRY_AFTER_SECS} s",
                    super::MAX_CONCURRENT_SCANS,
                    SCAN_QUEUE_WAIT.as_millis()
                ),
            )
            .with_header("retry-after", BUSY_RETRY_AFTER_SECS.to_string()));
        }
    };
    blocking(move || {
        let _slot = slot;
        f(&store)
    })
    .await
}

/// Runs `f` on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("a store task failed: {e}"))))
}

/// A JSON body already encoded (on the blocking pool).
fn json_bytes(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::internal(format!("encoding a response: {e}")))
}

/// The person any of whose ids is `id` (a few point reads, on the blocking pool); in a
/// group of consumers, over every member's store (see [`super::group`]).
pub(super) async fn get_profile(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    let cfg = state.cfg.clone();
    // A group lookup waits on other members: at most a few hold blocking threads.
    let _slot = match &cfg.group {
        Some(_) => Some(group_read_slot(&state).await?),
        None => None,
    };
    let body = blocking(move || {
        let (person, reference) = match &cfg.group {
            Some(group) => {
                let view = GroupView::new(group, &store, cfg.token.as_deref())?;
                let person = person_in(&view, &id)?;
                (person, view.reference_time_ms())
            }
            None => (store.person(&id)?, query::reference_time_ms(&store)?),
        };
        let Some(person) = person else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "profile_not_found",
                format!("no profile for `{id}`"),
            ));
        };
        encode(&query::person_with_hints_at(person, &id, reference))
    })
    .await?;
    Ok(json_bytes(body))
}

/// One of the [`MAX_CONCURRENT_GROUP_READS`] slots, or 503 `busy` if none frees up within
/// [`SCAN_QUEUE_WAIT`].
async fn group_read_slot(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(SCAN_QUEUE_WAIT, state.group_reads.clone().acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => {
            state.hub.metrics.request_refused("busy");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{MAX_CONCURRENT_GROUP_READS} lookups across members are already running and none finished within {} ms; retry after {BUSY_RETRY_AFTER_SECS} s",
                    SCAN_QUEUE_WAIT.as_millis()
                ),
            )
            .with_header("retry-after", BUSY_RETRY_AFTER_SECS.to_string()))
        }
    }
}

/// What this store alone holds of `id`, for the other members of a group.
pub(super) async fn get_parts(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    let cfg = state.cfg.clone();
    let body = blocking(move || encode(&local_parts(&store, &id, cfg.group.as_ref())?)).await?;
    Ok(json_bytes(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    step: Option<String>,
    completed_step: Option<String>,
    hint: Option<String>,
    completed: Option<bool>,
    active_since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The `hint` query parameter, if given.
fn parse_hint(hint: Option<&str>) -> Result<Option<Hint>, ApiError> {
    hint.map(|h| {
        h.parse::<Hint>()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_hint", e.to_string()))
    })
    .transpose()
}

pub(super) async fn list_profiles(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<ListParams>,
) -> Result<Response, ApiError> {
    let hint = parse_hint(p.hint.as_deref())?;
    let active_since_ms = p
        .active_since
        .as_deref()
        .map(query::parse_active_since)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_active_since", e))?;
    if let Some(step) = p.step.as_deref().filter(|s| !state.cfg.steps.iter().any(|f| f == s)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_step",
            format!(
                "`step` is a funnel step and `{}` is not one; the funnel is: {} (to find profiles that completed any other step, use completed_step)",
                step.chars().take(64).collect::<String>(),
                state.cfg.steps.join(", ")
            ),
        ));
    }
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > query::MAX_PAGE_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be 1 to {}", query::MAX_PAGE_LIMIT),
        ));
    }
    let filter = ProfileFilter {
        step: p.step,
        completed_step: p.completed_step,
        hint,
        completed: p.completed,
        active_since_ms,
    };
    let cursor = p.cursor;
    let body = scan(&state, move |store| {
        encode(&query::list_profiles(store, &filter, cursor.as_deref(), limit)?)
    })
    .await?;
    Ok(json_bytes(body))
}

/// The query of an endpoint that takes none: any parameter is a 400 `bad_query`, not
/// silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

pub(super) async fn funnel(
    State(state): State<AppState>,
    ValidQuery(NoParams {}): ValidQuery<NoParams>,
) -> Result<Response, ApiError> {
    let steps = state.cfg.steps.clone();
    let body = scan(&state, move |store| encode(&query::funnel_stats(store, &steps)?)).await?;
    Ok(json_bytes(body))
}

pub(super) async fn delete_profile(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    if state.hub.read_only {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "read_only",
            "onramp serve is read-only; erase through the running `onramp run`",
        ));
    }
    let store = state.hub.store()?;
    let who = user.clone();
    let erased = blocking(move || Ok(store.erase(&who)?)).await?;
    if !erased.found_anything() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile for `{user}`"),
        ));
    }
    // After the store's erasure, so that an update published from here on finds the user
    // gone from the store (see `stream`). Every id of the person.
    let withdrawn: usize = erased.ids.iter().map(|id| state.hub.updates.forget(id)).sum();
    // Only the partitions that held the person's fold state restart their chains.
    state
        .hub
        .erased_partitions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(erased.fold_state_partitions.iter().copied());
    tracing::info!(
        partitions = ?erased.fold_state_partitions,
        ids = erased.ids.len(),
        profiles = erased.profiles,
        rejects = erased.rejects,
        links = erased.links,
        stream_updates = withdrawn,
        "person erased on request; its ids are suppressed"
    );
    Ok(Json(serde_json::json!({"user_id": user, "removed": erased})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateParams {
    user: Option<String>,
    step: Option<String>,
    hint: Option<String>,
}

/// Whether a client asking for `p` (with `person`: the person its `user` belonged to when
/// it subscribed) wants `s`: any id of the person matches.
fn wanted(p: &UpdateParams, person: Option<&str>, hint: Option<Hint>, s: &Streamed) -> bool {
    hint.is_none_or(|h| h.is_in(&s.hints))
        && p.user
            .as_ref()
            .is_none_or(|u| *u == s.update.user_id || *u == s.person_id || person == Some(s.person_id.as_str()))
        && p.step.as_ref().is_none_or(|step| {
            s.update
                .changes
                .as_ref()
                .and_then(|c| c.step.as_ref())
                .is_some_and(|st| st.name == *step)
        })
}

fn sse_event(s: &Streamed) -> Event {
    Event::default()
        .id(s.seq.to_string())
        .event("update")
        .data(serde_json::to_string(s).unwrap_or_default())
}

pub(super) async fn updates(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidQuery(p): ValidQuery<UpdateParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let hint = parse_hint(p.hint.as_deref())?;
    let last_id: Option<u64> = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID must be the id of an update this stream sent (a whole number)",
                    )
                })
        })
        .transpose()?;
    let person = match (&p.user, state.hub.store()) {
        (Some(user), Ok(store)) => {
            let user = user.clone();
            blocking(move || Ok(store.person_id(&user)?)).await.ok()
        }
        _ => None,
    };
    let hub = state.hub.clone();
    let counter = hub.clone();
    let items = hub.updates.subscribe_queued(
        last_id,
        move |s| wanted(&p, person.as_deref(), hint, s),
        move || counter.metrics.stream_dropped(),
    );
    hub.metrics.stream_client(true);
    let guard = ClientGuard(hub);
    let events = items.map(move |item| {
        let _counted_until_the_stream_ends = &guard;
        Ok(match item {
            Item::Update(s) => sse_event(&s),
            Item::Dropped(reason) => Event::default().event("dropped").data(reason),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Counts a stream client out when its stream is dropped.
struct ClientGuard(std::sync::Arc<Hub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.metrics.stream_client(false);
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.hub.store().ok();
    let size = store.as_ref().map(|s| s.size_on_disk());
    let mut text = state.hub.metrics.render(size);
    if let Some(store) = store {
        // A store read: off the async workers.
        let skew = blocking(move || {
            let pseudonym = store.key_pseudonyms()?;
            Ok(crate::metrics::render_skew(&store.skew()?, pseudonym))
        });
        match skew.await {
            Ok(section) => text.push_str(&section),
            Err(e) => tracing::warn!("/metrics: the skew section was left out: {}", e.message),
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = state.hub.readiness();
    if let Some(problem) = r.problem() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", problem));
    }
    Ok(Json(serde_json::json!({
        "status": "ready",
        "backlog_records": r.backlog_records,
        "lag_records": r.lag_records,
    }))
    .into_response())
}
