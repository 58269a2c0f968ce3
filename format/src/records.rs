//! Each key's 128-bit hash and location, as a version 2 writer keeps them until it builds the
//! lookup section: in memory, or, past a memory budget ([`crate::Spill`]), in runs on an unnamed
//! temporary file read back a part at a time.
//!
//! A run holds the records of one memory's worth, ordered by *group*: the top [`GROUP_BITS`]
//! bits of `fmix64(hi ^ seed)`, the value a key's perfect-hash partition grows with (see
//! [`crate::mph`]). Reading the same groups of every run yields every key of a range of
//! partitions but for the last, whose keys may continue in the next group; those are carried
//! over. A run's directory (where each group starts) stays in memory: 8 bytes per group.
//!
//! Runs are grouped for one seed. When the perfect hash needs another seed (which for distinct
//! 128-bit hashes practically never happens) the records are regrouped into a new file first.

use crate::error::{Error, Result};
use crate::mph::{fmix64, Placer};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Bits of the group number.
const GROUP_BITS: u32 = 10;
const GROUPS: usize = 1 << GROUP_BITS;
/// A record on disk: `lo · hi · location`, u64 little-endian each.
const RECORD_LEN: usize = 24;
/// Bytes a record costs while runs are regrouped: itself and its place in the run's order.
const RUN_COST: usize = RECORD_LEN + 4;
/// Bytes a record costs while its partition is placed: itself, and [`crate::mph`]'s working
/// copy and slot. Records held in memory are bounded by it too, so that placing them all at
/// once, without a run, stays within the budget.
const PLACE_COST: usize = 2 * RECORD_LEN + 4;

/// Where a spilling writer keeps its records.
#[derive(Debug)]
struct Spilled {
    dir: PathBuf,
    memory: usize,
    /// Created with the first run.
    file: Option<File>,
    /// Records in the file.
    written: u64,
    /// Per run, the file's record number where each of its groups starts, and where it ends.
    runs: Vec<Vec<u64>>,
    /// The seed runs are grouped for.
    seed: u64,
}

/// The records of a writer's keys.
#[derive(Debug)]
pub(crate) struct Records {
    /// Records not in a run yet.
    hashes: Vec<[u64; 2]>,
    locations: Vec<u64>,
    spill: Option<Spilled>,
    len: u64,
    /// The largest `location >> 32` pushed.
    pub max_high: u64,
    /// The largest `location & 0xffff_ffff` pushed.
    pub max_low: u64,
    /// The largest location pushed.
    pub max: u64,
}

fn group(hi: u64, seed: u64) -> usize {
    (fmix64(hi ^ seed) >> (64 - GROUP_BITS)) as usize
}

