//! The peers snapkv's benchmarks measure in the same run, on the same entries and the same
//! lookup sequence: today Sparkey (Spotify's hash file of an append-only log, uncompressed or
//! in Snappy blocks), built from its C source.
//!
//! This crate is for the benchmarks only: nothing of snapkv links it. It holds the project's
//! only foreign calls, in [`sparkey`], behind safe types.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let entries = [(b"a".as_slice(), b"1".as_slice()), (b"b", b"2")];
//! let files = snapkv_peers::sparkey::write(
//!     &dir.path().join("t"),
//!     snapkv_peers::sparkey::Compression::None,
//!     entries.into_iter(),
//! )
//! .unwrap();
//! let mut reader = snapkv_peers::sparkey::Reader::open(&files).unwrap();
//! assert_eq!(reader.get(b"b").unwrap(), Some(&b"2"[..]));
//! assert_eq!(reader.get(b"c").unwrap(), None);
//! ```

pub mod sparkey;
