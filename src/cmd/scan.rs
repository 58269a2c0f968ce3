//! `snapkv scan`: entries in key order, as NDJSON.

use super::printable;
use snapkv_format::ValueEncoding;
use std::io::Write;
use std::ops::Bound;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print entries in key order as NDJSON lines {"key": ..., "value": ...}.
///
/// Values of JSON snapshots are embedded as JSON; others as strings (hex with a 0x prefix when
/// not UTF-8).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  snapkv scan predictions.snapkv --prefix user: --limit 10\n  \
    snapkv scan predictions.snapkv --start user:100 --end user:200"
)]
pub struct Args {
    /// Snapshot file.
    file: PathBuf,
    /// Only keys starting with this.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    prefix: Option<String>,
    /// First key (inclusive).
    #[arg(long)]
    start: Option<String>,
    /// Last key (exclusive).
    #[arg(long)]
    end: Option<String>,
    /// At most this many entries.
    #[arg(long)]
    limit: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = super::open(&args.file)?;
    let json = snapshot.metadata().value_encoding == ValueEncoding::Json;
    let iter = match &args.prefix {
        Some(p) => snapshot.prefix(p.as_bytes()),
        None => snapshot.range(
            args.start
                .as_deref()
                .map_or(Bound::Unbounded, |s| Bound::Included(s.as_bytes())),
            args.end
                .as_deref()
                .map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_bytes())),
        ),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for entry in iter.take(args.limit.map_or(usize::MAX, |l| l as usize)) {
        let (key, value) = entry?;
        let value = match serde_json::from_slice::<serde_json::Value>(&value) {
            Ok(v) if json => v,
            _ => serde_json::Value::String(printable(&value)),
        };
        let line = serde_json::json!({ "key": printable(&key), "value": value });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
