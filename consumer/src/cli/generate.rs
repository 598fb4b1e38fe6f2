//! `onramp generate`: the traffic generator's JSON lines to a file or stdout.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use onramp::generator::Generator;

use super::GeneratorArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    gen: GeneratorArgs,
    /// Output file (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let cfg = args.gen.config()?;
    let mut out = super::output(args.output.as_deref())?;
    let mut n = 0u64;
    for line in Generator::new(cfg) {
        writeln!(out, "{line}")?;
        n += 1;
    }
    out.flush()?;
    tracing::info!(lines = n, "generated");
    Ok(())
}
