//! A sorted map written with arbitrary options reads back exactly, and verifies.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use snapkv_format::{
    Compression, Dictionary, Metadata, Snapshot, SnapshotWriter, Spill, WriterOptions, MAX_KEY_LEN,
};
use std::collections::BTreeMap;
use std::ops::Bound;

#[derive(Debug, Arbitrary)]
struct Input {
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    probes: Vec<Vec<u8>>,
    compression: u8,
    block_size: u8,
    dictionary: u8,
    dictionary_bytes: Vec<u8>,
    filter_bits_per_key: u8,
    threads: bool,
    version_1: bool,
    /// Also write with the key hashes spilled past (1 + this % 8) × 52 bytes: runs of a few
    /// keys; the file must be the same.
    spill: Option<u8>,
}

fn options(input: &Input) -> WriterOptions {
    let mut o = WriterOptions::default();
    o.compression = match input.compression % 4 {
        0 => Compression::None,
        1 => Compression::Zstd { level: -1 },
        _ => Compression::Zstd { level: 3 },
    };
    o.block_size = [64, 100, 256, 4096][usize::from(input.block_size % 4)];
    o.dictionary = match input.dictionary % 3 {
        0 => Dictionary::Off,
        1 => Dictionary::Train {
            max_bytes: 256,
            sample_bytes: 2048,
        },
        _ => Dictionary::Use(input.dictionary_bytes.clone()),
    };
    o.filter_bits_per_key = u32::from(input.filter_bits_per_key % 17);
    o.threads = if input.threads { 2 } else { 1 };
    o.format_version = if input.version_1 { 1 } else { 2 };
    o
}

fuzz_target!(|input: Input| {
    let model: BTreeMap<Vec<u8>, Vec<u8>> = input
        .model
        .iter()
        .filter(|(k, _)| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let Ok(mut writer) = SnapshotWriter::new(Vec::new(), options(&input), Metadata::default())
    else {
        // zstd may refuse a `Dictionary::Use` of arbitrary bytes.
        return;
    };
    for (k, v) in &model {
        writer.insert(k, v).expect("insert in order");
    }
    let (bytes, summary) = writer.finish().expect("finish");
    assert_eq!(summary.key_count, model.len() as u64);
    assert_eq!(summary.file_bytes, bytes.len() as u64);
    if let Some(n) = input.spill {
        let mut o = options(&input);
        o.spill = Some(Spill {
            dir: std::env::temp_dir(),
            memory: 52 * (1 + usize::from(n % 8)),
        });
        let mut writer = SnapshotWriter::new(Vec::new(), o, Metadata::default()).expect("options");
        for (k, v) in &model {
            writer.insert(k, v).expect("insert in order");
        }
        let (spilled, _) = writer.finish().expect("finish with spilled key hashes");
        assert!(spilled == bytes, "spilled key hashes changed the file");
    }

    let snapshot = Snapshot::open(bytes).expect("open what the writer wrote");
    snapshot.verify().expect("verify what the writer wrote");
    assert_eq!(snapshot.format_version(), options(&input).format_version);
    assert_eq!(snapshot.len(), model.len() as u64);
    for (k, v) in &model {
        assert_eq!(snapshot.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = snapshot
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect();
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, expected);
    for p in &input.probes {
        assert_eq!(
            snapshot.get(p).unwrap().map(|b| b.to_vec()),
            if p.is_empty() {
                None
            } else {
                model.get(p).cloned()
            }
        );
        let got: Vec<Vec<u8>> = snapshot
            .range(Bound::Included(p), Bound::Unbounded)
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        let want: Vec<Vec<u8>> = model.range(p.clone()..).map(|(k, _)| k.clone()).collect();
        assert_eq!(got, want, "range from {p:?}");
        let got: Vec<Vec<u8>> = snapshot
            .prefix(p)
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        let want: Vec<Vec<u8>> = model.keys().filter(|k| k.starts_with(p)).cloned().collect();
        assert_eq!(got, want, "prefix {p:?}");
    }
});
