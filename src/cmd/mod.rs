//! One module per subcommand, each an `Args` and a `run`.

pub mod build;
pub mod commit;
pub mod demo;
pub mod diff;
pub mod gc;
pub mod get;
pub mod history;
pub mod inspect;
pub mod pin;
pub mod policy;
pub mod promote;
pub mod publish;
pub mod query;
pub mod rollback;
pub mod route;
pub mod scan;
pub mod serve;
pub mod store_args;
pub mod verify;
pub mod versions;

use anyhow::Context;
use snapkv_format::{OpenOptions, Snapshot};
use std::path::Path;
use std::time::Duration;

/// Exit code of a negative answer: a missing key, a corrupt file.
pub const NEGATIVE: u8 = 1;
/// Exit code of a publish or promote refused by the dataset's policy.
pub const REFUSED_BY_POLICY: u8 = 3;

/// Opens a local snapshot file (memory-mapped).
pub fn open(path: &Path) -> anyhow::Result<Snapshot> {
    snapkv_reader::open_snapshot(path, &OpenOptions::default())
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The value parser of every duration flag: humantime's grammar, numbers each followed by a
/// unit (`500ms`, `10s`, `1m30s`, `2h`, `7d`); a bare whole number is seconds, as earlier
/// releases read it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration such as 500ms, 10s, 1m30s or 2h"))
}

/// True when `e` is a write to a closed pipe (`snapkv scan ... | head`): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Text for a key or value: itself when UTF-8, else hex with a `0x` prefix.
pub fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut s = String::with_capacity(2 + bytes.len() * 2);
            s.push_str("0x");
            for b in bytes {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
    }
}

/// How log events are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, message, target and the event's fields),
    /// for log collectors.
    Json,
}

/// Logs to stderr in `format`, level from `SNAPKV_LOG`, else `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    // object_store logs each retry of a request at info: one failed poll would be five lines.
    // The sync loop logs the failure once; the retries show at debug.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAPKV_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},object_store=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            // Colours only for a person at a terminal: not in files, pipes or log collectors,
            // and not when NO_COLOR (https://no-color.org) is set.
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .try_init()
        }
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Prints the address a server listens on to stdout, where scripts and tests look for it: a
/// `listening on http://ADDR` line, or in JSON log format one JSON object with `listening`.
pub fn print_listening(format: LogFormat, addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        LogFormat::Text => writeln!(out, "listening on http://{addr}")?,
        LogFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"message": "listening", "listening": format!("http://{addr}")})
        )?,
    }
    out.flush()
}

/// Starts the allocator's background thread, which returns freed memory to the system a few
/// seconds after it was freed (long-running servers; a short command has no need).
pub fn return_freed_memory() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(error = %e, "cannot start the allocator's background thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantime() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        for bad in ["10parsecs", "", "-1s", "s", "1.5"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("500ms, 10s, 1m30s or 2h"), "{bad:?}: {e}");
        }
    }
}
