//! Opening one data file and streaming its record batches, projected to the columns a build
//! needs.

use crate::error::{Error, Result};
use crate::parquet_sizes::{load_metadata, PageChecked};
use crate::source::{Counting, Location, ReadSeek, Source};
use crate::InputFormat;
use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use std::io::{BufRead, BufReader, Read, Seek};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Rows per record batch.
pub(crate) const BATCH_ROWS: usize = 8192;
/// CSV and NDJSON column types are inferred from this many leading rows.
pub(crate) const INFER_ROWS: usize = 10_000;
/// Of a text input, at most this much is held back to infer the schema from.
const SAMPLE_BYTES: usize = 64 << 20;

/// A source opened far enough to know its schema.
pub(crate) struct Opened {
    /// The source's columns.
    pub schema: SchemaRef,
    /// Rows in the source, when its format records them.
    pub rows: Option<u64>,
    /// Bytes consumed from the source so far (as stored), for formats read as a stream.
    pub consumed: Arc<AtomicU64>,
    kind: Kind,
    /// [`Settings::batch_bytes`].
    batch_bytes: usize,
    /// [`Settings::max_line`].
    max_line: usize,
}

type ArrowBatches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

enum Kind {
    Parquet(Box<ParquetRecordBatchReaderBuilder<PageChecked>>),
    Ipc(ArrowBatches),
    /// A CSV input, and the rows of its batches.
    Csv {
        input: Box<dyn Read + Send>,
        rows: usize,
    },
    Ndjson(Box<dyn BufRead + Send>),
}

/// Streams record batches of one source.
pub(crate) trait Batches {
    /// The next batch, `None` at the end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}

thread_local! {
    /// Whether this thread is inside [`guarded`]: its panics are reported as errors, not
    /// printed.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a call into a decoder of `source`'s bytes, and turns a panic in it into an error
/// naming the source. Decoders (Parquet, Arrow IPC) are meant to return errors for damaged
/// bytes, but some bytes still reach a panic in them; a build must fail with a message
/// instead. The panic is not printed: the error says what it said.
pub(crate) fn guarded<T>(source: &Source, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(malformed(
            source,
            None,
            format!("the file is damaged: its decoder failed on it ({what})"),
        ))
    })
}

fn malformed(source: &Source, line: Option<u64>, e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        input: source.name.clone(),
        line,
        message: e.to_string(),
    }
}

/// Maps an Arrow error of a text format: invalid UTF-8 gets its own error.
fn text_error(source: &Source, line: Option<u64>, e: ArrowError) -> Error {
    let text = e.to_string();
    if text.contains("UTF-8") || text.contains("utf-8") || text.contains("utf8") {
        return Error::NotUtf8 {
            input: source.name.clone(),
            what: match line {
                Some(l) => format!("line {l}"),
                None => text.trim_start_matches("Csv error: ").to_owned(),
            },
        };
    }
    if let ArrowError::IoError(_, io) = e {
        return source.read_error(io);
    }
    malformed(source, line, text)
}

/// Skips a UTF-8 byte order mark.
fn skip_bom<R: BufRead>(mut r: R) -> std::io::Result<R> {
    if r.fill_buf()?.starts_with(b"\xef\xbb\xbf") {
        r.consume(3);
    }
    Ok(r)
}

/// A delimiter as a user writes it.
pub(crate) fn delimiter_name(d: u8) -> String {
    match d {
        b'\t' => "tab".to_owned(),
        d => format!("'{}'", d as char),
    }
}

/// A header that parses to one column but holds another common delimiter is a file written
/// with that delimiter (a spreadsheet's `;`, a `\t`-separated export).
fn check_single_column(source: &Source, header: &[u8]) -> Result<()> {
    if header.contains(&source.delimiter) {
        return Ok(());
    }
    let seen = [b';', b'\t', b'|', b',']
        .into_iter()
        .find(|d| *d != source.delimiter && header.contains(d));
    match seen {
        Some(d) => Err(malformed(
            source,
            Some(1),
            format!(
                "the header is one column with the delimiter {} but it contains {seen}: pass \
                 --delimiter {seen}",
                delimiter_name(source.delimiter),
                seen = delimiter_name(d),
            ),
        )),
        None => Ok(()),
    }
}

/// Adds to a CSV error of a file whose header is one column which delimiter was used.
fn one_column(source: &Source, e: Error) -> Error {
    match e {
        Error::Malformed {
            input,
            line,
            message,
        } => Error::Malformed {
            input,
            line,
            message: format!(
                "{message} (the header is one column with the delimiter {}: pass --delimiter \
                 if the file uses another)",
                delimiter_name(source.delimiter)
            ),
        },
        e => e,
    }
}

