//! Block compression (writer side, any thread) and decompression (reader side, per-thread
//! contexts).

use crate::error::{Error, Result};
use crate::layout::Codec;
use std::cell::RefCell;
use zstd::zstd_safe::{CCtx, CDict, DCtx, DDict};

/// Compresses blocks; one per worker thread, sharing the prepared dictionary.
pub(crate) struct Compressor {
    cctx: CCtx<'static>,
    level: i32,
}

/// What blocks are compressed with; shared by all compressors of a writer.
pub(crate) struct CompressionSpec {
    /// `None`: store every block raw.
    pub level: Option<i32>,
    pub dict: Option<CDict<'static>>,
}

impl Compressor {
    pub fn new(level: i32) -> Compressor {
        Compressor {
            cctx: CCtx::create(),
            level,
        }
    }

    /// Returns the stored bytes and codec of a block: compressed when that saves at least an
    /// eighth of the block, raw otherwise (raw blocks are read without copying).
    pub fn compress(&mut self, spec: &CompressionSpec, raw: Vec<u8>) -> Result<(Vec<u8>, Codec)> {
        if spec.level.is_none() || raw.is_empty() {
            return Ok((raw, Codec::Raw));
        }
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
        let (res, codec) = match &spec.dict {
            Some(dict) => (
                self.cctx.compress_using_cdict(&mut out, &raw, dict),
                Codec::ZstdDict,
            ),
            None => (self.cctx.compress(&mut out, &raw, self.level), Codec::Zstd),
        };
        res.map_err(|code| Error::Compression(zstd::zstd_safe::get_error_name(code)))?;
        if out.len() <= raw.len() - raw.len() / 8 {
            Ok((out, codec))
        } else {
            Ok((raw, Codec::Raw))
        }
    }
}

thread_local! {
    static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// Decompresses a block whose decompressed size is known (and bounded by the format's limit).
pub(crate) fn decompress(
    codec: Codec,
    stored: &[u8],
    raw_len: usize,
    dict: Option<&DDict<'static>>,
    block: u32,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw_len);
    let res = DCTX.with(|cell| {
        let mut dctx = cell.borrow_mut();
        match (codec, dict) {
            (Codec::Zstd, _) => dctx.decompress(&mut out, stored),
            (Codec::ZstdDict, Some(d)) => dctx.decompress_using_ddict(&mut out, stored, d),
            (Codec::ZstdDict, None) => Err(0),
            (Codec::Raw, _) => {
                out.extend_from_slice(stored);
                Ok(stored.len())
            }
        }
    });
    match res {
        Ok(n) if n == raw_len => Ok(out),
        Ok(_) => Err(Error::CorruptBlock {
            block,
            detail: "decompressed size differs from the block table",
        }),
        Err(_) if dict.is_none() && codec == Codec::ZstdDict => Err(Error::CorruptBlock {
            block,
            detail: "block needs a dictionary and the file has none",
        }),
        Err(_) => Err(Error::CorruptBlock {
            block,
            detail: "zstd could not decompress the block",
        }),
    }
}
