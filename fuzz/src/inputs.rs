//! The build fuzz targets' harness: bytes written as an input file and built with a small
//! memory limit through `snapkv_builder::build`, the path `snapkv build` takes.
//!
//! What must hold for any bytes: the build returns (no panic, no abort), allocates no more
//! than [`CEILING`] at any moment (checked by [`Counting`], the targets' global allocator), and
//! leaves nothing but its output behind; a build that succeeds wrote a snapshot that opens,
//! verifies, and answers every key it lists with the value it lists.

use snapkv_builder::{BuildOptions, Input, InputFormat, NoProgress};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The build's `--memory-limit`.
pub const MEMORY_LIMIT: u64 = 16 << 20;
/// The most bytes the process may hold at once: the limit, the decoders' and the writer's
/// working memory on top, and the fuzzer's own. An allocation past it aborts, naming its size.
pub const CEILING: usize = 256 << 20;

/// The global allocator of the build targets: [`System`], counting the bytes held and
/// aborting an allocation that would take the total past [`CEILING`].
pub struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while a breach is reported: the report's own allocations pass uncounted.
    static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Counting {
    fn take(size: usize) {
        let held = HELD.fetch_add(size, Ordering::Relaxed) + size;
        if held > CEILING && !REPORTING.with(|r| r.replace(true)) {
            let trace = std::backtrace::Backtrace::force_capture();
            eprintln!(
                "allocation of {size} bytes takes the process to {held} bytes, past the \
                 ceiling of {CEILING}: a size from the input was trusted\n{trace}"
            );
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments; the count is only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::take(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::take(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            Self::take(new_size - layout.size());
        } else {
            HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A directory of this process for the inputs and outputs, in memory where possible.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("snapkv-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

/// Builds `data` as an input of `format` named `in.{extension}`, keyed by its column `k`, and
/// checks what the module documentation says.
pub fn build(data: &[u8], format: InputFormat, extension: &str) {
    let dir = scratch();
    let input = dir.join(format!("in.{extension}"));
    let output = dir.join("out.snapkv");
    let _ = std::fs::remove_file(&output);
    std::fs::write(&input, data).expect("the input is written");
    let mut options = BuildOptions::new(
        vec![Input::parse(input.to_str().expect("a UTF-8 path"), &[])],
        vec!["k".to_owned()],
    );
    options.format = Some(format);
    options.memory_limit = MEMORY_LIMIT;
    options.writer.threads = 1;
    options.built_at = Some(0);
    let result = snapkv_builder::build(&options, &output, &NoProgress);
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .expect("the scratch directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| !n.starts_with("in."))
        .collect();
    left.sort();
    match result {
        Ok(summary) => {
            assert_eq!(left, ["out.snapkv"], "a build left files behind");
            let bytes = std::fs::read(&output).expect("the output reads");
            let snapshot = snapkv_format::Snapshot::open(bytes).expect("the output opens");
            snapshot.verify().expect("the output verifies");
            let mut keys = 0u64;
            for entry in snapshot.iter() {
                let (key, value) = entry.expect("every entry reads");
                let got = snapshot
                    .get(&key)
                    .expect("a lookup")
                    .expect("the key is found");
                assert_eq!(got, value, "a lookup returns what a scan lists");
                keys += 1;
            }
            assert_eq!(
                keys, summary.keys,
                "the snapshot holds the keys the build counted"
            );
            assert_eq!(keys, snapshot.len());
        }
        Err(e) => {
            // The message is built (formatting must not panic either).
            assert!(!e.to_string().is_empty());
            assert!(left.is_empty(), "a failed build left {left:?} behind");
        }
    }
}
