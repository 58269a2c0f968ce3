//! Fixed-width structures: header, footer, block table entries. See `spec/FORMAT.md`.
//!
//! Every integer is little-endian. Offsets are absolute file offsets.

use crate::error::{Error, Result, Section};
use xxhash_rust::xxh3::xxh3_64;

/// First bytes of every snapshot file, and its last bytes.
pub(crate) const MAGIC: [u8; 8] = *b"\x89SNAPKV\n";
/// The format version this crate writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const HEADER_LEN: usize = 16;
/// Sections are padded so that each starts at a multiple of this.
pub(crate) const SECTION_ALIGN: u64 = 8;

/// Size of one section reference in the footer: offset, length, checksum.
const SECTION_REF_LEN: usize = 24;
/// The sections the footer points at, in file order.
pub(crate) const SECTIONS: [Section; 5] = [
    Section::Dictionary,
    Section::BlockTable,
    Section::Index,
    Section::Filter,
    Section::Metadata,
];
const FOOTER_KEY_COUNT: usize = SECTIONS.len() * SECTION_REF_LEN;
const FOOTER_BLOCK_COUNT: usize = FOOTER_KEY_COUNT + 8;
const FOOTER_VERSION: usize = FOOTER_BLOCK_COUNT + 8;
const FOOTER_LEN_FIELD: usize = FOOTER_VERSION + 4;
const FOOTER_CHECKSUM: usize = FOOTER_LEN_FIELD + 4;
const FOOTER_FILE_CHECKSUM: usize = FOOTER_CHECKSUM + 8;
const FOOTER_MAGIC: usize = FOOTER_FILE_CHECKSUM + 8;
/// Total footer size.
pub(crate) const FOOTER_LEN: usize = FOOTER_MAGIC + MAGIC.len();
/// Bytes at the end of the file not covered by the whole-file checksum: the checksum itself and
/// the trailing magic.
pub(crate) const FILE_CHECKSUM_TAIL: usize = FOOTER_LEN - FOOTER_FILE_CHECKSUM;

/// One block table entry.
pub(crate) const BLOCK_ENTRY_LEN: usize = 32;

/// Block codecs, stored in the block table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Raw = 0,
    Zstd = 1,
    ZstdDict = 2,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::ZstdDict),
            _ => None,
        }
    }
}

/// The 16-byte header.
pub(crate) fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // h[12..16]: flags, zero in version 1.
    h
}

pub(crate) fn check_header(data: &[u8]) -> Result<()> {
    if data[0..8] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u32_at(data, 8);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            supported: FORMAT_VERSION,
            got: version,
        });
    }
    if u32_at(data, 12) != 0 {
        return Err(Error::Corrupt {
            section: Section::Header,
            offset: 12,
            detail: "unknown header flags",
        });
    }
    Ok(())
}

/// Where a section lives and its checksum (xxh3-64 of its bytes, padding excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SectionRef {
    pub offset: u64,
    pub len: u64,
    pub checksum: u64,
}

