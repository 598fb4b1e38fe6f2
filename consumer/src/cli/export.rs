//! `onramp export`: every profile as one JSON line, in user-id order.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use onramp::query;
use onramp::store::Store;

use super::StoreArg;

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Output file (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let mut out = super::output(args.output.as_deref())?;
    let n = query::export_lines(&store, &mut out)?;
    out.flush()?;
    tracing::info!(profiles = n, "exported");
    Ok(())
}
