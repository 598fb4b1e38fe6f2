//! The read API for downstream apps, served from inside `onramp run` (sled is
//! single-process) or by `onramp serve` over a store nothing is writing.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /v1/profiles/{user_id}` | the person, its hints and `as_of` (offset, event time); in a group of consumers, over every member's store ([`group`]) |
//! | `GET /v1/parts/{id}` | what this store alone holds of one id (profile, links, claims), for the other members of a group |
//! | `GET /v1/profiles?step=&completed_step=&hint=&completed=&active_since=&limit=&cursor=` | filtered page, stable cursor |
//! | `GET /v1/funnel` | users per step, conversion, median time between steps |
//! | `GET /v1/updates?user=&step=&hint=` | Server-Sent Events: each applied update once its batch commits |
//! | `GET /v1/audiences` | each audience of the rules: name, version, size |
//! | `GET /v1/audiences/{name}/members?limit=&cursor=` | members in person-id order, paginated |
//! | `GET /v1/triggers?audience=&kind=` | Server-Sent Events: transitions from the durable outbox, resumable (`Last-Event-ID`) |
//! | `GET /v1/profiles/{id}/decision?surface=` | the surface's next action, the rule that matched, the variant |
//! | `DELETE /v1/profiles/{user_id}` | erasure (needs the token) |
//! | `GET /metrics`, `/healthz`, `/readyz` | Prometheus text, alive, caught up |
//!
//! Access (see [`access`]): every request must name this server in `Host` (loopback
//! names on loopback, the address the connection arrived on, or an `--allow-host` name),
//! which defeats DNS rebinding; otherwise 421 `host_not_allowed`. Binding anything but
//! loopback requires a token; with a token set, every endpoint but `/healthz` needs
//! `Authorization: Bearer <token>`, and DELETE always needs it. Tokens are compared in
//! constant time. Bodies are limited to [`MAX_BODY_BYTES`], queries to
//! [`MAX_QUERY_BYTES`]. Errors are JSON `{"error":{"code","message"}}`. User-supplied
//! values are only ever sled keys, never paths.
//!
//! Never stalled (see [`server`] and `handlers.rs`): handlers do not block the async
//! workers — reads that iterate profiles (the list, the funnel) and erasures run on the
//! blocking pool, at most [`MAX_CONCURRENT_SCANS`] scans at once; a request that cannot
//! start its scan within [`SCAN_QUEUE_WAIT`] gets 503 `busy` with `Retry-After`. So
//! `/healthz` answers at once however many scans are queued. Connections are capped
//! (`--max-connections`; at the cap a new client takes the place of the oldest connection
//! that has sent nothing yet), must send their request head within `--header-timeout`
//! (also the idle keep-alive limit), and accept errors back off instead of spinning.
//!
//! Erasure removes the profile, the user's fold state on every partition and their
//! stored rejects in one transaction, and makes the pipeline restart those partitions'
//! chains from the store's snapshot before their next batch, so the profile aggregate
//! forgets the user too; later events start a new profile. The update stream forgets the
//! user as well ([`stream`]): their updates leave the `Last-Event-ID` window, and once
//! the DELETE has returned none of the updates published before it is handed to any
//! client. A batch already inside the chain when the DELETE lands is committed after it
//! and may write the user back, and its updates are then streamed like the store shows
//! them (erase again, or erase while ingestion is paused).
//!
//! Update stream: a slow client whose buffer of [`STREAM_BUFFER`] updates overflows is
//! dropped (counted at once, even if its connection cannot be written to) and gets a final
//! `dropped` event with the reason after what it had not read — if it reads again before
//! the 30 s write-stall limit closes the connection — so it never slows the pipeline. Each event's id is a sequence number of this process; `Last-Event-ID`
//! resumes from the last [`RESUME_WINDOW`] updates, when the id is still in it (an id that
//! is not a whole number is a 400 `bad_last_event_id`).
//!
//! Every endpoint refuses a query parameter it does not take (400 `bad_query`), rather
//! than answering as if it were not there.
//!
//! Readiness: `/readyz` is 200 once the store is open while both the records read but not
//! committed and, with `--source fluvio`, the records in the topic after the committed
//! checkpoints (summed over partitions, as last reported through [`Observer::lag`]) are at
//! most `--ready-max-lag`.

