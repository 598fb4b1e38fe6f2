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
    /// The funnel steps, in order (as given to the enrich module).
    #[arg(long, default_value = onramp_logic::enrich::DEFAULT_STEPS)]
    steps: String,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let steps = EnrichConfig::from_params(|_| Some(args.steps.clone()))?.steps;
    let stats = query::funnel_stats(&store, &steps)?;
    super::print_report(args.json, &stats, || query::render_funnel(&stats))
}
