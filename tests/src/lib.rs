//! Shared pieces of onramp's integration tests and benchmarks.
//!
//! - [`cli`]: run the `onramp` binary (debug or release build) and read its store.
//! - [`running`]: a spawned `onramp` that keeps running: its API address, its log.
//! - [`cluster`]: a local Fluvio cluster for the cluster test and benchmark.
//! - [`modules`]: the built `.wasm` SmartModules (built once per test process, so a
//!   stale module never hides a change to the logic).
//! - [`run`]: push records through any sub-chain in `fluvio-smartengine`.
//! - [`reference`]: the plain reference fold the chain is compared against.
//! - [`golden`]: the golden-case file format of `tests/data/`.
//! - [`synthetic`]: a small deterministic event stream with an exact number of users.

pub mod cli;
pub mod cluster;
pub mod golden;
pub mod reference;
pub mod running;
pub mod synthetic;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fluvio_smartengine::SmartEngine;
use onramp::chain::{Chain, ChainParams, InputRecord, OutputRecord};
use onramp::wasm::{build_modules, Module, WasmModules};

/// The three modules, built (once per process) from the current sources.
pub fn modules() -> &'static WasmModules {
    static MODULES: OnceLock<WasmModules> = OnceLock::new();
    MODULES.get_or_init(|| {
        let dir = build_modules().unwrap_or_else(|e| panic!("{e}"));
        WasmModules::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The workspace's target directory: `$CARGO_TARGET_DIR`, else `target/` at the
/// workspace root (where the `onramp` binary and the `.wasm` files are built).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| onramp::wasm::workspace_root().join("target"))
}

/// `cargo build ARGS` in the workspace, asserting it succeeds (`what`: for the message).
pub fn cargo_build(what: &str, args: &[&str]) {
    cargo_build_with(what, args, |_| {});
}

fn cargo_build_with(what: &str, args: &[&str], adjust: impl FnOnce(&mut Command)) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(onramp::wasm::workspace_root()).arg("build").args(args);
    adjust(&mut cmd);
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building {what} failed");
}

/// Builds the SmartModule crate `package` (wasm32-wasip1, release-lto, as `smdk build`
/// does); the path of its `.wasm`.
pub fn build_wasm(package: &str) -> PathBuf {
    let args = [
        "--quiet",
        "-p",
        package,
        "--profile",
        "release-lto",
        "--target",
        "wasm32-wasip1",
    ];
    // Flags meant for the host build (e.g. coverage, or `cargo xtask test`'s clippy
    // wrapper) must not reach the wasm build, so it reuses the modules xtask built.
    cargo_build_with(package, &args, |cmd| {
        cmd.env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS");
    });
    target_dir()
        .join("wasm32-wasip1")
        .join("release-lto")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// Polls `f` every `poll` until it holds; panics after `limit`, naming `what`.
pub fn wait_until(limit: Duration, poll: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(poll);
    }
}

/// An HTTP client that hands back error statuses as responses; `None`: no timeout.
pub fn http_agent(timeout: Option<std::time::Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

/// One engine for the process (it is cheap to share).
pub fn engine() -> &'static SmartEngine {
    static ENGINE: OnceLock<SmartEngine> = OnceLock::new();
    ENGINE.get_or_init(SmartEngine::new)
}

/// `value` as a Protobuf record (`onramp_schemas::proto`) when it reads as an event;
/// otherwise unchanged, as `onramp produce --format protobuf` sends it.
pub fn as_protobuf(value: &[u8]) -> Vec<u8> {
    match onramp_logic::validate::parse_event(value) {
        Ok(event) => onramp_schemas::proto::encode_record(&event),
        Err(_) => value.to_vec(),
    }
}

/// Records with no key and no timestamp at offsets 0, 1, 2, ….
pub fn records<V: AsRef<[u8]>>(values: &[V]) -> Vec<InputRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| InputRecord {
            key: None,
            value: v.as_ref().to_vec(),
            offset: i as i64,
            timestamp_ms: -1,
        })
        .collect()
}

/// Builds `steps` with `params` and runs `input` through it as one batch.
pub fn run(steps: &[Module], params: &ChainParams, input: &[InputRecord]) -> Vec<OutputRecord> {
    let mut chain = Chain::build(engine(), modules(), steps, params, None).unwrap_or_else(|e| panic!("{e}"));
    chain.process(input).unwrap_or_else(|e| panic!("{e}"))
}
