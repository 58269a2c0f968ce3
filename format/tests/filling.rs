//! A snapshot opened before its data blocks are in place (`Snapshot::open_filling`): the open
//! reads nothing of the data region, and every read of it is asked of the `Fill` first.

use snapkv_format::{Compression, Error, Fill, Metadata, Snapshot, SnapshotWriter, WriterOptions};
use std::ops::{Bound, Range};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A `Fill` that records what it is asked and answers all or nothing.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    asked: Mutex<Vec<Range<u64>>>,
}

impl Fill for Gate {
    fn ensure(&self, range: Range<u64>) -> snapkv_format::Result<()> {
        self.asked.lock().unwrap().push(range.clone());
        match self.open.load(Ordering::SeqCst) {
            true => Ok(()),
            false => Err(Error::Unavailable {
                start: range.start,
                end: range.end,
                reason: "not yet".into(),
            }),
        }
    }
}

fn file(compression: Compression) -> Vec<u8> {
    let mut o = WriterOptions::default();
    o.compression = compression;
    let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
    for i in 0..5_000u32 {
        w.insert(
            format!("key:{i:06}").as_bytes(),
            format!(
                "{{\"i\":{i},\"pad\":\"{}\"}}",
                "x".repeat((i % 50) as usize)
            )
            .as_bytes(),
        )
        .unwrap();
    }
    w.finish().unwrap().0
}

/// The data region of `bytes` (after the 16-byte header, up to the first section).
fn data_region(bytes: &[u8]) -> Range<usize> {
    let len = bytes.len() as u64;
    let tail = snapkv_format::Tail::parse(&bytes[(len - snapkv_format::TAIL_LEN) as usize..], len)
        .unwrap();
    16..tail.sections_range().start as usize
}

#[test]
fn lookups_ask_the_fill_for_their_blocks_first() {
    for compression in [WriterOptions::default().compression, Compression::None] {
        let bytes = file(compression);
        let whole = Snapshot::open(bytes.clone()).unwrap();
        // Blocks still holes: the open must not read them.
        let mut holes = bytes.clone();
        holes[data_region(&bytes)].fill(0);
        let gate = Arc::new(Gate::default());
        let s = Snapshot::open_filling(holes, &Default::default(), gate.clone()).unwrap();
        assert!(s.is_filling() && !whole.is_filling());
        assert!(
            gate.asked.lock().unwrap().is_empty(),
            "the open read blocks"
        );
        s.warm();
        assert!(gate.asked.lock().unwrap().is_empty(), "warm read blocks");

        // Refused: every read of a block is `Unavailable`, never a read of the holes.
        let key = b"key:001234";
        let wanted = whole.bytes_for(key).unwrap().unwrap();
        assert_eq!(s.bytes_for(key).unwrap(), Some(wanted.clone()));
        let e = s.get(key).unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(matches!(
            s.get_into(key, &mut Vec::new()),
            Err(Error::Unavailable { .. })
        ));
        let first = s.range(Bound::Unbounded, Bound::Unbounded).next().unwrap();
        assert!(matches!(first, Err(Error::Unavailable { .. })));
        // The lookup asked for the bytes `bytes_for` names (its block, or its entry's first
        // byte in a direct lookup), and nothing else.
        let asked = gate.asked.lock().unwrap().clone();
        assert_eq!(asked[..2], [wanted.clone(), wanted.clone()], "{asked:?}");
        // An absent key is ruled out by the index: nothing asked.
        gate.asked.lock().unwrap().clear();
        assert_eq!(s.get(b"nope").unwrap(), None);
        assert!(gate.asked.lock().unwrap().is_empty());
        assert_eq!(s.bytes_for(b"nope").unwrap(), None);
        let e = s.verify().unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert_eq!(
            gate.asked.lock().unwrap().last().unwrap().clone(),
            16..data_region(&bytes).end as u64,
            "verify asks for the whole data region first"
        );
    }
}

#[test]
fn once_the_fill_has_the_bytes_the_answers_are_the_files() {
    for compression in [WriterOptions::default().compression, Compression::None] {
        let bytes = file(compression);
        let whole = Snapshot::open(bytes.clone()).unwrap();
        let gate = Arc::new(Gate::default());
        gate.open.store(true, Ordering::SeqCst);
        let s = Snapshot::open_filling(bytes.clone(), &Default::default(), gate.clone()).unwrap();
        for i in (0..5_000u32).step_by(97) {
            let key = format!("key:{i:06}");
            assert_eq!(
                s.get(key.as_bytes()).unwrap(),
                whole.get(key.as_bytes()).unwrap()
            );
        }
        let all: Vec<_> = s.iter().map(Result::unwrap).collect();
        assert_eq!(all.len(), 5_000);
        s.verify().unwrap();
    }
}