impl Records {
    /// Records kept in memory, or past `memory` bytes in runs on a temporary file in `dir`.
    pub fn new(spill: Option<(PathBuf, usize)>) -> Records {
        Records {
            hashes: Vec::new(),
            locations: Vec::new(),
            spill: spill.map(|(dir, memory)| Spilled {
                dir,
                memory,
                file: None,
                written: 0,
                runs: Vec::new(),
                seed: 0,
            }),
            len: 0,
            max_high: 0,
            max_low: 0,
            max: 0,
        }
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Adds a record; writes a run when the memory budget is reached.
    pub fn push(&mut self, hash: [u64; 2], location: u64) -> Result<()> {
        self.hashes.push(hash);
        self.locations.push(location);
        self.len += 1;
        self.max_high = self.max_high.max(location >> 32);
        self.max_low = self.max_low.max(location & 0xffff_ffff);
        self.max = self.max.max(location);
        if let Some(spill) = &mut self.spill {
            if self.hashes.len() >= (spill.memory / PLACE_COST).max(1) {
                spill.write_run(&mut self.hashes, &mut self.locations)?;
            }
        }
        Ok(())
    }

    /// Hands the records to `placer`'s `place` a run of whole partitions at a time, in order:
    /// `place(hashes, locations, last)` with the keys of partitions `placer.placed()..last`.
    /// Stops at the first `false` from `place` and returns it.
    pub fn chunks(
        &mut self,
        placer: &mut Placer,
        seed: u64,
        mut place: impl FnMut(&mut Placer, &[[u64; 2]], &[u64], u64) -> bool,
    ) -> Result<bool> {
        let Some(spill) = self.spill.as_mut().filter(|s| !s.runs.is_empty()) else {
            let last = placer.partitions();
            return Ok(place(placer, &self.hashes, &self.locations, last));
        };
        if !self.hashes.is_empty() {
            spill.write_run(&mut self.hashes, &mut self.locations)?;
        }
        if spill.seed != seed {
            spill.regroup(seed)?;
        }
        self.hashes = Vec::new();
        self.locations = Vec::new();
        let (hashes, locations) = (&mut self.hashes, &mut self.locations);
        let cap = (spill.memory / PLACE_COST).max(1) as u64;
        let count = |spill: &Spilled, from: usize, to: usize| -> u64 {
            spill.runs.iter().map(|r| r[to] - r[from]).sum()
        };
        let mut from = 0;
        while from < GROUPS {
            let mut to = from + 1;
            while to < GROUPS && count(spill, from, to + 1) <= cap {
                to += 1;
            }
            for run in 0..spill.runs.len() {
                let (start, end) = (spill.runs[run][from], spill.runs[run][to]);
                spill.read(start, end - start, |h, l| {
                    hashes.push(h);
                    locations.push(l);
                })?;
            }
            // Partitions grow with the mixed hash: keys of later groups are in partition
            // `last` or later, so every partition before it is whole.
            let last = match to {
                GROUPS => placer.partitions(),
                _ => placer.partition_of_mixed((to as u64) << (64 - GROUP_BITS)),
            };
            // The keys of partition `last` move to the end, and wait for the next groups.
            let mut whole = 0;
            for i in 0..hashes.len() {
                if placer.partition_of_mixed(fmix64(hashes[i][1] ^ seed)) < last {
                    hashes.swap(whole, i);
                    locations.swap(whole, i);
                    whole += 1;
                }
            }
            if !place(placer, &hashes[..whole], &locations[..whole], last) {
                // Every record is in the file: what was read is dropped for the next pass.
                hashes.clear();
                locations.clear();
                return Ok(false);
            }
            hashes.drain(..whole);
            locations.drain(..whole);
            from = to;
        }
        debug_assert!(hashes.is_empty());
        Ok(true)
    }
}

impl Spilled {
    fn error(&self, source: std::io::Error) -> Error {
        Error::Spill {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Writes the records as a run, ordered by group, and empties them.
    fn write_run(&mut self, hashes: &mut Vec<[u64; 2]>, locations: &mut Vec<u64>) -> Result<()> {
        let seed = self.seed;
        let mut starts = vec![0u64; GROUPS + 1];
        for h in hashes.iter() {
            starts[group(h[1], seed) + 1] += 1;
        }
        for g in 1..=GROUPS {
            starts[g] += starts[g - 1];
        }
        let mut order = vec![0u32; hashes.len()];
        let mut fill = starts.clone();
        for (i, h) in hashes.iter().enumerate() {
            let g = group(h[1], seed);
            // A run holds fewer than 2^32 records: at most the memory budget's worth.
            order[fill[g] as usize] = i as u32;
            fill[g] += 1;
        }
        drop(fill);
        if self.file.is_none() {
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.error(e))?;
            self.file = Some(file);
        }
        let written = self.written;
        let file = self.file.as_mut().expect("created above");
        let mut out = BufWriter::with_capacity(1 << 16, &*file);
        let result = (|| {
            out.seek(SeekFrom::Start(written * RECORD_LEN as u64))?;
            for &i in &order {
                let (h, l) = (hashes[i as usize], locations[i as usize]);
                out.write_all(&h[0].to_le_bytes())?;
                out.write_all(&h[1].to_le_bytes())?;
                out.write_all(&l.to_le_bytes())?;
            }
            out.flush()
        })();
        drop(out);
        result.map_err(|e| self.error(e))?;
        self.runs
            .push(starts.into_iter().map(|s| written + s).collect());
        self.written += hashes.len() as u64;
        hashes.clear();
        locations.clear();
        Ok(())
    }

    /// Reads `count` records from record number `start` of the file.
    fn read(&mut self, start: u64, count: u64, mut f: impl FnMut([u64; 2], u64)) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let file = self.file.as_mut().expect("a run was written");
        let result = (|| {
            let mut input = BufReader::with_capacity(1 << 16, &*file);
            input.seek(SeekFrom::Start(start * RECORD_LEN as u64))?;
            let mut record = [0u8; RECORD_LEN];
            for _ in 0..count {
                input.read_exact(&mut record)?;
                let word = |i: usize| {
                    u64::from_le_bytes(record[8 * i..8 * i + 8].try_into().expect("8 bytes"))
                };
                f([word(0), word(1)], word(2));
            }
            Ok(())
        })();
        result.map_err(|e: std::io::Error| self.error(e))
    }

    /// Rewrites the runs grouped for `seed`, in a new file.
    fn regroup(&mut self, seed: u64) -> Result<()> {
        let mut next = Spilled {
            dir: self.dir.clone(),
            memory: self.memory,
            file: None,
            written: 0,
            runs: Vec::new(),
            seed,
        };
        let per_run = (self.memory / RUN_COST).max(1);
        let (mut hashes, mut locations) = (Vec::new(), Vec::new());
        let mut failed = None;
        self.read(0, self.written, |h, l| {
            hashes.push(h);
            locations.push(l);
            if hashes.len() >= per_run && failed.is_none() {
                failed = next.write_run(&mut hashes, &mut locations).err();
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !hashes.is_empty() {
            next.write_run(&mut hashes, &mut locations)?;
        }
        *self = next;
        Ok(())
    }
}
