//! The `snapkv` command line.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv build --input job-output/ --key user_id --output predictions.snapkv
  snapkv inspect predictions.snapkv
  snapkv get predictions.snapkv user:42 user:43
  snapkv scan predictions.snapkv --prefix user: --limit 10
  snapkv verify predictions.snapkv && echo intact
  snapkv serve --file predictions=predictions.snapkv
  snapkv publish predictions.snapkv --store s3://bucket/snapkv --dataset predictions
  snapkv versions --store s3://bucket/snapkv --dataset predictions

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
    Build(cmd::build::Args),
    Inspect(cmd::inspect::Args),
    Verify(cmd::verify::Args),
    Get(cmd::get::Args),
    Scan(cmd::scan::Args),
    Serve(cmd::serve::Args),
    Demo(cmd::demo::Args),
    Publish(cmd::publish::Args),
    Versions(cmd::versions::Args),
    Rollback(cmd::rollback::Args),
    Gc(cmd::gc::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => cmd::build::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Get(args) => cmd::get::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Versions(args) => cmd::versions::run(args),
        Command::Rollback(args) => cmd::rollback::run(args),
        Command::Gc(args) => cmd::gc::run(args),
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
