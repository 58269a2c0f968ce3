//! The `snapkv` command line.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv inspect predictions.snapkv
  snapkv get predictions.snapkv user:42 user:43
  snapkv scan predictions.snapkv --prefix user: --limit 10
  snapkv verify predictions.snapkv && echo intact

Exit codes: 0 success; 1 a negative answer (a key is missing, a file is corrupt); 2 an error
(bad arguments, unreadable input).";

/// Serve precomputed results from immutable, versioned snapshot files.
#[derive(Parser)]
#[command(name = "snapkv", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(cmd::inspect::Args),
    Verify(cmd::verify::Args),
    Get(cmd::get::Args),
    Scan(cmd::scan::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Get(args) => cmd::get::run(args),
        Command::Scan(args) => cmd::scan::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if cmd::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
