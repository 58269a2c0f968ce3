//! `snapkv get`: values of keys, to stdout.

use super::NEGATIVE;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print the values of keys, one per line (exit 1 if any key is missing).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  snapkv get predictions.snapkv user:42 user:43")]
pub struct Args {
    /// Snapshot file.
    file: PathBuf,
    /// Keys to look up.
    #[arg(required = true)]
    keys: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = super::open(&args.file)?;
    let mut out = std::io::stdout().lock();
    let mut code = ExitCode::SUCCESS;
    for key in &args.keys {
        match snapshot.get(key.as_bytes())? {
            Some(value) => {
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            None => {
                eprintln!("key not found: {key}");
                code = ExitCode::from(NEGATIVE);
            }
        }
    }
    out.flush()?;
    Ok(code)
}
