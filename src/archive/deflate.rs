//! Compressing dump.jsonl while it is being written.
//!
//! A gzip member is one deflate stream, and deflate streams can be spliced:
//! a piece that ends with a sync flush stops on a byte boundary without a
//! final block, so independently compressed pieces can follow each other.
//! The backup uses that to compress the dump on a second thread *while* rows
//! are read (the tar header in front of it, which needs the dump's size, is
//! compressed afterwards as its own piece), and the gzip trailer's CRC-32 is
//! combined from the pieces' CRCs. The result is one ordinary gzip member
//! any gunzip reads.

use crate::error::{Error, Result};
use flate2::{Compress, Compression, FlushCompress};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

/// A `Write` that raw-deflates into `out`, counting and CRC-ing its input.
pub struct RawDeflate<W: Write> {
    compress: Compress,
    level: u32,
    out: W,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> RawDeflate<W> {
    pub fn new(out: W, level: u32) -> Self {
        let level = level.min(9);
        RawDeflate {
            compress: Compress::new(Compression::new(level), false),
            level,
            out,
            buf: Vec::with_capacity(256 << 10),
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Compress what follows at `level` (0: store it).
    pub fn set_level(&mut self, level: u32) -> io::Result<()> {
        let level = level.min(9);
        if level == self.level {
            return Ok(());
        }
        // End on a byte boundary, as a piece does, and go on with a fresh
        // compressor, as the next piece would. (`Compress::set_level` wants
        // to flush into an output buffer it is not given, and fails.)
        self.run(&[], FlushCompress::Sync)?;
        self.compress = Compress::new(Compression::new(level), false);
        self.level = level;
        Ok(())
    }

    fn run(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            self.buf.clear();
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut self.buf, flush)
                .map_err(io::Error::other)?;
            let used = (self.compress.total_in() - before) as usize;
            input = &input[used..];
            self.out.write_all(&self.buf)?;
            // Done when all input is taken and the output did not fill up
            // (a full buffer may mean more flush output is pending).
            if input.is_empty() && self.buf.len() < self.buf.capacity() {
                return Ok(());
            }
        }
    }

    /// End this piece. `last`: with the final block (end of the stream);
    /// otherwise a sync flush, so another piece may follow.
    pub fn finish(mut self, last: bool) -> io::Result<(W, crc32fast::Hasher, u64)> {
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        self.run(&[], flush)?;
        Ok((self.out, self.crc, self.len))
    }
}

impl<W: Write> Write for RawDeflate<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.run(data, FlushCompress::None)?;
        self.crc.update(data);
        self.len += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a file that starts with `sample` is worth deflating. Most
/// ActiveStorage files (images, video, PDFs, archives) are compressed
/// already: deflating them again costs time for nothing, so the archive
/// stores them. Judged by the bytes' entropy, which costs a histogram, not
/// a trial compression: compressed data looks random (close to 8 bits a
/// byte); text and most uncompressed formats stay well below 7.
pub fn worth_compressing(sample: &[u8]) -> bool {
    const SAMPLE: usize = 8 << 10;
    let sample = &sample[..sample.len().min(SAMPLE)];
    if sample.len() < 1024 {
        return true;
    }
    let mut counts = [0u32; 256];
    for &b in sample {
        counts[b as usize] += 1;
    }
    let n = sample.len() as f64;
    let bits_per_byte: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits_per_byte < 7.5
}

/// The dump, compressed: where the deflate piece is and what it holds.
pub struct DeflatedDump {
    pub crc: crc32fast::Hasher,
    pub size: u64,
    pub sha256: String,
}

/// Feeds dump bytes to a compressor thread in 1 MiB chunks, which passes
/// each chunk on to a hashing thread (SHA-256 is a fifth of the work: on
/// its own thread it balances the compressor with the thread reading
/// rows). The rows are encoded straight into the chunk
/// ([`DumpCompressor::buffer`]), and the hasher hands emptied chunks back,
/// so the dump neither copies its bytes once more nor touches fresh memory
/// for every megabyte.
pub struct DumpCompressor {
    sender: Option<SyncSender<Vec<u8>>>,
    emptied: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    worker: Option<JoinHandle<io::Result<DeflatedDump>>>,
}

/// A chunk is sent when it holds this much; the slack above it takes the
/// line that crossed the mark without growing the buffer.
const CHUNK: usize = 1 << 20;
const CHUNK_CAPACITY: usize = CHUNK + (64 << 10);

impl DumpCompressor {
    /// Start compressing into `out` (the `dump.deflate` piece).
    pub fn start<W: Finish + Send + 'static>(out: W, level: u32) -> DumpCompressor {
        let (sender, receiver) = sync_channel::<Vec<u8>>(4);
        let (give_back, emptied) = channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("tenant_kit-deflate".into())
            .spawn(move || compress_chunks(receiver, give_back, out, level))
            .expect("spawning the compressor thread");
        DumpCompressor {
            sender: Some(sender),
            emptied,
            chunk: Vec::with_capacity(CHUNK_CAPACITY),
            worker: Some(worker),
        }
    }

    /// Wait for the worker after it hung up on us: its error is the real one.
    fn worker_error(&mut self) -> Error {
        self.sender = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => Error::io(format!("writing dump.jsonl: {e}")),
            Some(Err(_)) => Error::internal("the compressor thread panicked"),
            _ => Error::internal("the compressor thread stopped"),
        }
    }

    fn send(&mut self) -> Result<()> {
        let next = self
            .emptied
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_CAPACITY));
        let full = std::mem::replace(&mut self.chunk, next);
        let sent = self
            .sender
            .as_ref()
            .map(|s| s.send(full).is_ok())
            .unwrap_or(false);
        if sent {
            Ok(())
        } else {
            Err(self.worker_error())
        }
    }

    /// Where the next line goes: append it, then call [`Self::end_line`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.chunk
    }

    /// A line was appended to [`Self::buffer`]: send the chunk when full.
    pub fn end_line(&mut self) -> Result<()> {
        if self.chunk.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<DeflatedDump> {
        if !self.chunk.is_empty() {
            self.send()?;
        }
        self.sender = None; // hang up: the worker flushes and returns
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(Ok(done))) => Ok(done),
            Some(Ok(Err(e))) => Err(Error::io(format!("writing dump.jsonl: {e}"))),
            _ => Err(Error::internal("the compressor thread panicked")),
        }
    }
}

