//! The entries inside a (decompressed) block.
//!
//! Version 1: an entry is `varint shared · varint suffix_len · varint value_len · suffix ·
//! value`, where the key is the first `shared` bytes of the previous key in the block followed
//! by `suffix`; the first entry of a block has `shared = 0`. Version 2: an entry is `varint
//! key_len · varint value_len · key · value`, each key whole, so an entry can be read on its own
//! from its offset. Entries are in strictly increasing key order.

use crate::error::{Error, Result};
use crate::varint;

/// Entry header varints are values below 2^35, at most 5 bytes (FORMAT.md, "Conventions").
const HEADER_VARINT_BITS: u32 = 35;

/// Reads one entry header varint.
#[inline]
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<usize> {
    varint::get_bits(buf, pos, HEADER_VARINT_BITS).and_then(|v| usize::try_from(v).ok())
}

pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How a block's entries hold their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keys {
    /// Version 1: the part of the key past what it shares with the previous key.
    Prefixed,
    /// Version 2: the whole key.
    Whole,
}

impl Keys {
    /// The key encoding of a format version.
    pub fn of(version: u32) -> Keys {
        if version == 1 {
            Keys::Prefixed
        } else {
            Keys::Whole
        }
    }
}

/// Appends one entry to `buf`, given the previous key of the block (empty for the first).
pub(crate) fn put_entry(buf: &mut Vec<u8>, keys: Keys, prev: &[u8], key: &[u8], value: &[u8]) {
    let shared = match keys {
        Keys::Prefixed => {
            let shared = common_prefix(prev, key);
            varint::put(buf, shared as u64);
            shared
        }
        Keys::Whole => 0,
    };
    varint::put(buf, (key.len() - shared) as u64);
    varint::put(buf, value.len() as u64);
    buf.extend_from_slice(&key[shared..]);
    buf.extend_from_slice(value);
}

/// The encoded size of an entry, at most (as if nothing were shared).
pub(crate) fn entry_len_bound(keys: Keys, key: &[u8], value: &[u8]) -> usize {
    let v = |n: usize| varint::len(n as u64);
    let shared = if keys == Keys::Prefixed { v(0) } else { 0 };
    shared + v(key.len()) + v(value.len()) + key.len() + value.len()
}

