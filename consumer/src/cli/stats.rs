//! `onramp stats`: the funnel of a store, as a table or JSON.

use clap::Args;
use onramp::query;
use onramp::store::Store;
use onramp_logic::enrich::EnrichConfig;

use super::StoreArg;

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The funnel steps, in order, comma-separated (default: the steps the store's runs
    /// gave the enrich module, else its default funnel).
    #[arg(long)]
    steps: Option<String>,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let steps = match args.steps {
        Some(steps) => EnrichConfig::from_params(|_| Some(steps.clone()))?.steps,
        None => onramp::run::store_funnel_steps(&store)?,
    };
    let stats = query::funnel_stats(&store, &steps)?;
    super::print_report(args.json, &stats, || query::render_funnel(&stats))
}