/// The schema with `INT96` columns (Spark's default timestamps, instants stored as UTC) read
/// as UTC instants, in microseconds (the nanoseconds Arrow defaults to end in 2262); `None`
/// when there are none.
fn int96_as_utc(metadata: &ArrowReaderMetadata) -> Option<SchemaRef> {
    let parquet = metadata.metadata().file_metadata().schema_descr();
    let roots = parquet.root_schema().get_fields();
    let schema = metadata.schema();
    if roots.len() != schema.fields().len() {
        return None;
    }
    let mut changed = false;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(roots)
        .map(|(f, root)| {
            let int96 =
                root.is_primitive() && root.get_physical_type() == parquet::basic::Type::INT96;
            if int96 && matches!(f.data_type(), DataType::Timestamp(_, None)) {
                changed = true;
                f.as_ref().clone().with_data_type(DataType::Timestamp(
                    arrow_schema::TimeUnit::Microsecond,
                    Some("UTC".into()),
                ))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    changed.then(|| Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// Opens a source and reads its schema. `text_columns` are read as strings from CSV whatever
/// they look like (keys keep their exact text: `007` stays `007`). Two columns of one name are
/// an error: which of them a key or value would read is not clear.
pub(crate) fn open(source: &Source, settings: &Settings) -> Result<Opened> {
    let opened = guarded(source, || open_unchecked(source, settings))?;
    for f in opened.schema.fields() {
        if let Err(e) = check_type(f.data_type()) {
            return Err(malformed(
                source,
                None,
                format!(
                    "the column {:?} has a type that is not valid: {e}",
                    f.name()
                ),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for f in opened.schema.fields() {
        if !seen.insert(f.name().as_str()) {
            return Err(malformed(
                source,
                None,
                format!(
                    "the column {:?} appears more than once; rename the columns so that each \
                     name is given once",
                    f.name()
                ),
            ));
        }
    }
    Ok(opened)
}

/// Checks what the decoders take from a file's schema without checking: a decimal's
/// precision and scale (the JSON encoder fails on a precision of 0), in nested types too.
fn check_type(t: &DataType) -> std::result::Result<(), ArrowError> {
    use arrow_array::types::{
        validate_decimal_precision_and_scale as valid, Decimal128Type, Decimal256Type,
        Decimal32Type, Decimal64Type,
    };
    match t {
        DataType::Decimal32(p, s) => valid::<Decimal32Type>(*p, *s),
        DataType::Decimal64(p, s) => valid::<Decimal64Type>(*p, *s),
        DataType::Decimal128(p, s) => valid::<Decimal128Type>(*p, *s),
        DataType::Decimal256(p, s) => valid::<Decimal256Type>(*p, *s),
        DataType::Struct(fields) => fields.iter().try_for_each(|f| check_type(f.data_type())),
        DataType::Union(fields, _) => fields
            .iter()
            .try_for_each(|(_, f)| check_type(f.data_type())),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => check_type(f.data_type()),
        DataType::Dictionary(_, value) => check_type(value),
        DataType::RunEndEncoded(_, values) => check_type(values.data_type()),
        _ => Ok(()),
    }
}

/// How sources are opened: the same for every source of a build.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Columns read as text from CSV whatever they look like (the key columns).
    pub text_columns: Vec<String>,
    /// The build's memory limit: no size read from an input may ask for more at once.
    pub memory_limit: u64,
    /// Reading a stream stops when the build is interrupted, even while its schema is
    /// inferred.
    pub interrupt: crate::Interrupt,
}

impl Settings {
    /// The most bytes one line or record of a text input may hold: a quarter of the memory
    /// limit (a value alone may be 64 MiB).
    pub(crate) fn max_line(&self) -> usize {
        usize::try_from(self.memory_limit / 4).unwrap_or(usize::MAX)
    }

    /// Batches are cut at about this many bytes of input (as well as at [`BATCH_ROWS`] rows):
    /// half of what may be in flight between the reader and the sorter.
    pub(crate) fn batch_bytes(&self) -> usize {
        crate::in_flight_budget(self.memory_limit) / 2
    }

    /// `source` as a stream that fails once the build is interrupted.
    fn stream(&self, source: &Source, consumed: &Arc<AtomicU64>) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(Interruptible {
            inner: source.stream(consumed)?,
            interrupt: self.interrupt.clone(),
        }))
    }

    /// The most bytes of a text input held back to infer its schema from: parsed, they take
    /// several times their size.
    fn sample_bytes(&self) -> usize {
        SAMPLE_BYTES.min(usize::try_from(self.memory_limit / 16).unwrap_or(usize::MAX))
    }

    /// The most bytes one allocation sized by `source`'s bytes may take: the memory limit, and
    /// the source's size when it is stored uncompressed.
    fn most(&self, source: &Source) -> u64 {
        match (source.compression, source.size) {
            (crate::source::Compression::None, Some(size)) => size.min(self.memory_limit),
            _ => self.memory_limit,
        }
    }
}

fn open_unchecked(source: &Source, settings: &Settings) -> Result<Opened> {
    let text_columns = &settings.text_columns[..];
    let consumed = Arc::new(AtomicU64::new(0));
    let opened = |schema: SchemaRef, rows: Option<u64>, kind: Kind| Opened {
        schema,
        rows,
        consumed: consumed.clone(),
        kind,
        batch_bytes: settings.batch_bytes(),
        max_line: settings.max_line(),
    };
    if let Location::Batches(batches) = &source.location {
        let reader = batches.take().ok_or_else(|| {
            Error::InvalidOption(format!("{}: its batches were already read", source.name))
        })?;
        return Ok(opened(reader.schema(), None, Kind::Ipc(Box::new(reader))));
    }
    match source.format {
        InputFormat::Parquet => {
            let file = source.random_access()?.ok_or_else(|| {
                Error::Stdin("Parquet is read from the end: pass a file, not a stream".into())
            })?;
            let bad = |e| malformed(source, None, e);
            let options = ArrowReaderOptions::new();
            let mut metadata =
                load_metadata(&file, options.clone(), settings.memory_limit).map_err(bad)?;
            if let Some(schema) = int96_as_utc(&metadata) {
                metadata = ArrowReaderMetadata::try_new(
                    metadata.metadata().clone(),
                    options.with_schema(schema),
                )
                .map_err(bad)?;
            }
            // Page indexes are not loaded, so the decoder reads every page header through
            // `PageChecked::get_read`, where its claimed size is checked.
            let file = PageChecked::new(file, settings.memory_limit);
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
            let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            Ok(opened(
                builder.schema().clone(),
                Some(rows),
                Kind::Parquet(Box::new(builder)),
            ))
        }
        InputFormat::Arrow => {
            let mut input = BufReader::with_capacity(1 << 20, settings.stream(source, &consumed)?);
            let is_file = input
                .fill_buf()
                .map_err(|e| source.read_error(e))?
                .starts_with(b"ARROW1");
            if !is_file {
                let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let input = EndWatch {
                    inner: input,
                    ended: ended.clone(),
                    frame: Frame::Prefix(Vec::new()),
                    most: settings.most(source),
                    message: 0,
                };
                let reader = arrow_ipc::reader::StreamReader::try_new(input, None)
                    .map_err(|e| malformed(source, None, e))?;
                let reader = Marked {
                    inner: reader,
                    ended,
                    done: false,
                };
                let schema = arrow_array::RecordBatchReader::schema(&reader);
                return Ok(opened(schema, None, Kind::Ipc(Box::new(reader))));
            }
            // The IPC file format is read from its end (the footer): a stream (standard
            // input, a compressed file) is first copied to an anonymous temporary file, which
            // the system removes when it is closed, however the build ends. Its bytes were
            // counted as they came in.
            let seekable: Box<dyn ReadSeek> = match source.random_access()? {
                Some(file) => {
                    drop(input);
                    Box::new(Counting {
                        inner: file.into_read_seek(),
                        count: consumed.clone(),
                    })
                }
                None => {
                    let mut spool = tempfile::tempfile().map_err(|e| source.read_error(e))?;
                    std::io::copy(&mut input, &mut spool)
                        .and_then(|_| spool.seek(std::io::SeekFrom::Start(0)))
                        .map_err(|e| source.read_error(e))?;
                    Box::new(spool)
                }
            };
            let mut seekable = seekable;
            check_ipc_file(&mut seekable, settings.most(source))
                .map_err(|e| malformed(source, None, e))?;
            let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(seekable), None)
                .map_err(|e| malformed(source, None, e))?;
            Ok(opened(reader.schema(), None, Kind::Ipc(Box::new(reader))))
        }
        InputFormat::Csv | InputFormat::Tsv => {
            let format = arrow_csv::reader::Format::default()
                .with_header(true)
                .with_delimiter(source.delimiter);
            let (sample, rest) = sample(source, settings.stream(source, &consumed)?, settings)?;
            let sample =
                skip_bom(std::io::Cursor::new(sample)).map_err(|e| source.read_error(e))?;
            let header = sample.get_ref()[sample.position() as usize..]
                .split(|b| *b == b'\n')
                .next()
                .unwrap_or_default();
            check_single_column(source, header)?;
            let single = !header.contains(&source.delimiter);
            let (schema, _) = format
                .infer_schema(sample.clone(), Some(INFER_ROWS))
                .map_err(|e| match text_error(source, None, e) {
                    e if single => one_column(source, e),
                    e => e,
                })?;
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| {
                    let f = f.as_ref().clone();
                    if text_columns.iter().any(|c| c == f.name()) {
                        f.with_data_type(DataType::Utf8)
                    } else {
                        f
                    }
                })
                .collect();
            // The decoder sets aside 8 bytes per field of a batch before reading it: a batch
            // of a wide file has fewer rows.
            let bytes = sample.get_ref().len();
            let lines = memchr::memchr_iter(b'\n', sample.get_ref()).count();
            let row_bytes = (bytes / lines.max(1)) as u64 + 8 * fields.len() as u64;
            let rows = rows_for(row_bytes, 1, settings.batch_bytes());
            let input: Box<dyn Read + Send> = Box::new(sample.chain(rest));
            Ok(opened(
                Arc::new(Schema::new(fields)),
                None,
                Kind::Csv { input, rows },
            ))
        }
        InputFormat::Ndjson => {
            let mut input = skip_bom(BufReader::with_capacity(
                1 << 20,
                settings.stream(source, &consumed)?,
            ))
            .map_err(|e| source.read_error(e))?;
            let lines = read_lines(
                source,
                &mut input,
                INFER_ROWS,
                settings.sample_bytes(),
                settings.max_line(),
            )?;
            let mut values = Vec::new();
            let mut order = FieldOrder::default();
            for (i, line) in lines.iter().enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line_no = Some(i as u64 + 1);
                let text = std::str::from_utf8(line).map_err(|_| Error::NotUtf8 {
                    input: source.name.clone(),
                    what: format!("line {}", i + 1),
                })?;
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(v @ serde_json::Value::Object(_)) => {
                        order.add(text);
                        values.push(v);
                    }
                    Ok(_) => return Err(malformed(source, line_no, "not a JSON object")),
                    Err(e) => return Err(malformed(source, line_no, e)),
                }
            }
            let schema = arrow_json::reader::infer_json_schema_from_iterator(
                values.into_iter().map(Ok::<_, ArrowError>),
            )
            .map_err(|e| malformed(source, None, e))?;
            let replay = std::io::Cursor::new(lines.concat());
            Ok(opened(
                Arc::new(order.apply(&schema)),
                None,
                Kind::Ndjson(Box::new(replay.chain(input))),
            ))
        }
    }
}

/// The order NDJSON fields first appear in: the columns' order, as a CSV header or a Parquet
/// schema gives it (JSON maps parse into name order).
#[derive(Default)]
struct FieldOrder {
    names: Vec<String>,
    seen: std::collections::HashSet<String>,
}

/// The top-level names of one JSON object, in the order they are written.
struct ObjectNames(Vec<String>);

impl<'de> serde::Deserialize<'de> for ObjectNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = ObjectNames;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<ObjectNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    names.push(name);
                }
                Ok(ObjectNames(names))
            }
        }
        d.deserialize_map(Names)
    }
}

