//! Bytes as a Parquet input to `snapkv build` (see `snapkv_fuzz::inputs`): seeded with valid
//! files from `seed_inputs.py`, mutated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapkv_builder::InputFormat;

#[global_allocator]
static ALLOC: snapkv_fuzz::inputs::Counting = snapkv_fuzz::inputs::Counting;

fuzz_target!(|data: &[u8]| {
    snapkv_fuzz::inputs::build(data, InputFormat::Parquet, "parquet");
});
