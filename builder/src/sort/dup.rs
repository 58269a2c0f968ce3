//! Repeated keys in the merged stream, and the `--on-duplicate` policy.

use super::*;

/// Detects repeated keys in a stream ordered by (key, seq) and applies the policy.
pub(super) struct DupCheck {
    pub(super) policy: OnDuplicate,
    pub(super) last_key: Vec<u8>,
    pub(super) last_seq: u64,
    pub(super) started: bool,
    pub(super) dropped: u64,
}

impl DupCheck {
    pub(super) fn new(policy: OnDuplicate) -> DupCheck {
        DupCheck {
            policy,
            last_key: Vec::new(),
            last_seq: 0,
            started: false,
            dropped: 0,
        }
    }

    /// True if the pair is to be kept (the first of its key in stream order).
    pub(super) fn check(&mut self, key: &[u8], seq: u64, locate: &dyn Locate) -> Result<bool> {
        if self.started && key == self.last_key.as_slice() {
            if self.policy == OnDuplicate::Error {
                let (a, b) = (self.last_seq.min(seq), self.last_seq.max(seq));
                return Err(Error::DuplicateKey {
                    key: printable_key(key),
                    first: locate.locate(a),
                    second: locate.locate(b),
                });
            }
            self.dropped += 1;
            return Ok(false);
        }
        self.started = true;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last_seq = seq;
        Ok(true)
    }
}