impl FieldOrder {
    /// Notes the names of the object `line` (already parsed once: valid JSON).
    fn add(&mut self, line: &str) {
        if let Ok(ObjectNames(names)) = serde_json::from_str(line) {
            for n in names {
                if self.seen.insert(n.clone()) {
                    self.names.push(n);
                }
            }
        }
    }

    /// `schema` with its fields in first-appearance order.
    fn apply(&self, schema: &Schema) -> Schema {
        let rank: std::collections::HashMap<&str, usize> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.sort_by_key(|f| rank.get(f.name().as_str()).copied().unwrap_or(usize::MAX));
        Schema::new_with_metadata(fields, schema.metadata().clone())
    }
}

/// Reads up to `max_lines` lines (each with its newline) and at most about `max_bytes`; no line
/// may be longer than `max_line`.
fn read_lines(
    source: &Source,
    r: &mut impl BufRead,
    max_lines: usize,
    max_bytes: usize,
    max_line: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    let mut bytes = 0;
    while lines.len() < max_lines && bytes < max_bytes {
        let mut line = Vec::new();
        if read_line(source, r, &mut line, lines.len() as u64 + 1, max_line)? == 0 {
            break;
        }
        bytes += line.len();
        lines.push(line);
    }
    Ok(lines)
}

/// Appends line `number` of `r` (with its newline) to `line`, as `read_until` does, but fails
/// once it is longer than `most` bytes rather than growing without bound. Returns the bytes
/// read, 0 at the end.
fn read_line(
    source: &Source,
    r: &mut impl BufRead,
    line: &mut Vec<u8>,
    number: u64,
    most: usize,
) -> Result<usize> {
    let start = line.len();
    loop {
        let buf = r.fill_buf().map_err(|e| source.read_error(e))?;
        if buf.is_empty() {
            return Ok(line.len() - start);
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() - start + take > most {
            return Err(malformed(
                source,
                Some(number),
                format!(
                    "the line is longer than {most} bytes, a quarter of the memory limit; \
                     raise --memory-limit if the input is right"
                ),
            ));
        }
        // Grown by doubling, as `extend` would, but never past the longest line allowed.
        if line.len() + take > line.capacity() {
            let want = (line.capacity() * 2)
                .max(line.len() + take)
                .min(start.saturating_add(most));
            line.reserve_exact(want - line.len());
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(line.len() - start);
        }
    }
}

/// The head of a text stream (enough rows to infer a CSV schema from) and the rest of it:
/// read once, whatever the stream is (a file, an object, standard input, a decompressor).
fn sample(
    source: &Source,
    input: Box<dyn Read + Send>,
    settings: &Settings,
) -> Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let lines = read_lines(
        source,
        &mut input,
        INFER_ROWS + 1,
        settings.sample_bytes(),
        settings.max_line(),
    )?;
    Ok((lines.concat(), Box::new(input)))
}

