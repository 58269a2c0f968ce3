//! Sizes in a Parquet file checked before the decoder trusts them.
//!
//! The decoder allocates what the file says before it reads what the file has: a list length in
//! the footer's metadata becomes a `Vec::with_capacity`, and a page header's decompressed size
//! an allocation of that size, so a few KB of file can claim gigabytes.
//! [`load_metadata`] walks the footer's Thrift encoding first and refuses a list longer than
//! the footer's bytes could hold; [`PageChecked`] reads each page header as the decoder is
//! about to, and refuses a page that claims more than a quarter of the build's memory limit
//! before any of it is allocated.

use crate::source::RandomAccess;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use std::io::{Cursor, Read};
use std::sync::Arc;

/// The metadata of the Parquet file `file`, read as [`ArrowReaderMetadata::load`] does once its
/// footer is checked: every list, string and nesting level in it must fit in the footer's
/// bytes, and the footer in a quarter of `memory_limit`. Footers this cannot check (encrypted,
/// or too short to be one) are left to the decoder, which reports them.
pub(crate) fn load_metadata(
    file: &RandomAccess,
    options: ArrowReaderOptions,
    memory_limit: u64,
) -> parquet::errors::Result<ArrowReaderMetadata> {
    let len = file.len();
    if len < 8 {
        return ArrowReaderMetadata::load(file, options);
    }
    let footer = FooterTail::try_from(file.get_bytes(len - 8, 8)?.as_ref())?;
    let size = footer.metadata_length() as u64;
    if footer.is_encrypted_footer() || size > len - 8 {
        return ArrowReaderMetadata::load(file, options);
    }
    if size > memory_limit / 4 {
        return Err(ParquetError::General(format!(
            "the footer's metadata is {size} bytes, more than a quarter of the memory limit \
             ({} bytes): raise --memory-limit if the file is right",
            memory_limit / 4
        )));
    }
    let bytes = file.get_bytes(len - 8 - size, size as usize)?;
    check_thrift(&bytes)
        .map_err(|e| ParquetError::General(format!("the footer's metadata is damaged: {e}")))?;
    let metadata = ParquetMetaDataReader::decode_metadata(&bytes)?;
    ArrowReaderMetadata::try_new(Arc::new(metadata), options)
}

/// Checks the Thrift compact encoding of a `FileMetaData` as the decoder will read it: the
/// decoder reads each field it knows as the type Parquet's schema gives it, whatever type the
/// bytes say, so a field whose bytes claim another type is refused (the two readings would part
/// ways, and a varint read as a list header becomes a list length); every list, string and
/// struct must fit in the bytes left, nesting at most 64 deep.
fn check_thrift(bytes: &[u8]) -> Result<(), String> {
    let mut input = Compact { bytes, at: 0 };
    input.fields(
        FILE_META_DATA,
        "FileMetaData",
        0,
        &mut Vec::new(),
        &mut |_, _| {},
    )
}

/// What [`Compact`] says when the bytes end inside a value.
const ENDS_EARLY: &str = "it ends inside a value";

/// The sizes a page header claims, as the decoder will read them.
#[derive(Debug, PartialEq)]
struct PageClaims {
    /// `uncompressed_page_size`: what the decoder allocates to decompress the page.
    uncompressed: i64,
    /// A dictionary page's `num_values`: the decoder sets aside offsets for as many values.
    dictionary_values: Option<i64>,
}

/// What [`page_claims`] found, short of claims.
#[derive(Debug, PartialEq)]
enum NoClaims {
    /// The bytes end inside the header.
    Short,
    /// The bytes are not a page header the decoder would read the same way.
    Invalid(String),
}

