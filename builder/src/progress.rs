//! What a build reports as it goes: one small trait, called from the building thread.

/// The stages of a build, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Reading the inputs; counted in input bytes.
    Read,
    /// Sorting a run and writing it to the temporary directory; counted in runs.
    Spill,
    /// Merging and writing the snapshot; counted in rows.
    Write,
}

/// Receives progress. Calls come from the building thread.
pub trait Progress {
    /// A phase starts; `total` is its size in its unit when known.
    fn start(&self, phase: Phase, total: Option<u64>);
    /// `done` units of the phase are complete; `message` says what is happening.
    fn update(&self, phase: Phase, done: u64, message: &str);
    /// The phase is over.
    fn finish(&self, phase: Phase);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: Phase, _: Option<u64>) {}
    fn update(&self, _: Phase, _: u64, _: &str) {}
    fn finish(&self, _: Phase) {}
}

/// Reports spills as the [`Phase::Spill`] phase.
pub(crate) struct SpillReport<'a> {
    pub progress: &'a dyn Progress,
}

impl crate::sort::SpillProgress for SpillReport<'_> {
    fn spilling(&self, run: usize, pairs: u64) {
        if run == 1 {
            self.progress.start(Phase::Spill, None);
        }
        self.progress.update(
            Phase::Spill,
            run as u64 - 1,
            &format!("sorting and spilling run {run} ({pairs} rows)"),
        );
    }
    fn spilled(&self) {}
}