pub mod access;
mod audiences;
pub mod group;
mod handlers;
pub mod server;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use onramp_schemas::{Outcome, ProfileUpdate};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::metrics::{BatchFigures, Metrics};
use crate::run::Observer;
use crate::store::{Batch, Committed, Store};
use access::{Connection, HostPolicy};
pub use server::{DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
pub use stream::{Streamed, RESUME_WINDOW, STREAM_BUFFER};

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Largest query string accepted.
pub const MAX_QUERY_BYTES: usize = 2 * 1024;
/// Default `--ready-max-lag`: `/readyz` is 200 while no more records than this wait.
pub const DEFAULT_READY_MAX_LAG: u64 = 10_000;
/// Store reads that iterate profiles (list, funnel) running at once; more wait.
pub const MAX_CONCURRENT_SCANS: usize = 4;
/// How long a request waits for a scan slot before it gets 503 `busy`.
pub const SCAN_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// `Retry-After` of a 503 `busy`, seconds.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;
/// Async worker threads of the process's runtime ([`crate::runtime`]); the API's handlers
/// never block them.
pub const API_WORKERS: usize = 2;
/// Threads of the runtime's blocking pool (store work: scans are bounded separately,
/// erasures use the rest).
pub const API_BLOCKING_THREADS: usize = 16;

/// Shared state of the API and the pipeline.
pub struct Hub {
    store: Mutex<Option<Store>>,
    /// Metrics of the run.
    pub metrics: Metrics,
    updates: Arc<stream::Updates>,
    backlog: AtomicU64,
    lags: Mutex<BTreeMap<u32, u64>>,
    ready_max_lag: u64,
    read_only: bool,
    started: AtomicBool,
    erased_partitions: Mutex<BTreeSet<u32>>,
    /// Bumped when a commit wrote audience transitions (wakes `/v1/triggers` streams).
    transitions: tokio::sync::watch::Sender<u64>,
}

impl Hub {
    /// A hub; `read_only` for `onramp serve` (DELETE refused).
    pub fn new(ready_max_lag: u64, read_only: bool) -> Arc<Hub> {
        Arc::new(Hub {
            store: Mutex::new(None),
            metrics: Metrics::default(),
            updates: Arc::new(stream::Updates::default()),
            backlog: AtomicU64::new(0),
            lags: Mutex::new(BTreeMap::new()),
            ready_max_lag,
            read_only,
            started: AtomicBool::new(false),
            erased_partitions: Mutex::new(BTreeSet::new()),
            transitions: tokio::sync::watch::channel(0).0,
        })
    }

    /// A receiver that changes whenever a commit wrote audience transitions.
    pub fn transitions_written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.transitions.subscribe()
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

    /// What `/readyz` judges, now.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            store_open: self.started.load(Ordering::SeqCst),
            backlog_records: self.backlog.load(Ordering::SeqCst),
            lag_records: self.lags.lock().unwrap_or_else(|e| e.into_inner()).values().sum(),
            max_lag: self.ready_max_lag,
        }
    }
}

/// What `/readyz` judges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// The store is open.
    pub store_open: bool,
    /// Records read but not yet committed.
    pub backlog_records: u64,
    /// Records in the topic after the committed checkpoints, summed over partitions (as
    /// last reported; 0 for the embedded source).
    pub lag_records: u64,
    /// `--ready-max-lag`.
    pub max_lag: u64,
}