/// Reads a Thrift compact-encoded `PageHeader` at the start of `bytes`, each field it knows
/// checked against the type Parquet gives it (see [`check_thrift`]).
fn page_claims(bytes: &[u8]) -> Result<PageClaims, NoClaims> {
    let mut input = Compact { bytes, at: 0 };
    let mut uncompressed = None;
    let mut dictionary_values = None;
    input
        .fields(
            PAGE_HEADER,
            "PageHeader",
            0,
            &mut Vec::new(),
            &mut |path, v| match path {
                [2] => uncompressed = Some(v),
                [7, 1] => dictionary_values = Some(v),
                _ => {}
            },
        )
        .map_err(|e| {
            if e == ENDS_EARLY {
                NoClaims::Short
            } else {
                NoClaims::Invalid(e)
            }
        })?;
    Ok(PageClaims {
        uncompressed: uncompressed
            .ok_or_else(|| NoClaims::Invalid("it has no uncompressed_page_size".into()))?,
        dictionary_values,
    })
}

/// A Thrift type as Parquet's schema declares a field or element.
#[derive(Clone, Copy)]
enum T {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    Binary,
    List(&'static T),
    Struct(&'static str, &'static [(i16, T)]),
}

impl T {
    /// The compact protocol's type code for a field of this type (a bool field's value is in
    /// its code: 1 true, 2 false).
    fn accepts(self, code: u8) -> bool {
        match self {
            T::Bool => code == 1 || code == 2,
            T::I8 => code == 3,
            T::I16 => code == 4,
            T::I32 => code == 5,
            T::I64 => code == 6,
            T::Double => code == 7,
            T::Binary => code == 8,
            T::List(_) => code == 9,
            T::Struct(..) => code == 12,
        }
    }
}

const EMPTY: T = T::Struct("an empty struct", &[]);
const TIME_UNIT: T = T::Struct("TimeUnit", &[(1, EMPTY), (2, EMPTY), (3, EMPTY)]);
const LOGICAL_TYPE: T = T::Struct(
    "LogicalType",
    &[
        (1, EMPTY),
        (2, EMPTY),
        (3, EMPTY),
        (4, EMPTY),
        (5, T::Struct("DecimalType", &[(1, T::I32), (2, T::I32)])),
        (6, EMPTY),
        (7, T::Struct("TimeType", &[(1, T::Bool), (2, TIME_UNIT)])),
        (
            8,
            T::Struct("TimestampType", &[(1, T::Bool), (2, TIME_UNIT)]),
        ),
        (10, T::Struct("IntType", &[(1, T::I8), (2, T::Bool)])),
        (11, EMPTY),
        (12, EMPTY),
        (13, EMPTY),
        (14, EMPTY),
        (15, EMPTY),
        (16, T::Struct("VariantType", &[(1, T::I8)])),
        (17, T::Struct("GeometryType", &[(1, T::Binary)])),
        (
            18,
            T::Struct("GeographyType", &[(1, T::Binary), (2, T::I32)]),
        ),
    ],
);
const SCHEMA_ELEMENT: T = T::Struct(
    "SchemaElement",
    &[
        (1, T::I32),
        (2, T::I32),
        (3, T::I32),
        (4, T::Binary),
        (5, T::I32),
        (6, T::I32),
        (7, T::I32),
        (8, T::I32),
        (9, T::I32),
        (10, LOGICAL_TYPE),
    ],
);
const KEY_VALUE: T = T::Struct("KeyValue", &[(1, T::Binary), (2, T::Binary)]);
const STATISTICS: T = T::Struct(
    "Statistics",
    &[
        (1, T::Binary),
        (2, T::Binary),
        (3, T::I64),
        (4, T::I64),
        (5, T::Binary),
        (6, T::Binary),
        (7, T::Bool),
        (8, T::Bool),
    ],
);
const COLUMN_META_DATA: T = T::Struct(
    "ColumnMetaData",
    &[
        (1, T::I32),
        (2, T::List(&T::I32)),
        (3, T::List(&T::Binary)),
        (4, T::I32),
        (5, T::I64),
        (6, T::I64),
        (7, T::I64),
        (8, T::List(&KEY_VALUE)),
        (9, T::I64),
        (10, T::I64),
        (11, T::I64),
        (12, STATISTICS),
        (
            13,
            T::List(&T::Struct(
                "PageEncodingStats",
                &[(1, T::I32), (2, T::I32), (3, T::I32)],
            )),
        ),
        (14, T::I64),
        (15, T::I32),
        (
            16,
            T::Struct(
                "SizeStatistics",
                &[(1, T::I64), (2, T::List(&T::I64)), (3, T::List(&T::I64))],
            ),
        ),
        (
            17,
            T::Struct(
                "GeospatialStatistics",
                &[
                    (
                        1,
                        T::Struct(
                            "BoundingBox",
                            &[
                                (1, T::Double),
                                (2, T::Double),
                                (3, T::Double),
                                (4, T::Double),
                                (5, T::Double),
                                (6, T::Double),
                                (7, T::Double),
                                (8, T::Double),
                            ],
                        ),
                    ),
                    (2, T::List(&T::I32)),
                ],
            ),
        ),
    ],
);
const COLUMN_CHUNK: T = T::Struct(
    "ColumnChunk",
    &[
        (1, T::Binary),
        (2, T::I64),
        (3, COLUMN_META_DATA),
        (4, T::I64),
        (5, T::I32),
        (6, T::I64),
        (7, T::I32),
        (
            8,
            T::Struct(
                "ColumnCryptoMetaData",
                &[
                    (1, EMPTY),
                    (
                        2,
                        T::Struct(
                            "EncryptionWithColumnKey",
                            &[(1, T::List(&T::Binary)), (2, T::Binary)],
                        ),
                    ),
                ],
            ),
        ),
        (9, T::Binary),
    ],
);
const ROW_GROUP: T = T::Struct(
    "RowGroup",
    &[
        (1, T::List(&COLUMN_CHUNK)),
        (2, T::I64),
        (3, T::I64),
        (
            4,
            T::List(&T::Struct(
                "SortingColumn",
                &[(1, T::I32), (2, T::Bool), (3, T::Bool)],
            )),
        ),
        (5, T::I64),
        (6, T::I64),
        (7, T::I16),
    ],
);
const AES_GCM: &[(i16, T)] = &[(1, T::Binary), (2, T::Binary), (3, T::Bool)];
const FILE_META_DATA: &[(i16, T)] = &[
    (1, T::I32),
    (2, T::List(&SCHEMA_ELEMENT)),
    (3, T::I64),
    (4, T::List(&ROW_GROUP)),
    (5, T::List(&KEY_VALUE)),
    (6, T::Binary),
    (7, T::List(&T::Struct("ColumnOrder", &[(1, EMPTY)]))),
    (
        8,
        T::Struct(
            "EncryptionAlgorithm",
            &[
                (1, T::Struct("AesGcmV1", AES_GCM)),
                (2, T::Struct("AesGcmCtrV1", AES_GCM)),
            ],
        ),
    ),
    (9, T::Binary),
];

const PAGE_HEADER: &[(i16, T)] = &[
    (1, T::I32),
    (2, T::I32),
    (3, T::I32),
    (4, T::I32),
    (
        5,
        T::Struct(
            "DataPageHeader",
            &[
                (1, T::I32),
                (2, T::I32),
                (3, T::I32),
                (4, T::I32),
                (5, STATISTICS),
            ],
        ),
    ),
    (6, EMPTY),
    (
        7,
        T::Struct(
            "DictionaryPageHeader",
            &[(1, T::I32), (2, T::I32), (3, T::Bool)],
        ),
    ),
    (
        8,
        T::Struct(
            "DataPageHeaderV2",
            &[
                (1, T::I32),
                (2, T::I32),
                (3, T::I32),
                (4, T::I32),
                (5, T::I32),
                (6, T::I32),
                (7, T::Bool),
                (8, STATISTICS),
            ],
        ),
    ),
];

/// Thrift's compact protocol over bytes, read as Parquet's decoder reads it.
struct Compact<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Compact<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("it ends inside a value")?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint runs past 10 bytes".into())
    }

    /// Skips `n` bytes that must be there.
    fn take(&mut self, n: u64) -> Result<(), String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            // Short of the value: more bytes may hold it (a page header read ahead).
            return Err(ENDS_EARLY.into());
        }
        self.at += n as usize;
        Ok(())
    }

    /// The fields of a struct, checked against `fields` (unknown ones are skipped, as the
    /// decoder skips them), up to its stop byte.
    /// `found` is told every `i32` field of a known struct, by its path of field ids.
    fn fields(
        &mut self,
        fields: &[(i16, T)],
        name: &str,
        depth: u32,
        path: &mut Vec<i16>,
        found: &mut dyn FnMut(&[i16], i64),
    ) -> Result<(), String> {
        if depth > 64 {
            return Err("structs nest more than 64 deep".into());
        }
        let mut id: i16 = 0;
        loop {
            let header = self.byte()?;
            if header == 0 {
                return Ok(());
            }
            let code = header & 0x0f;
            id = match header >> 4 {
                0 => {
                    let z = self.varint()?;
                    i16::try_from((z >> 1) as i64 ^ -((z & 1) as i64))
                        .map_err(|_| "a field id is out of range".to_string())?
                }
                delta => id
                    .checked_add(i16::from(delta))
                    .ok_or("a field id is out of range")?,
            };
            match fields.iter().find(|(i, _)| *i == id) {
                Some(&(_, t)) if !t.accepts(code) => {
                    return Err(format!(
                        "field {id} of {name} has type code {code}, not the type Parquet gives it"
                    ))
                }
                Some(&(_, T::I32)) => {
                    let z = self.varint()?;
                    path.push(id);
                    found(path, (z >> 1) as i64 ^ -((z & 1) as i64));
                    path.pop();
                }
                Some(&(_, T::Struct(name, fields))) => {
                    path.push(id);
                    self.fields(fields, name, depth + 1, path, found)?;
                    path.pop();
                }
                Some(&(_, t)) => self.value(t, code, depth)?,
                None => self.skip(code, depth)?,
            }
        }
    }

    /// A value of type `t` whose type code is `code` (checked by the caller).
    fn value(&mut self, t: T, code: u8, depth: u32) -> Result<(), String> {
        match t {
            T::Struct(name, fields) => {
                self.fields(fields, name, depth + 1, &mut Vec::new(), &mut |_, _| {})
            }
            T::List(element) => {
                let (count, code) = self.list_header()?;
                if count > 0 && !element.accepts(code) && !(matches!(element, T::Bool) && code == 1)
                {
                    return Err(format!(
                        "a list's elements have type code {code}, not theirs"
                    ));
                }
                for _ in 0..count {
                    match element {
                        // A bool in a list takes a byte.
                        T::Bool => self.take(1)?,
                        e => self.value(*e, code, depth)?,
                    }
                }
                Ok(())
            }
            _ => self.skip(code, depth),
        }
    }

    /// A list or set header: its length, no more than the bytes left (every element takes at
    /// least one), and its elements' type code.
    fn list_header(&mut self) -> Result<(u64, u8), String> {
        let header = self.byte()?;
        if header == 0 {
            // Some writers mark an empty list with a zero byte.
            return Ok((0, 0));
        }
        let count = match header >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        let left = (self.bytes.len() - self.at) as u64;
        if count > left {
            return Err(format!(
                "a list claims {count} elements where {left} bytes are left"
            ));
        }
        Ok((count, header & 0x0f))
    }

    /// Skips a value of any type by its type code.
    fn skip(&mut self, code: u8, depth: u32) -> Result<(), String> {
        match code {
            1 | 2 => Ok(()),
            3 => self.take(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.take(8),
            8 => {
                let n = self.varint()?;
                self.take(n)
            }
            9 | 10 => {
                let (count, code) = self.list_header()?;
                for _ in 0..count {
                    match code {
                        1 | 2 => self.take(1)?,
                        c => self.skip(c, depth)?,
                    }
                }
                Ok(())
            }
            11 => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                let types = self.byte()?;
                let left = (self.bytes.len() - self.at) as u64;
                if count > left {
                    return Err(format!(
                        "a map claims {count} entries where {left} bytes are left"
                    ));
                }
                for _ in 0..count {
                    for c in [types >> 4, types & 0x0f] {
                        match c {
                            1 | 2 => self.take(1)?,
                            c => self.skip(c, depth)?,
                        }
                    }
                }
                Ok(())
            }
            12 => self.fields(&[], "a struct", depth + 1, &mut Vec::new(), &mut |_, _| {}),
            c => Err(format!("type code {c} is not a Thrift type")),
        }
    }
}

