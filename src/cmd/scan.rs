//! `snapkv scan`: entries in key order, as NDJSON.

use super::printable;
use snapkv_format::ValueEncoding;
use std::io::Write;
use std::ops::Bound;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print entries in key order as NDJSON lines {"key": ..., "value": ...}.
///
/// Values of JSON snapshots are embedded as stored, fields in the stored column order; others as
/// strings (hex with a 0x prefix when not UTF-8).
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
    let mut line = Vec::new();
    for entry in iter.take(args.limit.map_or(usize::MAX, |l| l as usize)) {
        let (key, value) = entry?;
        line.clear();
        write_line(&mut line, &key, &value, json);
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Appends the NDJSON line `{"key":…,"value":…}` of one entry to `out`.
///
/// A value of a JSON snapshot is embedded as stored, so its fields keep the stored order (the
/// order of the value columns), as `get` and the HTTP API give them. Other values, and stored
/// values that are not JSON, are embedded as strings.
fn write_line(out: &mut Vec<u8>, key: &[u8], value: &[u8], json: bool) {
    out.extend_from_slice(b"{\"key\":");
    write_json_str(out, &printable(key));
    out.extend_from_slice(b",\"value\":");
    let is_json = |v: &[u8]| {
        std::str::from_utf8(v)
            .is_ok_and(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
    };
    if json && is_json(value) {
        // In JSON a line break can only be whitespace between tokens (strings escape theirs):
        // a space in its place means the same and keeps the entry on one line.
        out.extend(value.iter().map(|&b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        }));
    } else {
        write_json_str(out, &printable(value));
    }
    out.extend_from_slice(b"}\n");
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &[u8], value: &[u8], json: bool) -> String {
        let mut out = Vec::new();
        write_line(&mut out, key, value, json);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_values_are_embedded_as_stored() {
        let v = br#"{"zeta":1,"alpha":"a\nb"}"#;
        assert_eq!(
            line(b"k", v, true),
            "{\"key\":\"k\",\"value\":{\"zeta\":1,\"alpha\":\"a\\nb\"}}\n"
        );
        // Line breaks between tokens become spaces: one entry, one line.
        assert_eq!(
            line(b"k", b"{\n\"b\":1,\r\n\"a\":2}", true),
            "{\"key\":\"k\",\"value\":{ \"b\":1,  \"a\":2}}\n"
        );
        // Not JSON, or not a JSON snapshot: a string.
        assert_eq!(
            line(b"k", b"{x", true),
            "{\"key\":\"k\",\"value\":\"{x\"}\n"
        );
        assert_eq!(
            line(b"k", b"[1]", false),
            "{\"key\":\"k\",\"value\":\"[1]\"}\n"
        );
        assert_eq!(
            line(&[0xff], &[0x80], true),
            "{\"key\":\"0xff\",\"value\":\"0x80\"}\n"
        );
    }
}