impl Opened {
    /// Starts reading batches of the columns `needed` (indices into [`Opened::schema`],
    /// ascending); batches hold exactly those columns, in that order.
    pub(crate) fn batches(self, source: &Source, needed: Vec<usize>) -> Result<Box<dyn Batches>> {
        Ok(match self.kind {
            Kind::Parquet(builder) => {
                let rows = parquet_batch_rows(builder.metadata(), &needed, self.batch_bytes);
                let mask = ProjectionMask::roots(builder.parquet_schema(), needed.iter().copied());
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(rows)
                    .build()
                    .map_err(|e| malformed(source, None, e))?;
                Box::new(ArrowIter {
                    iter: Box::new(reader),
                    project: None,
                    source: source.clone(),
                    rest: None,
                    batch_bytes: self.batch_bytes,
                })
            }
            Kind::Ipc(iter) => Box::new(ArrowIter {
                iter,
                project: Some(needed),
                source: source.clone(),
                rest: None,
                batch_bytes: self.batch_bytes,
            }),
            Kind::Csv { input, rows } => {
                let decoder = arrow_csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(true)
                    .with_delimiter(source.delimiter)
                    .with_batch_size(rows)
                    .with_projection(needed)
                    .build_decoder();
                Box::new(CsvBatches {
                    decoder,
                    input: BufReader::with_capacity(1 << 20, input),
                    scan: CsvScan::new(source.delimiter),
                    most: self.max_line,
                    batch_bytes: self.batch_bytes,
                    source: source.clone(),
                    single_column: self.schema.fields().len() == 1,
                    ended: false,
                })
            }
            Kind::Ndjson(input) => {
                let fields: Vec<_> = needed
                    .iter()
                    .map(|&i| self.schema.field(i).clone())
                    .collect();
                let schema = Arc::new(Schema::new(fields));
                let integers = schema
                    .fields()
                    .iter()
                    .filter(|f| f.data_type().is_integer())
                    .map(|f| f.name().clone())
                    .collect();
                Box::new(NdjsonBatches {
                    decoder: ndjson_decoder(&schema)?,
                    integers,
                    schema,
                    input,
                    line: 0,
                    buf: Vec::new(),
                    lines: Vec::new(),
                    source: source.clone(),
                    most: self.max_line,
                    batch_bytes: self.batch_bytes,
                })
            }
        })
    }
}

