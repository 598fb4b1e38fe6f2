//! Golden cases: `tests/data/<case>.json`, each holding a sub-chain, its params, the
//! input records and either the expected output records or the expected init error.
//!
//! ```json
//! {
//!   "description": "what the case shows",
//!   "modules": ["validate"],
//!   "params": {"validate": {"mode": "rejected"}},
//!   "input": ["<record value, as raw text>", ...],
//!   "expected": [{"key": "u_1", "value": {...JSON...}}, ...]
//! }
//! ```
//!
//! `expected_init_error` (a substring) replaces `expected` for param errors. Inputs are
//! also kept, one per line, in `tests/data/<case>.input.jsonl` so that
//! `smdk test --file` in each module's README runs the very same records; the runner
//! checks that the two agree. `UPDATE_GOLDEN=1 cargo test -p onramp-tests --test golden`
//! rewrites `expected` from the current output (review the diff before committing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One golden case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    /// What the case shows.
    pub description: String,
    /// Module short names in chain order (`validate`, `enrich`, `profile`).
    pub modules: Vec<String>,
    /// Params per module short name.
    #[serde(default)]
    pub params: BTreeMap<String, BTreeMap<String, String>>,
    /// Record values, as raw text.
    pub input: Vec<String>,
    /// Expected output records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Vec<GoldenRecord>>,
    /// Expected init error (substring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_init_error: Option<String>,
}

/// An output record: its key as text and its value as JSON (or a string when the value
/// is not JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenRecord {
    /// Key, as UTF-8 text.
    pub key: Option<String>,
    /// Value.
    pub value: serde_json::Value,
}

/// `tests/data`.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Every `tests/data/*.json` case, sorted by name.
pub fn cases() -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(data_dir())
        .expect("tests/data exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.file_stem().unwrap_or_default().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}