/// One decoded entry header: where its key suffix and value lie in the block.
struct Head {
    shared: usize,
    suffix: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

#[inline]
fn read_head(buf: &[u8], pos: &mut usize, keys: Keys, block: u32) -> Result<Head> {
    // `ok_or_else`: the error is built only on the (cold) failure path, never per entry.
    let corrupt = |detail| move || Error::CorruptBlock { block, detail };
    let shared = match keys {
        Keys::Prefixed => get_varint(buf, pos).ok_or_else(corrupt("bad entry header"))?,
        Keys::Whole => 0,
    };
    let suffix_len = get_varint(buf, pos).ok_or_else(corrupt("bad entry header"))?;
    let value_len = get_varint(buf, pos).ok_or_else(corrupt("bad entry header"))?;
    let suffix_end = pos
        .checked_add(suffix_len)
        .filter(|e| *e <= buf.len())
        .ok_or_else(corrupt("key runs past the end of the block"))?;
    let value_end = suffix_end
        .checked_add(value_len)
        .filter(|e| *e <= buf.len())
        .ok_or_else(corrupt("value runs past the end of the block"))?;
    let head = Head {
        shared,
        suffix: *pos..suffix_end,
        value: suffix_end..value_end,
    };
    *pos = value_end;
    Ok(head)
}

/// The value of the entry at `offset` of a version 2 block if its key is `key`. An offset at or
/// past the end of the block, or an entry that does not fit in it, is an error.
#[inline]
pub(crate) fn entry_at(
    buf: &[u8],
    offset: usize,
    key: &[u8],
    block: u32,
) -> Result<Option<std::ops::Range<usize>>> {
    if offset >= buf.len() {
        return Err(Error::CorruptBlock {
            block,
            detail: "lookup points past the end of the block",
        });
    }
    let mut pos = offset;
    let head = read_head(buf, &mut pos, Keys::Whole, block)?;
    Ok((buf[head.suffix] == *key).then_some(head.value))
}

/// Finds `key` in a version 1 block; returns the range of its value.
///
/// Keys are never rebuilt: `matched` tracks how many leading bytes of `key` the previous entry's
/// key shares, which with each entry's `shared` count decides the comparison (see FORMAT.md).
pub(crate) fn find(buf: &[u8], key: &[u8], block: u32) -> Result<Option<std::ops::Range<usize>>> {
    let mut pos = 0;
    let mut matched = 0usize;
    let mut first = true;
    while pos < buf.len() {
        let head = read_head(buf, &mut pos, Keys::Prefixed, block)?;
        if first {
            if head.shared != 0 {
                return Err(Error::CorruptBlock {
                    block,
                    detail: "first entry shares a prefix",
                });
            }
            first = false;
        }
        if head.shared > matched {
            // The entry's key agrees with the previous key past the point where that key was
            // already smaller than `key`: still smaller.
            continue;
        }
        if head.shared < matched {
            // The entry's key differs from the previous key (and so from `key`) at byte
            // `shared`, upwards: it is larger than `key`.
            return Ok(None);
        }
        let suffix = &buf[head.suffix];
        let rest = &key[matched.min(key.len())..];
        let c = common_prefix(suffix, rest);
        match (c == suffix.len(), c == rest.len()) {
            (true, true) => return Ok(Some(head.value)),
            // The entry's key is a proper prefix of `key`: smaller.
            (true, false) => matched += c,
            // `key` is a proper prefix of the entry's key: larger.
            (false, true) => return Ok(None),
            (false, false) => {
                if suffix[c] > rest[c] {
                    return Ok(None);
                }
                matched += c;
            }
        }
    }
    Ok(None)
}

/// Walks the entries of one block in order, rebuilding keys.
pub(crate) struct Cursor {
    pos: usize,
    /// Where the entry last returned starts.
    start: usize,
    key: Vec<u8>,
    keys: Keys,
    block: u32,
}

impl Cursor {
    pub fn new(block: u32, keys: Keys) -> Cursor {
        Cursor {
            pos: 0,
            start: 0,
            key: Vec::new(),
            keys,
            block,
        }
    }

    /// Where the entry last returned by [`Cursor::next`] starts in the block.
    pub fn entry_offset(&self) -> usize {
        self.start
    }

    /// The key of the entry last returned by [`Cursor::next`].
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Advances to the next entry; returns the range of its value, or `None` at the end.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<std::ops::Range<usize>>> {
        if self.pos >= buf.len() {
            return Ok(None);
        }
        let first = self.pos == 0;
        self.start = self.pos;
        let head = read_head(buf, &mut self.pos, self.keys, self.block)?;
        if head.shared > self.key.len() || (first && head.shared != 0) {
            return Err(Error::CorruptBlock {
                block: self.block,
                detail: "shared prefix longer than the previous key",
            });
        }
        let suffix = &buf[head.suffix];
        let ordered = match self.keys {
            // Strict order within the block: after the shared prefix the new key must continue
            // upwards from the previous key, or extend it.
            Keys::Prefixed => {
                let prev_byte = self.key.get(head.shared).copied();
                match (first, suffix.first(), prev_byte) {
                    (_, None, _) => false,
                    (true, Some(_), _) => true,
                    (false, Some(_), None) => true,
                    (false, Some(b), Some(p)) => *b > p,
                }
            }
            Keys::Whole => !suffix.is_empty() && (first || suffix > &self.key[..]),
        };
        if !ordered {
            return Err(Error::CorruptBlock {
                block: self.block,
                detail: "keys out of order or empty",
            });
        }
        self.key.truncate(head.shared);
        self.key.extend_from_slice(suffix);
        if self.key.len() > crate::MAX_KEY_LEN {
            return Err(Error::CorruptBlock {
                block: self.block,
                detail: "key longer than the format allows",
            });
        }
        Ok(Some(head.value))
    }
}
