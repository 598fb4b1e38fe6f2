//! The read API for downstream apps, served from inside `onramp run` (sled is
//! single-process) or by `onramp serve` over a store nothing is writing.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /v1/profiles/{user_id}` | the profile, its hints and `as_of` (offset, event time) |
//! | `GET /v1/profiles?step=&completed_step=&hint=&completed=&active_since=&limit=&cursor=` | filtered page, stable cursor |
//! | `GET /v1/funnel` | users per step, conversion, median time between steps |
//! | `GET /v1/updates?user=&step=&hint=` | Server-Sent Events: each applied update once its batch commits |
//! | `DELETE /v1/profiles/{user_id}` | erasure (needs the token) |
//! | `GET /metrics`, `/healthz`, `/readyz` | Prometheus text, alive, caught up |
//!
//! Security: binding anything but loopback requires a token, and then every endpoint but
//! `/healthz` needs `Authorization: Bearer <token>`; DELETE always needs it. Tokens are
//! compared in constant time. Bodies are limited to [`MAX_BODY_BYTES`], queries to
//! [`MAX_QUERY_BYTES`]. Errors are JSON `{"error":{"code","message"}}`. User-supplied
//! values are only ever sled keys, never paths.
//!
//! Erasure removes the profile and its fold state in one transaction, and makes the
//! pipeline restart that partition's chain from the store's snapshot before its next
//! batch, so the profile aggregate forgets the user too; later events start a new
//! profile. A batch already inside the chain when the DELETE lands is committed after it
//! and may write the user back (erase again, or erase while ingestion is paused).
//!
//! Update stream: a slow client whose buffer of [`STREAM_BUFFER`] updates overflows gets
//! a final `dropped` event with the reason and is disconnected, so it never slows the
//! pipeline. Each event's id is a sequence number of this process; `Last-Event-ID`
//! resumes from the last [`RESUME_WINDOW`] updates, when the id is still in it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use onramp_schemas::{Hints, Outcome, ProfileUpdate};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::metrics::{BatchFigures, Metrics};
use crate::pipeline::Observer;
use crate::query::{self, Hint, ProfileFilter};
use crate::store::{Batch, Committed, Store};

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Largest query string accepted.
pub const MAX_QUERY_BYTES: usize = 2 * 1024;
/// Updates buffered per stream client before it is dropped.
pub const STREAM_BUFFER: usize = 4_096;
/// Recent updates kept for `Last-Event-ID` resumption.
pub const RESUME_WINDOW: usize = 10_000;
/// Default `--ready-max-lag`: records read but not committed under which `/readyz` is 200.
pub const DEFAULT_READY_MAX_LAG: u64 = 10_000;

/// One applied update on the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Streamed {
    /// Sequence number in this process (the SSE event id).
    pub seq: u64,
    /// Partition.
    pub partition: u32,
    /// The update.
    pub update: ProfileUpdate,
    /// The user's hints once the update's batch committed.
    pub hints: Hints,
}

/// Shared state of the API and the pipeline.
pub struct Hub {
    store: Mutex<Option<Store>>,
    /// Metrics of the run.
    pub metrics: Metrics,
    tx: broadcast::Sender<Arc<Streamed>>,
    recent: Mutex<VecDeque<Arc<Streamed>>>,
    next_seq: AtomicU64,
    backlog: AtomicU64,
    ready_max_lag: u64,
    read_only: bool,
    started: AtomicBool,
    erased: Mutex<std::collections::BTreeSet<u32>>,
}

impl Hub {
    /// A hub; `read_only` for `onramp serve` (DELETE refused).
    pub fn new(ready_max_lag: u64, read_only: bool) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(STREAM_BUFFER);
        Arc::new(Hub {
            store: Mutex::new(None),
            metrics: Metrics::default(),
            tx,
            recent: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(1),
            backlog: AtomicU64::new(0),
            ready_max_lag,
            read_only,
            started: AtomicBool::new(false),
            erased: Mutex::new(Default::default()),
        })
    }

    /// Serves `store` (for `onramp serve`).
    pub fn set_store(&self, store: Store) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(store);
        self.started.store(true, Ordering::SeqCst);
    }

    fn store(&self) -> Result<Store, ApiError> {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the store is not open yet"))
    }

    fn publish(&self, partition: u32, update: &ProfileUpdate, hints: Hints) {
        let item = Arc::new(Streamed {
            seq: self.next_seq.fetch_add(1, Ordering::SeqCst),
            partition,
            update: update.clone(),
            hints,
        });
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RESUME_WINDOW {
            recent.pop_front();
        }
        recent.push_back(item.clone());
        // Sent while holding `recent`, so a subscriber that snapshots `recent` and then
        // subscribes under the same lock sees every update exactly once.
        let _ = self.tx.send(item);
    }
}