impl Readiness {
    /// Why the run is not ready, or `None` when it is: the store must be open, and
    /// neither the backlog nor the total lag may exceed `max_lag`.
    pub fn problem(&self) -> Option<String> {
        if !self.store_open {
            return Some("the store is not open yet".into());
        }
        if self.backlog_records > self.max_lag {
            return Some(format!(
                "{} records read but not committed, more than --ready-max-lag {}",
                self.backlog_records, self.max_lag
            ));
        }
        if self.lag_records > self.max_lag {
            return Some(format!(
                "{} records in the topic after the committed checkpoints, more than --ready-max-lag {}",
                self.lag_records, self.max_lag
            ));
        }
        None
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
            accepted: committed.accepted(),
            duplicates: committed.duplicates,
            applied: committed.applied,
            fold_evictions: committed.evicted,
            suppressed: committed.suppressed,
            link_conflicts: committed.link_conflicts,
            apply_seconds,
            ..BatchFigures::default()
        };
        figures.rejects = committed.rejected.clone();
        // As committed: without the updates of erased ids, and without erased anonymous ids.
        let stripped: Vec<ProfileUpdate> = batch
            .updates
            .iter()
            .filter(|_| !committed.stripped_anonymous_ids.is_empty())
            .map(|u| {
                let mut u = u.clone();
                if let Some(c) = u.changes.as_mut() {
                    if c.anonymous_id
                        .as_ref()
                        .is_some_and(|a| committed.stripped_anonymous_ids.contains(a))
                    {
                        c.anonymous_id = None;
                    }
                }
                u
            })
            .collect();
        let updates = if committed.stripped_anonymous_ids.is_empty() {
            &batch.updates
        } else {
            &stripped
        };
        let applied: Vec<_> = updates
            .iter()
            .filter(|u| u.outcome == Outcome::Applied && !committed.suppressed_users.contains(&u.user_id))
            .map(|u| {
                figures.event_lags.push((now_ms - u.event_time_ms) as f64 / 1000.0);
                (u, committed.hints.get(&u.user_id).copied().unwrap_or_default())
            })
            .collect();
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let withheld = self.updates.publish(batch.partition, applied, store.as_ref());
        if withheld > 0 {
            tracing::info!(
                partition = batch.partition,
                withheld,
                "updates of erased users committed before their erasure were not streamed"
            );
        }
        self.metrics.batch(&figures);
        if !committed.transitions.is_empty() {
            let entered = committed
                .transitions
                .iter()
                .filter(|t| t.kind == crate::store::audience::TransitionKind::Entered)
                .count() as u64;
            self.metrics
                .transitions(entered, committed.transitions.len() as u64 - entered);
            self.transitions.send_modify(|n| *n += 1);
        }
        self.backlog.store(backlog, Ordering::SeqCst);
    }

    fn take_erased(&self, partition: u32) -> bool {
        self.erased_partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition)
    }

    fn smartmodule_error(&self, _partition: u32, _offset: i64) {
        self.metrics.smartmodule_error();
    }

    fn reconnecting(&self, _partition: u32) {
        self.metrics.reconnect();
    }

    fn lag(&self, partition: u32, records: u64) {
        self.lags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, records);
        self.metrics.partition_lag(partition, records);
    }
}

/// An API error: status, code and message, rendered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(&'static str, String)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.header = Some((name, value.into()));
        self
    }

    fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!("serving a request failed: {what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed on the server; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some((name, value)) = self.header {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
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
    /// Most connections open at once (`--max-connections`).
    pub max_connections: usize,
    /// Time to send a request head, from connecting or from the previous response
    /// (`--header-timeout`).
    pub header_timeout: Duration,
    /// Extra `Host` names to answer to (`--allow-host`).
    pub allow_hosts: Vec<String>,
    /// One member of a group of consumers: profile lookups read every member's store.
    pub group: Option<group::GroupReads>,
}

/// Refuses a non-loopback bind without a token.
pub fn check_bind(cfg: &ApiConfig) -> anyhow::Result<()> {
    if !cfg.listen.ip().is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "--listen {} is not a loopback address: give --token (or ONRAMP_TOKEN) so that only holders of the token can read profiles",
            cfg.listen
        );
    }
    if cfg.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    if cfg.header_timeout.is_zero() {
        anyhow::bail!("--header-timeout must be more than 0 (e.g. 10s)");
    }
    Ok(())
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    cfg: Arc<ApiConfig>,
    hosts: Arc<HostPolicy>,
    scans: Arc<Semaphore>,
    /// Slots for lookups across a group's members (see [`group`]).
    group_reads: Arc<Semaphore>,
}

/// Binds and serves on `runtime` (the process's one runtime); returns the bound address.
/// The server lives as long as the runtime.
pub fn start(cfg: ApiConfig, hub: Arc<Hub>, runtime: &tokio::runtime::Handle) -> anyhow::Result<SocketAddr> {
    check_bind(&cfg)?;
    let hosts = HostPolicy::new(cfg.listen, &cfg.allow_hosts)?;
    let listener = std::net::TcpListener::bind(cfg.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let addr = listener.local_addr()?;
    let limits = server::Limits {
        max_connections: cfg.max_connections,
        header_timeout: cfg.header_timeout,
    };
    let app = router(AppState {
        hub: hub.clone(),
        cfg: Arc::new(cfg),
        hosts: Arc::new(hosts),
        scans: Arc::new(Semaphore::new(MAX_CONCURRENT_SCANS)),
        group_reads: Arc::new(Semaphore::new(group::MAX_CONCURRENT_GROUP_READS)),
    });
    runtime.spawn(server::serve(listener, app, limits, hub));
    Ok(addr)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/profiles/{user_id}",
            get(handlers::get_profile).delete(handlers::delete_profile),
        )
        .route("/v1/profiles", get(handlers::list_profiles))
        .route("/v1/parts/{id}", get(handlers::get_parts))
        .route("/v1/funnel", get(handlers::funnel))
        .route("/v1/updates", get(handlers::updates))
        .route("/v1/profiles/{user_id}/decision", get(audiences::decision))
        .route("/v1/audiences", get(audiences::list))
        .route("/v1/audiences/{name}/members", get(audiences::members))
        .route("/v1/triggers", get(audiences::triggers))
        .route("/metrics", get(handlers::metrics))
        .route("/readyz", get(handlers::readyz))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), admit_host))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every request, `/healthz` and unknown paths included: `Host` must name this server.
