//! `onramp setup`: the events topic and the three SmartModules in a Fluvio cluster.

use std::path::PathBuf;

use clap::Args;
use onramp::{cluster, wasm};

use super::ClusterArgs;

#[derive(Args)]
pub struct SetupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Partitions of the topic (an existing topic must have this many).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Replication factor of a new topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    replication: u32,
    /// Retention of a new topic: a number with unit s, m, h or d (e.g. 7d); default: the cluster's.
    #[arg(long, value_parser = super::parse_duration)]
    retention: Option<std::time::Duration>,
    /// Directory of the built .wasm SmartModules.
    #[arg(long, env = "ONRAMP_WASM_DIR", default_value_os_t = wasm::default_wasm_dir())]
    wasm_dir: PathBuf,
    /// Directory holding <module>/SmartModule.toml.
    #[arg(long, default_value_os_t = cluster::default_smartmodules_dir())]
    smartmodules_dir: PathBuf,
    /// Replace a module already loaded under the same name with different bytes.
    #[arg(long)]
    replace: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let cfg = cluster::setup::SetupConfig {
        target: args.cluster.target(),
        topic: args.cluster.topic.clone(),
        partitions: args.partitions,
        replication: args.replication,
        retention: args.retention,
        wasm_dir: args.wasm_dir,
        smartmodules_dir: args.smartmodules_dir,
        replace: args.replace,
    };
    let report = onramp::runtime()?.block_on(cluster::setup::setup(&cfg))?;
    super::print_report(args.json, &report, || report.render())
}
