//! Parquet page headers checked before their pages are decompressed.
//!
//! A page header says how large the page is once decompressed, and the decoder allocates that
//! much before it decompresses a byte: 16 KB of file can claim gigabytes. [`PageChecked`] reads
//! each page header as the decoder is about to, and refuses a page that claims more than a
//! quarter of the build's memory limit before any of it is allocated.

use crate::source::RandomAccess;
use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use std::io::{Cursor, Read};
use thrift::protocol::{TCompactInputProtocol, TInputProtocol, TType};

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

    /// The decompressed size the page header at `start` claims, reading as little as needed;
    /// `None` when the bytes there are not a page header the check can read (the decoder
    /// reports those), with the bytes read.
    fn claimed(&self, start: u64) -> parquet::errors::Result<(Option<i64>, Bytes)> {
        let left = self.inner.len().saturating_sub(start);
        let mut peek = HEADER_PEEK.min(left);
        loop {
            let head = self.inner.get_bytes(start, peek as usize)?;
            match uncompressed_size(&head) {
                Parsed::Size(size) => return Ok((Some(size), head)),
                Parsed::Short if peek < left && peek < MAX_HEADER => {
                    peek = (peek * 16).min(left).min(MAX_HEADER)
                }
                Parsed::Short | Parsed::Invalid => return Ok((None, head)),
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
        let (claimed, head) = self.claimed(start)?;
        if let Some(size) = claimed {
            if size as u64 > self.most {
                return Err(ParquetError::General(format!(
                    "the page at byte {start} says it decompresses to {size} bytes, more than a \
                     quarter of the memory limit ({} bytes): the file is damaged, or its pages \
                     need a larger --memory-limit",
                    self.most
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

/// What [`uncompressed_size`] found.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// The header's `uncompressed_page_size` (field 2).
    Size(i64),
    /// The bytes end before the field.
    Short,
    /// The bytes are not a page header.
    Invalid,
}

/// Reads `uncompressed_page_size` (field 2, a required `i32`) of the Thrift compact-encoded
/// `PageHeader` at the start of `bytes`, skipping the fields before it in whatever order they
/// come.
fn uncompressed_size(bytes: &[u8]) -> Parsed {
    // The parser allocates what a string's length says before reading it: no more than the
    // largest header read. A longer string reads as `Short`, and a larger peek follows.
    let Ok(config) = thrift::TConfiguration::builder()
        .max_string_size(Some(MAX_HEADER as usize))
        .max_container_size(Some(MAX_HEADER as usize))
        .max_recursion_depth(Some(64))
        .build()
    else {
        return Parsed::Invalid;
    };
    let mut input = TCompactInputProtocol::with_config(bytes, config);
    let short = |e: &thrift::Error| {
        matches!(e, thrift::Error::Transport(t)
            if t.kind == thrift::TransportErrorKind::EndOfFile)
    };
    let fail = |e: thrift::Error| {
        if short(&e) {
            Parsed::Short
        } else {
            Parsed::Invalid
        }
    };
    if let Err(e) = input.read_struct_begin() {
        return fail(e);
    }
    loop {
        let field = match input.read_field_begin() {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        match (field.id, field.field_type) {
            (_, TType::Stop) => return Parsed::Invalid,
            (Some(2), TType::I32) => {
                return match input.read_i32() {
                    Ok(size) => Parsed::Size(size.into()),
                    Err(e) => fail(e),
                }
            }
            (_, t) => {
                if let Err(e) = input.skip(t) {
                    return fail(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{TCompactOutputProtocol, TFieldIdentifier, TOutputProtocol};

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
    fn reads_the_claimed_size_after_any_fields() {
        assert_eq!(uncompressed_size(&header(123, 0)), Parsed::Size(123));
        let long = header(i32::MAX, 300);
        assert_eq!(uncompressed_size(&long), Parsed::Size(i32::MAX as i64));
        assert_eq!(uncompressed_size(&long[..long.len() / 2]), Parsed::Short);
        assert_eq!(uncompressed_size(&[]), Parsed::Short);
        // A string whose length runs past the bytes, a stop before field 2, a bad type.
        assert_eq!(uncompressed_size(&[0xa8, 0xff, 0xff, 0x03]), Parsed::Short);
        assert_eq!(uncompressed_size(&[0x00]), Parsed::Invalid);
        assert_eq!(uncompressed_size(&[0x1f]), Parsed::Invalid);
    }
}
