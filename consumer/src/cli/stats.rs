//! `onramp stats`: the funnel of a store, as a table or JSON.

use clap::Args;
use onramp::cluster;
use onramp::cluster::consume::FLUVIO_SOURCE;
use onramp::query;
use onramp::store::Store;
use onramp_logic::enrich::EnrichConfig;

use super::{ConnectionArgs, StoreArg};

/// How long `onramp stats` waits for the cluster's end offsets before it prints without lag.
const LAG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Do not ask the cluster for lag. By default, for a store fed by a Fluvio topic, each
    /// partition's lag (records of the topic after its checkpoint) is shown when the
    /// cluster answers within 5 s; otherwise the stats are printed without it.
    #[arg(long)]
    no_lag: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let steps = match args.steps {
        Some(steps) => EnrichConfig::from_params(|_| Some(steps.clone()))?.steps,
        None => onramp::run::store_funnel_steps(&store)?,
    };
    let mut stats = query::funnel_stats(&store, &steps)?;
    let topic = store
        .source()?
        .and_then(|s| s.strip_prefix(FLUVIO_SOURCE).map(str::to_string));
    if let (Some(topic), false) = (topic, args.no_lag) {
        let target = args.connection.target();
        let asked = onramp::runtime()?.block_on(async {
            tokio::time::timeout(LAG_TIMEOUT, cluster::consume::end_offsets(&target, &topic)).await
        });
        match asked {
            Ok(Ok(ends)) => {
                for p in &mut stats.partitions {
                    if let Some(&end) = ends.get(p.partition as usize) {
                        p.lag = Some(end.saturating_sub(p.checkpoint + 1).max(0) as u64);
                    }
                }
            }
            Ok(Err(e)) => eprintln!("lag not shown: {e:#}"),
            Err(_) => eprintln!(
                "lag not shown: the cluster did not answer within {}s (--no-lag skips asking)",
                LAG_TIMEOUT.as_secs()
            ),
        }
    }
    super::print_report(args.json, &stats, || query::render_funnel(&stats))
}
