//! Finding, building and loading the SmartModule `.wasm` files.
//!
//! They are built for `wasm32-wasip1` with the `release-lto` profile, exactly as
//! `smdk build` builds them, into `target/wasm32-wasip1/release-lto/` of the workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The three SmartModules of the chain, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    /// `onramp-validate` (filter-map).
    Validate,
    /// `onramp-enrich` (map).
    Enrich,
    /// `onramp-profile` (aggregate).
    Profile,
}

impl Module {
    /// All modules, in chain order.
    pub const ALL: [Module; 3] = [Module::Validate, Module::Enrich, Module::Profile];

    /// Short name, as used in `--param <name>.<key>=<value>`.
    pub fn short_name(self) -> &'static str {
        match self {
            Module::Validate => "validate",
            Module::Enrich => "enrich",
            Module::Profile => "profile",
        }
    }

    /// Crate / SmartModule name (`onramp-validate`, …).
    pub fn crate_name(self) -> &'static str {
        match self {
            Module::Validate => "onramp-validate",
            Module::Enrich => "onramp-enrich",
            Module::Profile => "onramp-profile",
        }
    }

    /// File name of the built module.
    pub fn wasm_file(self) -> String {
        format!("{}.wasm", self.crate_name().replace('-', "_"))
    }

    /// Parses a short name.
    pub fn from_short_name(name: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.short_name() == name)
    }
}

/// The workspace root this binary was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where the built `.wasm` files are by default: `$ONRAMP_WASM_DIR`, else the workspace's
/// `target/wasm32-wasip1/release-lto`.
pub fn default_wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ONRAMP_WASM_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("wasm32-wasip1").join("release-lto")
}

/// Errors finding or building the modules.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// A module file is missing or unreadable.
    #[error("cannot read SmartModule {module} at {path}: {error}. Build the modules with `cargo xtask build` (or `smdk build` in smartmodules/<name>), or point --wasm-dir at them")]
    Missing {
        /// Crate name.
        module: &'static str,
        /// Path tried.
        path: PathBuf,
        /// The I/O error (in the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// The build command failed.
    #[error("building the SmartModules failed: {0}")]
    Build(String),
}

/// The bytes of the three modules.
#[derive(Clone)]
pub struct WasmModules {
    /// `onramp-validate`.
    pub validate: Vec<u8>,
    /// `onramp-enrich`.
    pub enrich: Vec<u8>,
    /// `onramp-profile`.
    pub profile: Vec<u8>,
}

impl WasmModules {
    /// Reads the modules from `dir`.
    pub fn load(dir: &Path) -> Result<Self, WasmError> {
        let read = |m: Module| {
            let path = dir.join(m.wasm_file());
            std::fs::read(&path).map_err(|error| WasmError::Missing {
                module: m.crate_name(),
                path,
                error,
            })
        };
        Ok(WasmModules {
            validate: read(Module::Validate)?,
            enrich: read(Module::Enrich)?,
            profile: read(Module::Profile)?,
        })
    }

    /// The bytes of one module.
    pub fn bytes(&self, m: Module) -> &[u8] {
        match m {
            Module::Validate => &self.validate,
            Module::Enrich => &self.enrich,
            Module::Profile => &self.profile,
        }
    }
}

/// Builds the three modules (adding the `wasm32-wasip1` target through rustup first) in
/// the workspace this binary comes from. Used by `onramp demo` and the tests, so that a
/// fresh clone needs no separate build step.
pub fn build_modules() -> Result<PathBuf, WasmError> {
    let root = workspace_root();
    if !root.join("smartmodules").is_dir() {
        return Err(WasmError::Build(format!(
            "{} is not the onramp workspace; build the modules there with `cargo xtask build`",
            root.display()
        )));
    }
    let run = |cmd: &mut Command| -> Result<(), WasmError> {
        let shown = format!("{cmd:?}");
        let status = cmd
            .current_dir(&root)
            .status()
            .map_err(|e| WasmError::Build(format!("{shown}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(WasmError::Build(format!("{shown} exited with {status}")))
        }
    };
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip1"]))?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "--profile", "release-lto", "--target", "wasm32-wasip1"]);
    for m in Module::ALL {
        cargo.args(["-p", m.crate_name()]);
    }
    // Flags meant for the host build (e.g. coverage) must not leak into the wasm build.
    cargo.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    run(&mut cargo)?;
    Ok(default_wasm_dir())
}
