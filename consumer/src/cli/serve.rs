//! `onramp serve`: the read API over a store nothing else writes, until ctrl-c.

use anyhow::bail;
use clap::Args;
use onramp::api::Hub;
use onramp::store::Store;

use super::{ApiArgs, StoreArg};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.api.listen == "off" {
        bail!("onramp serve needs --listen");
    }
    let store = Store::open_existing(&args.store.store)?;
    let hub = Hub::new(args.api.ready_max_lag, true);
    let partitions = store.partitions()?.unwrap_or(1);
    let steps = onramp::run::store_funnel_steps(&store)?;
    hub.set_store(store);
    let runtime = onramp::runtime()?;
    let shutdown = super::shutdown();
    args.api.start(&hub, partitions, steps, runtime.handle(), None)?;
    shutdown.wait();
    tracing::info!("stopping");
    Ok(())
}
