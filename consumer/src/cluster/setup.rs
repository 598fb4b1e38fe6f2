//! `onramp setup`: the events topic and the three SmartModules, created through the
//! Fluvio admin API.
//!
//! Each module is registered from its built `.wasm` and its `SmartModule.toml`, exactly as
//! `smdk load` does it (a `SmartModuleSpec` with the package metadata and the gzipped wasm),
//! so it is invoked by the name `group/name@version` (see `transforms.yaml`).
//!
//! Idempotent: a topic with the asked partition count, or a module already loaded with the
//! same bytes, is left alone and reported `unchanged`. A topic with another partition count
//! is an error (stores and the key → partition hashing depend on it); a module loaded under
//! the same name with different bytes is an error unless `--replace` (bump `version` in
//! `SmartModule.toml` instead, so running consumers keep their module).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use fluvio::metadata::smartmodule::{SmartModuleSpec, SmartModuleWasm};
use fluvio::metadata::topic::{CleanupPolicy, SegmentBasedPolicy, TopicSpec};

use super::{module_metadata, partitions, topic_partitions, ClusterTarget};
use crate::wasm::{Module, WasmModules};

/// What `onramp setup` creates.
#[derive(Debug, Clone)]
pub struct SetupConfig {
    /// The cluster.
    pub target: ClusterTarget,
    /// Topic name.
    pub topic: String,
    /// Partitions of a new topic (an existing topic must have this many).
    pub partitions: u32,
    /// Replication factor of a new topic.
    pub replication: u32,
    /// Retention of a new topic (none: the cluster default).
    pub retention: Option<Duration>,
    /// Directory of the built `.wasm` files.
    pub wasm_dir: PathBuf,
    /// Directory holding `<module>/SmartModule.toml`.
    pub smartmodules_dir: PathBuf,
    /// Replace a module loaded under the same name with other bytes.
    pub replace: bool,
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// It did not exist and was created.
    Created,
    /// It existed as asked; nothing was done.
    Unchanged,
    /// It existed with other bytes and was replaced (`--replace`).
    Replaced,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Unchanged => "unchanged",
            Change::Replaced => "replaced",
        })
    }
}

/// What `onramp setup` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetupReport {
    /// Topic name and what happened to it.
    pub topic: (String, Change),
    /// Partitions of the topic.
    pub partitions: u32,
    /// Each module's loaded name and what happened to it.
    pub modules: Vec<(String, Change)>,
}

impl SetupReport {
    /// True when nothing was created or replaced.
    pub fn unchanged(&self) -> bool {
        self.topic.1 == Change::Unchanged && self.modules.iter().all(|(_, c)| *c == Change::Unchanged)
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "topic {:<34} {} ({} partitions)\n",
            self.topic.0, self.topic.1, self.partitions
        );
        for (name, change) in &self.modules {
            s += &format!("smartmodule {name:<28} {change}\n");
        }
        if self.unchanged() {
            s += "nothing to do: the cluster already has this topic and these SmartModules\n";
        }
        s
    }
}

