//! Shared pieces of onramp's integration tests and benchmarks.
//!
//! - [`cli`]: run the `onramp` binary and read its store.
//! - [`modules`]: the built `.wasm` SmartModules (built once per test process, so a
//!   stale module never hides a change to the logic).
//! - [`run`]: push records through any sub-chain in `fluvio-smartengine`.
//! - [`reference`]: the plain reference fold the chain is compared against.
//! - [`golden`]: the golden-case file format of `tests/data/`.
//! - [`synthetic`]: a small deterministic event stream with an exact number of users.

pub mod cli;
pub mod golden;
pub mod reference;
pub mod synthetic;

use std::sync::OnceLock;

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

/// The `onramp` binary, built (once per process) from the current sources.
pub fn onramp_bin() -> std::path::PathBuf {
    static BIN: OnceLock<std::path::PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = onramp::wasm::workspace_root();
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "onramp", "--bin", "onramp"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the onramp binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("onramp")
    })
    .clone()
}

/// The release `onramp` binary, built now from the current sources (for benchmarks).
pub fn onramp_release_bin() -> std::path::PathBuf {
    let root = onramp::wasm::workspace_root();
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--release", "-p", "onramp"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release onramp binary failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/onramp")
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
