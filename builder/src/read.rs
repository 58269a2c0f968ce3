//! Opening one data file and streaming its record batches, projected to the columns a build
//! needs.

use crate::error::{Error, Result};
use crate::input::Source;
use crate::InputFormat;
use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rows per record batch.
pub(crate) const BATCH_ROWS: usize = 8192;
/// CSV and NDJSON column types are inferred from this many leading rows.
pub(crate) const INFER_ROWS: usize = 10_000;
/// Reading stdin, at most this much is held back to infer the schema from.
const STDIN_SAMPLE_BYTES: usize = 64 << 20;

/// A file opened far enough to know its schema.
pub(crate) struct Opened {
    /// The file's columns.
    pub schema: SchemaRef,
    /// Rows in the file, when its format records them.
    pub rows: Option<u64>,
    /// Bytes consumed from the file so far, for formats read as a stream.
    pub consumed: Arc<AtomicU64>,
    kind: Kind,
}

/// Counts the bytes read through it (for progress).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.count.store(at, Ordering::Relaxed);
        Ok(at)
    }
}

enum Kind {
    Parquet(ParquetRecordBatchReaderBuilder<File>),
    Ipc(Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>),
    Csv(Box<dyn Read + Send>),
    Ndjson(Box<dyn BufRead + Send>),
}

/// Streams record batches of one file.
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

fn read_error(source: &Source, e: std::io::Error) -> Error {
    Error::Read {
        input: source.name.clone(),
        source: e,
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
        return read_error(source, io);
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

/// Opens a source and reads its schema. `text_columns` are read as strings from CSV whatever
/// they look like (keys keep their exact text: `007` stays `007`).
pub(crate) fn open(source: &Source, text_columns: &[String]) -> Result<Opened> {
    let file = match &source.path {
        Some(p) => Some(File::open(p).map_err(|e| read_error(source, e))?),
        None => None,
    };
    let consumed = Arc::new(AtomicU64::new(0));
    let count = |inner| Counting {
        inner,
        count: consumed.clone(),
    };
    let stdin = || Counting {
        inner: std::io::stdin(),
        count: consumed.clone(),
    };
    match source.format {
        InputFormat::Parquet => {
            let file = file.expect("stdin is never Parquet");
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| malformed(source, None, e))?;
            Ok(Opened {
                schema: builder.schema().clone(),
                rows: Some(builder.metadata().file_metadata().num_rows().max(0) as u64),
                consumed,
                kind: Kind::Parquet(builder),
            })
        }
        InputFormat::Arrow => {
            let input: Box<dyn Read + Send> = match file {
                Some(f) => Box::new(count(f)),
                None => Box::new(stdin()),
            };
            let mut input = BufReader::with_capacity(1 << 20, input);
            let is_file = input
                .fill_buf()
                .map_err(|e| read_error(source, e))?
                .starts_with(b"ARROW1");
            if is_file {
                let (schema, kind) = match &source.path {
                    Some(path) => {
                        let f = File::open(path).map_err(|e| read_error(source, e))?;
                        let reader =
                            arrow_ipc::reader::FileReader::try_new(BufReader::new(count(f)), None)
                                .map_err(|e| malformed(source, None, e))?;
                        (reader.schema(), Kind::Ipc(Box::new(reader)))
                    }
                    None => {
                        // The IPC file format is read from its end (the footer): standard
                        // input is first copied to an anonymous temporary file, which the
                        // system removes when it is closed, however the build ends. Its bytes
                        // were counted as they came in.
                        let mut spool = tempfile::tempfile().map_err(|e| read_error(source, e))?;
                        std::io::copy(&mut input, &mut spool)
                            .and_then(|_| spool.seek(std::io::SeekFrom::Start(0)))
                            .map_err(|e| read_error(source, e))?;
                        let reader =
                            arrow_ipc::reader::FileReader::try_new(BufReader::new(spool), None)
                                .map_err(|e| malformed(source, None, e))?;
                        (reader.schema(), Kind::Ipc(Box::new(reader)))
                    }
                };
                Ok(Opened {
                    schema,
                    rows: None,
                    consumed,
                    kind,
                })
            } else {
                let reader = arrow_ipc::reader::StreamReader::try_new(input, None)
                    .map_err(|e| malformed(source, None, e))?;
                Ok(Opened {
                    schema: reader.schema(),
                    rows: None,
                    consumed,
                    kind: Kind::Ipc(Box::new(reader)),
                })
            }
        }
        InputFormat::Csv => {
            let format = arrow_csv::reader::Format::default().with_header(true);
            let (schema, input): (Schema, Box<dyn Read + Send>) = match file {
                Some(f) => {
                    let mut r = skip_bom(BufReader::with_capacity(1 << 20, count(f)))
                        .map_err(|e| read_error(source, e))?;
                    let (schema, _) = format
                        .infer_schema(&mut r, Some(INFER_ROWS))
                        .map_err(|e| text_error(source, None, e))?;
                    r.rewind().map_err(|e| read_error(source, e))?;
                    let r = skip_bom(r).map_err(|e| read_error(source, e))?;
                    (schema, Box::new(r))
                }
                None => {
                    let (sample, rest) = stdin_sample(source, stdin())?;
                    let sample = skip_bom(std::io::Cursor::new(sample))
                        .map_err(|e| read_error(source, e))?;
                    let (schema, _) = format
                        .infer_schema(sample.clone(), Some(INFER_ROWS))
                        .map_err(|e| text_error(source, None, e))?;
                    (schema, Box::new(sample.chain(rest)))
                }
            };
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
            Ok(Opened {
                schema: Arc::new(Schema::new(fields)),
                rows: None,
                consumed,
                kind: Kind::Csv(input),
            })
        }
        InputFormat::Ndjson => {
            let (sample_lines, input): (Vec<Vec<u8>>, Box<dyn BufRead + Send>) = match file {
                Some(f) => {
                    let mut r = skip_bom(BufReader::with_capacity(1 << 20, count(f)))
                        .map_err(|e| read_error(source, e))?;
                    let lines = read_lines(source, &mut r, INFER_ROWS, usize::MAX)?;
                    r.rewind().map_err(|e| read_error(source, e))?;
                    let r = skip_bom(r).map_err(|e| read_error(source, e))?;
                    (lines, Box::new(r))
                }
                None => {
                    let mut stdin = skip_bom(BufReader::with_capacity(1 << 20, stdin()))
                        .map_err(|e| read_error(source, e))?;
                    let lines = read_lines(source, &mut stdin, INFER_ROWS, STDIN_SAMPLE_BYTES)?;
                    let replay: Vec<u8> = lines.concat();
                    (lines, Box::new(std::io::Cursor::new(replay).chain(stdin)))
                }
            };
            let mut values = Vec::new();
            for (i, line) in sample_lines.iter().enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line_no = Some(i as u64 + 1);
                let text = std::str::from_utf8(line).map_err(|_| Error::NotUtf8 {
                    input: source.name.clone(),
                    what: format!("line {}", i + 1),
                })?;
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(v @ serde_json::Value::Object(_)) => values.push(v),
                    Ok(_) => return Err(malformed(source, line_no, "not a JSON object")),
                    Err(e) => return Err(malformed(source, line_no, e)),
                }
            }
            let schema = arrow_json::reader::infer_json_schema_from_iterator(
                values.into_iter().map(Ok::<_, ArrowError>),
            )
            .map_err(|e| malformed(source, None, e))?;
            Ok(Opened {
                schema: Arc::new(schema),
                rows: None,
                consumed,
                kind: Kind::Ndjson(input),
            })
        }
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
            .map_err(|e| read_error(source, e))?
            == 0
        {
            break;
        }
        bytes += line.len();
        lines.push(line);
    }
    Ok(lines)
}