impl Observer for Hub {
    fn store_opened(&self, store: &Store) -> anyhow::Result<()> {
        self.set_store(store.clone());
        Ok(())
    }

    fn committed(&self, batch: &Batch, committed: &Committed, apply_seconds: f64, backlog: u64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut figures = BatchFigures {
            partition: batch.partition,
            checkpoint: batch.last_offset,
            accepted: batch.updates.len() as u64,
            duplicates: committed.duplicates,
            applied: committed.applied,
            apply_seconds,
            ..BatchFigures::default()
        };
        for (_, r) in &batch.rejects {
            *figures.rejects.entry(r.reason.to_string()).or_default() += 1;
        }
        for u in batch.updates.iter().filter(|u| u.outcome == Outcome::Applied) {
            figures.event_lags.push((now_ms - u.event_time_ms) as f64 / 1000.0);
            let hints = committed.hints.get(&u.user_id).copied().unwrap_or_default();
            self.publish(batch.partition, u, hints);
        }
        self.metrics.batch(&figures);
        self.backlog.store(backlog, Ordering::SeqCst);
    }

    fn take_erased(&self, partition: u32) -> bool {
        self.erased.lock().unwrap_or_else(|e| e.into_inner()).remove(&partition)
    }

    fn smartmodule_error(&self, _partition: u32, _offset: i64) {
        self.metrics.smartmodule_error();
    }

    fn reconnecting(&self, _partition: u32) {
        self.metrics.reconnect();
    }
}

/// An API error: status, code and message, rendered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!("store error serving a request: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the store could not be read; see the server log",
        )
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Bearer token.
    pub token: Option<String>,
    /// Funnel steps for `/v1/funnel`.
    pub steps: Vec<String>,
    /// Partition count (to find a user's fold state on erasure) when the store has none yet.
    pub partitions: u32,
}

/// Refuses a non-loopback bind without a token.
pub fn check_bind(cfg: &ApiConfig) -> anyhow::Result<()> {
    if !cfg.listen.ip().is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "--listen {} is not a loopback address: give --token (or ONRAMP_TOKEN) so that only holders of the token can read profiles",
            cfg.listen
        );
    }
    Ok(())
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    cfg: Arc<ApiConfig>,
}

/// Binds and serves on a thread of its own; returns the bound address. The server lives
/// until the process exits.
pub fn start(cfg: ApiConfig, hub: Arc<Hub>) -> anyhow::Result<SocketAddr> {
    check_bind(&cfg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let app = router(AppState {
        hub,
        cfg: Arc::new(cfg),
    });
    std::thread::Builder::new().name("onramp-api".into()).spawn(move || {
        runtime.block_on(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the read API stopped: {e}");
            }
        })
    })?;
    Ok(addr)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/profiles/{user_id}", get(get_profile).delete(delete_profile))
        .route("/v1/profiles", get(list_profiles))
        .route("/v1/funnel", get(funnel))
        .route("/v1/updates", get(updates))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    // Constant time in the token's content (length differences are not secret-dependent).
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("queries are limited to {MAX_QUERY_BYTES} bytes"),
        )
        .into_response();
    }
    let needs_token = req.method() == axum::http::Method::DELETE || !state.cfg.listen.ip().is_loopback();
    if needs_token {
        match state.cfg.token.as_deref() {
            None => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "token_not_configured",
                    "this endpoint needs the server to run with --token",
                )
                .into_response()
            }
            Some(t) if !token_matches(req.headers(), t) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong `Authorization: Bearer <token>`",
                )
                .into_response()
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

