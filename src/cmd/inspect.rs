//! `snapkv inspect`: what a snapshot holds.

use snapkv_format::Metadata;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show a snapshot's metadata, columns, counts, sizes and compression.
///
/// The columns are those of the source schema, each with its Arrow type, whether it may be
/// null, and its role: key, value or unused.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  snapkv inspect predictions.snapkv\n  \
    snapkv inspect predictions.snapkv --json | jq .stats\n  \
    snapkv inspect predictions.snapkv --json | jq '.columns[]'")]
pub struct Args {
    /// Snapshot file.
    file: PathBuf,
    /// Print one JSON object instead of text: `file`, `metadata` (every field, the Arrow schema
    /// as stored), `columns` (name, type, nullable, role) and `stats`.
    #[arg(long)]
    json: bool,
}

/// A column of the source schema, and what the build made of it.
#[derive(serde::Serialize)]
struct Column {
    name: String,
    /// Arrow's display of the type: `Int64`, `Utf8`, `Timestamp(µs, "UTC")`, `List(Utf8)`.
    #[serde(rename = "type")]
    data_type: String,
    nullable: bool,
    /// `key`, `value`, `key and value` or `unused`; `None` when the metadata does not say
    /// which columns the values were made of.
    role: Option<&'static str>,
}

/// The columns of the schema in the metadata; empty when it has no schema, or one that is not
/// an Arrow schema (then only the metadata shows it).
fn columns(m: &Metadata) -> Vec<Column> {
    let Some(schema) = m
        .schema
        .clone()
        .and_then(|s| serde_json::from_value::<arrow_schema::Schema>(s).ok())
    else {
        return Vec::new();
    };
    let values = value_columns(m);
    (schema.fields().iter())
        .map(|f| {
            let key = m.key_columns.contains(f.name());
            let value = values.as_ref().map(|v| v.contains(&f.name().as_str()));
            let role = match (key, value) {
                (true, Some(true)) => Some("key and value"),
                (true, _) => Some("key"),
                (false, Some(true)) => Some("value"),
                (false, Some(false)) => Some("unused"),
                (false, None) => None,
            };
            Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
                role,
            }
        })
        .collect()
}

/// The columns the values were made of, as the builder recorded them: the columns of JSON
/// values, or the raw value column.
fn value_columns(m: &Metadata) -> Option<Vec<&str>> {
    if let Some(cols) = m.builder.get("value_columns").and_then(|v| v.as_array()) {
        return Some(cols.iter().filter_map(|c| c.as_str()).collect());
    }
    let raw = m.builder.get("raw_value_column")?.as_str()?;
    Some(vec![raw])
}

/// Prints the columns as a table under a `schema` line.
fn print_columns(columns: &[Column]) -> std::io::Result<()> {
    outln!("schema        {} columns", columns.len())?;
    let header = ["COLUMN", "TYPE", "NULLABLE", "ROLE"];
    let rows: Vec<[&str; 4]> = columns
        .iter()
        .map(|c| {
            let nullable = if c.nullable { "yes" } else { "no" };
            [&c.name, &c.data_type, nullable, c.role.unwrap_or("-")]
        })
        .collect();
    // Widths in characters, as the formatter pads (`µs` is one).
    let width = |i: usize| {
        let cells = rows.iter().map(|r| r[i]).chain([header[i]]);
        cells.map(|c| c.chars().count()).max().unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for [name, data_type, nullable, role] in std::iter::once(header).chain(rows) {
        outln!("  {name:<w0$}  {data_type:<w1$}  {nullable:<w2$}  {role}")?;
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = super::open(&args.file)?;
    let s = snapshot.stats()?;
    let m = snapshot.metadata();
    let ratio = s.block_bytes_raw as f64 / s.block_bytes_stored.max(1) as f64;
    if args.json {
        let out = serde_json::json!({
            "file": args.file,
            "format_version": snapshot.format_version(),
            "metadata": m,
            "columns": columns(m),
            "stats": {
                "file_bytes": s.file_bytes,
                "keys": s.key_count,
                "blocks": s.block_count,
                "raw_blocks": s.raw_blocks,
                "block_bytes_stored": s.block_bytes_stored,
                "block_bytes_raw": s.block_bytes_raw,
                "compression_ratio": ratio,
                "index_bytes": s.index_bytes,
                "filter_bytes": s.filter_bytes,
                "lookup_bytes": s.lookup_bytes,
                "dictionary_bytes": s.dictionary_bytes,
                "block_table_bytes": s.block_table_bytes,
                "metadata_bytes": s.metadata_bytes,
            },
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    outln!("file          {}", args.file.display())?;
    outln!("format        version {}", snapshot.format_version())?;
    outln!("dataset       {}", opt(&m.dataset))?;
    outln!("version       {}", opt(&m.version))?;
    outln!("created_at    {}", opt(&m.created_at))?;
    outln!("encoding      {:?}", m.value_encoding)?;
    if !m.key_columns.is_empty() {
        outln!("key columns   {}", m.key_columns.join(", "))?;
    }
    outln!("keys          {}", s.key_count)?;
    outln!(
        "blocks        {} ({} raw), target {} bytes, {} {}",
        s.block_count,
        s.raw_blocks,
        m.format.block_size,
        m.format.compression,
        m.format.level
    )?;
    outln!("file          {} bytes", s.file_bytes)?;
    outln!(
        "values        {} bytes stored, {} raw (ratio {ratio:.2})",
        s.block_bytes_stored,
        s.block_bytes_raw
    )?;
    let per_key = |b: u64| b as f64 / s.key_count.max(1) as f64;
    outln!(
        "index         {} bytes ({:.2}/key)",
        s.index_bytes,
        per_key(s.index_bytes)
    )?;
    outln!(
        "filter        {} bytes ({:.2}/key)",
        s.filter_bytes,
        per_key(s.filter_bytes)
    )?;
    if s.lookup_bytes > 0 {
        outln!(
            "lookup        {} bytes ({:.2}/key)",
            s.lookup_bytes,
            per_key(s.lookup_bytes)
        )?;
    }
    outln!("dictionary    {} bytes", s.dictionary_bytes)?;
    outln!("block table   {} bytes", s.block_table_bytes)?;
    let columns = columns(m);
    match &m.schema {
        Some(_) if !columns.is_empty() => print_columns(&columns)?,
        Some(schema) => outln!("schema        {schema}")?,
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}
