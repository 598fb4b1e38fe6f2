//! `onramp demo`: a generated day of traffic through the whole pipeline, then the
//! summary, the funnel and what to try next.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use onramp::chain::ChainParams;
use onramp::generator::{self, GeneratorConfig};
use onramp::partition::KeyBy;
use onramp::query;
use onramp::run::embedded::{self, EmbeddedConfig};
use onramp::run::{Durability, Settings, DEFAULT_BATCH_SIZE};
use onramp::source::Input;
use onramp::store::Store;
use onramp::wasm;
use onramp_logic::enrich::EnrichConfig;

/// Default store of `onramp demo`.
const DEFAULT_DEMO_STORE: &str = "onramp-demo";

#[derive(Args)]
pub struct DemoArgs {
    /// Store directory (replaced on each demo run).
    #[arg(long, default_value = DEFAULT_DEMO_STORE)]
    store: PathBuf,
    /// Distinct users in the generated day.
    #[arg(long, default_value_t = generator::DEFAULT_USERS)]
    users: u64,
    /// Generator seed.
    #[arg(long, default_value_t = generator::DEFAULT_SEED)]
    seed: u64,
    /// Partitions.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
}

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs {
        store,
        users,
        seed,
        partitions,
    } = args;
    eprintln!("onramp demo: building the SmartModules (wasm32-wasip1, release-lto) if needed…");
    let wasm_dir = wasm::build_modules()?;
    if store.exists() {
        std::fs::remove_dir_all(&store)
            .with_context(|| format!("cannot replace the demo store {}", store.display()))?;
    }
    let gen = GeneratorConfig {
        seed,
        users,
        ..GeneratorConfig::default()
    };
    eprintln!("onramp demo: a day of onboarding traffic from {users} users through validate → enrich → profile…");
    let cfg = EmbeddedConfig {
        settings: Settings {
            store: store.clone(),
            params: ChainParams::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            durability: Durability::Durable,
            progress_bar: std::io::stderr().is_terminal(),
            suppressions: None,
            rules: None,
            watermark_ignore: Default::default(),
        },
        input: Input::Generate(gen),
        partitions,
        wasm_dir,
        linger: super::parse_duration(embedded::DEFAULT_LINGER).map_err(anyhow::Error::msg)?,
        max_line_bytes: onramp::source::DEFAULT_MAX_LINE_BYTES,
        append: false,
        key_by: KeyBy::Identity,
    };
    let summary = embedded::run(&cfg, &super::shutdown(), &())?;
    println!("== run summary\n{}", summary.render());
    let db = Store::open_existing(&store)?;
    let steps = EnrichConfig::default().steps;
    let stats = query::funnel_stats(&db, &steps)?;
    println!("== funnel\n{}", query::render_funnel(&stats));
    println!(
        "== audiences (rules: {})",
        if db.rules().text == onramp::audience::DEFAULT_RULES {
            "built-in, rules.example.yaml"
        } else {
            "recorded in the store"
        }
    );
    for (name, version, size) in db.audience_sizes()? {
        println!("{name:<24} v{version:<4} {size:>7} persons");
    }
    let transitions = db.transitions_after(None, usize::MAX)?;
    println!("{} transitions in the outbox; the first few:", transitions.len());
    for t in transitions.iter().take(5) {
        let at = chrono::DateTime::from_timestamp_millis(t.at_ms).map_or(t.at_ms.to_string(), |d| d.to_rfc3339());
        println!(
            "  {at}  {:<8} {:<12} {}",
            format!("{:?}", t.kind).to_lowercase(),
            t.audience,
            t.person_id
        );
    }
    let example = db
        .profiles_after(None)
        .filter_map(Result::ok)
        .find(|p| p.completed_ms.is_some());
    let shown = example.map(|p| p.user_id).unwrap_or_else(|| "<user id>".into());
    println!("== next");
    println!(
        "look up a profile:   onramp profile get {shown} --store {}",
        store.display()
    );
    println!(
        "stalled persons:     onramp audience members stalled --store {}",
        store.display()
    );
    println!(
        "what to show them:   onramp decide {shown} --surface welcome_checklist --store {}",
        store.display()
    );
    println!("the transitions:     onramp triggers --store {}", store.display());
    println!("the funnel again:    onramp stats --store {}", store.display());
    println!("every profile:       onramp export --store {}", store.display());
    Ok(())
}
