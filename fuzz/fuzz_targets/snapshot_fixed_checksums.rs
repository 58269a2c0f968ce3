//! Arbitrary bytes as a snapshot, with every checksum rewritten to match, so that the fuzzer
//! reaches the structures behind them: block table, FST index (and its validation at open),
//! filter, metadata, blocks; the index sections read from the input or from a copy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapkv_format::Snapshot;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    snapkv_fuzz::fix_checksums(&mut bytes);
    if let Ok(snapshot) = Snapshot::open_with(bytes, &snapkv_fuzz::open_options(data)) {
        snapkv_fuzz::exercise(&snapshot, data);
    }
});