async fn admit_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req.headers().get("host").and_then(|v| v.to_str().ok());
    let local = req.extensions().get::<Connection>().map(|c| c.local);
    if state.hosts.allows(host, local) {
        return next.run(req).await;
    }
    state.hub.metrics.request_refused("host_not_allowed");
    let local = local.unwrap_or(state.cfg.listen);
    let shown = host.map_or_else(|| "no Host header".to_string(), |h| format!("`Host: {h}`"));
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        format!(
            "{shown} does not name this server: send the address it listens on ({local}{}), or start it with \
             --allow-host NAME to accept another name (e.g. one in front of a proxy). Unknown names are refused so \
             that web pages cannot reach the API through DNS rebinding",
            if local.ip().to_canonical().is_loopback() {
                ", localhost or [::1]"
            } else {
                ""
            }
        ),
    )
    .into_response()
}

/// Every endpoint but `/healthz`: the query size, and the token when one is set (DELETE
/// always needs one).
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        state.hub.metrics.request_refused("query_too_long");
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("queries are limited to {MAX_QUERY_BYTES} bytes"),
        )
        .into_response();
    }
    match state.cfg.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) if !access::token_matches(req.headers(), token) => {
            state.hub.metrics.request_refused("unauthorized");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong `Authorization: Bearer <token>`: this server runs with --token, which every endpoint but /healthz needs",
            )
            .with_header("www-authenticate", "Bearer")
            .into_response()
        }
        None if req.method() == axum::http::Method::DELETE => {
            state.hub.metrics.request_refused("token_not_configured");
            ApiError::new(
                StatusCode::FORBIDDEN,
                "token_not_configured",
                "erasure needs the server to run with --token (or ONRAMP_TOKEN), and the request to send it as `Authorization: Bearer <token>`",
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness(store_open: bool, backlog_records: u64, lag_records: u64) -> Readiness {
        Readiness {
            store_open,
            backlog_records,
            lag_records,
            max_lag: 100,
        }
    }

    /// Ready only with the store open and both the backlog and the total lag at most
    /// `--ready-max-lag`; each reason is named.
    #[test]
    fn readiness_rule() {
        assert_eq!(readiness(true, 0, 0).problem(), None);
        assert_eq!(
            readiness(true, 100, 100).problem(),
            None,
            "the threshold itself is ready"
        );
        assert!(readiness(false, 0, 0).problem().is_some_and(|p| p.contains("not open")));
        assert!(readiness(true, 101, 0)
            .problem()
            .is_some_and(|p| p.contains("101 records read but not committed")));
        assert!(readiness(true, 0, 101)
            .problem()
            .is_some_and(|p| p.contains("101 records in the topic")));
    }

    /// The hub keeps each partition's latest lag and judges their sum: two partitions
    /// under the threshold each but over it together are not ready, and catching up
    /// (a new, lower report) makes it ready; the lag is exported per partition.
    #[test]
    fn lag_reports_are_kept_per_partition_and_summed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = crate::store::StoreSettings {
            partitions: 2,
            chain_params: "test".into(),
        };
        let hub = Hub::new(100, false);
        hub.set_store(Store::open(dir.path(), &settings).expect("store"));
        assert_eq!(hub.readiness().problem(), None);
        hub.lag(0, 60);
        hub.lag(1, 60);
        assert_eq!(hub.readiness().lag_records, 120);
        assert!(hub.readiness().problem().is_some());
        hub.lag(0, 10);
        assert_eq!(hub.readiness().lag_records, 70);
        assert_eq!(hub.readiness().problem(), None);
        let text = hub.metrics.render(None);
        assert!(
            text.contains("onramp_partition_lag_records{partition=\"0\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("onramp_partition_lag_records{partition=\"1\"} 60"),
            "{text}"
        );
    }
}
