//! Fence snapshots and takeover detection (spec §8.3–§8.4).
//!
//! A [`Fence`] records the transcript's identity when an attempt releases its
//! lock: device, inode, size, times, the session epoch, the last 64 bytes,
//! and a SHA-256 digest of its content. [`Fence::check`] later tells whether
//! the transcript changed in a way the attempt cannot accept.
//!
//! # The content digest
//!
//! A [`Transcript`] handle keeps a running SHA-256 of the file it describes:
//! the hasher's state, how many bytes it has hashed, the last 64 of them, and
//! the device and inode of that file. The first snapshot of a handle seeds it
//! with one streaming read of the file (64 KiB at a time, through the
//! [`Fs`] seam); every later snapshot only hashes what was appended since
//! (the attempt's own appends and the foreign ones it accepted), after
//! checking that the last 64 bytes it hashed are still in place. Another
//! inode, a shorter file or changed boundary bytes make the next snapshot
//! seed it again, and so does the handle's own rewrite, truncation or
//! repair. A file larger than [`DIGEST_SEED_CAP`] (8 MiB) is not seeded and
//! its fences have no digest; a digest seeded below the cap keeps being
//! caught up when appends take the file past it.
//!
//! The digest tells a change of metadata alone (a `chmod`, a backup tool's
//! `touch`, a byte-identical rewrite in place) from a same-size edit in
//! place, whose times the editor may even have set back. It proves content
//! identity against accidental and hostile edits alike, hence a
//! cryptographic hash: a writer cannot craft other bytes of the same size
//! that match it.
//!
//! # Verdicts and costs
//!
//! | state at the check | verdict | bytes read |
//! |---|---|---|
//! | unchanged: same device, inode, size, mtime and ctime | `Unchanged` | none |
//! | same inode, longer, old tail intact, every new entry benign per the classifier | `Benign` with the new entries | 64 + appended |
//! | same inode, longer, with a non-benign or incomplete new entry | takeover | 64 + appended |
//! | same inode, longer, old tail changed | takeover (`Edited`) | 64 |
//! | same inode, shorter | takeover (`Truncated`) | none |
//! | same inode and size, other times; the fence has a digest and the content hashes to it | `Benign`, no entries (`chmod`, `touch`, identical rewrite in place) | the whole file |
//! | the same, content hashes otherwise | takeover (`Edited`) | the whole file |
//! | same inode and size, other times; no digest (over the cap): only the ctime changed and the last 64 bytes are intact | `Benign`, no entries | 64 |
//! | the same, otherwise (the mtime changed, or the tail) | takeover (`Edited`) | 64 at most |
//! | new inode with byte-identical content | `Benign`, no entries (compared against the old inode, which the fence keeps open) | twice the file |
//! | new inode otherwise, or the file is gone | takeover | twice the file at most |
//! | created since the fence (missing then) | all of it classified as appended | the whole file, which is what was appended |
//!
//! Taking a fence reads the whole file once per handle (the seed, at most
//! [`DIGEST_SEED_CAP`] bytes), and afterwards 64 bytes plus what was appended
//! since the previous snapshot. So taking and checking a fence cost O(1) in
//! the transcript's size plus what was appended, except for the seed and the
//! rare changes that read the whole file above: metadata alone, or a new
//! inode of the same size. The attempt controller opens one handle per
//! attempt, so each attempt reads the transcript once, at its first
//! snapshot.
//!
//! The attempt's own writes are never mistaken for a takeover: the controller
//! takes a new fence after each of them.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backend::Stamp;
use crate::classify::ChangeClassifier;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::transcript::{read_exact_at, Transcript};

/// How many trailing bytes a fence keeps to prove a later state is a pure
/// append.
const TAIL: u64 = 64;

/// The largest transcript (8 MiB) whose content digest a snapshot seeds
/// with a full read; a fence of a larger one has no digest (see the module
/// docs). OpenClaw itself reads up to this much at every fence.
pub const DIGEST_SEED_CAP: u64 = 8 * 1024 * 1024;

/// The read size for streaming a transcript.
const CHUNK: usize = 64 * 1024;

/// The identity of a transcript at one moment.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    /// `None` when the transcript did not exist.
    id: Option<Stamp>,
    /// The session epoch when the fence was taken.
    epoch: u64,
    tail: Vec<u8>,
    /// SHA-256 of the first `id.size` bytes, when the transcript handle had
    /// (or could seed) its running digest.
    digest: Option<[u8; 32]>,
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

/// A running SHA-256 of the first `hashed` bytes of one file.
#[derive(Clone)]
struct RunningDigest {
    dev: u64,
    ino: u64,
    hasher: Sha256,
    hashed: u64,
    /// The last min(`TAIL`, `hashed`) bytes hashed.
    tail: Vec<u8>,
}

impl RunningDigest {
    /// Hashes the first `size` bytes of `file`.
    fn seed(fs: &dyn Fs, file: &File, id: Stamp, path: &Path) -> Result<RunningDigest> {
        let mut d = RunningDigest {
            dev: id.dev,
            ino: id.ino,
            hasher: Sha256::new(),
            hashed: 0,
            tail: Vec::new(),
        };
        for_each_chunk(fs, file, 0, id.size, path, |chunk| {
            d.absorb(chunk);
            true
        })?;
        Ok(d)
    }

