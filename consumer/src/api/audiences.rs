//! Audience endpoints: sizes, members, the transitions stream (`/v1/triggers`) and
//! decisions. Every store read runs on the blocking pool.
//!
//! `/v1/triggers` reads the durable outbox, not an in-memory window: it sends every
//! transition after the client's `Last-Event-ID` (a transition's `cursor`, or from the
//! start of the outbox without one), then waits for the next commit that writes
//! transitions (a wake-up from the pipeline, or a poll every [`TRIGGERS_POLL`] when the
//! store is served by `onramp serve`). So resuming works across restarts. Delivery is at
//! least once around a reconnect; clients dedupe by the transition `id`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;

use super::handlers::{blocking, ValidQuery};
use super::{ApiError, AppState};
use crate::query::{self, DecisionError};
use crate::store::audience::{parse_cursor, Transition, TransitionKind};

/// Largest page of `/v1/audiences/{name}/members`.
pub const MAX_MEMBERS_PAGE: usize = 1_000;
/// Transitions read from the outbox per store read of `/v1/triggers`.
const TRIGGERS_PAGE: usize = 500;
/// How often `/v1/triggers` looks at the outbox when no commit woke it.
pub const TRIGGERS_POLL: Duration = Duration::from_secs(1);

pub(super) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    let body = blocking(move || {
        let rules = store.rules();
        let audiences: Vec<serde_json::Value> = store
            .audience_sizes()?
            .into_iter()
            .map(|(name, version, size)| {
                let description = rules.audience(&name).and_then(|a| a.description.clone());
                serde_json::json!({"name": name, "version": version, "size": size, "description": description})
            })
            .collect();
        Ok(serde_json::json!({"audiences": audiences, "frontier_ms": store.audience_frontier()?}))
    })
    .await?;
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MembersParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(super) async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidQuery(p): ValidQuery<MembersParams>,
) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_MEMBERS_PAGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be 1 to {MAX_MEMBERS_PAGE}"),
        ));
    }
    let body = blocking(move || {
        let Some(audience) = store.rules().audience(&name).cloned() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "audience_not_found",
                format!("no audience `{name}` in the store's rules"),
            ));
        };
        // One more than asked tells whether there is a next page.
        let mut page = store.audience_members(&audience.name, p.cursor.as_deref(), limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = if more {
            page.last().map(|(person, _)| person.clone())
        } else {
            None
        };
        let members: Vec<serde_json::Value> = page
            .into_iter()
            .map(|(person, m)| serde_json::json!({"person_id": person, "version": m.version, "since_ms": m.since_ms}))
            .collect();
        Ok(serde_json::json!({
            "audience": audience.name,
            "version": audience.version,
            "members": members,
            "next_cursor": next,
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionParams {
    surface: String,
}

pub(super) async fn decision(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidQuery(p): ValidQuery<DecisionParams>,
) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    let started = std::time::Instant::now();
    let decision = blocking(move || {
        query::decision(&store, &id, &p.surface).map_err(|e| match e {
            DecisionError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "profile_not_found", e.to_string()),
            DecisionError::UnknownSurface { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_surface", e.to_string())
            }
            DecisionError::Store(e) => e.into(),
        })
    })
    .await?;
    state.hub.metrics.decision(started.elapsed().as_secs_f64());
    Ok(Json(decision).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerParams {
    audience: Option<String>,
    kind: Option<TransitionKind>,
}

fn sse(t: &Transition) -> Event {
    Event::default()
        .id(t.cursor.clone())
        .event("transition")
        .data(serde_json::to_string(t).unwrap_or_default())
}

pub(super) async fn triggers(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidQuery(p): ValidQuery<TriggerParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let store = state.hub.store()?;
    let cursor = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().ok().and_then(|v| parse_cursor(v.trim())).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                "Last-Event-ID must be the id (cursor) of a transition this stream sent",
            )
        })?),
        None => None,
    };
    if let Some(a) = &p.audience {
        if store.rules().audience(a).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "audience_not_found",
                format!("no audience `{a}` in the store's rules"),
            ));
        }
    }
    let mut woken = state.hub.transitions_written();
    woken.mark_unchanged();
    let filter = move |t: &Transition| {
        p.audience.as_ref().is_none_or(|a| *a == t.audience) && p.kind.is_none_or(|k| k == t.kind)
    };
    let stream = futures_util::stream::unfold(
        (store, cursor, Vec::<Transition>::new().into_iter(), woken),
        move |(store, mut cursor, mut pending, mut woken)| {
            let filter = filter.clone();
            async move {
                loop {
                    if let Some(t) = pending.next() {
                        return Some((Ok(sse(&t)), (store, cursor, pending, woken)));
                    }
                    let s = store.clone();
                    let from = cursor.clone();
                    let page = tokio::task::spawn_blocking(move || s.transitions_after(from.as_deref(), TRIGGERS_PAGE))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                        .unwrap_or_else(|e| {
                            tracing::warn!("reading the transitions outbox failed (retrying): {e}");
                            Vec::new()
                        });
                    if let Some(last) = page.last() {
                        cursor = parse_cursor(&last.cursor);
                        pending = page.into_iter().filter(|t| filter(t)).collect::<Vec<_>>().into_iter();
                        continue;
                    }
                    if let Ok(Err(_)) = tokio::time::timeout(TRIGGERS_POLL, woken.changed()).await {
                        // The pipeline is gone: poll.
                        tokio::time::sleep(TRIGGERS_POLL).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