/// Rows per batch for a Parquet file: [`BATCH_ROWS`], or fewer so that a batch of the columns
/// `needed` (root indices) holds about `batch_bytes` as the file's metadata sizes them (decoded
/// byte arrays where the writer recorded their size, else the pages' uncompressed size).
fn parquet_batch_rows(
    metadata: &parquet::file::metadata::ParquetMetaData,
    needed: &[usize],
    batch_bytes: usize,
) -> usize {
    let schema = metadata.file_metadata().schema_descr();
    let leaves: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| needed.contains(&schema.get_column_root_idx(i)))
        .collect();
    let mut bytes: u64 = 0;
    let mut rows: u64 = 0;
    for group in metadata.row_groups() {
        rows += group.num_rows().max(0) as u64;
        for &i in &leaves {
            let Some(column) = group.columns().get(i) else {
                continue;
            };
            let decoded = column.unencoded_byte_array_data_bytes().unwrap_or(0);
            bytes = bytes.saturating_add(column.uncompressed_size().max(decoded).max(0) as u64);
        }
    }
    rows_for(bytes, rows, batch_bytes)
}

/// Rows per batch when `rows` rows take `bytes`: at most [`BATCH_ROWS`], about `batch_bytes`,
/// at least one.
fn rows_for(bytes: u64, rows: u64, batch_bytes: usize) -> usize {
    let per_row = bytes / rows.max(1);
    let fit = (batch_bytes as u64) / per_row.max(1);
    fit.clamp(1, BATCH_ROWS as u64) as usize
}

/// Arrow IPC and in-memory batches. A batch of more than [`BATCH_ROWS`] rows or about
/// `batch_bytes` (a whole table in one chunk, say) is handed on in zero-copy slices of at most
/// that much, so the pipeline can share it among its threads and bound what is in flight as
/// for every other format.
struct ArrowIter {
    iter: ArrowBatches,
    project: Option<Vec<usize>>,
    source: Source,
    /// The rest of a large batch not yet handed on, and the rows of each slice of it.
    rest: Option<(RecordBatch, usize)>,
    batch_bytes: usize,
}

impl ArrowIter {
    fn next_slice(&mut self) -> Result<Option<RecordBatch>> {
        let (batch, rows) = match self.rest.take() {
            Some(rest) => rest,
            None => match self.iter.next() {
                None => return Ok(None),
                Some(batch) => {
                    let batch = batch.map_err(|e| match e {
                        ArrowError::IoError(_, io) => self.source.read_error(io),
                        e => malformed(&self.source, None, e),
                    })?;
                    let bytes = batch.get_array_memory_size() as u64;
                    let rows = rows_for(bytes, batch.num_rows() as u64, self.batch_bytes);
                    (batch, rows)
                }
            },
        };
        if batch.num_rows() <= rows {
            return Ok(Some(batch));
        }
        self.rest = Some((batch.slice(rows, batch.num_rows() - rows), rows));
        Ok(Some(batch.slice(0, rows)))
    }
}

impl Batches for ArrowIter {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(batch) = self.next_slice()? else {
            return Ok(None);
        };
        match &self.project {
            Some(p) => batch
                .project(p)
                .map(Some)
                .map_err(|e| malformed(&self.source, None, e)),
            None => Ok(Some(batch)),
        }
    }
}

/// CSV, decoded in batches of at most [`BATCH_ROWS`] records and about
/// [`Settings::batch_bytes`] bytes: the bytes are followed as the decoder reads them (see
/// [`CsvScan`]) so that a batch ends where a record does.
struct CsvBatches {
    decoder: arrow_csv::reader::Decoder,
    input: BufReader<Box<dyn Read + Send>>,
    /// The quoting at the end of the bytes handed to the decoder.
    scan: CsvScan,
    /// The most bytes one record may hold.
    most: usize,
    batch_bytes: usize,
    source: Source,
    /// The header is one column: an error says which delimiter was used.
    single_column: bool,
    /// The input has ended.
    ended: bool,
}

impl CsvBatches {
    fn error(&self, e: Error) -> Error {
        if self.single_column {
            one_column(&self.source, e)
        } else {
            e
        }
    }

