//! A file written on a thread of its own: the building thread fills buffers and hands them
//! over, and the copying into the page cache (`write(2)`) happens beside its work.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes handed over at a time.
const BUFFER: usize = 256 << 10;
/// Buffers waiting for the writing thread.
const QUEUE: usize = 4;

/// Writes a file through a background thread. [`Write::flush`] only hands over what is
/// buffered; [`FileWriter::finish`] waits until every byte is written.
pub(crate) struct FileWriter {
    buffer: Vec<u8>,
    to_thread: Option<SyncSender<Vec<u8>>>,
    /// Buffers the thread is done with, for reuse.
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl FileWriter {
    pub(crate) fn new(mut file: File) -> FileWriter {
        let (to_thread, from_writer) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (spare_tx, spare) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for buffer in from_writer {
                file.write_all(&buffer)?;
                let _ = spare_tx.send(buffer);
            }
            file.flush()
        });
        FileWriter {
            buffer: Vec::with_capacity(BUFFER),
            to_thread: Some(to_thread),
            spare,
            thread: Some(thread),
        }
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let next = match self.spare.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(BUFFER),
        };
        let full = std::mem::replace(&mut self.buffer, next);
        let sent = self.to_thread.as_ref().map(|t| t.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped at an error: report it.
            _ => Err(self.join().err().unwrap_or_else(stopped)),
        }
    }

    fn join(&mut self) -> io::Result<()> {
        self.to_thread.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(stopped()),
            None => Ok(()),
        }
    }

    /// Writes what is buffered and waits for the thread to finish.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.hand_over()?;
        self.join()
    }
}

fn stopped() -> io::Error {
    io::Error::other("the file writing thread stopped")
}

impl Write for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= BUFFER {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Unfinished (an error elsewhere): whatever was handed over is written, then the thread
        // ends; waiting for it keeps the file closed before its caller removes it.
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = FileWriter::new(File::create(&path).unwrap());
        let mut want = Vec::new();
        for i in 0..20_000u32 {
            let chunk = i.to_le_bytes().repeat((i % 50) as usize);
            w.write_all(&chunk).unwrap();
            want.extend_from_slice(&chunk);
        }
        w.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == want);
    }
}
