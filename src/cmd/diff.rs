//! `snapkv diff`: what changed between two snapshots, or two versions of a dataset.

use super::printable;
use super::store_args::{no_dataset, parse_option, runtime};
use anyhow::Context;
use serde_json::{json, Value};
use snapkv_format::diff::{ColumnSample, Example, SchemaDiff, SchemaField};
use snapkv_format::{Diff, DiffOptions, Snapshot, ValueEncoding};
use snapkv_store::{Cache, FetchOptions, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv diff yesterday.snapkv today.snapkv
  snapkv diff yesterday.snapkv today.snapkv --json | jq '{added, removed, changed}'
  snapkv diff previous current --store s3://bucket/snapkv --dataset predictions
  snapkv diff 20261126T031500Z 20261127T031500Z --store ./snapkv-store --dataset predictions

Counts are exact: one pass over both files in key order. Blocks stored alike in both files are
counted without being decompressed, so versions written with the same dictionary diff fastest.
Columns: for JSON values, how many of a sample of the changed keys changed in each top-level
field (a field added or dropped counts as changed). Differences are not an error: the exit code
is 0 whenever the comparison ran, 2 on errors.";

/// Compare two snapshots: keys added, removed and changed, schema changes, changed columns.
///
/// OLD and NEW are snapshot files, or with --dataset, versions of the dataset in --store
/// (`current` is the version CURRENT names, `previous` the one it replaced), downloaded
/// into --cache-dir and verified first.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The old snapshot file, or version.
    old: String,
    /// The new snapshot file, or version.
    new: String,
    /// Print one JSON object instead of text: the counts `added`, `removed`, `changed` and
    /// `unchanged`, `changed_share`, `old` and `new` (source, dataset, version, keys),
    /// `schema`, `columns`, `examples` (values as text, cut at 1 KiB) and `blocks`.
    #[arg(long)]
    json: bool,
    /// Example keys shown of each kind (added, removed, changed): the first in key order.
    #[arg(long, value_name = "N", default_value_t = DiffOptions::default().examples)]
    examples: usize,
    /// Most changed keys whose JSON values are compared column by column: about one in 2^k of
    /// them, chosen by a hash of the key (so spread over the key space); 0 turns the
    /// comparison off.
    #[arg(long, value_name = "N", default_value_t = DiffOptions::default().sample)]
    sample: usize,
    /// Compare versions of this dataset in --store rather than files.
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// Store of --dataset: s3://BUCKET/PREFIX, gs://…, az://…, file:///DIR or a local
    /// directory.
    #[arg(long, value_name = "URL", env = "SNAPKV_STORE")]
    store: Option<String>,
    /// Store option KEY=VALUE, repeatable (as for publish).
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    store_options: Vec<(String, String)>,
    /// Where versions are downloaded and kept for later diffs [default: a temporary directory,
    /// removed at exit]. Never a serving reader's cache directory: a reader serves the newest
    /// version it finds there at start-up, and a diff may download a staged one.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// One side of the comparison: what it was called and the snapshot.
struct Side {
    source: String,
    snapshot: Snapshot,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Declared before the snapshots, so dropped after them: the files stay until unmapped.
    let mut scratch = None;
    let (old, new) = match &args.dataset {
        None => (open_file(&args, &args.old)?, open_file(&args, &args.new)?),
        Some(dataset) => {
            let cache_dir = match &args.cache_dir {
                Some(dir) => dir.clone(),
                None => scratch
                    .insert(
                        tempfile::Builder::new()
                            .prefix("snapkv-diff-")
                            .tempdir()
                            .context("cannot create a temporary directory for the versions")?,
                    )
                    .path()
                    .to_owned(),
            };
            open_versions(&args, dataset, &cache_dir)?
        }
    };
    let mut options = DiffOptions::default();
    options.examples = args.examples;
    options.sample = args.sample;
    let d = snapkv_format::diff(&old.snapshot, &new.snapshot, &options).with_context(|| {
        format!(
            "cannot compare {} with {}: a block could not be read",
            old.source, new.source
        )
    })?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(&d, &old, &new))?
        )?;
    } else {
        print_text(&d, &old, &new)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn open_file(args: &Args, path: &str) -> anyhow::Result<Side> {
    let snapshot = super::open(path.as_ref()).map_err(|e| {
        let missing = !std::path::Path::new(path).exists();
        match &args.store {
            Some(_) if missing => e.context("to compare versions of a store, give --dataset"),
            _ => e,
        }
    })?;
    Ok(Side {
        source: path.to_owned(),
        snapshot,
    })
}

/// Fetches both versions into the cache (verified) and opens them.
fn open_versions(args: &Args, dataset: &str, cache_dir: &Path) -> anyhow::Result<(Side, Side)> {
    let Some(url) = &args.store else {
        anyhow::bail!("--dataset needs --store (or SNAPKV_STORE)");
    };
    let store = Store::open(url, &args.store_options)
        .with_context(|| format!("cannot open store {url}"))?;
    let cache = Cache::new(cache_dir);
    let rt = runtime()?;
    rt.block_on(async {
        let (old, new) = (&args.old[..], &args.new[..]);
        let pointer = if [old, new]
            .iter()
            .any(|v| *v == "current" || *v == "previous")
        {
            match store.current(dataset).await? {
                Some(c) => Some(c.pointer),
                None => return Err(no_dataset(&store, dataset).await),
            }
        } else {
            None
        };
        let resolve = |label: &str| -> anyhow::Result<String> {
            match (label, &pointer) {
                ("current", Some(p)) => Ok(p.version.clone()),
                ("previous", Some(p)) => p.previous.clone().with_context(|| {
                    format!("CURRENT of {dataset} names no previous version (its first publish)")
                }),
                _ => Ok(label.to_owned()),
            }
        };
        let mut options = FetchOptions::default();
        options.open = snapkv_reader::mapped();
        let fetch = |label: &str| {
            let version = resolve(label);
            let (store, cache, options) = (&store, &cache, &options);
            async move {
                let version = version?;
                let cached = store
                    .fetch(dataset, &version, cache, options)
                    .await
                    .with_context(|| format!("cannot fetch version {version} of {dataset}"))?;
                let [file] = cached.manifest.files.as_slice() else {
                    anyhow::bail!(
                        "version {version} of {dataset} has {} files; diff compares versions \
                         of one snapshot file (compare the files themselves)",
                        cached.manifest.files.len()
                    );
                };
                let snapshot = super::open(&cached.path(&file.name))?;
                Ok(Side {
                    source: version,
                    snapshot,
                })
            }
        };
        let old = fetch(old).await?;
        let new = fetch(new).await?;
        Ok((old, new))
    })
}

/// Arrow's display of a stored type (`Int64`, `Timestamp(µs, "UTC")`), else its JSON.
fn type_name(t: &Value) -> String {
    match serde_json::from_value::<arrow_schema::DataType>(t.clone()) {
        Ok(dt) => dt.to_string(),
        Err(_) => t.to_string(),
    }
}

/// A value as text, cut at `max` bytes (on a character boundary) with `…`.
fn text(bytes: &[u8], max: usize) -> String {
    let mut s = printable(bytes);
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn side_json(side: &Side) -> Value {
    let m = side.snapshot.metadata();
    json!({
        "source": side.source,
        "dataset": m.dataset,
        "version": m.version,
        "keys": side.snapshot.len(),
    })
}

fn schema_json(s: &SchemaDiff) -> Value {
    let field = |f: &SchemaField| json!({"name": f.name, "type": type_name(&f.data_type), "nullable": f.nullable});
    json!({
        "changed": !s.is_empty(),
        "added": s.added.iter().map(field).collect::<Vec<_>>(),
        "removed": s.removed.iter().map(field).collect::<Vec<_>>(),
        "retyped": s.retyped.iter().map(|c| json!({
            "name": c.name, "old": type_name(&c.old), "new": type_name(&c.new),
        })).collect::<Vec<_>>(),
        "nullability": s.nullability.iter().map(|c| json!({
            "name": c.name, "old": c.old, "new": c.new,
        })).collect::<Vec<_>>(),
        "key_columns": s.key_columns.as_ref().map(|c| json!({"old": c.old, "new": c.new})),
        "value_encoding": s.value_encoding.as_ref().map(|c| json!({"old": c.old, "new": c.new})),
        "incomparable": s.incomparable,
    })
}

fn columns_json(c: &ColumnSample) -> Value {
    json!({
        "keys": c.keys,
        "one_in": c.one_in,
        "not_objects": c.not_objects,
        "truncated": c.truncated,
        "fields": c.columns.iter().map(|f| json!({
            "name": f.name, "changed": f.changed, "added": f.added, "removed": f.removed,
        })).collect::<Vec<_>>(),
    })
}

const JSON_VALUE_BYTES: usize = 1024;

fn examples_json(examples: &[Example]) -> Vec<Value> {
    examples
        .iter()
        .map(|e| {
            let mut o = serde_json::Map::new();
            o.insert("key".into(), printable(&e.key).into());
            if let Some(v) = &e.old {
                o.insert("old".into(), text(v, JSON_VALUE_BYTES).into());
            }
            if let Some(v) = &e.new {
                o.insert("new".into(), text(v, JSON_VALUE_BYTES).into());
            }
            Value::Object(o)
        })
        .collect()
}

fn to_json(d: &Diff, old: &Side, new: &Side) -> Value {
    let b = &d.blocks;
    json!({
        "old": side_json(old),
        "new": side_json(new),
        "added": d.added,
        "removed": d.removed,
        "changed": d.changed,
        "unchanged": d.unchanged,
        "changed_share": d.changed_share(),
        "schema": schema_json(&d.schema),
        "columns": d.columns.as_ref().map(columns_json),
        "examples": {
            "added": examples_json(&d.examples.added),
            "removed": examples_json(&d.examples.removed),
            "changed": examples_json(&d.examples.changed),
        },
        "blocks": {
            "old": b.old_blocks,
            "new": b.new_blocks,
            "skipped": b.skipped,
            "equal_raw": b.equal_raw,
            "decoded_old": b.decoded_old,
            "decoded_new": b.decoded_new,
        },
    })
}

/// `source (dataset d, version v, N keys)`.
fn describe(side: &Side) -> String {
    let m = side.snapshot.metadata();
    let mut parts = Vec::new();
    if let Some(d) = &m.dataset {
        parts.push(format!("dataset {d}"));
    }
    if let Some(v) = m.version.as_ref().filter(|v| **v != side.source) {
        parts.push(format!("version {v}"));
    }
    parts.push(format!("{} keys", side.snapshot.len()));
    format!("{} ({})", side.source, parts.join(", "))
}

fn schema_lines(s: &SchemaDiff) -> Vec<String> {
    let mut lines = Vec::new();
    let column = |label: &str, f: &SchemaField| {
        let nullable = if f.nullable { ", nullable" } else { "" };
        format!(
            "{label:<11}{} ({}{nullable})",
            f.name,
            type_name(&f.data_type)
        )
    };
    for f in &s.removed {
        lines.push(column("removed", f));
    }
    for c in &s.retyped {
        let (o, n) = (type_name(&c.old), type_name(&c.new));
        lines.push(format!("retyped    {}: {o} -> {n}", c.name));
    }
    for c in &s.nullability {
        let says = |n: bool| if n { "nullable" } else { "not nullable" };
        lines.push(format!(
            "nullable   {}: {} -> {}",
            c.name,
            says(c.old),
            says(c.new)
        ));
    }
    for f in &s.added {
        lines.push(column("added", f));
    }
    if let Some(c) = &s.key_columns {
        let (o, n) = (c.old.join(","), c.new.join(","));
        lines.push(format!("key        {o} -> {n}"));
    }
    if let Some(c) = &s.value_encoding {
        lines.push(format!("encoding   {:?} -> {:?}", c.old, c.new));
    }
    if s.incomparable {
        lines.push("the schemas differ but cannot be compared by column".into());
    }
    lines
}

/// The top-level fields in which two JSON object values differ, as `field: old -> new`; `None`
/// when either value is not a JSON object.
fn field_changes(old: &[u8], new: &[u8]) -> Option<String> {
    let show = |v: &Option<Value>| match v {
        Some(v) => text(v.to_string().as_bytes(), 40),
        None => "(absent)".to_owned(),
    };
    let changes = snapkv_format::diff::changed_fields(old, new)?;
    let parts: Vec<String> = (changes.iter())
        .map(|c| format!("{}: {} -> {}", c.name, show(&c.old), show(&c.new)))
        .collect();
    Some(parts.join(", "))
}

fn print_text(d: &Diff, old: &Side, new: &Side) -> std::io::Result<()> {
    outln!("old           {}", describe(old))?;
    outln!("new           {}", describe(new))?;
    outln!(
        "keys          {} added, {} removed, {} changed, {} unchanged",
        d.added,
        d.removed,
        d.changed,
        d.unchanged
    )?;
    outln!(
        "changed       {:.2}% of the {} keys in both",
        100.0 * d.changed_share(),
        d.changed + d.unchanged
    )?;
    let schema = schema_lines(&d.schema);
    if schema.is_empty() {
        outln!("schema        unchanged")?;
    }
    for (i, line) in schema.iter().enumerate() {
        let label = if i == 0 { "schema" } else { "" };
        outln!("{label:<14}{line}")?;
    }
    if let Some(c) = &d.columns {
        print_columns(c)?;
    }
    let json = old.snapshot.metadata().value_encoding == ValueEncoding::Json
        && new.snapshot.metadata().value_encoding == ValueEncoding::Json;
    let kinds = [
        ("added", &d.examples.added),
        ("removed", &d.examples.removed),
        ("changed", &d.examples.changed),
    ];
    if kinds.iter().any(|(_, e)| !e.is_empty()) {
        outln!("examples")?;
    }
    for (kind, examples) in kinds {
        for e in examples {
            let key = text(&e.key, 60);
            let shown = match (&e.old, &e.new) {
                (Some(o), Some(n)) => json
                    .then(|| field_changes(o, n))
                    .flatten()
                    .unwrap_or_else(|| format!("{} -> {}", text(o, 60), text(n, 60))),
                (Some(v), None) | (None, Some(v)) => text(v, 100),
                (None, None) => String::new(),
            };
            outln!("  {kind:<9}{key}  {shown}")?;
        }
    }
    Ok(())
}

fn print_columns(c: &ColumnSample) -> std::io::Result<()> {
    let which = if c.one_in == 1 {
        "all".to_owned()
    } else {
        format!("about 1 in {}, by key hash", c.one_in)
    };
    let mut line = format!("columns       {} changed keys compared ({which})", c.keys);
    if c.not_objects > 0 {
        line.push_str(&format!(", {} not JSON objects", c.not_objects));
    }
    if c.truncated {
        line.push_str(", more fields than counted");
    }
    outln!("{line}")?;
    if c.columns.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<_> = c.columns.iter().collect();
    // Most changed first; ties in the order the fields were first seen.
    rows.sort_by_key(|r| std::cmp::Reverse(r.changed));
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    outln!(
        "  {:<w$}  {:>8}  {:>7}  {:>8}  {:>8}",
        "COLUMN",
        "CHANGED",
        "SHARE",
        "ADDED",
        "REMOVED"
    )?;
    let objects = c.objects().max(1) as f64;
    for r in rows {
        let share = 100.0 * r.changed as f64 / objects;
        outln!(
            "  {:<w$}  {:>8}  {:>6.1}%  {:>8}  {:>8}",
            r.name,
            r.changed,
            share,
            r.added,
            r.removed
        )?;
    }
    Ok(())
}
