//! Fixed-width structures: header, footer, block table entries. See `spec/FORMAT.md`.
//!
//! Every integer is little-endian. Offsets are absolute file offsets.

use crate::error::{Error, Result, Section};
use xxhash_rust::xxh3::xxh3_64;

/// First bytes of every snapshot file, and its last bytes.
pub(crate) const MAGIC: [u8; 8] = *b"\x89SNAPKV\n";
/// The format version the writer writes by default (the newest this crate reads).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate reads and can write.
pub(crate) const MIN_FORMAT_VERSION: u32 = 1;

pub(crate) const HEADER_LEN: usize = 16;
/// Sections are padded so that each starts at a multiple of this.
pub(crate) const SECTION_ALIGN: u64 = 8;

/// Size of one section reference in the footer: offset, length, checksum.
const SECTION_REF_LEN: usize = 24;
/// Every section there is, in file order; a version has a subsequence of them
/// ([`sections_of`]). A section a version lacks is empty in its [`Footer`].
const ALL_SECTIONS: [Section; 6] = [
    Section::Dictionary,
    Section::BlockTable,
    Section::Index,
    Section::Filter,
    Section::Lookup,
    Section::Metadata,
];
const SECTIONS_V1: [Section; 5] = [
    Section::Dictionary,
    Section::BlockTable,
    Section::Index,
    Section::Filter,
    Section::Metadata,
];

/// The sections of a version's files, in file order (which is also the footer's order).
pub(crate) fn sections_of(version: u32) -> &'static [Section] {
    if version == 1 {
        &SECTIONS_V1
    } else {
        &ALL_SECTIONS
    }
}

/// The fields after the section references, counted from the end of the footer: the same in
/// every version, so the version and the footer length are found before the length is known.
pub(crate) const TAIL_KEY_COUNT: usize = 48;
const TAIL_BLOCK_COUNT: usize = 40;
pub(crate) const TAIL_VERSION: usize = 32;
const TAIL_LEN_FIELD: usize = 28;
const TAIL_CHECKSUM: usize = 24;
const TAIL_FILE_CHECKSUM: usize = 16;

/// The footer length of a version: its section references and 48 bytes of fixed fields.
pub(crate) fn footer_len(version: u32) -> usize {
    sections_of(version).len() * SECTION_REF_LEN + TAIL_KEY_COUNT
}
/// The longest footer of any version this crate reads.
pub(crate) const MAX_FOOTER_LEN: usize = ALL_SECTIONS.len() * SECTION_REF_LEN + TAIL_KEY_COUNT;
/// The shortest file of any version (header and a version 1 footer).
pub(crate) const MIN_FILE_LEN: usize =
    HEADER_LEN + SECTIONS_V1.len() * SECTION_REF_LEN + TAIL_KEY_COUNT;
/// Bytes at the end of the file not covered by the whole-file checksum: the checksum itself and
/// the trailing magic.
pub(crate) const FILE_CHECKSUM_TAIL: usize = TAIL_FILE_CHECKSUM;

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
    pub(crate) fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::ZstdDict),
            _ => None,
        }
    }
}

/// The 16-byte header of a file of format `version`.
pub(crate) fn encode_header(version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    // h[12..16]: flags, zero in versions 1 and 2.
    h
}

/// A version this crate reads, or the error for one it does not.
fn known(version: u32) -> Result<u32> {
    if (MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        Ok(version)
    } else {
        Err(Error::UnsupportedVersion {
            supported: FORMAT_VERSION,
            got: version,
        })
    }
}

/// Checks the header; returns the file's format version.
pub(crate) fn check_header(data: &[u8]) -> Result<u32> {
    if data[0..8] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = known(u32_at(data, 8))?;
    if u32_at(data, 12) != 0 {
        return Err(Error::Corrupt {
            section: Section::Header,
            offset: 12,
            detail: "unknown header flags",
        });
    }
    Ok(version)
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
    /// The format version.
    pub version: u32,
    /// In [`ALL_SECTIONS`] order; those the version lacks are empty.
    pub sections: [SectionRef; 6],
    pub key_count: u64,
    pub block_count: u64,
}

impl Footer {
    /// Where section `s` is kept in [`Footer::sections`].
    fn slot(s: Section) -> usize {
        ALL_SECTIONS
            .iter()
            .position(|x| *x == s)
            .expect("a footer section")
    }

    pub fn section(&self, s: Section) -> SectionRef {
        self.sections[Footer::slot(s)]
    }

    pub fn set(&mut self, s: Section, r: SectionRef) {
        self.sections[Footer::slot(s)] = r;
    }

