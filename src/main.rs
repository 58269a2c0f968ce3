//! The `snapkv` command line.

/// `println!` that gives back the write's error instead of panicking, so that a closed
/// stdout (`snapkv inspect … | head`) ends the command quietly (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod cmd;

/// jemalloc: with its background thread (started by the servers) freed memory goes back to
/// the system within seconds after a burst of connections, where the C library's allocator
/// keeps it (benches/http/burst.sh measures it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv build --input job-output/ --key user_id --output predictions.snapkv
  snapkv inspect predictions.snapkv
  snapkv get predictions.snapkv user:42 user:43
  snapkv scan predictions.snapkv --prefix user: --limit 10
  snapkv verify predictions.snapkv && echo intact
  snapkv diff yesterday.snapkv predictions.snapkv
  snapkv serve --file predictions=predictions.snapkv
  snapkv publish predictions.snapkv --store s3://bucket/snapkv --dataset predictions
  snapkv versions --store s3://bucket/snapkv --dataset predictions

Exit codes: 0 success; 1 a negative answer (a key is missing, a file is corrupt); 2 an error
(bad arguments, unreadable input); 3 a version refused by its dataset's policy (publish,
promote).";

/// Serve precomputed results from immutable, versioned snapshot files.
#[derive(Parser)]
#[command(name = "snapkv", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text (coloured only on a terminal) or json (one object per line,
    /// with timestamp, level, message and fields). The level comes from SNAPKV_LOG: debug,
    /// info, warn, error or a tracing filter like snapkv_reader=debug; by default info for
    /// serve and demo, warn for the other commands.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = cmd::LogFormat::Text,
        env = "SNAPKV_LOG_FORMAT"
    )]
    log_format: cmd::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    Build(cmd::build::Args),
    Inspect(cmd::inspect::Args),
    Verify(cmd::verify::Args),
    Get(cmd::get::Args),
    Scan(cmd::scan::Args),
    Query(cmd::query::Args),
    Diff(cmd::diff::Args),
    Serve(cmd::serve::Args),
    Demo(cmd::demo::Args),
    Publish(cmd::publish::Args),
    Versions(cmd::versions::Args),
    Promote(cmd::promote::Args),
    Commit(cmd::commit::Args),
    Rollback(cmd::rollback::Args),
    Route(cmd::route::Args),
    Pin(cmd::pin::PinArgs),
    Unpin(cmd::pin::UnpinArgs),
    History(cmd::history::Args),
    Policy(cmd::policy::Args),
    Gc(cmd::gc::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    snapkv_reader::report_sigbus();
    let log_format = cli.log_format;
    // The servers report what they do; the other commands print their answer on stdout and
    // leave stderr to warnings (a store retry is not news) unless SNAPKV_LOG asks for more.
    let level = match cli.command {
        Command::Serve(_) | Command::Demo(_) => "info",
        _ => "warn",
    };
    cmd::init_logging(log_format, level);
    let result = match cli.command {
        Command::Build(args) => cmd::build::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Get(args) => cmd::get::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Query(args) => cmd::query::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::Serve(args) => cmd::serve::run(args, log_format),
        Command::Demo(args) => cmd::demo::run(args, log_format),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Versions(args) => cmd::versions::run(args),
        Command::Promote(args) => cmd::promote::run(args),
        Command::Commit(args) => cmd::commit::run(args),
        Command::Rollback(args) => cmd::rollback::run(args),
        Command::Route(args) => cmd::route::run(args),
        Command::Pin(args) => cmd::pin::pin(args),
        Command::Unpin(args) => cmd::pin::unpin(args),
        Command::History(args) => cmd::history::run(args),
        Command::Policy(args) => cmd::policy::run(args),
        Command::Gc(args) => cmd::gc::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if cmd::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // A log collector reads stderr line by line as JSON: the last words too, unless
            // SNAPKV_LOG silences errors.
            if log_format == cmd::LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            if matches!(
                e.downcast_ref::<snapkv_store::Error>(),
                Some(snapkv_store::Error::Policy { .. })
            ) {
                ExitCode::from(cmd::REFUSED_BY_POLICY)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
