//! Finding the data files behind `--input` arguments: plain files, globs, and directories laid
//! out the way Spark, Hive, DuckDB and pandas write them (`col=value/` partition folders,
//! `_SUCCESS` and other `_`/`.` entries ignored).

use crate::error::{Error, Result};
use crate::InputFormat;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The name stdin goes by in messages.
pub(crate) const STDIN: &str = "<stdin>";

/// One data file to read, in input order.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The name used in messages (the path as found, or `<stdin>`).
    pub name: String,
    /// The file; `None` for stdin.
    pub path: Option<PathBuf>,
    pub format: InputFormat,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Partition folders between the input directory and the file: name and value (`None` for
    /// Hive's null marker).
    pub partitions: Vec<(String, Option<String>)>,
}

/// Hive's folder name for a null partition value.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// Expands the inputs into data files, in order: inputs as given, glob matches and directory
/// contents sorted by path.
pub(crate) fn discover(inputs: &[String], format: Option<InputFormat>) -> Result<Vec<Source>> {
    if inputs.is_empty() {
        return Err(Error::InvalidOption("no --input given".into()));
    }
    let mut sources = Vec::new();
    let mut stdin_seen = false;
    for input in inputs {
        if input == "-" {
            if stdin_seen {
                return Err(Error::InvalidOption(
                    "stdin (-) is given more than once".into(),
                ));
            }
            stdin_seen = true;
            let format = match format {
                Some(f @ (InputFormat::Csv | InputFormat::Ndjson | InputFormat::Arrow)) => f,
                Some(InputFormat::Parquet) => {
                    return Err(Error::Stdin(
                        "Parquet cannot be read from stdin (it is read from the end): \
                         pass a file"
                            .into(),
                    ))
                }
                None => {
                    return Err(Error::Stdin(
                        "reading stdin (-) needs --format csv, ndjson or arrow".into(),
                    ))
                }
            };
            sources.push(Source {
                name: STDIN.into(),
                path: None,
                format,
                size: None,
                partitions: Vec::new(),
            });
            continue;
        }
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
                if !is_hidden(p.file_name().unwrap_or_default()) {
                    paths.push(p);
                }
            }
            if paths.is_empty() {
                return Err(Error::NoMatch(input.clone()));
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
                let before = sources.len();
                let root = glob_root.clone().unwrap_or_else(|| p.clone());
                walk(&root, &p, format, &mut sources)?;
                if sources.len() == before {
                    return Err(Error::EmptyDirectory(p));
                }
            } else {
                let name = p.display().to_string();
                if meta.len() == 0 {
                    return Err(Error::EmptyFile(name));
                }
                let format = match format {
                    Some(f) => f,
                    None => detect(&p)?,
                };
                let partitions = match &glob_root {
                    Some(root) => partitions_of(root, &p)?,
                    None => Vec::new(),
                };
                sources.push(Source {
                    name,
                    path: Some(p),
                    format,
                    size: Some(meta.len()),
                    partitions,
                });
            }
        }
    }
    check_partitions(&sources)?;
    Ok(sources)
}

/// `_SUCCESS`, `_metadata`, `.part-0.crc`, `.DS_Store`...: not data.
fn is_hidden(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.first().is_some_and(|c| *c == b'_' || *c == b'.')
}

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Read {
        input: path.display().to_string(),
        source,
    }
}

/// Adds the data files under `dir` in path order, with the partition folders between `root`
/// and each file. Empty files are skipped (some writers leave them for empty partitions).
fn walk(root: &Path, dir: &Path, format: Option<InputFormat>, out: &mut Vec<Source>) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        if !is_hidden(&entry.file_name()) {
            entries.push(entry.path());
        }
    }
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(|e| read_error(&path, e))?;
        if meta.is_dir() {
            walk(root, &path, format, out)?;
            continue;
        }
        if meta.len() == 0 {
            continue;
        }
        let format = match format {
            Some(f) => f,
            None => detect(&path)?,
        };
        let partitions = partitions_of(root, &path)?;
        out.push(Source {
            name: path.display().to_string(),
            path: Some(path),
            format,
            size: Some(meta.len()),
            partitions,
        });
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

