//! Arbitrary bytes (checksums rewritten to match) read as a delta fetch reads a stored object:
//! the footer from the last bytes, then the block table and the dictionary by range, then the
//! index sections rebuilt from the blocks. Either an error, or blocks that tile the data region
//! from the header on; a rebuild never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapkv_format::{Tail, TAIL_LEN};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    snapkv_fuzz::fix_checksums(&mut bytes);
    let len = bytes.len() as u64;
    let end = &bytes[bytes.len() - TAIL_LEN.min(len) as usize..];
    let Ok(tail) = Tail::parse(end, len) else {
        return;
    };
    let sections = tail.sections_range();
    assert!(sections.start <= sections.end && sections.end == len);
    let slice = |r: std::ops::Range<u64>| &bytes[r.start as usize..r.end as usize];
    let table = tail.block_table_range();
    assert!(table.start >= sections.start && table.end <= len);
    if let Ok(blocks) = tail.blocks(slice(table.clone())) {
        let mut next = 16;
        for b in &blocks {
            assert_eq!(b.offset, next);
            next += u64::from(b.len);
        }
        assert!(next <= sections.start && sections.start - next < 8);
        let (dictionary, metadata) = (tail.dictionary_range(), tail.metadata_range());
        if let Ok(mut r) = snapkv_format::Rebuild::new(
            &tail,
            slice(table),
            slice(dictionary),
            slice(metadata),
            1,
            None,
        ) {
            let added = blocks
                .iter()
                .all(|b| r.block(slice(b.offset..b.offset + u64::from(b.len))).is_ok());
            if added {
                let _ = r.finish();
            }
        }
    }
    let dictionary = tail.dictionary_range();
    assert!(dictionary.start >= 16 && dictionary.end <= len);
    let _ = tail.dictionary(slice(dictionary));
});
