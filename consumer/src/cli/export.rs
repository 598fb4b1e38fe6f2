//! `onramp export`: every person (or, with `--by-id`, every stored profile) as one JSON
//! line, in id order.

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
    /// One line per stored id instead of per person: an anonymous id and the user it is
    /// linked to apart, exactly as the store holds them (a backup, or to compare per id).
    #[arg(long)]
    by_id: bool,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let mut out = super::output(args.output.as_deref())?;
    let n = if args.by_id {
        query::export_id_lines(&store, &mut out)?
    } else {
        query::export_lines(&store, &mut out)?
    };
    out.flush()?;
    tracing::info!(lines = n, per = if args.by_id { "id" } else { "person" }, "exported");
    Ok(())
}
