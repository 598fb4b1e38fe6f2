//! The `onramp` command: parse the flags, set up logging, run the command ([`cli`]).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ONRAMP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,onramp=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
