//! Cluster mode: onramp against a running Fluvio cluster, where the SmartModules run
//! inside the SPU and the consumer only reads what the chain emits.
//!
//! - [`setup`] — `onramp setup`: the events topic and the three SmartModules, through the
//!   admin API (the same result as `fluvio topic create` + `smdk load` in each module folder).
//! - [`produce`] — `onramp produce`: events into the topic, record key = user id, partitioned
//!   exactly like the embedded run ([`crate::partition`]).
//! - [`consume`] — `onramp run --source fluvio`: one broker-side chain per partition, merged
//!   by offset with the validate rejects, committed to the same store as the embedded run;
//!   it reports each partition's lag from the end offsets its leader reports.
//! - [`assignment`] — `--members`/`--member`: which member of a group of consumers owns
//!   which partition (rendezvous hashing; membership is configuration).
//! - [`merge`] — the offset merger behind it: two streams in, the store's batches out;
//!   synchronous and free of I/O (tested without a cluster).
//! - [`relay`] — `--triggers-topic`: the store's audience transitions, produced to a topic
//!   keyed by person id, at least once.

pub mod assignment;
pub mod consume;
pub mod merge;
pub mod produce;
pub mod relay;
pub mod setup;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use fluvio::metadata::partition::{PartitionResolution, PartitionSpec};
use fluvio::metadata::smartmodule::SmartModuleMetadata;
use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, FluvioAdmin, FluvioClusterConfig};

use crate::wasm::{workspace_root, Module};

/// Default events topic.
pub const DEFAULT_TOPIC: &str = "onboarding-events";
/// How long connecting to the cluster may take before it is an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which cluster to talk to.
#[derive(Debug, Clone, Default)]
pub struct ClusterTarget {
    /// `host:port` of the SC (no TLS); overrides the profile.
    pub endpoint: Option<String>,
    /// A Fluvio profile name (default: the active profile of `~/.fluvio/config`).
    pub profile: Option<String>,
}

impl ClusterTarget {
    /// The cluster config this target names.
    pub fn config(&self) -> anyhow::Result<FluvioClusterConfig> {
        match (&self.endpoint, &self.profile) {
            (Some(endpoint), _) => Ok(FluvioClusterConfig::new(endpoint.clone())),
            (None, Some(profile)) => FluvioClusterConfig::load_with_profile(profile)
                .map_err(|e| anyhow!("cannot read the Fluvio config: {e}"))?
                .with_context(|| format!("no Fluvio profile `{profile}` (see `fluvio profile list`)")),
            (None, None) => FluvioClusterConfig::load().map_err(|e| {
                anyhow!(
                    "no active Fluvio profile ({e}); start a cluster (`fluvio cluster start --local`), \
                     pick a profile (`fluvio profile switch`), or pass --endpoint host:port"
                )
            }),
        }
    }

    /// Connects, or says clearly why not.
    pub async fn connect(&self) -> anyhow::Result<Fluvio> {
        let config = self.config()?;
        let endpoint = config.endpoint.clone();
        match tokio::time::timeout(CONNECT_TIMEOUT, Fluvio::connect_with_config(&config)).await {
            Err(_) => Err(anyhow!(
                "no answer from the Fluvio cluster at {endpoint} within {}s",
                CONNECT_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(anyhow!(
                "cannot connect to the Fluvio cluster at {endpoint}: {e:#}. Is it running? (`fluvio cluster status`)"
            )),
            Ok(Ok(fluvio)) => Ok(fluvio),
        }
    }
}

/// Where the modules' `SmartModule.toml` files are by default: `smartmodules/` of the workspace.
pub fn default_smartmodules_dir() -> PathBuf {
    workspace_root().join("smartmodules")
}

/// A module's `SmartModule.toml` (`<dir>/<short name>/SmartModule.toml`).
pub fn module_metadata(smartmodules_dir: &Path, module: Module) -> anyhow::Result<SmartModuleMetadata> {
    let path = smartmodules_dir.join(module.short_name()).join("SmartModule.toml");
    let meta = SmartModuleMetadata::from_toml(&path).with_context(|| {
        format!(
            "cannot read {} (the SmartModule metadata of {}); pass --smartmodules-dir",
            path.display(),
            module.crate_name()
        )
    })?;
    if !meta.package.is_valid() {
        anyhow::bail!("{}: `name` and `group` must be set", path.display());
    }
    Ok(meta)
}

/// The name a module is loaded under in the cluster: `group/name@version`.
pub fn loaded_name(smartmodules_dir: &Path, module: Module) -> anyhow::Result<String> {
    Ok(module_metadata(smartmodules_dir, module)?.package.fqdn())
}

/// The topic's partition count, or `None` when there is no such topic.
pub async fn topic_partitions(admin: &FluvioAdmin, topic: &str) -> anyhow::Result<Option<u32>> {
    let topics = admin
        .list::<TopicSpec, String>(vec![topic.to_string()])
        .await
        .map_err(|e| anyhow!("listing topics: {e:#}"))?;
    Ok(topics.iter().find(|t| t.name == topic).map(|t| t.spec.partitions()))
}

/// The partition count of a topic that must exist.
pub async fn existing_topic_partitions(admin: &FluvioAdmin, topic: &str) -> anyhow::Result<u32> {
    topic_partitions(admin, topic)
        .await?
        .with_context(|| format!("no topic `{topic}` in the cluster; run `onramp setup` first (or pass --topic)"))
}

/// One partition of the topic as the SC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub partition: u32,
    /// A leader is serving it.
    pub online: bool,
}

/// The topic's partitions (sorted) and whether each has a leader. (Not their end offsets:
/// the SC's copy lags behind the leader; `--stop-at-end` asks each leader.)
pub async fn partitions(admin: &FluvioAdmin, topic: &str) -> anyhow::Result<Vec<PartitionInfo>> {
    let all = admin
        .all::<PartitionSpec>()
        .await
        .map_err(|e| anyhow!("listing partitions: {e:#}"))?;
    let prefix = format!("{topic}-");
    let mut out: Vec<PartitionInfo> = all
        .into_iter()
        .filter_map(|m| {
            let id: u32 = m.name.strip_prefix(&prefix)?.parse().ok()?;
            Some(PartitionInfo {
                partition: id,
                online: m.status.resolution == PartitionResolution::Online,
            })
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    Ok(out)
}