    /// Feeds the decoder one buffer of input, ending early where a record ends once the batch
    /// holds `need` more bytes. Returns the bytes fed (0 at the end of the input) and whether
    /// the batch is complete.
    fn feed(&mut self, need: usize) -> Result<(usize, bool)> {
        let buf = match self.input.fill_buf() {
            Ok(buf) => buf,
            Err(e) => return Err(self.source.read_error(e)),
        };
        if buf.is_empty() {
            // The decoder ends the last record, which may have no line break, only when told
            // that the input has ended.
            if let Err(e) = self.decoder.decode(&[]) {
                return Err(self.error(text_error(&self.source, None, e)));
            }
            return match self.scan.open_quote() {
                Some(line) => Err(malformed(
                    &self.source,
                    None,
                    format!(
                        "the quoted field that starts on line {line} is never closed (a `\"` \
                         is missing)"
                    ),
                )),
                None => {
                    self.ended = true;
                    Ok((0, true))
                }
            };
        }
        let before = self.scan.clone();
        let mut take = buf.len();
        let mut full = false;
        for (i, &b) in buf.iter().enumerate() {
            let ended = self.scan.step(b);
            if self.scan.record > self.most {
                return Err(malformed(
                    &self.source,
                    None,
                    format!(
                        "the record that starts on line {} is longer than {} bytes, a quarter \
                         of the memory limit; raise --memory-limit if the input is right",
                        self.scan.record_line, self.most
                    ),
                ));
            }
            if ended && i + 1 >= need {
                take = i + 1;
                full = true;
                break;
            }
        }
        let decoded = match self.decoder.decode(&buf[..take]) {
            Ok(n) => n,
            Err(e) => return Err(self.error(text_error(&self.source, None, e))),
        };
        if decoded < take {
            // The decoder's batch filled up on a record's end inside the bytes: follow the
            // quoting to there only.
            self.scan = before;
            for &b in &buf[..decoded] {
                self.scan.step(b);
            }
            full = true;
        }
        self.input.consume(decoded);
        Ok((decoded, full || decoded == 0))
    }
}

impl Batches for CsvBatches {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let mut fed = 0;
            loop {
                let (n, full) = self.feed(self.batch_bytes.saturating_sub(fed))?;
                fed += n;
                if full {
                    break;
                }
            }
            // A batch can be empty: the header alone is a first call.
            let batch = self
                .decoder
                .flush()
                .map_err(|e| self.error(text_error(&self.source, None, e)))?;
            if batch.is_some() || self.ended {
                return Ok(batch);
            }
        }
    }
}

fn ndjson_decoder(schema: &SchemaRef) -> Result<arrow_json::reader::Decoder> {
    arrow_json::ReaderBuilder::new(schema.clone())
        // Batches are cut by this reader at BATCH_ROWS lines: the decoder, whose own limit is
        // higher, never stops short of a line.
        .with_batch_size(BATCH_ROWS + 1)
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| Error::InvalidOption(e.to_string()))
}

/// NDJSON, decoded line by line so that an error names its line.
struct NdjsonBatches {
    decoder: arrow_json::reader::Decoder,
    schema: SchemaRef,
    input: Box<dyn BufRead + Send>,
    /// Lines read so far.
    line: u64,
    /// The lines of the batch being decoded, and their numbers: an error found when the batch
    /// is flushed is pinned to its line by decoding them again one at a time.
    buf: Vec<u8>,
    lines: Vec<(u64, usize)>,
    source: Source,
    /// The top-level fields of integer columns: a number with a fraction or an exponent there
    /// is an error (the decoder would cut 1.5 to 1).
    integers: Vec<String>,
    /// The most bytes one line may hold.
    most: usize,
    /// A batch ends once its lines hold this many bytes (or at [`BATCH_ROWS`] lines).
    batch_bytes: usize,
}

impl NdjsonBatches {
    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        let result = self.decoder.flush();
        let batch = match result {
            Ok(b) => b,
            Err(e) => return Err(self.locate(e)),
        };
        self.buf.clear();
        self.lines.clear();
        Ok(batch)
    }

    /// Finds the first line of the current batch that fails on its own.
    fn locate(&self, batch_error: ArrowError) -> Error {
        let mut start = 0;
        for &(line, end) in &self.lines {
            let bytes = &self.buf[start..end];
            start = end;
            let Ok(mut d) = ndjson_decoder(&self.schema) else {
                break;
            };
            if let Err(e) = d.decode(bytes).and_then(|_| d.flush()) {
                return text_error(&self.source, Some(line), e);
            }
        }
        text_error(&self.source, None, batch_error)
    }
}

impl Batches for NdjsonBatches {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = read_line(
                &self.source,
                &mut self.input,
                &mut line,
                self.line + 1,
                self.most,
            )?;
            if n == 0 {
                return self.flush();
            }
            self.line += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Every line is checked as the inference sample's lines are: the decoder accepts
            // some text that is not JSON, and nesting is bounded (128 levels) before it
            // reaches code that recurses.
            if let Err(e) = check_line(&line, &self.integers) {
                return Err(malformed(&self.source, Some(self.line), e));
            }
            if let Some(column) = too_deep(&line) {
                return Err(malformed(
                    &self.source,
                    Some(self.line),
                    format!(
                        "nested more than {MAX_JSON_DEPTH} levels deep at column {column}; \
                         values are at most {MAX_JSON_DEPTH} levels deep"
                    ),
                ));
            }
            let before = self.decoder.len();
            if let Err(e) = self.decoder.decode(&line) {
                return Err(text_error(&self.source, Some(self.line), e));
            }
            if self.decoder.has_partial_record() {
                return Err(malformed(
                    &self.source,
                    Some(self.line),
                    "incomplete JSON object (NDJSON needs one object per line)",
                ));
            }
            if self.decoder.len() != before + 1 {
                return Err(malformed(
                    &self.source,
                    Some(self.line),
                    "expected exactly one JSON object on the line",
                ));
            }
            self.buf.extend_from_slice(&line);
            self.lines.push((self.line, self.buf.len()));
            if self.lines.len() >= BATCH_ROWS || self.buf.len() >= self.batch_bytes {
                return self.flush();
            }
        }
    }
}

