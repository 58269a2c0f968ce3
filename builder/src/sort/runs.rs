//! The spill format: sorted runs written as zstd frames on worker threads, and read back.

use super::*;

/// Writes a run: per pair, varint key length, varint value length, varint sequence number,
/// key bytes, value bytes. The pairs are cut into frames of whole pairs, each stored as
/// `u32 stored length · u32 raw length · zstd frame` (little-endian), compressed on worker
/// threads and written in order.
pub(super) struct RunWriter {
    pub(super) file: FileWriter,
    /// The frame being filled.
    pub(super) raw: Vec<u8>,
    pub(super) frame: usize,
    pub(super) compress: FrameCompression,
}

pub(super) enum FrameCompression {
    Inline(zstd::bulk::Compressor<'static>),
    Threads {
        submit: pool::Submitter<Vec<u8>>,
        done: pool::Pool<std::io::Result<Vec<u8>>>,
        /// Frames allowed in flight.
        max_in_flight: u64,
    },
}

/// Length fields before each frame.
pub(super) const FRAME_HEAD: usize = 8;

/// A stored frame: lengths and zstd frame.
pub(super) fn compress_frame(
    c: &mut zstd::bulk::Compressor<'static>,
    raw: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(FRAME_HEAD + zstd::zstd_safe::compress_bound(raw.len()));
    out.extend_from_slice(&[0; FRAME_HEAD]);
    // Compressed after the lengths.
    let mut after_head = std::io::Cursor::new(out);
    after_head.set_position(FRAME_HEAD as u64);
    let n = c.compress_to_buffer(raw, &mut after_head)?;
    let mut out = after_head.into_inner();
    out[..4].copy_from_slice(&(n as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    Ok(out)
}

impl RunWriter {
    pub(super) fn new(file: File, threads: usize, frame: usize) -> std::io::Result<RunWriter> {
        let compress = if threads <= 1 {
            FrameCompression::Inline(zstd::bulk::Compressor::new(RUN_LEVEL)?)
        } else {
            let (submit, done) = pool::start(
                threads,
                threads,
                || zstd::bulk::Compressor::new(RUN_LEVEL),
                |c: &mut std::io::Result<zstd::bulk::Compressor<'static>>, raw: Vec<u8>| match c {
                    Ok(c) => compress_frame(c, &raw),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                },
            );
            FrameCompression::Threads {
                submit,
                done,
                max_in_flight: 2 * threads as u64,
            }
        };
        Ok(RunWriter {
            file: FileWriter::new(file),
            raw: Vec::with_capacity(frame + 4096),
            frame,
            compress,
        })
    }

    pub(super) fn write(&mut self, key: &[u8], value: &[u8], seq: u64) -> std::io::Result<()> {
        varint::put(&mut self.raw, key.len() as u64);
        varint::put(&mut self.raw, value.len() as u64);
        varint::put(&mut self.raw, seq);
        self.raw.extend_from_slice(key);
        self.raw.extend_from_slice(value);
        if self.raw.len() >= self.frame {
            self.cut(false)?;
        }
        Ok(())
    }

    /// Compresses the frame being filled; with `last`, waits for every frame and writes it.
    pub(super) fn cut(&mut self, last: bool) -> std::io::Result<()> {
        let stopped = || std::io::Error::other("a compression thread stopped");
        if !self.raw.is_empty() {
            let raw = std::mem::replace(&mut self.raw, Vec::with_capacity(self.frame + 4096));
            match &mut self.compress {
                FrameCompression::Inline(c) => self.file.write_all(&compress_frame(c, &raw)?)?,
                FrameCompression::Threads { submit, .. } => {
                    if !submit.submit(raw) {
                        return Err(stopped());
                    }
                }
            }
        }
        if let FrameCompression::Threads {
            submit,
            done,
            max_in_flight,
        } = &mut self.compress
        {
            let target = if last { 0 } else { *max_in_flight };
            while submit.submitted() - done.received() > target {
                let frame = done.recv().ok_or_else(stopped)??;
                self.file.write_all(&frame)?;
            }
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> std::io::Result<()> {
        self.cut(true)?;
        self.file.finish()
    }
}

/// Reads a run back, one frame at a time.
pub(super) struct RunReader {
    pub(super) input: BufReader<File>,
    pub(super) decompressor: zstd::bulk::Decompressor<'static>,
    /// The compressed frame.
    pub(super) stored: Vec<u8>,
    /// The frame's pairs; the unread ones start at `pos`.
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) remaining: u64,
    /// The current pair, in `buf`.
    pub(super) key: std::ops::Range<usize>,
    pub(super) value: std::ops::Range<usize>,
    pub(super) seq: u64,
}

pub(super) fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a temporary run file is corrupt: {what}"),
    )
}

impl RunReader {
    pub(super) fn new(file: File, pairs: u64) -> std::io::Result<RunReader> {
        Ok(RunReader {
            input: BufReader::with_capacity(1 << 16, file),
            decompressor: zstd::bulk::Decompressor::new()?,
            stored: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            remaining: pairs,
            key: 0..0,
            value: 0..0,
            seq: 0,
        })
    }

    /// Reads and decompresses the next frame.
    pub(super) fn next_frame(&mut self) -> std::io::Result<()> {
        let mut head = [0u8; FRAME_HEAD];
        self.input.read_exact(&mut head)?;
        let [s0, s1, s2, s3, r0, r1, r2, r3] = head;
        let stored = u32::from_le_bytes([s0, s1, s2, s3]) as usize;
        let raw = u32::from_le_bytes([r0, r1, r2, r3]) as usize;
        self.stored.resize(stored, 0);
        self.input.read_exact(&mut self.stored)?;
        self.buf.clear();
        self.buf.reserve(raw);
        let n = self
            .decompressor
            .decompress_to_buffer(&self.stored, &mut self.buf)
            .map_err(|e| corrupt(&e.to_string()))?;
        if n != raw {
            return Err(corrupt("a frame is shorter than its header says"));
        }
        self.pos = 0;
        Ok(())
    }

    /// Loads the next pair; false at the end of the run.
    pub(super) fn advance(&mut self) -> std::io::Result<bool> {
        if self.remaining == 0 {
            return Ok(false);
        }
        self.remaining -= 1;
        if self.pos == self.buf.len() {
            self.next_frame()?;
        }
        let mut at = self.pos;
        let buf = &self.buf;
        let mut next =
            || varint::get(buf, &mut at).ok_or_else(|| corrupt("a pair header is malformed"));
        let (key_len, value_len, seq) = (next()? as usize, next()? as usize, next()?);
        let end = at
            .checked_add(key_len)
            .and_then(|k| k.checked_add(value_len))
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| corrupt("a pair is cut short"))?;
        self.key = at..at + key_len;
        self.value = at + key_len..end;
        self.seq = seq;
        self.pos = end;
        Ok(true)
    }
}
