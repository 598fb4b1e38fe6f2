//! onramp's project commands, the same ones the README and CI use:
//!
//! ```text
//! cargo xtask setup   # wasm targets (rustup) and wasm-bindgen-test-runner at the Cargo.lock version
//! cargo xtask build   # the three SmartModules (wasm32-wasip1, release-lto) and the onramp binary
//! cargo xtask test    # setup, build the modules, fmt, clippy (in the test build), all tests, logic tests under wasm-bindgen-test
//! cargo xtask bench   # benchmarks that print figures (see BENCHMARKS.md)
//! ```

use std::process::{exit, Command};

/// Crates whose unit tests also run compiled to wasm32-unknown-unknown.
const WASM_TESTED: [&str; 2] = ["onramp-logic", "onramp-schemas"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup_targets().and_then(|_| build()),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 setup   add the wasm targets; install wasm-bindgen-test-runner matching Cargo.lock\n  \
                 build   build the SmartModules (wasm32-wasip1, release-lto) and the onramp binary\n  \
                 test    setup, build, cargo fmt --check, clippy -D warnings, all tests, wasm unit tests\n  \
                 bench   run the benchmarks (figures go in BENCHMARKS.md); extra args go to the bench"
            );
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn setup_targets() -> Result<(), String> {
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip1", "wasm32-unknown-unknown"]))
}

fn setup() -> Result<(), String> {
    setup_targets()?;
    let want = locked_version("wasm-bindgen")?;
    let have = Command::new("wasm-bindgen-test-runner")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if have.ends_with(&format!(" {want}")) {
        eprintln!("xtask: {have} is installed");
        return Ok(());
    }
    // The runner must match the wasm-bindgen in Cargo.lock exactly.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want]))
}

/// The version of `name` in Cargo.lock.
fn locked_version(name: &str) -> Result<String, String> {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{name}\"") {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    Err(format!("{name} is not in Cargo.lock"))
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SmartModule crates: the workspace members under `smartmodules/` that have a
/// `SmartModule.toml`, by package name, in the members' order. Read from the workspace
/// rather than taken from the consumer's own list (`onramp::wasm::Module`): depending on
/// the consumer crate would make xtask build the Fluvio client before it can run.
fn smartmodules() -> Result<Vec<String>, String> {
    let ws = workspace();
    let read =
        |path: std::path::PathBuf| std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
    let manifest = read(ws.join("Cargo.toml"))?;
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .ok_or("Cargo.toml has no `members = [...]` list")?
        .0;
    let mut names = Vec::new();
    for member in members.split('"').skip(1).step_by(2) {
        let dir = ws.join(member);
        if !member.starts_with("smartmodules/") || !dir.join("SmartModule.toml").is_file() {
            continue; // not a SmartModule (e.g. smartmodules/logic, the modules' library)
        }
        let name = read(dir.join("Cargo.toml"))?
            .lines()
            .find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"').map(str::to_string))
            .ok_or_else(|| format!("{member}/Cargo.toml has no `name = \"…\"` line"))?;
        names.push(name);
    }
    if names.is_empty() {
        return Err("no SmartModule among the workspace members under smartmodules/".into());
    }
    Ok(names)
}

fn build_modules() -> Result<(), String> {
    let mut wasm = cargo();
    wasm.current_dir(workspace())
        .args(["build", "--profile", "release-lto", "--target", "wasm32-wasip1"]);
    for m in smartmodules()? {
        wasm.args(["-p", &m]);
    }
    run(&mut wasm)
}

fn build() -> Result<(), String> {
    setup_targets()?;
    build_modules()?;
    run(cargo()
        .current_dir(workspace())
        .args(["build", "--release", "-p", "onramp"]))
}

fn test() -> Result<(), String> {
    setup()?;
    build_modules()?;
    let ws = workspace();
    run(cargo().current_dir(&ws).args(["fmt", "--all", "--check"]))?;
    // Clippy lints the workspace as it builds the tests (see `linting`): `cargo clippy`
    // would first check-build every dependency, which the test build cannot reuse.
    let driver = clippy_driver()?;
    run(linting(cargo().current_dir(&ws), &driver).args(["test", "--workspace", "--all-targets", "--no-run"]))?;
    // The modules' Wasm exports (`onramp-abi`) exist only on wasm32: lint them there too.
    run(cargo().current_dir(&ws).args([
        "clippy",
        "--target",
        "wasm32-wasip1",
        "-p",
        "onramp-abi",
        "-p",
        "onramp-validate",
        "-p",
        "onramp-enrich",
        "-p",
        "onramp-profile",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(linting(cargo().current_dir(&ws), &driver).args(["test", "--workspace"]))?;
    if std::env::var("FLUVIO_E2E").ok().as_deref() == Some("1") {
        println!("xtask: cluster tests ran against the local Fluvio cluster (FLUVIO_E2E=1)");
    } else {
        println!(
            "xtask: cluster tests (tests/tests/cluster.rs) skipped: they need FLUVIO_E2E=1 and the fluvio CLI on PATH"
        );
    }
    let mut wasm_tests = cargo();
    wasm_tests
        .current_dir(&ws)
        .args(["test", "--target", "wasm32-unknown-unknown", "--lib"]);
    for c in WASM_TESTED {
        wasm_tests.args(["-p", c]);
    }
    run(&mut wasm_tests)
}

/// Makes a cargo command lint every workspace crate it compiles with clippy, warnings
/// denied, as `cargo clippy -- -D warnings` does, but in a real build: `clippy-driver`
/// (the toolchain's, next to its `rustc`) compiles the workspace crates in place of
/// `rustc`, and the dependencies are built as usual. The test build then lints and builds
/// in one compile, and the tests reuse it (the same variables must be set on every cargo
/// command that should reuse it; the wasm builds of the tests leave them out, as the
/// modules are linted for wasm32 by the `cargo clippy --target wasm32-wasip1` step). clippy-driver turns MIR
/// optimisations off; LLVM's are unchanged, and the tests' own crates build without
/// optimisation anyway.
fn linting<'c>(cmd: &'c mut Command, driver: &std::path::Path) -> &'c mut Command {
    cmd.env("RUSTC_WORKSPACE_WRAPPER", driver)
        // cargo-clippy's encoding of the arguments after `--`.
        .env("CLIPPY_ARGS", "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
}

/// The toolchain's `clippy-driver`.
fn clippy_driver() -> Result<std::path::PathBuf, String> {
    let out = Command::new("rustc")
        .current_dir(workspace())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc --print sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let driver = std::path::Path::new(&sysroot)
        .join("bin")
        .join(format!("clippy-driver{}", std::env::consts::EXE_SUFFIX));
    if !out.status.success() || !driver.is_file() {
        return Err(format!(
            "no clippy-driver at {}: add clippy to the toolchain (`rustup component add clippy`)",
            driver.display()
        ));
    }
    Ok(driver)
}

fn bench(extra: &[String]) -> Result<(), String> {
    setup_targets()?;
    build_modules()?;
    run(cargo()
        .current_dir(workspace())
        .args(["bench", "-p", "onramp-tests", "--"])
        .args(extra))
}
