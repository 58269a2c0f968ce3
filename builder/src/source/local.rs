//! Local inputs: files, directories, globs and standard input.

use super::{
    check_compression, from_name, is_hidden, partitions_of, sniff, Compression, Location, Reading,
    Source, STDIN,
};
use crate::error::{Error, Result};
use crate::InputFormat;
use std::io::Read;
use std::path::{Path, PathBuf};

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Read {
        input: path.display().to_string(),
        source,
    }
}

/// Standard input, in the format `--format` names.
pub(super) fn stdin(reading: Reading) -> Result<Source> {
    let format = match reading.format {
        Some(
            f @ (InputFormat::Csv | InputFormat::Tsv | InputFormat::Ndjson | InputFormat::Arrow),
        ) => f,
        Some(InputFormat::Parquet) => {
            return Err(Error::Stdin(
                "Parquet cannot be read from stdin (it is read from the end): pass a file".into(),
            ))
        }
        None => {
            return Err(Error::Stdin(
                "reading stdin (-) needs --format csv, tsv, ndjson or arrow".into(),
            ))
        }
    };
    let (_, _, delimiter) = from_name("", reading);
    Ok(Source {
        name: STDIN.into(),
        location: Location::Stdin,
        format,
        compression: Compression::None,
        delimiter,
        size: None,
        partitions: Vec::new(),
    })
}

/// Adds the data files `input` names: a file, a directory's data files, or a glob's matches.
pub(super) fn discover(input: &str, reading: Reading, out: &mut Vec<Source>) -> Result<()> {
    let path = Path::new(input);
    let is_glob = input.contains(['*', '?', '[']) && !path.exists();
    let paths: Vec<PathBuf> = if is_glob {
        let matches = glob::glob(input)
            .map_err(|e| Error::InvalidOption(format!("bad glob {input:?}: {e}")))?;
        let mut paths = Vec::new();
        for m in matches {
            let p = m.map_err(|e| Error::Read {
                input: e.path().display().to_string(),
                source: e.into(),
            })?;
            if !is_hidden(p.file_name().unwrap_or_default().as_encoded_bytes()) {
                paths.push(p);
            }
        }
        if paths.is_empty() {
            return Err(Error::NoMatch(input.to_owned()));
        }
        paths
    } else {
        vec![path.to_path_buf()]
    };
    // Partition folders are read below the input directory, or below the literal part of a
    // glob (`out/day=*/*.parquet` reads `day` from every match).
    let glob_root = is_glob.then(|| literal_prefix(path));
    for p in paths {
        let meta = std::fs::metadata(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NoMatch(p.display().to_string())
            } else {
                read_error(&p, e)
            }
        })?;
        if meta.is_dir() {
            let before = out.len();
            let root = glob_root.clone().unwrap_or_else(|| p.clone());
            walk(&root, &p, reading, out)?;
            if out.len() == before {
                return Err(Error::EmptyDirectory(p.display().to_string()));
            }
        } else {
            if meta.len() == 0 {
                return Err(Error::EmptyFile(p.display().to_string()));
            }
            let root = glob_root.as_deref().unwrap_or(Path::new(""));
            out.push(file_source(root, p, meta.len(), reading)?);
        }
    }
    Ok(())
}

/// The source for the file `path`, with the partition folders between `root` and it.
fn file_source(root: &Path, path: PathBuf, size: u64, reading: Reading) -> Result<Source> {
    let name = path.display().to_string();
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let (format, compression, delimiter) = from_name(&file_name, reading);
    let format = match format {
        Some(f) => f,
        None => sniff(&name, &head(&path)?)?,
    };
    check_compression(&name, format, compression)?;
    let partitions = if root.as_os_str().is_empty() {
        Vec::new()
    } else {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let mut folders = Vec::new();
        for folder in rel.parent().map(Path::components).into_iter().flatten() {
            let Some(text) = folder.as_os_str().to_str() else {
                return Err(Error::NotUtf8 {
                    input: name,
                    what: "a folder name".into(),
                });
            };
            folders.push(text);
        }
        partitions_of(&name, folders.into_iter())?
    };
    Ok(Source {
        name: name.clone(),
        location: Location::File(path.clone()),
        format,
        compression,
        delimiter,
        size: Some(size),
        partitions,
    })
}

/// Adds the data files under `dir` in path order, with the partition folders between `root`
/// and each file. Empty files are skipped (some writers leave them for empty partitions).
fn walk(root: &Path, dir: &Path, reading: Reading, out: &mut Vec<Source>) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        if !is_hidden(entry.file_name().as_encoded_bytes()) {
            entries.push(entry.path());
        }
    }
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(|e| read_error(&path, e))?;
        if meta.is_dir() {
            walk(root, &path, reading, out)?;
        } else if meta.len() > 0 {
            out.push(file_source(root, path, meta.len(), reading)?);
        }
    }
    Ok(())
}

/// The folders of a glob pattern before its first wildcard.
fn literal_prefix(pattern: &Path) -> PathBuf {
    let mut root = PathBuf::new();
    for c in pattern.components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        root.push(c);
    }
    if root.as_os_str().is_empty() {
        root.push(".");
    }
    root
}

/// The first bytes of a file (to tell its format).
fn head(path: &Path) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut head))
        .map_err(|e| read_error(path, e))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_roots() {
        assert_eq!(
            literal_prefix(Path::new("out/day=*/x.parquet")),
            Path::new("out")
        );
        assert_eq!(literal_prefix(Path::new("*.csv")), Path::new("."));
    }
}
