//! `snapkv inspect`: what a snapshot holds.

use std::path::PathBuf;
use std::process::ExitCode;

/// Show a snapshot's metadata, schema, counts, sizes and compression.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  snapkv inspect predictions.snapkv\n  \
    snapkv inspect predictions.snapkv --json | jq .stats")]
pub struct Args {
    /// Snapshot file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = super::open(&args.file)?;
    let s = snapshot.stats()?;
    let m = snapshot.metadata();
    let ratio = s.block_bytes_raw as f64 / s.block_bytes_stored.max(1) as f64;
    if args.json {
        let out = serde_json::json!({
            "file": args.file,
            "metadata": m,
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
    outln!("dictionary    {} bytes", s.dictionary_bytes)?;
    outln!("block table   {} bytes", s.block_table_bytes)?;
    if let Some(schema) = &m.schema {
        outln!("schema        {schema}")?;
    }
    Ok(ExitCode::SUCCESS)
}