/// Bytes read ahead of a page header to parse it; a larger header is read again in full, up
/// to [`MAX_HEADER`].
const HEADER_PEEK: u64 = 16 << 10;
/// The largest page header read; a larger one is left to the decoder, which refuses it.
const MAX_HEADER: u64 = 16 << 20;

/// A Parquet file whose page headers are checked as the decoder opens them.
pub(crate) struct PageChecked {
    inner: RandomAccess,
    /// The most bytes one page may decompress to.
    most: u64,
}

impl PageChecked {
    /// Checks pages of `inner` against `memory_limit`: a page may decompress to a quarter of it.
    pub(crate) fn new(inner: RandomAccess, memory_limit: u64) -> PageChecked {
        PageChecked {
            inner,
            most: memory_limit / 4,
        }
    }

    /// The claims of the page header at `start`, reading as little as needed, with the bytes
    /// read; `None` when the header runs past [`MAX_HEADER`] or the file (the decoder reports
    /// those).
    fn claims(&self, start: u64) -> parquet::errors::Result<(Option<PageClaims>, Bytes)> {
        let left = self.inner.len().saturating_sub(start);
        let mut peek = HEADER_PEEK.min(left);
        loop {
            let head = self.inner.get_bytes(start, peek as usize)?;
            match page_claims(&head) {
                Ok(claims) => return Ok((Some(claims), head)),
                Err(NoClaims::Short) if peek < left && peek < MAX_HEADER => {
                    peek = (peek * 16).min(left).min(MAX_HEADER)
                }
                Err(NoClaims::Short) => return Ok((None, head)),
                Err(NoClaims::Invalid(e)) => {
                    return Err(ParquetError::General(format!(
                        "the page header at byte {start} is damaged: {e}"
                    )))
                }
            }
        }
    }
}

