//! Fence snapshots and takeover detection (spec §8.3–§8.4).
//!
//! A [`Fence`] records the transcript's identity when an attempt releases its
//! lock: device, inode, size, times, the session epoch, and the last bytes.
//! Taking it costs O(1) in the transcript's size. [`Fence::check`] later tells
//! whether the transcript changed in a way the attempt cannot accept, at a
//! cost of O(appended bytes):
//!
//! | later state | verdict |
//! |---|---|
//! | unchanged | fine |
//! | same inode, longer, old tail intact, every new entry benign per the classifier | fine |
//! | same inode, longer, with a non-benign or incomplete new entry | takeover |
//! | same inode, shorter (truncated) or same size with new times (edited) | takeover |
//! | new inode with byte-identical content | fine (compared against the old inode, which the fence keeps open: O(size), only in this case) |
//! | new inode otherwise, or the file is gone | takeover |
//!
//! The attempt's own writes are never mistaken for a takeover: the controller
//! takes a new fence after each of them.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::Stamp;
use crate::classify::ChangeClassifier;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::transcript::{read_exact_at, Transcript};

/// How many trailing bytes a fence keeps to prove a later state is a pure
/// append.
const TAIL: u64 = 64;

/// The identity of a transcript at one moment.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    /// `None` when the transcript did not exist.
    id: Option<Stamp>,
    /// The session epoch when the fence was taken.
    epoch: u64,
    tail: Vec<u8>,
    /// The inode the fence describes, kept open for the byte-identical check.
    file: Option<File>,
}

/// What changed since a fence was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    Unchanged,
    /// Only benign entries were appended, or the file was rewritten with
    /// identical bytes. A gateway merges `entries` into its in-memory
    /// session, or rereads `range` of the transcript, to stay in step.
    Benign {
        /// The accepted foreign entries, in file order, as the classifier saw
        /// them (empty for an identical rewrite).
        entries: Vec<Value>,
        /// The bytes of the transcript they occupy: from its size at the
        /// fence to its size now (`size..size` when nothing was appended).
        range: Range<u64>,
    },
    /// A change the attempt cannot accept.
    Takeover(Takeover),
}

/// Why a change is a takeover.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Takeover {
    /// The transcript got shorter.
    Truncated,
    /// Same size or longer, but earlier bytes changed.
    Edited,
    /// A different file now stands at the path.
    Replaced,
    /// The transcript was deleted.
    Deleted,
    /// An appended entry the classifier does not accept.
    ForeignEntry {
        /// Offset of the entry's line.
        offset: u64,
    },
    /// An appended line is not complete JSON.
    IncompleteAppend {
        /// Offset of the line.
        offset: u64,
    },
}

impl std::fmt::Display for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Takeover::Truncated => f.write_str("truncated"),
            Takeover::Edited => f.write_str("edited"),
            Takeover::Replaced => f.write_str("replaced by another file"),
            Takeover::Deleted => f.write_str("deleted"),
            Takeover::ForeignEntry { offset } => {
                write!(f, "foreign entry appended at byte {offset}")
            }
            Takeover::IncompleteAppend { offset } => {
                write!(f, "incomplete line appended at byte {offset}")
            }
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