impl Drop for DumpCompressor {
    fn drop(&mut self) {
        // On an error path: stop the worker before its file goes away.
        self.sender = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A writer that needs a last word once everything is written: a flush, or
/// an encrypted stream's final chunk (see crypt/spool.rs).
pub trait Finish: Write {
    fn finish_writing(self) -> io::Result<()>;
}

impl<W: Write> Finish for io::BufWriter<W> {
    fn finish_writing(mut self) -> io::Result<()> {
        self.flush()
    }
}

fn compress_chunks<W: Finish>(
    chunks: Receiver<Vec<u8>>,
    give_back: Sender<Vec<u8>>,
    out: W,
    level: u32,
) -> io::Result<DeflatedDump> {
    let (to_hash, hash_chunks) = channel::<Vec<u8>>();
    // Scoped: however compressing ends, the hasher has ended too.
    std::thread::scope(|threads| {
        let hasher = std::thread::Builder::new()
            .name("tenant_kit-sha256".into())
            .spawn_scoped(threads, move || {
                hash_chunks_in_order(hash_chunks, give_back)
            })?;
        let mut deflate = RawDeflate::new(out, level);
        for chunk in chunks {
            deflate.write_all(&chunk)?;
            if to_hash.send(chunk).is_err() {
                return Err(io::Error::other("the hashing thread stopped"));
            }
        }
        drop(to_hash);
        let (out, crc, size) = deflate.finish(false)?;
        out.finish_writing()?;
        let sha256 = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        Ok(DeflatedDump { crc, size, sha256 })
    })
}

/// SHA-256 of the chunks in the order they come, each handed back emptied.
fn hash_chunks_in_order(chunks: Receiver<Vec<u8>>, give_back: Sender<Vec<u8>>) -> String {
    let mut sha = Sha256::new();
    for mut chunk in chunks {
        sha.update(&chunk);
        chunk.clear();
        // The writer may be gone already (it is finishing): then drop it.
        let _ = give_back.send(chunk);
    }
    super::hex(&sha.finalize())
}

/// The 10-byte gzip member header (no name, no extra fields).
pub fn gzip_header(mtime: u64, level: u32) -> [u8; 10] {
    let m = (mtime.min(u64::from(u32::MAX)) as u32).to_le_bytes();
    let xfl = match level {
        9 => 2,     // slowest
        0..=1 => 4, // fastest
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, m[0], m[1], m[2], m[3], xfl, 3]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    /// An in-memory file the compressor thread can own a handle to.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Finish for SharedBuf {
        fn finish_writing(self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn files_that_look_compressed_are_stored_and_others_deflated() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(!worth_compressing(&noise));
        assert!(worth_compressing(
            "{\"id\":1,\"name\":\"Ünïcode text\"}\n"
                .repeat(500)
                .as_bytes()
        ));
        // Base64 of the noise: 6 bits a byte, still worth deflating.
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &noise);
        assert!(worth_compressing(b64.as_bytes()));
        // Too short to judge: deflated.
        assert!(worth_compressing(&noise[..500]));
    }

    #[test]
    fn a_level_change_keeps_one_valid_deflate_stream() {
        let text = b"some text that deflates well ".repeat(5_000);
        let mut d = RawDeflate::new(Vec::new(), 6);
        d.write_all(&text).unwrap();
        d.set_level(0).unwrap();
        d.write_all(&text).unwrap();
        d.set_level(2).unwrap();
        d.write_all(&text).unwrap();
        let (raw, _, len) = d.finish(true).unwrap();
        assert_eq!(len, 3 * text.len() as u64);
        // The stored middle third is in there as it is.
        assert!(raw.len() > text.len());
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&raw[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, text.repeat(3));
    }

    #[test]
    fn spliced_pieces_make_one_valid_gzip_member() {
        let head = b"header bytes ".repeat(100);
        let middle: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let tail = b" and the end".repeat(50);

        let piece = SharedBuf::default();
        let mut c = DumpCompressor::start(piece.clone(), 6);
        for part in middle.chunks(70_000) {
            c.buffer().extend_from_slice(part);
            c.end_line().unwrap();
        }
        let dump = c.finish().unwrap();

        let mut out = gzip_header(0, 6).to_vec();
        let mut first = RawDeflate::new(Vec::new(), 6);
        first.write_all(&head).unwrap();
        let (bytes, mut crc, mut len) = first.finish(false).unwrap();
        out.extend(bytes);
        out.extend(piece.0.lock().unwrap().iter());
        crc.combine(&dump.crc);
        len += dump.size;
        let mut last = RawDeflate::new(Vec::new(), 6);
        last.write_all(&tail).unwrap();
        let (bytes, tail_crc, tail_len) = last.finish(true).unwrap();
        out.extend(bytes);
        crc.combine(&tail_crc);
        len += tail_len;
        out.extend(crc.finalize().to_le_bytes());
        out.extend((len as u32).to_le_bytes());

        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        let expected: Vec<u8> = [head.as_slice(), middle.as_slice(), tail.as_slice()].concat();
        assert_eq!(back, expected);
        assert_eq!(dump.size, middle.len() as u64);
    }
}
