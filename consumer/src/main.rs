//! The `onramp` command: parse the flags, set up logging, run the command ([`cli`]).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Makes glibc's malloc give freed memory back to the system once 1 MiB is free at the top
/// of the heap. By default glibc raises that threshold every time a large block is freed
/// (up to 32 MiB and more), and a run that moves batches of records through the chain and
/// the store kept hundreds of MB it no longer used: max RSS grew with the run (806 MB after
/// a million events, against 318 MB with this; BENCHMARKS.md, "Memory of a long run").
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    return_freed_memory();
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
