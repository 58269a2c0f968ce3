//! `snapkv verify`: the full checksum and structure pass.

use super::NEGATIVE;
use snapkv_reader::OpenError;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check every checksum and structure of snapshot files (exit 1 if any is corrupt).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  snapkv verify predictions.snapkv && echo intact")]
pub struct Args {
    /// Snapshot files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for path in &args.files {
        let started = std::time::Instant::now();
        let result = match snapkv_reader::open_snapshot(path, &Default::default()) {
            Err(OpenError::Format { source, .. }) => Err(source),
            // The file could not be read: that is an error, not a verdict.
            Err(e) => return Err(e.into()),
            Ok(s) => s.verify().map(|()| s),
        };
        match result {
            Ok(s) => outln!(
                "{}: ok ({} keys, {} bytes, {:.2}s)",
                path.display(),
                s.len(),
                s.stats()?.file_bytes,
                started.elapsed().as_secs_f64()
            )?,
            Err(e) => {
                outln!("{}: CORRUPT: {e}", path.display())?;
                code = ExitCode::from(NEGATIVE);
            }
        }
    }
    Ok(code)
}