    /// Hashes bytes `hashed..size` of `file`, after checking that the
    /// last bytes hashed are still there; `None` when they are not (the
    /// file was edited since, and the digest no longer describes it).
    fn catch_up(
        mut self,
        fs: &dyn Fs,
        file: &File,
        size: u64,
        path: &Path,
    ) -> Result<Option<RunningDigest>> {
        let boundary = self.tail.clone();
        let mut checked = 0;
        let intact = for_each_chunk(
            fs,
            file,
            self.hashed - boundary.len() as u64,
            size,
            path,
            |chunk| {
                let n = (boundary.len() - checked).min(chunk.len());
                if chunk[..n] != boundary[checked..checked + n] {
                    return false;
                }
                checked += n;
                self.absorb(&chunk[n..]);
                true
            },
        )?;
        Ok(intact.then_some(self))
    }

    fn absorb(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.hashed += bytes.len() as u64;
        let keep = TAIL as usize;
        if bytes.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - keep..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }

    fn value(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// The running content digest a [`Transcript`] handle keeps for its fences
/// (see the module docs).
#[derive(Default)]
pub(crate) struct DigestCell(Mutex<Option<RunningDigest>>);

/// What a snapshot learned about a file's content.
struct Content {
    digest: Option<[u8; 32]>,
    tail: Vec<u8>,
}

impl DigestCell {
    /// Drops the digest: the handle changed the file other than by
    /// appending, and the next snapshot seeds a new one.
    pub(crate) fn forget(&mut self) {
        *self.0.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Brings the digest up to `id` (the file `file` as stat'ed), seeding it
    /// when it describes another file or none, and returns it with the
    /// file's last bytes.
    fn advance(&self, fs: &dyn Fs, file: &File, id: Stamp, path: &Path) -> Result<Content> {
        // The state is taken out while it is advanced: after an error (or a
        // panic, which poisons the lock) the cell is empty, never half done.
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let same_file = slot
            .take()
            .filter(|d| (d.dev, d.ino) == (id.dev, id.ino) && d.hashed <= id.size);
        let caught_up = match same_file {
            Some(d) => d.catch_up(fs, file, id.size, path)?,
            None => None,
        };
        let digest = match caught_up {
            Some(d) => Some(d),
            None if id.size <= DIGEST_SEED_CAP => Some(RunningDigest::seed(fs, file, id, path)?),
            None => None,
        };
        let Some(digest) = digest else {
            return Ok(Content {
                digest: None,
                tail: read_tail(fs, file, id.size, path)?,
            });
        };
        let content = Content {
            digest: Some(digest.value()),
            tail: digest.tail.clone(),
        };
        *slot = Some(digest);
        Ok(content)
    }
}

/// Reads bytes `from..to` of `file` in chunks, handing each to `f` until it
/// returns `false`. Returns whether every chunk was handed over.
fn for_each_chunk(
    fs: &dyn Fs,
    file: &File,
    from: u64,
    to: u64,
    path: &Path,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<bool> {
    let mut buf = vec![0u8; (to - from).min(CHUNK as u64) as usize];
    let mut offset = from;
    while offset < to {
        let n = (to - offset).min(CHUNK as u64) as usize;
        read_exact_at(fs, file, &mut buf[..n], offset, path)?;
        if !f(&buf[..n]) {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}

/// The last min(`TAIL`, `size`) bytes of the first `size` bytes of `file`.
fn read_tail(fs: &dyn Fs, file: &File, size: u64, path: &Path) -> Result<Vec<u8>> {
    let start = size.saturating_sub(TAIL);
    let mut tail = vec![0u8; (size - start) as usize];
    read_exact_at(fs, file, &mut tail, start, path)?;
    Ok(tail)
}

/// SHA-256 of the first `size` bytes of `file`.
fn hash_file(fs: &dyn Fs, file: &File, size: u64, path: &Path) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    for_each_chunk(fs, file, 0, size, path, |chunk| {
        hasher.update(chunk);
        true
    })?;
    Ok(hasher.finalize().into())
}

impl Fence {
    /// Snapshots `transcript`: O(1) in its size plus what was appended since
    /// the handle's previous snapshot, except the handle's first snapshot,
    /// which reads the whole file (up to [`DIGEST_SEED_CAP`]) to seed its
    /// digest (see the module docs).
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
                    digest: None,
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
        let content = transcript.digest().advance(fs, &file, id, path)?;
        Ok(Fence {
            path: path.to_owned(),
            id: Some(id),
            epoch,
            tail: content.tail,
            digest: content.digest,
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

    /// SHA-256 of the transcript's content (its first [`Fence::size`] bytes)
    /// when the fence was taken; `None` when the transcript did not exist
    /// or was too large to seed the handle's digest ([`DIGEST_SEED_CAP`]).
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.digest
    }

    /// Compares the transcript now with the fence: O(appended bytes), or
    /// the whole file when only its metadata changed or a file of the same
    /// size replaced it (see the module docs).
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
            return self.compare_in_place(fs, &file, old, new);
        }
        // Longer: the old tail must still be there.
        if read_tail(fs, &file, old.size, path)? != self.tail {
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

    /// Same inode and size, other times: fine only if the content is still
    /// what the fence saw. With a digest that is proven by hashing the file;
    /// without one (over the seed cap) only a change of the ctime alone with
    /// the last bytes intact is let through: any write moves the mtime, and
    /// a writer who sets it back is caught only by the digest.
    fn compare_in_place(&self, fs: &dyn Fs, file: &File, old: Stamp, new: Stamp) -> Result<Change> {
        let same = match self.digest {
            Some(digest) => hash_file(fs, file, new.size, &self.path)? == digest,
            None => {
                old.mtime_ns == new.mtime_ns
                    && read_tail(fs, file, new.size, &self.path)? == self.tail
            }
        };
        Ok(if same {
            Change::Benign {
                entries: Vec::new(),
                range: new.size..new.size,
            }
        } else {
            Change::Takeover(Takeover::Edited)
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
