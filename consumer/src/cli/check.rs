//! `onramp check`: the full verify of a store; exit 1 when it is damaged.

use anyhow::bail;
use clap::Args;
use onramp::store::Store;

use super::StoreArg;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print the report as JSON (still exits 1 when the store is damaged).
    #[arg(long)]
    json: bool,
}

/// `onramp check --help`: examples and how to rebuild a damaged store.
pub fn after_help() -> String {
    format!(
        "Examples:\n  onramp check --store onramp-data\n  onramp check --store onramp-data --json | jq .problems_by_kind\n\n\
Rebuilding a damaged store:\n{}",
        onramp::store::REBUILD_HELP
    )
}

/// Prints the report, and fails (exit 1) when the store is damaged.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let path = &args.store.store;
    let report = Store::check_path(path)?;
    super::print_report(args.json, &report, || report.render())?;
    if report.healthy {
        return Ok(());
    }
    if !args.json {
        println!("\nhow to rebuild it:\n{}", onramp::store::REBUILD_HELP);
        if let Some(n) = report.partitions {
            println!(
                "this store was written with --partitions {n} and chain params `{}` (`defaults`: no --param)",
                report.chain_params.as_deref().unwrap_or("(not recorded)")
            );
        }
    }
    bail!(
        "store {} is damaged ({} problem{}); rebuild it from its input (`onramp check --help` says how)",
        path.display(),
        report.problem_count,
        if report.problem_count == 1 { "" } else { "s" }
    )
}