/// How long a new topic may take to get a leader for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates what is missing; see the module docs.
pub async fn setup(cfg: &SetupConfig) -> anyhow::Result<SetupReport> {
    if cfg.partitions == 0 || cfg.replication == 0 {
        bail!("--partitions and --replication must be at least 1");
    }
    // Everything local is read first: a missing file fails before the cluster is touched.
    let wasm = WasmModules::load(&cfg.wasm_dir)?;
    let mut local = Vec::new();
    for m in Module::ALL {
        local.push((m, module_metadata(&cfg.smartmodules_dir, m)?));
    }

    let fluvio = cfg.target.connect().await?;
    let admin = fluvio.admin().await;

    let topic_change = match topic_partitions(&admin, &cfg.topic).await? {
        Some(have) => {
            if have != cfg.partitions {
                bail!(
                    "topic `{}` already exists with {have} partitions, not {}: records are hashed to partitions \
                     by their count and a store is tied to it. Use --partitions {have}, or another --topic",
                    cfg.topic,
                    cfg.partitions
                );
            }
            Change::Unchanged
        }
        None => {
            let mut spec = TopicSpec::new_computed(cfg.partitions, cfg.replication, None);
            if let Some(retention) = cfg.retention {
                let secs = u32::try_from(retention.as_secs()).context("--retention is too long")?;
                spec.set_cleanup_policy(CleanupPolicy::Segment(SegmentBasedPolicy { time_in_seconds: secs }));
            }
            admin
                .create(cfg.topic.clone(), false, spec)
                .await
                .map_err(|e| anyhow!("creating topic `{}`: {e:#}", cfg.topic))?;
            tracing::info!(topic = %cfg.topic, partitions = cfg.partitions, replication = cfg.replication, "topic created");
            Change::Created
        }
    };
    wait_for_leaders(&admin, &cfg.topic, cfg.partitions).await?;

    let loaded = admin
        .all::<SmartModuleSpec>()
        .await
        .map_err(|e| anyhow!("listing SmartModules: {e:#}"))?;
    let mut modules = Vec::new();
    for (m, meta) in local {
        let fqdn = meta.package.fqdn();
        let bytes = wasm.bytes(m);
        let existing = loaded.iter().find(|s| s.spec.fqdn(&s.name) == fqdn);
        let change = match existing {
            Some(e) => {
                let same = e.spec.wasm.as_raw_wasm().map(|raw| raw == bytes).unwrap_or(false);
                if same {
                    Change::Unchanged
                } else if cfg.replace {
                    admin
                        .delete::<SmartModuleSpec>(e.name.clone())
                        .await
                        .map_err(|err| anyhow!("deleting SmartModule {fqdn}: {err:#}"))?;
                    wait_until_deleted(&admin, &e.name, &fqdn).await?;
                    create_module(&admin, meta, bytes).await?;
                    Change::Replaced
                } else {
                    bail!(
                        "SmartModule {fqdn} is already loaded with a different .wasm; bump `version` in \
                         {}/{}/SmartModule.toml, or pass --replace to overwrite it",
                        cfg.smartmodules_dir.display(),
                        m.short_name()
                    );
                }
            }
            None => {
                create_module(&admin, meta, bytes).await?;
                Change::Created
            }
        };
        tracing::info!(smartmodule = %fqdn, %change, "smartmodule");
        modules.push((fqdn, change));
    }
    Ok(SetupReport {
        topic: (cfg.topic.clone(), topic_change),
        partitions: cfg.partitions,
        modules,
    })
}

/// How long a replaced SmartModule's deletion is given to reach the SPUs before the new
/// one is created under the same name.
const DELETE_GRACE: Duration = Duration::from_secs(2);

/// Waits until the SC no longer lists the SmartModule `name`, then [`DELETE_GRACE`] more.
///
/// The SC sends the SPUs the changes since their last sync; a deletion and a creation of
/// the same name inside one sync reach the SPU as an update and then a delete, and the SPU
/// ends up without the module (measured on Fluvio 0.50: every `setup --replace` that
/// created at once left consumers failing with `SmartModuleNotFound`). Letting the
/// deletion reach the SPUs first avoids it.
async fn wait_until_deleted(admin: &fluvio::FluvioAdmin, name: &str, fqdn: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let listed = admin
            .all::<SmartModuleSpec>()
            .await
            .map_err(|e| anyhow!("listing SmartModules: {e:#}"))?;
        if !listed.iter().any(|s| s.name == name) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("SmartModule {fqdn} is still listed 30 s after it was deleted");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(DELETE_GRACE).await;
    Ok(())
}

async fn create_module(
    admin: &fluvio::FluvioAdmin,
    meta: fluvio::metadata::smartmodule::SmartModuleMetadata,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let fqdn = meta.package.fqdn();
    // As `smdk load`: the name passed is replaced by the SC with the package's own id.
    let id = meta.package.name.clone();
    let spec = SmartModuleSpec {
        meta: Some(meta),
        wasm: SmartModuleWasm::from_raw_wasm_bytes(bytes).context("compressing the .wasm")?,
        ..Default::default()
    };
    admin
        .create(id, false, spec)
        .await
        .map_err(|e| anyhow!("loading SmartModule {fqdn}: {e:#}"))
}

/// Waits until every partition of the topic has a leader (a new topic takes a moment).
async fn wait_for_leaders(admin: &fluvio::FluvioAdmin, topic: &str, expected: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let parts = partitions(admin, topic).await?;
        if parts.len() == expected as usize && parts.iter().all(|p| p.online) {
            return Ok(());
        }
        if started.elapsed() > TOPIC_READY_TIMEOUT {
            bail!(
                "topic `{topic}`: {} of {expected} partitions have a leader after {}s; check the SPUs (`fluvio cluster status`)",
                parts.iter().filter(|p| p.online).count(),
                TOPIC_READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