impl Length for PageChecked {
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl ChunkReader for PageChecked {
    type T = Box<dyn Read + Send>;

    /// The decoder reads a page header through this, then the page with
    /// [`ChunkReader::get_bytes`]: the header is checked here, from bytes handed on to the
    /// decoder so that nothing is read twice.
    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let (claims, head) = self.claims(start)?;
        if let Some(c) = claims {
            if c.uncompressed < 0 || c.uncompressed as u64 > self.most {
                return Err(ParquetError::General(format!(
                    "the page at byte {start} says it decompresses to {} bytes, more than a \
                     quarter of the memory limit ({} bytes): the file is damaged, or its pages \
                     need a larger --memory-limit",
                    c.uncompressed, self.most
                )));
            }
            // Every value of a dictionary (plain-encoded) takes at least a byte of the page.
            if let Some(n) = c.dictionary_values.filter(|&n| n < 0 || n > c.uncompressed) {
                return Err(ParquetError::General(format!(
                    "the dictionary page at byte {start} says it holds {n} values in {} bytes: \
                     the file is damaged",
                    c.uncompressed
                )));
            }
        }
        let rest = start + head.len() as u64;
        Ok(Box::new(
            Cursor::new(head).chain(self.inner.get_read(rest)?),
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.inner.get_bytes(start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{TCompactOutputProtocol, TFieldIdentifier, TOutputProtocol, TType};

    /// A compact-encoded header: `before` i64 fields (ids 10..), then field 2 = `size`.
    fn header(size: i32, before: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = TCompactOutputProtocol::new(&mut out);
        p.write_struct_begin(&thrift::protocol::TStructIdentifier::new("PageHeader"))
            .unwrap();
        for i in 0..before {
            p.write_field_begin(&TFieldIdentifier::new("x", TType::String, 10 + i as i16))
                .unwrap();
            p.write_bytes(&[7u8; 100]).unwrap();
            p.write_field_end().unwrap();
        }
        p.write_field_begin(&TFieldIdentifier::new("type", TType::I32, 1))
            .unwrap();
        p.write_i32(0).unwrap();
        p.write_field_end().unwrap();
        p.write_field_begin(&TFieldIdentifier::new("u", TType::I32, 2))
            .unwrap();
        p.write_i32(size).unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.flush().unwrap();
        drop(p);
        out
    }

    #[test]
    fn footers_are_read_as_the_decoder_reads_them() {
        // A footer as the writer makes it passes.
        let batch = arrow_array::RecordBatch::try_from_iter([(
            "k",
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["a", "b"]))
                as arrow_array::ArrayRef,
        )])
        .unwrap();
        let mut file = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let n = u32::from_le_bytes(file[file.len() - 8..file.len() - 4].try_into().unwrap());
        let footer = &file[file.len() - 8 - n as usize..file.len() - 8];
        assert_eq!(check_thrift(footer), Ok(()));
        // Field 2 (the schema, a list) with the type code of an i64.
        let e = check_thrift(&[0x15, 0x02, 0x16, 0x02, 0x00]).unwrap_err();
        assert!(e.contains("field 2 of FileMetaData has type code 6"), "{e}");
        // A list of 2^31 - 1 structs in 8 bytes.
        let e = check_thrift(&[0x15, 0x02, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07]).unwrap_err();
        assert!(e.contains("a list claims 2147483647 elements"), "{e}");
        // A string longer than what is left, structs nested past 64, the end inside a value.
        assert!(check_thrift(&[0x68, 0x7f]).is_err());
        let mut deep = vec![0xac];
        deep.extend([0x1c; 70]);
        deep.extend([0; 72]);
        assert!(check_thrift(&deep).unwrap_err().contains("nest"));
        assert!(check_thrift(&[0x15]).is_err());
    }

    #[test]
    fn reads_the_claimed_sizes_after_any_fields() {
        let claims = |uncompressed| PageClaims {
            uncompressed,
            dictionary_values: None,
        };
        assert_eq!(page_claims(&header(123, 0)), Ok(claims(123)));
        // Unknown fields (ids 10..) with 100-byte strings come first.
        let long = header(i32::MAX, 300);
        assert_eq!(page_claims(&long), Ok(claims(i32::MAX as i64)));
        assert_eq!(page_claims(&long[..long.len() / 2]), Err(NoClaims::Short));
        assert_eq!(page_claims(&[]), Err(NoClaims::Short));
        // A string whose length runs past the bytes: more bytes may hold it.
        assert_eq!(page_claims(&[0xa8, 0xff, 0xff, 0x03]), Err(NoClaims::Short));
        // A stop before field 2; field 2 with the type code of a list; a bad type code.
        assert!(matches!(page_claims(&[0x00]), Err(NoClaims::Invalid(_))));
        assert!(matches!(
            page_claims(&[0x15, 0x00, 0x19, 0x00]),
            Err(NoClaims::Invalid(_))
        ));
        assert!(matches!(page_claims(&[0x1f]), Err(NoClaims::Invalid(_))));
        // A dictionary page: type 2, sizes 100 and 40, field 7 {num_values: 1000}.
        let dictionary = [
            0x15, 0x04, 0x15, 0xc8, 0x01, 0x15, 0x50, 0x4c, 0x15, 0xd0, 0x0f, 0x00, 0x00,
        ];
        assert_eq!(
            page_claims(&dictionary),
            Ok(PageClaims {
                uncompressed: 100,
                dictionary_values: Some(1000)
            })
        );
    }
}
