//! `onramp audiences`, `onramp audience members`, `onramp decide`, `onramp triggers`: the
//! personalisation surface of a store, from the command line.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use onramp::query;
use onramp::store::audience::parse_cursor;
use onramp::store::Store;

use super::StoreArg;

#[derive(Args)]
pub struct AudiencesArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AudienceCommand {
    /// The persons in an audience, in person-id order.
    Members {
        /// Audience name.
        name: String,
        #[command(flatten)]
        store: StoreArg,
        /// Start after this person id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Most persons to print (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Args)]
pub struct DecideArgs {
    /// Any id of the person (user id or anonymous id).
    id: String,
    /// The surface (a `surfaces` entry of the rules).
    #[arg(long)]
    surface: String,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
pub struct TriggersArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Start after this cursor (a transition's `cursor`).
    #[arg(long)]
    after: Option<String>,
    /// Most transitions to print (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
}

pub fn audiences(args: AudiencesArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let sizes = store.audience_sizes()?;
    let frontier = store.audience_frontier()?;
    let rules = store.rules();
    let rows: Vec<serde_json::Value> = sizes
        .iter()
        .map(|(name, version, size)| {
            serde_json::json!({
                "name": name,
                "version": version,
                "size": size,
                "description": rules.audience(name).and_then(|a| a.description.clone()),
            })
        })
        .collect();
    let report = serde_json::json!({"audiences": rows, "frontier_ms": frontier});
    super::print_report(args.json, &report, || {
        let mut out = String::new();
        for (name, version, size) in &sizes {
            out.push_str(&format!("{name:<24} v{version:<4} {size:>9}\n"));
        }
        out.push_str(&match frontier {
            Some(ms) => format!(
                "(as of event time {})\n",
                chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
            ),
            None => {
                let ignored = store.watermark_ignored();
                let waiting: Vec<String> = (0..store.partitions().ok().flatten().unwrap_or(0))
                    .filter(|p| !ignored.contains(p))
                    .filter(|p| store.checkpoint(*p).ok().flatten().and_then(|c| c.max_event_time_ms).is_none())
                    .map(|p| p.to_string())
                    .collect();
                format!(
                    "(no frontier yet: partition(s) {} have no watermark — fewer than 3 events — so nothing is judged; an empty partition can be left out with `onramp run --watermark-ignore`)\n",
                    waiting.join(", ")
                )
            }
        });
        out
    })
}

pub fn audience(command: AudienceCommand) -> anyhow::Result<()> {
    match command {
        AudienceCommand::Members {
            name,
            store,
            after,
            limit,
        } => {
            let store = Store::open_existing(&store.store)?;
            if store.rules().audience(&name).is_none() {
                let known: Vec<String> = store.audience_sizes()?.into_iter().map(|(n, _, _)| n).collect();
                anyhow::bail!(
                    "no audience `{name}` in the store's rules; audiences: {}",
                    known.join(", ")
                );
            }
            let mut out = std::io::stdout().lock();
            let limit = if limit == 0 { usize::MAX } else { limit };
            for (person, member) in store.audience_members(&name, after.as_deref(), limit)? {
                let line =
                    serde_json::json!({"person_id": person, "version": member.version, "since_ms": member.since_ms});
                writeln!(out, "{line}").context("writing to stdout")?;
            }
            Ok(())
        }
    }
}

pub fn decide(args: DecideArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let decision = query::decision(&store, &args.id, &args.surface)?;
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(())
}

pub fn triggers(args: TriggersArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.store.store)?;
    let mut cursor = match args.after.as_deref() {
        Some(c) => Some(parse_cursor(c).with_context(|| format!("--after `{c}` is not a transition cursor (hex)"))?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut left = if args.limit == 0 { usize::MAX } else { args.limit };
    while left > 0 {
        let page = store.transitions_after(cursor.as_deref(), left.min(1_000))?;
        if page.is_empty() {
            break;
        }
        for t in &page {
            writeln!(out, "{}", serde_json::to_string(t)?).context("writing to stdout")?;
        }
        left -= page.len();
        cursor = page.last().and_then(|t| parse_cursor(&t.cursor));
    }
    Ok(())
}
