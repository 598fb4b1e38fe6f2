//! `onramp erase` and `onramp suppressions`: erasing a person when nothing is serving, and
//! carrying the erased ids over to a rebuilt store.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use onramp::store::{Store, SuppressionList};

use super::StoreArg;

#[derive(Args)]
pub struct EraseArgs {
    /// Any id of the person: its user id, or an anonymous id linked to it.
    id: String,
    #[command(flatten)]
    store: StoreArg,
    /// Print what was erased as JSON.
    #[arg(long)]
    json: bool,
}

pub fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let erased = store.erase(&args.id)?;
    if !erased.found_anything() {
        bail!(
            "nothing of `{}` in {}: no profile, fold state, stored reject or link (nothing was suppressed)",
            args.id,
            store.path().display()
        );
    }
    store.close()?;
    tracing::info!(person = %erased.person, ids = erased.ids.len(), "person erased; its ids are suppressed");
    super::print_report(args.json, &erased, || {
        format!(
            "erased person {} ({} id{}: {})\n  profiles {}, stored rejects {}, links {}, fold state on partitions {:?}\n  \
             its ids are suppressed: records for them are dropped at commit from now on. To keep a rebuilt store clean: \
             onramp suppressions export --store {} --output suppressions.json, then onramp run --suppressions suppressions.json …\n",
            erased.person,
            erased.ids.len(),
            if erased.ids.len() == 1 { "" } else { "s" },
            erased.ids.join(", "),
            erased.profiles,
            erased.rejects,
            erased.links,
            erased.fold_state_partitions,
            store.path().display()
        )
    })
}

#[derive(Subcommand)]
pub enum SuppressionsCommand {
    /// Write the store's suppressions (keyed hashes of erased ids, and their key) as JSON.
    Export {
        #[command(flatten)]
        store: StoreArg,
        /// Output file (default: standard output). It holds the hash key: keep it as
        /// private as the store.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn suppressions(command: SuppressionsCommand) -> anyhow::Result<()> {
    match command {
        SuppressionsCommand::Export { store, output } => {
            let store = Store::open_existing(&store.store)?;
            let list = store.export_suppressions()?;
            let mut out = super::output(output.as_deref())?;
            serde_json::to_writer_pretty(&mut out, &list)?;
            out.write_all(b"\n")?;
            out.flush()?;
            tracing::info!(suppressions = list.hashes.len(), "suppressions exported");
            Ok(())
        }
    }
}

/// Reads a suppression list written by `onramp suppressions export`.
pub fn read_suppressions(path: &std::path::Path) -> anyhow::Result<SuppressionList> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read --suppressions {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "--suppressions {} is not a suppression list (write one with `onramp suppressions export`)",
            path.display()
        )
    })
}
