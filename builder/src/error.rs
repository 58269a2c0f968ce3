//! Everything that can stop a build, each with what the user needs to fix it.

use std::fmt;
use std::path::PathBuf;

/// Where a row came from: an input file (or `<stdin>`) and its 1-based row number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input, as named on the command line or found in a directory.
    pub input: String,
    /// 1-based row number within that input (data rows, not counting a CSV header).
    pub row: u64,
}

/// A value that would change if converted to its column's type in the first input.
#[derive(Debug)]
pub struct LossyCast {
    /// Where.
    pub at: Location,
    /// The column.
    pub column: String,
    /// The value, as given.
    pub value: String,
    /// What it would become.
    pub stored: String,
    /// Its type here.
    pub got: String,
    /// The column's type in the first input.
    pub expected: String,
    /// The first input.
    pub first: String,
}

impl fmt::Display for LossyCast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: column {:?} holds {} ({}), which would become {} as {}, its type in {}; make \
             the column's type the same in every input",
            self.at, self.column, self.value, self.got, self.stored, self.expected, self.first
        )
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} row {}", self.input, self.row)
    }
}

/// What part of the build a column was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColumnRole {
    /// A `--key` column.
    Key,
    /// A `--value-columns` column.
    Value,
    /// The `--raw-value` column.
    RawValue,
}

impl fmt::Display for ColumnRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnRole::Key => "key column",
            ColumnRole::Value => "value column",
            ColumnRole::RawValue => "raw value column",
        })
    }
}

/// Why a build failed.
///
/// Input problems name the input (and row or line where there is one); the `Display` text says
/// what is wrong and `source()`, where present, the underlying cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A build option is out of range or contradicts another.
    #[error("{0}")]
    InvalidOption(String),
    /// An `--input` glob matched nothing, or a path does not exist.
    #[error("no input matches {0:?}")]
    NoMatch(String),
    /// A directory holds no data files (after skipping `_` and `.` files).
    #[error("{0} contains no data files")]
    EmptyDirectory(String),
    /// An input file has zero bytes.
    #[error("{0} is empty (0 bytes)")]
    EmptyFile(String),
    /// All inputs together hold no rows.
    #[error("the input has no rows ({files} file(s) read)")]
    NoRows {
        /// How many inputs were read.
        files: usize,
    },
    /// An input could not be opened or read.
    #[error("cannot read {input}")]
    Read {
        /// The input.
        input: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The format of an input could not be told from its name or first bytes.
    #[error(
        "cannot tell the format of {0} from its name or contents: \
         pass --format parquet|arrow|csv|tsv|ndjson"
    )]
    UnknownFormat(String),
    /// A format cannot be read from standard input.
    #[error("{0}")]
    Stdin(String),
    /// An input is not valid in its format (a malformed Parquet, Arrow, CSV or JSON file).
    #[error("{input}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Malformed {
        /// The input.
        input: String,
        /// 1-based line of a text input, when known.
        line: Option<u64>,
        /// What the parser reported.
        message: String,
    },
    /// Text was required (a CSV or NDJSON input, a partition folder name) but the bytes are
    /// not UTF-8.
    #[error("{input}: {what} is not valid UTF-8")]
    NotUtf8 {
        /// The input.
        input: String,
        /// What was being read.
        what: String,
    },
    /// A column named on the command line is not in the input.
    #[error("unknown {role} {column:?} in {input} (its columns: {})", available.join(", "))]
    UnknownColumn {
        /// What the column was for.
        role: ColumnRole,
        /// The missing name.
        column: String,
        /// The input that lacks it.
        input: String,
        /// The input's columns.
        available: Vec<String>,
    },
    /// A key (or raw value) column has a type that cannot be one.
    #[error("{role} {column:?} has type {data_type}, which cannot be used as one: {allowed}")]
    UnsupportedType {
        /// What the column was for.
        role: ColumnRole,
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: String,
        /// The types that are accepted.
        allowed: &'static str,
    },
    /// A column's type differs between inputs in a way that cannot be reconciled.
    #[error(
        "column {column:?} is {expected} in {first} but {got} in {input}, \
         and the values cannot be converted"
    )]
    TypeMismatch {
        /// The column.
        column: String,
        /// Its type in the first input.
        expected: String,
        /// The first input.
        first: String,
        /// Its type here.
        got: String,
        /// The input that differs.
        input: String,
    },
    /// A key column other than the last contains the separator `/`: the key would not tell
    /// the columns apart.
    #[error(
        "{at}: key column {column:?} holds {value:?}, which contains `/`; only the last key \
         column may (the key {value:?}/… could be another row's too): reorder --key or \
         replace the `/`"
    )]
    SeparatorInKey {
        /// Where.
        at: Location,
        /// The column.
        column: String,
        /// Its text.
        value: String,
    },
    /// A date or time has no text (it is out of the years that can be written).
    #[error(
        "{at}: column {column:?} holds {value}, outside the dates and times that can be written \
         (years -262143 to 262142)"
    )]
    OutOfRange {
        /// Where.
        at: Location,
        /// The column.
        column: String,
        /// The value: its number and type.
        value: String,
    },
    /// A value of a column whose type differs from the first input's would change if stored
    /// in that type (1.7 as an integer).
    #[error("{0}")]
    LossyCast(Box<LossyCast>),
    /// Partition folders (`col=value/`) differ between inputs, or clash with a file's column.
    #[error("{0}")]
    Partitions(String),
    /// A key column is null.
    #[error("{at}: key column {column:?} is null")]
    NullKey {
        /// The row.
        at: Location,
        /// The column.
        column: String,
    },
    /// The `--raw-value` column is null.
    #[error("{at}: raw value column {column:?} is null")]
    NullValue {
        /// The row.
        at: Location,
        /// The column.
        column: String,
    },
    /// A key is empty (zero bytes).
    #[error("{at}: the key is empty")]
    EmptyKey {
        /// The row.
        at: Location,
    },
    /// A key exceeds the format's limit.
    #[error("{at}: key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLong {
        /// The row.
        at: Location,
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value exceeds the format's limit.
    #[error("{at}: value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The row.
        at: Location,
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Two rows have the same key and `--on-duplicate error` is in force.
    #[error(
        "duplicate key {key}: in {first} and in {second} \
         (pass --on-duplicate first or last to keep one of them)"
    )]
    DuplicateKey {
        /// The key, as text when printable, else hex.
        key: String,
        /// The first occurrence in input order.
        first: Location,
        /// The next occurrence.
        second: Location,
    },
    /// Temporary files could not be written (the spill directory, usually).
    #[error("cannot write temporary files in {}", dir.display())]
    Temp {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The output file could not be written.
    #[error("cannot write the output {}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot writer refused an option or failed.
    #[error("cannot write the snapshot")]
    Snapshot(#[source] snapkv_format::Error),
    /// The snapshot written does not read back (its metadata, say, is beyond what readers
    /// parse): the output is left as it was.
    #[error("the snapshot written for {} does not read back; the output is left as it was", path.display())]
    Unreadable {
        /// The output it was written for.
        path: std::path::PathBuf,
        /// What reading it found.
        #[source]
        source: snapkv_format::Error,
    },
    /// A thread of the build stopped unexpectedly (a bug); everything it wrote was removed.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The build was interrupted (Ctrl-C); everything it wrote was removed.
    #[error("interrupted")]
    Interrupted,
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A key as text when it is printable UTF-8, as `0x`-prefixed hex otherwise.
pub(crate) fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => {
            let mut s = String::with_capacity(2 + key.len() * 2);
            s.push_str("0x");
            for b in key {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
    }
}