/// Checks that an NDJSON line is JSON (as `serde_json` parses it, whatever the decoder would
/// accept) and that its members named in `integers` hold whole numbers where they hold
/// numbers.
fn check_line(line: &[u8], integers: &[String]) -> std::result::Result<(), String> {
    struct Line<'i>(&'i [String]);
    impl<'de> serde::de::Visitor<'de> for Line<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<(), A::Error> {
            while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if !self.0.iter().any(|n| *n == name) {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                let raw = map.next_value::<&serde_json::value::RawValue>()?;
                let text = raw.get();
                let number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
                if number && text.contains(['.', 'e', 'E']) {
                    return Err(serde::de::Error::custom(format!(
                        "field {name:?} holds {text}, in a column of integers (as the first \
                         lines have it); write it as an integer, or give the column a decimal \
                         value such as 1.0 in the first lines"
                    )));
                }
            }
            Ok(())
        }
        // Other values (not objects) are the decoder's to report.
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<(), A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(())
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
            Ok(())
        }
    }
    if integers.is_empty() {
        return serde_json::from_slice::<serde::de::IgnoredAny>(line)
            .map(drop)
            .map_err(|e| e.to_string());
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    serde::Deserializer::deserialize_any(&mut de, Line(integers))
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())
}

/// How deep NDJSON values may nest (as `serde_json` parses them).
const MAX_JSON_DEPTH: usize = 128;