async fn get_profile(State(state): State<AppState>, Path(user): Path<String>) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    let Some(profile) = store.profile(&user)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile for `{user}`"),
        ));
    };
    let reference = query::reference_time_ms(&store)?.unwrap_or(profile.last_seen_ms);
    let hints = profile.hints(reference);
    let mut value = serde_json::to_value(&profile)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()))?;
    value["hints"] = serde_json::json!(hints);
    Ok(Json(value).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
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

async fn list_profiles(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let hint = parse_hint(p.hint.as_deref())?;
    let active_since_ms = match p.active_since.as_deref() {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_active_since",
                        format!("`{t}` is not an RFC 3339 time: {e}"),
                    )
                })?
                .timestamp_millis(),
        ),
        None => None,
    };
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
    let store = state.hub.store()?;
    let page = query::list_profiles(&store, &filter, p.cursor.as_deref(), limit)?;
    Ok(Json(page).into_response())
}

async fn funnel(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.hub.store()?;
    Ok(Json(query::funnel_stats(&store, &state.cfg.steps)?).into_response())
}

async fn delete_profile(State(state): State<AppState>, Path(user): Path<String>) -> Result<Response, ApiError> {
    if state.hub.read_only {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "read_only",
            "onramp serve is read-only; erase through the running `onramp run`",
        ));
    }
    let store = state.hub.store()?;
    let erased = store.erase(&user)?;
    if !erased.found_anything() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile for `{user}`"),
        ));
    }
    // Only the partitions that held the user's fold state restart their chains.
    state
        .hub
        .erased
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(erased.fold_state_partitions.iter().copied());
    tracing::info!(
        partitions = ?erased.fold_state_partitions,
        profile = erased.profile,
        rejects = erased.rejects,
        "user erased on request"
    );
    Ok(Json(serde_json::json!({"user_id": user, "removed": erased})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    user: Option<String>,
    step: Option<String>,
    hint: Option<String>,
}

fn wanted(p: &UpdateParams, hint: Option<Hint>, s: &Streamed) -> bool {
    let hint_ok = match hint {
        None => true,
        Some(Hint::Stalled) => s.hints.stalled,
        Some(Hint::Activated) => s.hints.activated,
    };
    hint_ok
        && p.user.as_ref().is_none_or(|u| *u == s.update.user_id)
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

async fn updates(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<UpdateParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let hint = parse_hint(p.hint.as_deref())?;
    let last_id: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let hub = state.hub.clone();
    let (backlog, rx) = {
        let recent = hub.recent.lock().unwrap_or_else(|e| e.into_inner());
        let backlog: Vec<Arc<Streamed>> = match last_id {
            Some(id) => recent.iter().filter(|s| s.seq > id).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, hub.tx.subscribe())
    };
    hub.metrics.stream_client(true);
    let guard = ClientGuard(hub.clone());
    let p = Arc::new(p);
    let p2 = p.clone();
    let replay = futures_util::stream::iter(
        backlog
            .into_iter()
            .filter(move |s| wanted(&p2, hint, s))
            .map(|s| Ok(sse_event(&s))),
    );
    let live = tokio_stream::wrappers::BroadcastStream::new(rx)
        .map(move |item| {
            let _keep = &guard;
            item
        })
        .scan(false, move |dropped, item| {
            let out = match item {
                _ if *dropped => None,
                Ok(s) => Some(if wanted(&p, hint, &s) {
                    Some(Ok(sse_event(&s)))
                } else {
                    None
                }),
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    *dropped = true;
                    hub.metrics.stream_dropped();
                    let reason =
                        format!("client too slow: {n} updates were not read in time; reconnect with Last-Event-ID");
                    Some(Some(Ok(Event::default().event("dropped").data(reason))))
                }
            };
            std::future::ready(out)
        })
        .filter_map(std::future::ready);
    Ok(Sse::new(replay.chain(live)).keep_alive(KeepAlive::default()))
}

/// Counts a stream client out when its stream is dropped.
struct ClientGuard(Arc<Hub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.metrics.stream_client(false);
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let size = state.hub.store().ok().map(|s| s.size_on_disk());
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.hub.metrics.render(size),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.hub.store()?;
    let backlog = state.hub.backlog.load(Ordering::SeqCst);
    if !state.hub.started.load(Ordering::SeqCst) || backlog > state.hub.ready_max_lag {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!(
                "{backlog} records read but not committed (threshold {})",
                state.hub.ready_max_lag
            ),
        ));
    }
    Ok(Json(serde_json::json!({"status": "ready", "backlog_records": backlog})).into_response())
}
