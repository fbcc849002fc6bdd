//! Handing dump.jsonl from the extraction thread to the stager while it is
//! still being written: the stager reads what is on disk and waits for the
//! rest, and sees the end of the file only once the whole dump was checked
//! against the manifest (see `read::extract_feeding`).

use super::Manifest;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// What an extraction on another thread tells the thread that watches it.
/// The dump's reader ([`DumpFeed::follow`]) sees the end of the file only
/// once the dump's size and SHA-256 have been checked, so rows read from
/// it are only kept when the whole dump proved to be the manifest's.
#[derive(Default)]
pub struct DumpFeed {
    state: std::sync::Mutex<FeedState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct FeedState {
    manifest: Option<(Manifest, PathBuf, u64)>,
    /// Bytes of dump.jsonl on disk so far.
    written: u64,
    /// The dump is complete and its hash checked.
    dump_verified: bool,
    /// The extraction returned (whether or not it succeeded).
    stopped: bool,
    /// The watcher asked the extraction to stop.
    cancelled: bool,
}

impl DumpFeed {
    /// The extraction read the manifest and creates dump.jsonl at `path`.
    pub(super) fn manifest_found(&self, found: (Manifest, PathBuf, u64)) {
        self.update(|state| state.manifest = Some(found));
    }

    /// `bytes` more of dump.jsonl are on disk.
    pub(super) fn dump_written(&self, bytes: u64) {
        self.update(|state| state.written += bytes);
    }

    /// dump.jsonl is complete and its size and SHA-256 are the manifest's.
    pub(super) fn dump_verified(&self) {
        self.update(|state| state.dump_verified = true);
    }

    /// The extraction returned, whether or not it succeeded.
    pub(super) fn stopped(&self) {
        self.update(|state| state.stopped = true);
    }

    fn update(&self, change: impl FnOnce(&mut FeedState)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
        self.changed.notify_all();
    }

    fn wait_until<T>(&self, mut ready: impl FnMut(&FeedState) -> Option<T>) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(answer) = ready(&state) {
                return answer;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn cancelled(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancelled
    }

    /// The manifest, the path dump.jsonl is being written to and the
    /// archive's size; None when the extraction stopped before (its result
    /// says why).
    pub fn wait_manifest(&self) -> Option<(Manifest, PathBuf, u64)> {
        self.wait_until(|s| match &s.manifest {
            Some(found) => Some(Some(found.clone())),
            None if s.stopped => Some(None),
            None => None,
        })
    }

    /// Ask the extraction to stop at its next chunk.
    pub fn cancel(&self) {
        self.update(|state| state.cancelled = true);
    }

    /// A reader of dump.jsonl that waits for bytes still to be written.
    pub fn follow(&self, path: PathBuf) -> FollowDump<'_> {
        FollowDump {
            feed: self,
            path,
            file: None,
            pos: 0,
        }
    }
}

/// Reads dump.jsonl while an extraction writes it (see [`DumpFeed`]). An
/// extraction that stops before the dump is verified is an I/O error here;
/// the extraction's own result tells what went wrong.
pub struct FollowDump<'a> {
    feed: &'a DumpFeed,
    path: PathBuf,
    file: Option<File>,
    pos: u64,
}

impl Read for FollowDump<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos;
        let available = self.feed.wait_until(|s| {
            if s.written > pos {
                Some(Ok(s.written - pos))
            } else if s.dump_verified {
                Some(Ok(0))
            } else if s.stopped {
                Some(Err(io::Error::other("the extraction stopped")))
            } else {
                None
            }
        })?;
        if available == 0 {
            return Ok(0);
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.path)?),
        };
        let want = buf.len().min(available.min(usize::MAX as u64) as usize);
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other("dump.jsonl is shorter than written"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Progress of an extraction on its own thread: no events, and a cancel
/// from the watching thread as its interrupt.
pub(super) struct FeedProgress<'a>(pub(super) &'a DumpFeed);

impl Progress for FeedProgress<'_> {
    fn emit(&mut self, _event: Event) -> Result<()> {
        Ok(())
    }
    fn check_interrupt(&self) -> Result<()> {
        if self.0.cancelled() {
            Err(Error::cancelled())
        } else {
            Ok(())
        }
    }
}
