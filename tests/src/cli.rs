//! Running the `onramp` binary from tests: one way to call it, check it, and read a store.

use std::path::Path;
use std::process::{Command, Output};

use onramp_schemas::Profile;

use crate::onramp_bin;

/// `onramp` with the modules built from the current sources and no HTTP API.
pub fn command() -> Command {
    crate::modules(); // the .wasm files, built from the current sources
    let mut cmd = Command::new(onramp_bin());
    cmd.env("ONRAMP_WASM_DIR", onramp::wasm::default_wasm_dir())
        .env("ONRAMP_LISTEN", "off");
    cmd
}

/// Runs `onramp ARGS` to completion.
pub fn onramp(args: &[&str]) -> Output {
    command().args(args).output().expect("onramp runs")
}

/// Runs `onramp ARGS`, asserting success; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = onramp(args);
    assert!(
        out.status.success(),
        "onramp {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `onramp ARGS`, asserting failure; its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = onramp(args);
    assert!(
        !out.status.success(),
        "onramp {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `onramp export` of a store: every profile, one JSON line each, sorted by user id.
pub fn export(store: &Path) -> String {
    ok(&["export", "--store", store.to_str().unwrap()])
}

/// The store's profiles by user id.
pub fn store_profiles(store: &Path) -> std::collections::BTreeMap<String, Profile> {
    export(store)
        .lines()
        .map(|l| {
            let p: Profile = serde_json::from_str(l).expect("a profile per line");
            (p.user_id.clone(), p)
        })
        .collect()
}

/// `onramp stats --json` of a store.
pub fn stats(store: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["stats", "--json", "--store", store.to_str().unwrap()])).expect("stats JSON")
}