/// The column (from 1) where the JSON text `line` nests deeper than [`MAX_JSON_DEPTH`], if it
/// does. The text is valid JSON (checked before).
fn too_deep(line: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in line.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Some(i + 1);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Reads an Arrow IPC stream's bytes for the stream reader, following its framing: a message
/// whose metadata or body says it is larger than `most` bytes fails before the reader
/// allocates for it. Also notes when the reader asks for more after the last byte: a stream
/// that ends with its end-of-stream marker is never read past it, so a read at the end means
/// the stream stopped between messages (cut short).
struct EndWatch<R> {
    inner: R,
    ended: Arc<std::sync::atomic::AtomicBool>,
    frame: Frame,
    most: u64,
    /// Messages read so far.
    message: u64,
}

/// Where the stream is in its framing.
enum Frame {
    /// The prefix bytes read of a message: `0xFFFFFFFF` and the metadata length (or the length
    /// alone, in streams of before the continuation marker).
    Prefix(Vec<u8>),
    /// The metadata bytes read, and how many it has.
    Metadata(Vec<u8>, usize),
    /// Body bytes still to come.
    Body(u64),
    /// The end-of-stream marker was read, or the framing is not understood (the reader
    /// reports that).
    Done,
}

impl<R> EndWatch<R> {
    fn too_large(&self, what: &str, len: i64) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "message {} of the stream says its {what} is {len} bytes, more than {} (the \
                 input's size or the memory limit): the stream is damaged",
                self.message + 1,
                self.most
            ),
        )
    }

    /// Follows the framing over `bytes`, the next bytes handed to the reader.
    fn follow(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.frame {
                Frame::Done => return Ok(()),
                Frame::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.message += 1;
                        self.frame = Frame::Prefix(Vec::new());
                    }
                }
                Frame::Prefix(have) => {
                    let want = if have.len() >= 4 && have[..4] == [0xff; 4] {
                        8
                    } else {
                        4
                    };
                    let n = (want - have.len()).min(bytes.len());
                    have.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have.len() == 4 && have[..] == [0xff; 4] {
                        continue;
                    }
                    if have.len() < want {
                        continue;
                    }
                    let len = i32::from_le_bytes(have[want - 4..want].try_into().unwrap_or([0; 4]));
                    if len == 0 {
                        self.frame = Frame::Done;
                    } else if len < 0 || len as u64 > self.most {
                        return Err(self.too_large("metadata", i64::from(len)));
                    } else {
                        self.frame =
                            Frame::Metadata(Vec::with_capacity(len as usize), len as usize);
                    }
                }
                Frame::Metadata(have, len) => {
                    let n = (*len - have.len()).min(bytes.len());
                    have.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have.len() < *len {
                        continue;
                    }
                    let body = match arrow_ipc::root_as_message(have) {
                        Ok(m) => m.bodyLength(),
                        Err(_) => {
                            // Not a message: the reader says so.
                            self.frame = Frame::Done;
                            return Ok(());
                        }
                    };
                    if body < 0 || body as u64 > self.most {
                        return Err(self.too_large("body", body));
                    }
                    if body == 0 {
                        self.message += 1;
                        self.frame = Frame::Prefix(Vec::new());
                    } else {
                        self.frame = Frame::Body(body as u64);
                    }
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for EndWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

/// Checks an Arrow IPC file's footer before the file reader trusts it: every block (record
/// batch or dictionary) must lie within the file, and none be larger than `most` bytes.
fn check_ipc_file<F: Read + Seek>(file: &mut F, most: u64) -> std::result::Result<(), String> {
    use std::io::SeekFrom;
    let io = |e: std::io::Error| e.to_string();
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len < 10 {
        return Err("too short to be an Arrow IPC file".into());
    }
    let mut end = [0u8; 10];
    file.seek(SeekFrom::Start(len - 10)).map_err(io)?;
    file.read_exact(&mut end).map_err(io)?;
    let footer_len = arrow_ipc::reader::read_footer_length(end).map_err(|e| e.to_string())? as u64;
    if footer_len > len - 10 || footer_len > most {
        return Err(format!(
            "the footer says it is {footer_len} bytes, in a file of {len}: the file is damaged"
        ));
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::Start(len - 10 - footer_len))
        .map_err(io)?;
    file.read_exact(&mut footer).map_err(io)?;
    let footer = arrow_ipc::root_as_footer(&footer)
        .map_err(|e| format!("the footer is not an Arrow IPC footer: {e}"))?;
    let blocks = footer
        .recordBatches()
        .into_iter()
        .flatten()
        .chain(footer.dictionaries().into_iter().flatten());
    for (i, b) in blocks.enumerate() {
        let (offset, meta, body) = (b.offset(), b.metaDataLength(), b.bodyLength());
        let size = i64::from(meta).checked_add(body);
        let within = offset >= 0
            && meta >= 0
            && body >= 0
            && size.is_some_and(|s| s as u64 <= most)
            && size
                .and_then(|s| offset.checked_add(s))
                .is_some_and(|e| e as u64 <= len);
        if !within {
            return Err(format!(
                "block {} of the footer (offset {offset}, metadata {meta} bytes, body {body} \
                 bytes) does not fit in the file of {len} bytes or the memory limit: the file \
                 is damaged",
                i + 1
            ));
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

/// An IPC stream's batches, then an error if the stream had no end-of-stream marker.
struct Marked<R: Read> {
    inner: arrow_ipc::reader::StreamReader<R>,
    ended: Arc<std::sync::atomic::AtomicBool>,
    done: bool,
}

impl<R: Read> Iterator for Marked<R> {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            None => {
                self.done = true;
                self.ended
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .then(|| {
                        Err(ArrowError::IpcError(
                            "the stream ends without its end-of-stream marker: it was cut short \
                             (a writer that is closed writes the marker)"
                                .into(),
                        ))
                    })
            }
            other => other,
        }
    }
}

impl<R: Read> arrow_array::RecordBatchReader for Marked<R> {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

/// Follows CSV quoting as the CSV decoder does (`"` opens a quoted field at its start, `""`
/// inside one is a quote, a quote elsewhere is text) to know where records end, how long the
/// current one is, and whether a quoted field is still open at the end of the input (the
/// decoder would take the rest of the input as that field's text).
#[derive(Clone)]
struct CsvScan {
    delimiter: u8,
    state: Quoting,
    /// The current line (from 1), and the line the open quoted field started on.
    line: u64,
    opened: u64,
    /// Bytes of the current record so far, and the line it starts on.
    record: usize,
    record_line: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first of `""`.
    QuoteInQuoted,
}

impl CsvScan {
    fn new(delimiter: u8) -> CsvScan {
        CsvScan {
            delimiter,
            state: Quoting::FieldStart,
            line: 1,
            opened: 0,
            record: 0,
            record_line: 1,
        }
    }

    /// Follows one byte; true when it ends a record.
    fn step(&mut self, b: u8) -> bool {
        let end = b == b'\n' || b == b'\r';
        self.state = match (self.state, b) {
            (Quoting::FieldStart, b'"') => {
                self.opened = self.line;
                Quoting::Quoted
            }
            (Quoting::Quoted, b'"') => Quoting::QuoteInQuoted,
            (Quoting::Quoted, _) => Quoting::Quoted,
            (Quoting::QuoteInQuoted, b'"') => Quoting::Quoted,
            (_, b) if b == self.delimiter || end => Quoting::FieldStart,
            _ => Quoting::Unquoted,
        };
        if b == b'\n' {
            self.line += 1;
            if self.state == Quoting::FieldStart {
                self.record = 0;
                self.record_line = self.line;
                return true;
            }
        }
        self.record += 1;
        false
    }

    /// The line a quoted field still open started on.
    fn open_quote(&self) -> Option<u64> {
        (self.state == Quoting::Quoted).then_some(self.opened)
    }
}

/// A stream that fails once the build is interrupted: reading a large input (or the head of
/// one, to infer its schema) stops within one read.
struct Interruptible<R> {
    inner: R,
    interrupt: crate::Interrupt,
}

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.interrupt.check().is_err() {
            // Not `ErrorKind::Interrupted`, which readers retry.
            return Err(std::io::Error::other("the build was interrupted"));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_about_their_bytes() {
        assert_eq!(rows_for(100 << 20, 1000, 8 << 20), 80);
        assert_eq!(rows_for(10, 1000, 8 << 20), BATCH_ROWS);
        assert_eq!(rows_for(1 << 40, 1, 8 << 20), 1);
        assert_eq!(rows_for(0, 0, 0), 1);
    }

    #[test]
    fn records_end_at_newlines_outside_quotes() {
        let mut scan = CsvScan::new(b',');
        let text = b"k,v\na,\"x\ny\"\"\nz\"\nb,2\n";
        let ends: Vec<usize> = text
            .iter()
            .enumerate()
            .filter(|(_, &b)| scan.step(b))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ends, [3, 15, 19]);
        assert_eq!(scan.record_line, 6);
        assert_eq!(scan.open_quote(), None);
        scan.step(b'"');
        assert_eq!(scan.open_quote(), Some(6));
    }
}
