//! A block list object (`.<file>.blocks`) read as a delta fetch reads one: untrusted bytes
//! checked against a file's footer (arbitrary bytes, checksums rewritten to match). Input: a
//! mode byte, the list's length (`u16`, little-endian), the file, then the list's bytes: as
//! stored (mode `0`), or compressed first (any other mode, so that the fuzzer reaches what
//! follows decompression). A list is either rejected
//! or gives back exactly the file's block table; the file's own list always does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapkv_format::{Tail, TAIL_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The next two bytes split the rest: a file, then that many bytes of list at the end.
    if rest.len() < 2 {
        return;
    }
    let (split, rest) = rest.split_at(2);
    let at = usize::from(u16::from_le_bytes([split[0], split[1]])).min(rest.len());
    let (file, list) = rest.split_at(rest.len() - at);
    let mut bytes = file.to_vec();
    snapkv_fuzz::fix_checksums(&mut bytes);
    let len = bytes.len() as u64;
    let end = &bytes[bytes.len() - TAIL_LEN.min(len) as usize..];
    let Ok(tail) = Tail::parse(end, len) else {
        return;
    };
    let r = tail.block_table_range();
    let table = &bytes[r.start as usize..r.end as usize];
    let list = match mode {
        0 => list.to_vec(),
        _ => zstd::bulk::compress(list, 1).expect("compressible"),
    };
    if let Ok(rebuilt) = tail.table_from_block_list(&list) {
        assert_eq!(rebuilt, table, "a list that checks gives the file's table");
    }
    if tail.blocks(table).is_ok() {
        let own = tail.block_list(table).expect("a table that checks has a list");
        assert_eq!(tail.table_from_block_list(&own).unwrap(), table);
    }
});