impl SectionRef {
    pub fn of(offset: u64, bytes: &[u8]) -> SectionRef {
        SectionRef {
            offset,
            len: bytes.len() as u64,
            checksum: xxh3_64(bytes),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footer {
    /// In [`SECTIONS`] order.
    pub sections: [SectionRef; 5],
    pub key_count: u64,
    pub block_count: u64,
}

impl Footer {
    pub fn section(&self, s: Section) -> SectionRef {
        let i = SECTIONS
            .iter()
            .position(|x| *x == s)
            .expect("a footer section");
        self.sections[i]
    }

    /// Encodes the footer; the whole-file checksum field is left zero for the caller to fill.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut f = [0u8; FOOTER_LEN];
        for (i, s) in self.sections.iter().enumerate() {
            let at = i * SECTION_REF_LEN;
            f[at..at + 8].copy_from_slice(&s.offset.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&s.len.to_le_bytes());
            f[at + 16..at + 24].copy_from_slice(&s.checksum.to_le_bytes());
        }
        f[FOOTER_KEY_COUNT..FOOTER_KEY_COUNT + 8].copy_from_slice(&self.key_count.to_le_bytes());
        f[FOOTER_BLOCK_COUNT..FOOTER_BLOCK_COUNT + 8]
            .copy_from_slice(&self.block_count.to_le_bytes());
        f[FOOTER_VERSION..FOOTER_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        f[FOOTER_LEN_FIELD..FOOTER_LEN_FIELD + 4]
            .copy_from_slice(&(FOOTER_LEN as u32).to_le_bytes());
        let sum = xxh3_64(&f[..FOOTER_CHECKSUM]);
        f[FOOTER_CHECKSUM..FOOTER_CHECKSUM + 8].copy_from_slice(&sum.to_le_bytes());
        f[FOOTER_MAGIC..].copy_from_slice(&MAGIC);
        f
    }

    /// Decodes and checks the footer at the end of `data` (whose length is at least
    /// `HEADER_LEN + FOOTER_LEN`). Section bounds are checked here too.
    pub fn decode(data: &[u8]) -> Result<Footer> {
        Footer::decode_end(&data[data.len() - FOOTER_LEN..], data.len() as u64)
    }

    /// [`Footer::decode`] from the last [`FOOTER_LEN`] bytes `f` of a file of `len` bytes (at
    /// least `HEADER_LEN + FOOTER_LEN`), for a reader that has only the end of the file.
    pub fn decode_end(f: &[u8], len: u64) -> Result<Footer> {
        let start = len - FOOTER_LEN as u64;
        let at = |field: usize| start + field as u64;
        if f[FOOTER_MAGIC..] != MAGIC {
            return Err(Error::MissingFooter { len });
        }
        let version = u32_at(f, FOOTER_VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                supported: FORMAT_VERSION,
                got: version,
            });
        }
        if u32_at(f, FOOTER_LEN_FIELD) != FOOTER_LEN as u32 {
            return Err(Error::Corrupt {
                section: Section::Footer,
                offset: at(FOOTER_LEN_FIELD),
                detail: "unexpected footer length",
            });
        }
        let expected = u64_at(f, FOOTER_CHECKSUM);
        let got = xxh3_64(&f[..FOOTER_CHECKSUM]);
        if expected != got {
            return Err(Error::Checksum {
                section: Section::Footer,
                expected,
                got,
            });
        }
        let mut footer = Footer {
            key_count: u64_at(f, FOOTER_KEY_COUNT),
            block_count: u64_at(f, FOOTER_BLOCK_COUNT),
            ..Footer::default()
        };
        // Sections follow each other in SECTIONS order, each 8-byte aligned, between the end of
        // the header and the start of the footer.
        let mut floor = HEADER_LEN as u64;
        for (i, s) in footer.sections.iter_mut().enumerate() {
            let base = i * SECTION_REF_LEN;
            *s = SectionRef {
                offset: u64_at(f, base),
                len: u64_at(f, base + 8),
                checksum: u64_at(f, base + 16),
            };
            let in_bounds = s.offset >= floor
                && s.offset % SECTION_ALIGN == 0
                && s.offset.checked_add(s.len).is_some_and(|end| end <= start);
            if !in_bounds {
                return Err(Error::Corrupt {
                    section: Section::Footer,
                    offset: at(base),
                    detail: "section out of bounds or out of order",
                });
            }
            floor = s.offset + s.len;
        }
        let table = footer.section(Section::BlockTable);
        if table.len % BLOCK_ENTRY_LEN as u64 != 0
            || table.len / BLOCK_ENTRY_LEN as u64 != footer.block_count
        {
            return Err(Error::Corrupt {
                section: Section::Footer,
                offset: at(FOOTER_BLOCK_COUNT),
                detail: "block count does not match the block table length",
            });
        }
        Ok(footer)
    }
}

/// Offset of the whole-file checksum field, counted from the end of the file.
pub(crate) fn file_checksum_field(data: &[u8]) -> (u64, usize) {
    let at = data.len() - FILE_CHECKSUM_TAIL;
    (u64_at(data, at), at)
}

/// Where a block lives and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockEntry {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub checksum: u64,
    pub entries: u32,
    pub codec: Codec,
}

impl BlockEntry {
    pub fn encode(&self) -> [u8; BLOCK_ENTRY_LEN] {
        let mut e = [0u8; BLOCK_ENTRY_LEN];
        e[0..8].copy_from_slice(&self.offset.to_le_bytes());
        e[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        e[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        e[16..24].copy_from_slice(&self.checksum.to_le_bytes());
        e[24..28].copy_from_slice(&self.entries.to_le_bytes());
        e[28] = self.codec as u8;
        // e[29..32]: reserved, zero.
        e
    }

    /// Decodes entry `block` of `table` (whose file offset is `table_offset`), checking that the
    /// block lies inside the data region `[HEADER_LEN, data_end)`.
    pub fn decode(table: &[u8], table_offset: u64, block: u32, data_end: u64) -> Result<Self> {
        let at = block as usize * BLOCK_ENTRY_LEN;
        let e = &table[at..at + BLOCK_ENTRY_LEN];
        let corrupt = |field: usize, detail| Error::Corrupt {
            section: Section::BlockTable,
            offset: table_offset + (at + field) as u64,
            detail,
        };
        let codec = Codec::from_u8(e[28]).ok_or_else(|| corrupt(28, "unknown block codec"))?;
        if e[29..32] != [0, 0, 0] {
            return Err(corrupt(29, "reserved bytes are not zero"));
        }
        let entry = BlockEntry {
            offset: u64_at(e, 0),
            stored_len: u32_at(e, 8),
            raw_len: u32_at(e, 12),
            checksum: u64_at(e, 16),
            entries: u32_at(e, 24),
            codec,
        };
        let end = entry.offset.checked_add(entry.stored_len as u64);
        if entry.offset < HEADER_LEN as u64 || end.is_none_or(|end| end > data_end) {
            return Err(corrupt(0, "block outside the data region"));
        }
        if entry.raw_len as usize > crate::MAX_BLOCK_LEN {
            return Err(corrupt(12, "block larger than the format allows"));
        }
        if entry.codec == Codec::Raw && entry.raw_len != entry.stored_len {
            return Err(corrupt(
                12,
                "raw block with different stored and raw lengths",
            ));
        }
        Ok(entry)
    }
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Zero bytes needed after `pos` to reach the next multiple of [`SECTION_ALIGN`].
pub(crate) fn padding(pos: u64) -> usize {
    ((SECTION_ALIGN - pos % SECTION_ALIGN) % SECTION_ALIGN) as usize
}
