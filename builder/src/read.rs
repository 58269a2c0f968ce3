//! Opening one data file and streaming its record batches, projected to the columns a build
//! needs.

use crate::error::{Error, Result};
use crate::source::{Counting, Location, RandomAccess, ReadSeek, Source};
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
}

type ArrowBatches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

enum Kind {
    Parquet(Box<ParquetRecordBatchReaderBuilder<RandomAccess>>),
    Ipc(ArrowBatches),
    Csv(Box<dyn Read + Send>),
    Ndjson(Box<dyn BufRead + Send>),
}

/// Streams record batches of one source.
pub(crate) trait Batches {
    /// The next batch, `None` at the end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
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
/// they look like (keys keep their exact text: `007` stays `007`).
pub(crate) fn open(source: &Source, text_columns: &[String]) -> Result<Opened> {
    let consumed = Arc::new(AtomicU64::new(0));
    let opened = |schema: SchemaRef, rows: Option<u64>, kind: Kind| Opened {
        schema,
        rows,
        consumed: consumed.clone(),
        kind,
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
            let mut metadata = ArrowReaderMetadata::load(&file, options.clone()).map_err(bad)?;
            if let Some(schema) = int96_as_utc(&metadata) {
                metadata = ArrowReaderMetadata::try_new(
                    metadata.metadata().clone(),
                    options.with_schema(schema),
                )
                .map_err(bad)?;
            }
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
            let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            Ok(opened(
                builder.schema().clone(),
                Some(rows),
                Kind::Parquet(Box::new(builder)),
            ))
        }
        InputFormat::Arrow => {
            let mut input = BufReader::with_capacity(1 << 20, source.stream(&consumed)?);
            let is_file = input
                .fill_buf()
                .map_err(|e| source.read_error(e))?
                .starts_with(b"ARROW1");
            if !is_file {
                let reader = arrow_ipc::reader::StreamReader::try_new(input, None)
                    .map_err(|e| malformed(source, None, e))?;
                return Ok(opened(reader.schema(), None, Kind::Ipc(Box::new(reader))));
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
            let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(seekable), None)
                .map_err(|e| malformed(source, None, e))?;
            Ok(opened(reader.schema(), None, Kind::Ipc(Box::new(reader))))
        }
        InputFormat::Csv | InputFormat::Tsv => {
            let format = arrow_csv::reader::Format::default()
                .with_header(true)
                .with_delimiter(source.delimiter);
            let (sample, rest) = sample(source, source.stream(&consumed)?)?;
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
            let input: Box<dyn Read + Send> = Box::new(sample.chain(rest));
            Ok(opened(
                Arc::new(Schema::new(fields)),
                None,
                Kind::Csv(input),
            ))
        }
        InputFormat::Ndjson => {
            let mut input = skip_bom(BufReader::with_capacity(1 << 20, source.stream(&consumed)?))
                .map_err(|e| source.read_error(e))?;
            let lines = read_lines(source, &mut input, INFER_ROWS, SAMPLE_BYTES)?;
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

/// Reads up to `max_lines` lines (each with its newline) and at most about `max_bytes`.
fn read_lines(
    source: &Source,
    r: &mut impl BufRead,
    max_lines: usize,
    max_bytes: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    let mut bytes = 0;
    while lines.len() < max_lines && bytes < max_bytes {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)
            .map_err(|e| source.read_error(e))?
            == 0
        {
            break;
        }
        bytes += line.len();
        lines.push(line);
    }
    Ok(lines)
}

/// The head of a text stream (enough rows to infer a CSV schema from) and the rest of it:
/// read once, whatever the stream is (a file, an object, standard input, a decompressor).
fn sample(source: &Source, input: Box<dyn Read + Send>) -> Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let lines = read_lines(source, &mut input, INFER_ROWS + 1, SAMPLE_BYTES)?;
    Ok((lines.concat(), Box::new(input)))
}

impl Opened {
    /// Starts reading batches of the columns `needed` (indices into [`Opened::schema`],
    /// ascending); batches hold exactly those columns, in that order.
    pub(crate) fn batches(self, source: &Source, needed: Vec<usize>) -> Result<Box<dyn Batches>> {
        Ok(match self.kind {
            Kind::Parquet(builder) => {
                let mask = ProjectionMask::roots(builder.parquet_schema(), needed.iter().copied());
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| malformed(source, None, e))?;
                Box::new(ArrowIter {
                    iter: Box::new(reader),
                    project: None,
                    source: source.clone(),
                    rest: None,
                })
            }
            Kind::Ipc(iter) => Box::new(ArrowIter {
                iter,
                project: Some(needed),
                source: source.clone(),
                rest: None,
            }),
            Kind::Csv(input) => {
                let reader = arrow_csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(true)
                    .with_delimiter(source.delimiter)
                    .with_batch_size(BATCH_ROWS)
                    .with_projection(needed)
                    .build(input)
                    .map_err(|e| text_error(source, None, e))?;
                Box::new(CsvBatches {
                    reader,
                    source: source.clone(),
                    single_column: self.schema.fields().len() == 1,
                })
            }
            Kind::Ndjson(input) => {
                let fields: Vec<_> = needed
                    .iter()
                    .map(|&i| self.schema.field(i).clone())
                    .collect();
                let schema = Arc::new(Schema::new(fields));
                Box::new(NdjsonBatches {
                    decoder: ndjson_decoder(&schema)?,
                    schema,
                    input,
                    line: 0,
                    buf: Vec::new(),
                    lines: Vec::new(),
                    source: source.clone(),
                })
            }
        })
    }
}

/// Arrow IPC and in-memory batches. A batch of more than [`BATCH_ROWS`] rows (a whole table
/// in one chunk, say) is handed on in zero-copy slices of at most that many, so the pipeline
/// can share it among its threads and bound the rows in flight as for every other format.
struct ArrowIter {
    iter: ArrowBatches,
    project: Option<Vec<usize>>,
    source: Source,
    /// The rest of a large batch, not yet handed on.
    rest: Option<RecordBatch>,
}

impl ArrowIter {
    fn next_slice(&mut self) -> Result<Option<RecordBatch>> {
        let batch = match self.rest.take() {
            Some(rest) => rest,
            None => match self.iter.next() {
                None => return Ok(None),
                Some(batch) => batch.map_err(|e| match e {
                    ArrowError::IoError(_, io) => self.source.read_error(io),
                    e => malformed(&self.source, None, e),
                })?,
            },
        };
        if batch.num_rows() <= BATCH_ROWS {
            return Ok(Some(batch));
        }
        self.rest = Some(batch.slice(BATCH_ROWS, batch.num_rows() - BATCH_ROWS));
        Ok(Some(batch.slice(0, BATCH_ROWS)))
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

struct CsvBatches {
    reader: arrow_csv::Reader<Box<dyn Read + Send>>,
    source: Source,
    /// The header is one column: an error says which delimiter was used.
    single_column: bool,
}

impl Batches for CsvBatches {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.reader.next().transpose().map_err(|e| {
            let e = text_error(&self.source, None, e);
            if self.single_column {
                one_column(&self.source, e)
            } else {
                e
            }
        })
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
            let n = self
                .input
                .read_until(b'\n', &mut line)
                .map_err(|e| self.source.read_error(e))?;
            if n == 0 {
                return self.flush();
            }
            self.line += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
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
            if self.lines.len() >= BATCH_ROWS {
                return self.flush();
            }
        }
    }
}
