//! Arbitrary bytes as a snapshot: opening, reading and verifying must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapkv_format::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::open_with(data.to_vec(), &snapkv_fuzz::open_options(data)) {
        snapkv_fuzz::exercise(&snapshot, data);
    }
});