/// The head of stdin (enough rows to infer a CSV schema from) and the rest of it.
fn stdin_sample(
    source: &Source,
    stdin: impl Read + Send + 'static,
) -> Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut stdin = BufReader::with_capacity(1 << 20, stdin);
    let lines = read_lines(source, &mut stdin, INFER_ROWS + 1, STDIN_SAMPLE_BYTES)?;
    Ok((lines.concat(), Box::new(stdin)))
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
                })
            }
            Kind::Ipc(iter) => Box::new(ArrowIter {
                iter,
                project: Some(needed),
                source: source.clone(),
            }),
            Kind::Csv(input) => {
                let reader = arrow_csv::ReaderBuilder::new(self.schema)
                    .with_header(true)
                    .with_batch_size(BATCH_ROWS)
                    .with_projection(needed)
                    .build(input)
                    .map_err(|e| text_error(source, None, e))?;
                Box::new(CsvBatches {
                    reader,
                    source: source.clone(),
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

struct ArrowIter {
    iter: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
    project: Option<Vec<usize>>,
    source: Source,
}

impl Batches for ArrowIter {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(batch) = self.iter.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| match e {
            ArrowError::IoError(_, io) => read_error(&self.source, io),
            e => malformed(&self.source, None, e),
        })?;
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
}

impl Batches for CsvBatches {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.reader
            .next()
            .transpose()
            .map_err(|e| text_error(&self.source, None, e))
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
                .map_err(|e| read_error(&self.source, e))?;
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
