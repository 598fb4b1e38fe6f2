//! onramp's native half: runs the SmartModule chain and folds its profile updates into
//! a store.
//!
//! # Layout
//! - [`api`]: the HTTP read API (profiles, funnel, update stream, audiences, triggers,
//!   decisions, erasure, health).
//! - [`audience`]: the rules file, audience conditions, decisions and experiment variants
//!   (memberships and transitions are kept by [`store::audience`]).
//! - [`metrics`]: Prometheus metrics of a run.
//! - [`wasm`]: finds, builds and loads the three `.wasm` SmartModules.
//! - [`chain`]: runs them in-process through `fluvio-smartengine`, one chain per
//!   partition, exactly as the SPU does.
//! - [`source`]: embedded sources (file, stdin, generator) read like a topic.
//! - [`partition`]: record keys and partitions, exactly as the Fluvio producer assigns them.
//! - [`run`]: `onramp run` — the run core (store, commits, summary, telemetry) fed by two
//!   sources: [`run::embedded`] (lines → partitioner → chain per partition, in-process)
//!   and [`cluster::consume`] (the topic, chain in the SPU, streams merged by offset).
//! - [`shutdown`]: the process's one stop request, passed to whatever runs until told to stop.
//! - [`cluster`]: cluster mode — `onramp setup` (topic + SmartModules through the admin
//!   API), `onramp produce` (events into the topic, keyed by user), `onramp run --source
//!   fluvio` (the chain runs in the SPU; per-partition streams merged by offset into the
//!   same store batches).
//! - [`store`]: the sled store; one transaction per batch applies the updates and moves
//!   the partition's checkpoint (exactly once).
//! - [`query`]: the store's read side — profile listing with filters and a stable cursor,
//!   funnel statistics and their text rendering, JSON-lines export; hints judged against
//!   the newest event time, never the wall clock.
//! - [`generator`]: the deterministic onboarding traffic generator — realistic journeys
//!   through the funnel plus bots, test accounts, late, duplicate and malformed lines, one
//!   JSON line at a time, for the embedded source, the tests and the benchmarks.

pub mod api;
pub mod audience;
pub mod chain;
pub mod cluster;
pub mod generator;
pub mod metrics;
pub mod partition;
pub mod query;
pub mod run;
pub mod shutdown;
pub mod source;
pub mod store;
pub mod wasm;

/// The process's one tokio runtime, made by the commands that need one (run, serve,
/// setup, produce): the read API, the Fluvio client and the cluster streams all run on
/// its [`api::API_WORKERS`] workers, blocking store work on its blocking pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(api::API_WORKERS)
        .max_blocking_threads(api::API_BLOCKING_THREADS)
        .thread_name("onramp-async")
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
}