    /// Encodes the footer of its version; the whole-file checksum field is left zero for the
    /// caller to fill.
    pub fn encode(&self) -> Vec<u8> {
        let len = footer_len(self.version);
        let mut f = vec![0u8; len];
        for (i, s) in sections_of(self.version).iter().enumerate() {
            let s = self.section(*s);
            let at = i * SECTION_REF_LEN;
            f[at..at + 8].copy_from_slice(&s.offset.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&s.len.to_le_bytes());
            f[at + 16..at + 24].copy_from_slice(&s.checksum.to_le_bytes());
        }
        let mut put = |from_end: usize, bytes: &[u8]| {
            f[len - from_end..len - from_end + bytes.len()].copy_from_slice(bytes)
        };
        put(TAIL_KEY_COUNT, &self.key_count.to_le_bytes());
        put(TAIL_BLOCK_COUNT, &self.block_count.to_le_bytes());
        put(TAIL_VERSION, &self.version.to_le_bytes());
        put(TAIL_LEN_FIELD, &(len as u32).to_le_bytes());
        put(8, &MAGIC);
        let sum = xxh3_64(&f[..len - TAIL_CHECKSUM]);
        f[len - TAIL_CHECKSUM..len - TAIL_CHECKSUM + 8].copy_from_slice(&sum.to_le_bytes());
        f
    }

    /// Decodes and checks the footer at the end of `data` (whose length is at least
    /// [`MIN_FILE_LEN`]). Section bounds are checked here too.
    pub fn decode(data: &[u8]) -> Result<Footer> {
        let end = data.len().min(MAX_FOOTER_LEN);
        Footer::decode_end(&data[data.len() - end..], data.len() as u64)
    }

    /// [`Footer::decode`] from the last bytes `end` of a file of `len` bytes (at least
    /// [`MIN_FILE_LEN`]), for a reader that has only the end of the file: `end` holds at least
    /// the footer ([`MAX_FOOTER_LEN`] bytes hold any footer; a shorter `end` is an error when
    /// the footer is longer).
    pub fn decode_end(end: &[u8], len: u64) -> Result<Footer> {
        let short = Error::TooShort {
            len,
            min: MIN_FILE_LEN as u64,
        };
        if end.len() < TAIL_KEY_COUNT || end.len() as u64 > len || len < MIN_FILE_LEN as u64 {
            return Err(short);
        }
        let tail = &end[end.len() - TAIL_KEY_COUNT..];
        if tail[TAIL_KEY_COUNT - 8..] != MAGIC {
            return Err(Error::MissingFooter { len });
        }
        let field = |from_end: usize| TAIL_KEY_COUNT - from_end;
        let version = known(u32_at(tail, field(TAIL_VERSION)))?;
        let flen = footer_len(version);
        let at = |from_end: usize| len - from_end as u64;
        if u32_at(tail, field(TAIL_LEN_FIELD)) != flen as u32 {
            return Err(Error::Corrupt {
                section: Section::Footer,
                offset: at(TAIL_LEN_FIELD),
                detail: "unexpected footer length",
            });
        }
        if end.len() < flen || len < (HEADER_LEN + flen) as u64 {
            return Err(short);
        }
        let start = len - flen as u64;
        let f = &end[end.len() - flen..];
        let expected = u64_at(tail, field(TAIL_CHECKSUM));
        let got = xxh3_64(&f[..flen - TAIL_CHECKSUM]);
        if expected != got {
            return Err(Error::Checksum {
                section: Section::Footer,
                expected,
                got,
            });
        }
        let mut footer = Footer {
            version,
            key_count: u64_at(tail, field(TAIL_KEY_COUNT)),
            block_count: u64_at(tail, field(TAIL_BLOCK_COUNT)),
            ..Footer::default()
        };
        // Sections follow each other in file order, each 8-byte aligned, between the end of
        // the header and the start of the footer. A section the version lacks sits, empty,
        // where the previous one ends.
        let mut floor = HEADER_LEN as u64;
        let present = sections_of(version);
        // The version's sections are a subsequence of ALL_SECTIONS; `i` counts those read.
        let mut i = 0;
        for (slot, section) in ALL_SECTIONS.iter().enumerate() {
            if present.get(i) != Some(section) {
                footer.sections[slot] = SectionRef::of(floor, &[]);
                continue;
            }
            let base = i * SECTION_REF_LEN;
            i += 1;
            let s = SectionRef {
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
                    offset: start + base as u64,
                    detail: "section out of bounds or out of order",
                });
            }
            footer.sections[slot] = s;
            floor = s.offset + s.len;
        }
        let table = footer.section(Section::BlockTable);
        if table.len % BLOCK_ENTRY_LEN as u64 != 0
            || table.len / BLOCK_ENTRY_LEN as u64 != footer.block_count
        {
            return Err(Error::Corrupt {
                section: Section::Footer,
                offset: at(TAIL_BLOCK_COUNT),
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
