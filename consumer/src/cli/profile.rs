//! `onramp profile get|list`: one profile with its hints, or a filtered page of them.

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;
use onramp::query::{self, Hint, ProfileFilter};
use onramp::store::Store;

use super::StoreArg;

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// One profile as pretty JSON, with its derived hints.
    Get {
        /// User id (or anonymous id).
        user: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Profiles matching filters, in user-id order, a page at a time.
    #[command(after_help = "Examples:\n  \
onramp profile list --step email_verified --limit 20\n  \
onramp profile list --hint stalled\n  \
onramp profile list --active-since 2026-11-02T12:00:00Z --cursor u_0000120")]
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Only users whose furthest funnel step is this.
        #[arg(long)]
        step: Option<String>,
        /// Only users who completed this step.
        #[arg(long)]
        completed_step: Option<String>,
        /// Only users with this hint: stalled or activated.
        #[arg(long)]
        hint: Option<Hint>,
        /// Only users who completed onboarding (true) or not (false).
        #[arg(long)]
        completed: Option<bool>,
        /// Only users seen at or after this RFC 3339 time.
        #[arg(long, value_parser = query::parse_active_since)]
        active_since: Option<i64>,
        /// Page size (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
}

pub fn profile(command: ProfileCommand) -> anyhow::Result<()> {
    match command {
        ProfileCommand::Get { user, store } => {
            let store = Store::open_existing(&store.store)?;
            let Some(person) = store.person(&user)? else {
                bail!("no profile for `{user}` in {}", store.path().display());
            };
            let value = query::person_with_hints(&store, person, &user)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        ProfileCommand::List {
            store,
            step,
            completed_step,
            hint,
            completed,
            active_since,
            limit,
            cursor,
        } => {
            let store = Store::open_existing(&store.store)?;
            let filter = ProfileFilter {
                step,
                completed_step,
                hint,
                completed,
                active_since_ms: active_since,
            };
            let page = query::list_profiles(&store, &filter, cursor.as_deref(), limit)?;
            let mut out = std::io::stdout().lock();
            for p in &page.profiles {
                writeln!(out, "{}", serde_json::to_string(p)?)?;
            }
            match page.next_cursor {
                Some(c) => eprintln!("{} profiles; next page: --cursor {c}", page.profiles.len()),
                None => eprintln!("{} profiles; end of list", page.profiles.len()),
            }
            Ok(())
        }
    }
}
