//! Running the `onramp` binary from tests: one way to call it, check it, and read a store.
//!
//! [`Onramp`] picks the build (the tests run the debug one, through the free functions
//! below; the benchmarks run the release one); either way the command gets
//! the modules built from the current sources and no HTTP API unless it asks for one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use onramp_schemas::Profile;

use crate::cargo_build;

/// A build of the `onramp` binary, built (once per process) from the current sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Onramp {
    /// `target/debug/onramp`.
    Debug,
    /// `target/release/onramp`.
    Release,
}

impl Onramp {
    /// The binary, built now if this process has not built it yet.
    pub fn bin(self) -> PathBuf {
        static DEBUG: OnceLock<PathBuf> = OnceLock::new();
        static RELEASE: OnceLock<PathBuf> = OnceLock::new();
        let (cell, args, dir) = match self {
            // With the workspace's test targets, so features resolve exactly as in
            // `cargo test --workspace`: after it, this only links the binary (built alone,
            // `-p onramp` would resolve other features and rebuild much of the tree).
            Onramp::Debug => (&DEBUG, &["--quiet", "--workspace", "--bins", "--tests"][..], "debug"),
            Onramp::Release => (&RELEASE, &["--release", "-p", "onramp"][..], "release"),
        };
        cell.get_or_init(|| {
            cargo_build(&format!("the {dir} onramp binary"), args);
            crate::target_dir().join(dir).join("onramp")
        })
        .clone()
    }

    /// `onramp` with the modules built from the current sources and no HTTP API (an
    /// explicit `--listen` overrides that).
    pub fn command(self) -> Command {
        crate::modules(); // the .wasm files, built from the current sources
        let mut cmd = Command::new(self.bin());
        cmd.env("ONRAMP_WASM_DIR", onramp::wasm::default_wasm_dir())
            .env("ONRAMP_LISTEN", "off");
        cmd
    }

    /// Runs `onramp ARGS` to completion.
    pub fn output(self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("onramp runs")
    }

    /// Runs `onramp ARGS`, asserting success; its stdout.
    pub fn ok(self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "onramp {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `onramp ARGS`, asserting failure; its stderr.
    pub fn fails(self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "onramp {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `onramp ARGS`, asserting success; its stdout as JSON.
    pub fn json(self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap_or_else(|e| panic!("onramp {args:?}: not JSON: {e}"))
    }

    /// `onramp export` of a store: every person, one JSON line each, sorted by person id.
    pub fn export(self, store: &Path) -> String {
        self.ok(&["export", "--store", store.to_str().unwrap()])
    }

    /// `onramp export --by-id` of a store: every stored profile, one per id.
    pub fn export_by_id(self, store: &Path) -> String {
        self.ok(&["export", "--by-id", "--store", store.to_str().unwrap()])
    }
}

/// [`Onramp::command`] of the debug build.
pub fn command() -> Command {
    Onramp::Debug.command()
}

/// [`Onramp::output`] of the debug build.
pub fn onramp(args: &[&str]) -> Output {
    Onramp::Debug.output(args)
}

/// [`Onramp::ok`] of the debug build.
pub fn ok(args: &[&str]) -> String {
    Onramp::Debug.ok(args)
}

/// [`Onramp::fails`] of the debug build.
pub fn fails(args: &[&str]) -> String {
    Onramp::Debug.fails(args)
}

/// [`Onramp::json`] of the debug build.
pub fn json(args: &[&str]) -> serde_json::Value {
    Onramp::Debug.json(args)
}

/// [`Onramp::export`] of the debug build.
pub fn export(store: &Path) -> String {
    Onramp::Debug.export(store)
}

/// The store's profiles by id, as stored (not merged into persons).
pub fn store_profiles(store: &Path) -> std::collections::BTreeMap<String, Profile> {
    Onramp::Debug
        .export_by_id(store)
        .lines()
        .map(|l| {
            let p: Profile = serde_json::from_str(l).expect("a profile per line");
            (p.user_id.clone(), p)
        })
        .collect()
}

/// `onramp stats --json` of a store (with the lag when the store is fed by a topic and the
/// cluster answers).
pub fn stats(store: &Path) -> serde_json::Value {
    json(&["stats", "--json", "--store", store.to_str().unwrap()])
}

/// What two stores of the same input must agree on: [`stats`] without the lag (the topic's
/// state now, not the store's) and without the hot keys' pseudonyms, which are keyed per
/// store (by its suppression key).
pub fn stats_comparable(store: &Path) -> serde_json::Value {
    let mut v = json(&["stats", "--json", "--no-lag", "--store", store.to_str().unwrap()]);
    for p in v["partitions"].as_array_mut().into_iter().flatten() {
        for k in p["hot_keys"].as_array_mut().into_iter().flatten() {
            if let Some(k) = k.as_object_mut() {
                k.remove("pseudonym");
            }
        }
    }
    v
}