impl Fence {
    /// Snapshots `transcript` (O(1) in its size).
    ///
    /// # Errors
    /// `Io` when the transcript cannot be examined.
    pub fn take(transcript: &Transcript, epoch: u64) -> Result<Fence> {
        let fs = transcript.fs().as_ref();
        let path = transcript.path();
        let meta = match fs.stat(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Fence {
                    path: path.to_owned(),
                    id: None,
                    epoch,
                    tail: Vec::new(),
                    file: None,
                })
            }
            Err(e) => return Err(Error::io("stat transcript", path, e)),
        };
        let id = Stamp::of(&meta);
        let handle = fs
            .metadata(transcript.file())
            .map_err(io_err("stat transcript", path))?;
        // The handle normally is the file at the path; after a foreign
        // replacement it is not, and the path's file is what we describe.
        let file = if (handle.dev(), handle.ino()) == (id.dev, id.ino) {
            transcript
                .file()
                .try_clone()
                .map_err(io_err("duplicate descriptor of", path))?
        } else {
            fs.open_read(path)
                .map_err(io_err("open transcript", path))?
        };
        let start = id.size.saturating_sub(TAIL);
        let mut tail = vec![0u8; (id.size - start) as usize];
        read_exact_at(fs, &file, &mut tail, start, path)?;
        Ok(Fence {
            path: path.to_owned(),
            id: Some(id),
            epoch,
            tail,
            file: Some(file),
        })
    }

    /// The epoch when the fence was taken.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The transcript size when the fence was taken.
    pub fn size(&self) -> u64 {
        self.id.map_or(0, |i| i.size)
    }

    /// Compares the transcript now with the fence.
    ///
    /// # Errors
    /// `Io` when the transcript cannot be examined.
    pub fn check(&self, fs: &dyn Fs, classifier: &dyn ChangeClassifier) -> Result<Change> {
        let path = &self.path;
        let now = match fs.stat(path) {
            Ok(m) => Some(Stamp::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("stat transcript", path, e)),
        };
        let (old, new) = match (self.id, now) {
            (None, None) => return Ok(Change::Unchanged),
            (Some(_), None) => return Ok(Change::Takeover(Takeover::Deleted)),
            (None, Some(new)) => {
                // Created meanwhile: everything in it is appended.
                let file = fs
                    .open_read(path)
                    .map_err(io_err("open transcript", path))?;
                return self.classify_appended(fs, &file, 0, new.size, classifier);
            }
            (Some(old), Some(new)) => (old, new),
        };
        if old == new {
            return Ok(Change::Unchanged);
        }
        let file = fs
            .open_read(path)
            .map_err(io_err("open transcript", path))?;
        if (old.dev, old.ino) != (new.dev, new.ino) {
            return self.compare_replacement(fs, &file, old, new);
        }
        if new.size < old.size {
            return Ok(Change::Takeover(Takeover::Truncated));
        }
        if new.size == old.size {
            return Ok(Change::Takeover(Takeover::Edited));
        }
        // Longer: the old tail must still be there.
        let start = old.size.saturating_sub(TAIL);
        let mut tail = vec![0u8; (old.size - start) as usize];
        read_exact_at(fs, &file, &mut tail, start, path)?;
        if tail != self.tail {
            return Ok(Change::Takeover(Takeover::Edited));
        }
        self.classify_appended(fs, &file, old.size, new.size, classifier)
    }

    fn classify_appended(
        &self,
        fs: &dyn Fs,
        file: &File,
        from: u64,
        to: u64,
        classifier: &dyn ChangeClassifier,
    ) -> Result<Change> {
        let mut appended = vec![0u8; (to - from) as usize];
        read_exact_at(fs, file, &mut appended, from, &self.path)?;
        let mut entries = Vec::new();
        let mut offset = from;
        for line in appended.split_inclusive(|&b| b == b'\n') {
            let Some(body) = line.strip_suffix(b"\n") else {
                return Ok(Change::Takeover(Takeover::IncompleteAppend { offset }));
            };
            match serde_json::from_slice::<Value>(body) {
                Ok(v) if classifier.is_benign(&v) => entries.push(v),
                Ok(_) => return Ok(Change::Takeover(Takeover::ForeignEntry { offset })),
                Err(_) => return Ok(Change::Takeover(Takeover::IncompleteAppend { offset })),
            }
            offset += line.len() as u64;
        }
        Ok(Change::Benign {
            entries,
            range: from..to,
        })
    }

    /// A new file at the path is fine only if its bytes equal the old ones.
    fn compare_replacement(
        &self,
        fs: &dyn Fs,
        new_file: &File,
        old: Stamp,
        new: Stamp,
    ) -> Result<Change> {
        let Some(old_file) = &self.file else {
            return Ok(Change::Takeover(Takeover::Replaced));
        };
        if old.size != new.size {
            return Ok(Change::Takeover(Takeover::Replaced));
        }
        let mut a = vec![0u8; 64 * 1024];
        let mut b = vec![0u8; 64 * 1024];
        let mut offset = 0;
        while offset < old.size {
            let n = (old.size - offset).min(a.len() as u64) as usize;
            read_exact_at(fs, old_file, &mut a[..n], offset, &self.path)?;
            read_exact_at(fs, new_file, &mut b[..n], offset, &self.path)?;
            if a[..n] != b[..n] {
                return Ok(Change::Takeover(Takeover::Replaced));
            }
            offset += n as u64;
        }
        Ok(Change::Benign {
            entries: Vec::new(),
            range: new.size..new.size,
        })
    }
}