/// The `col=value` folders between `root` and the file `path`.
fn partitions_of(root: &Path, path: &Path) -> Result<Vec<(String, Option<String>)>> {
    let mut partitions = Vec::new();
    let rel = path.strip_prefix(root).unwrap_or(path);
    let folders = rel.parent().map(Path::components).into_iter().flatten();
    for folder in folders {
        let Some(text) = folder.as_os_str().to_str() else {
            return Err(Error::NotUtf8 {
                input: path.display().to_string(),
                what: "a folder name".into(),
            });
        };
        if let Some((col, value)) = text.split_once('=') {
            let col = percent_decode(col, path)?;
            let value = percent_decode(value, path)?;
            partitions.push((col, (value != HIVE_NULL).then_some(value)));
        }
    }
    Ok(partitions)
}

/// Decodes Hive's `%XX` escapes in partition folder names. A `%` not followed by two hex
/// digits stays as it is (Hive and Spark leave it so); the decoded bytes must be UTF-8.
fn percent_decode(s: &str, path: &Path) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Error::NotUtf8 {
            input: path.display().to_string(),
            what: format!("the decoded partition folder name {s:?}"),
        })
}

/// Every file must sit under the same partition folders (same names, same order).
fn check_partitions(sources: &[Source]) -> Result<()> {
    let Some(first) = sources.first() else {
        return Ok(());
    };
    let names = |s: &Source| {
        s.partitions
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    let want = names(first);
    for s in sources {
        let got = names(s);
        if got != want {
            return Err(Error::Partitions(format!(
                "inconsistent partition folders: {} is under ({}) but {} is under ({})",
                first.name,
                want.join(", "),
                s.name,
                got.join(", ")
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = got.iter().find(|n| !seen.insert(*n)) {
            return Err(Error::Partitions(format!(
                "{}: partition column {dup:?} appears twice in its path",
                s.name
            )));
        }
    }
    Ok(())
}

/// The format of a file, from its extension or else its first bytes.
fn detect(path: &Path) -> Result<InputFormat> {
    let ext = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    if let Some(f) = ext.as_deref().and_then(InputFormat::from_extension) {
        return Ok(f);
    }
    let mut head = [0u8; 8];
    let mut file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, e)),
        }
    }
    let head = &head[..n];
    if head.starts_with(b"PAR1") {
        Ok(InputFormat::Parquet)
    } else if head.starts_with(b"ARROW1") || head.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
        Ok(InputFormat::Arrow)
    } else {
        Err(Error::UnknownFormat(path.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hive_escapes() {
        let p = Path::new("x");
        assert_eq!(percent_decode("a%3Ab%2F", p).unwrap(), "a:b/");
        assert_eq!(percent_decode("100%", p).unwrap(), "100%");
        assert_eq!(percent_decode("%zz", p).unwrap(), "%zz");
        assert_eq!(percent_decode("plain", p).unwrap(), "plain");
        assert_eq!(percent_decode("%3a%3A", p).unwrap(), "::");
        assert_eq!(percent_decode("%C3%A9t%C3%A9", p).unwrap(), "été");
        assert_eq!(percent_decode("50%25", p).unwrap(), "50%");
        // Not an escape: kept as written.
        assert_eq!(percent_decode("%", p).unwrap(), "%");
        assert_eq!(percent_decode("a%4", p).unwrap(), "a%4");
        assert_eq!(percent_decode("%4g%", p).unwrap(), "%4g%");
        assert_eq!(percent_decode("%%41", p).unwrap(), "%A");
        assert!(percent_decode("%ff", p).is_err());
        // Half of a two-byte character.
        assert!(percent_decode("%C3", p).is_err());
    }

    #[test]
    fn hidden_names() {
        assert!(is_hidden(OsStr::new("_SUCCESS")));
        assert!(is_hidden(OsStr::new(".part-0.crc")));
        assert!(!is_hidden(OsStr::new("part-0.parquet")));
    }

    #[test]
    fn glob_roots_and_partitions() {
        assert_eq!(
            literal_prefix(Path::new("out/day=*/x.parquet")),
            Path::new("out")
        );
        assert_eq!(literal_prefix(Path::new("*.csv")), Path::new("."));
        let p = partitions_of(
            Path::new("out"),
            Path::new("out/day=2024-01-01/kind=a%2Fb/nested/part-0.parquet"),
        )
        .unwrap();
        assert_eq!(
            p,
            [
                ("day".to_owned(), Some("2024-01-01".to_owned())),
                ("kind".to_owned(), Some("a/b".to_owned()))
            ]
        );
        let p = partitions_of(
            Path::new("o"),
            Path::new("o/d=__HIVE_DEFAULT_PARTITION__/f"),
        )
        .unwrap();
        assert_eq!(p, [("d".to_owned(), None)]);
    }
}
