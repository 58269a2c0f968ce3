//! `snapkv query`: select, filter, group and aggregate the rows of a snapshot.

use anyhow::Context;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  snapkv query views.snapkv '{\"prefix\": \"SE/\", \"filter\": {\"views\": {\">\": 100}}, \"group_by\": [\"genre\"],
      \"aggregates\": {\"total\": {\"sum\": \"views\"}, \"n\": {\"count\": \"*\"}},
      \"order_by\": [{\"field\": \"total\", \"desc\": true}], \"limit\": 10}'
  snapkv query views.snapkv '{\"keys\": [\"SE/42\", \"US/42\"], \"fields\": [\"views\"]}' --ndjson
  snapkv query views.snapkv '{\"prefix\": \"SE/\", \"fields\": [\"genre\", \"views\"], \"limit\": 1000}' --arrow > se.arrows
  echo '{\"aggregates\": {\"p99\": {\"percentile\": {\"field\": \"latency\", \"p\": 99}}}}' | snapkv query stats.snapkv -

A query selects rows (keys, prefix, or start/end), filters them (=, !=, <, <=, >, >=, in,
is null; and, or, not; nested fields by path a.b), then returns them (fields), or groups them
(group_by, also by a key column) with aggregates (count, sum, avg, min, max, count_distinct,
percentile, top_k), ordered (order_by) and limited (limit); vectors scores rows by the dot
product or cosine of an array field with a given vector. The same queries as
POST /v1/datasets/{ds}/query of `snapkv serve` (spec/openapi.yaml).";

/// Run a query over a snapshot's rows: filter, project, group, aggregate.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Snapshot file.
    file: PathBuf,
    /// The query, as JSON; `-` reads it from stdin.
    query: String,
    /// One answer row per line instead of the whole answer.
    #[arg(long, conflicts_with = "arrow")]
    ndjson: bool,
    /// The rows as an Arrow IPC stream (typed columns in the query's order; stats and version
    /// in the schema's metadata), to a file or a pipe, not a terminal.
    #[arg(long)]
    arrow: bool,
    /// Most rows read from the snapshot.
    #[arg(long, value_name = "N", default_value_t = 100_000_000)]
    max_rows_scanned: u64,
    /// Most time spent.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = super::parse_duration)]
    max_time: Duration,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.query == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the query from stdin")?;
        s
    } else {
        args.query.clone()
    };
    if args.arrow && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "--arrow writes a binary Arrow IPC stream: redirect it to a file or a pipe \
             (snapkv query FILE QUERY --arrow > answer.arrows)"
        );
    }
    let snapshot = super::open(&args.file)?;
    let query = snapkv_query::Query::parse(text.as_bytes())?;
    let plan = query.plan(snapshot.metadata())?;
    let mut limits = snapkv_query::Limits::default();
    limits.max_rows_scanned = args.max_rows_scanned;
    limits.max_time = args.max_time;
    limits.max_bytes_read = u64::MAX;
    let shards = snapkv_format::Shards::single(snapshot);
    let answer = snapkv_query::run(&shards, &plan, &limits)?;
    let mut out = std::io::stdout().lock();
    if args.arrow {
        let version = shards.shards()[0].metadata().version.clone();
        out.write_all(&answer.to_arrow_ipc(version.as_deref())?)?;
    } else if args.ndjson {
        for row in &answer.rows {
            serde_json::to_writer(&mut out, row)?;
            out.write_all(b"\n")?;
        }
    } else {
        serde_json::to_writer_pretty(&mut out, &answer)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
