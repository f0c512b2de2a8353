//! Fence snapshots and takeover detection
//! ([design §7](crate::design#7-fence-snapshots-and-takeover-detection)).
//!
//! A [`Fence`] records the transcript's identity when an attempt releases its
//! lock: device, inode, size, times, the session epoch, the last 64 bytes,
//! and a SHA-256 digest of its content. [`Fence::check`] later tells whether
//! the transcript changed in a way the attempt cannot accept.
//!
//! # The content digest
//!
//! A [`Transcript`](crate::transcript::Transcript) handle keeps a running SHA-256 of the file it describes:
//! the hasher's state, how many bytes it has hashed, the last 64 of them, and
//! the device, inode and birth time (where the file system reports one) of
//! that file. The first snapshot of a handle seeds it with one streaming
//! read of the file (64 KiB at a time, through the [`Fs`] seam), unless the
//! process-wide cache below has it; every later snapshot only hashes what
//! was appended since (the attempt's own appends and the foreign ones it
//! accepted), after checking that the last 64 bytes it hashed are still in
//! place. Another
//! inode, a shorter file or changed boundary bytes make the next snapshot
//! seed it again, and so does the handle's own rewrite, truncation or
//! repair. A file larger than [`DIGEST_SEED_CAP`] (8 MiB) is not seeded and
//! its fences have no digest; a digest seeded below the cap keeps being
//! caught up when appends take the file past it.
//!
//! # The process-wide digest cache
//!
//! The attempt controller opens a new handle per attempt, and the seed would
//! read the whole transcript at every attempt's first snapshot, while the
//! attempt holds the lock. So every digest a snapshot seeds or catches up is
//! also stored, as a copy of the hasher's state, the byte count, the last 64
//! bytes hashed and the file's stamp (size, mtime, ctime), in a cache shared
//! by all handles of the process (whatever their [`Fs`]), keyed by the
//! file's device, inode and birth time (where the file system reports one:
//! the kernel hands a freed inode number to the next file created, and the
//! birth time tells them apart). It holds [`DIGEST_CACHE_ENTRIES`] files, the
//! least recently stored evicted; its lock is never held while a file is
//! read, and a panic that poisoned it only empties it.
//!
//! A handle with no digest of its own for the file (its first snapshot, or
//! after its own was dropped) starts from the cached one instead of seeding
//! when, and only when:
//!
//! - the file grew since (at most [`DIGEST_SEED_CAP`] bytes, so a first
//!   snapshot never reads more than a seed) and the 64 bytes before the
//!   cached end are still the ones hashed: the same boundary check as the
//!   handle's own catch-up; it then reads those 64 bytes and the appended
//!   ones;
//! - or the size, mtime and ctime are exactly those stored: it reads the 64
//!   boundary bytes only.
//!
//! Anything else (a shorter file, the same size with other times, changed
//! boundary bytes, a new inode, an entry evicted) seeds as before. The
//! handle's repair (which cuts the file in place) and its rewrite or
//! truncation (which replace the file) drop the cached state of the file
//! they cut or replace.
//!
//! What this proves is what a fence check proves (see the table below):
//! using a cached digest is judging the file against a fence taken when the
//! digest was stored, by the check's rules for "longer, old tail intact"
//! and for "unchanged". It does not prove that the bytes before the
//! boundary are still the ones hashed: a foreign edit in place further back
//! than the last 64 bytes, made between two handles' snapshots together
//! with an append (or, the size unchanged, within the same tick of the
//! kernel's coarse file-time clock as the cached snapshot, so that neither
//! time moved), leaves the cached digest describing bytes no longer in the
//! file. A handle's own catch-up trusts its prefix the same way between its
//! snapshots, where the attempt's fence checks run; a cached digest extends
//! that trust across the gap between two attempts, where no fence is
//! checked (docs/design.md §12 says what follows from it).
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
//! | new inode of the same size; the fence has a digest and the new file hashes to it | `Benign`, no entries (a byte-identical replacement) | the whole file |
//! | the same, the new file hashes otherwise | takeover (`Replaced`) | the whole file |
//! | new inode of the same size; no digest (over the cap): the old inode, which the fence keeps open, still has the fenced size and mtime, and the new file ends with the fence's tail and equals the old inode | `Benign`, no entries | 64 + twice the file |
//! | the same, otherwise (the old inode's mtime moved: it was edited since the fence) | takeover (`Replaced`) | 64 + twice the file at most |
//! | new inode of another size, or the file is gone | takeover | none |
//! | created since the fence (missing then) | all of it classified as appended | the whole file, which is what was appended |
//!
//! Taking a fence reads the whole file once per handle (the seed, at most
//! [`DIGEST_SEED_CAP`] bytes) unless the cache has the file, and afterwards
//! 64 bytes plus what was appended since the previous snapshot (or since the
//! cached one). So taking and checking a fence cost O(1) in the
//! transcript's size plus what was appended, except for the seed and the
//! rare changes that read the whole file above: metadata alone, or a new
//! inode of the same size (read once against the digest, or, over the cap,
//! together with the old inode). The attempt controller opens one handle per
//! attempt: the first attempt of a process on a session reads the
//! transcript once, at its first snapshot, and a later one only what was
//! appended since the previous attempt's last snapshot, while the cache
//! keeps the file.
//!
//! The attempt's own writes are never mistaken for a takeover: the controller
//! takes a new fence after each of them.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::fs::read_exact_at;
use super::fs::Fs;
use super::FileVersion;
use crate::error::{Error, Result};
use crate::store::classify::ChangeClassifier;
pub use crate::store::{Change, Takeover};
use crate::sync::{lock, unpoison};

/// How many trailing bytes a fence keeps to prove a later state is a pure
/// append.
const TAIL: u64 = 64;

/// The largest transcript (8 MiB) whose content digest a snapshot seeds
/// with a full read; a fence of a larger one has no digest (see the module
/// docs). OpenClaw itself reads up to this much at every fence.
pub const DIGEST_SEED_CAP: u64 = 8 * 1024 * 1024;

/// How many files' running digests the process keeps for new handles to
/// start from (see the module docs); the least recently stored is evicted.
pub const DIGEST_CACHE_ENTRIES: usize = 256;

/// The read size for streaming a transcript.
const CHUNK: usize = 64 * 1024;

/// The identity of a transcript at one moment.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    /// `None` when the transcript did not exist.
    id: Option<FileVersion>,
    /// The session epoch when the fence was taken.
    epoch: u64,
    tail: Vec<u8>,
    /// SHA-256 of the first `id.size` bytes, when the transcript handle had
    /// (or could seed) its running digest.
    digest: Option<[u8; 32]>,
    /// The inode the fence describes, kept open to compare a replacement
    /// of the same size with when there is no digest.
    file: Option<File>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

/// Which file a digest describes: its device and inode, and its birth time
/// where the file system reports one, so that an inode number the kernel
/// hands out again to a new file (after the old one was deleted) names
/// another file, not the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DigestKey {
    dev: u64,
    ino: u64,
    born: Option<SystemTime>,
}

impl DigestKey {
    fn of(id: FileVersion, meta: &Metadata) -> DigestKey {
        DigestKey {
            dev: id.dev,
            ino: id.ino,
            born: meta.created().ok(),
        }
    }
}

/// A running SHA-256 of the first `hashed` bytes of one file.
#[derive(Clone)]
struct RunningDigest {
    key: DigestKey,
    hasher: Sha256,
    hashed: u64,
    /// The last min(`TAIL`, `hashed`) bytes hashed.
    tail: Vec<u8>,
}

impl RunningDigest {
    /// Hashes the first `size` bytes of `file`.
    fn seed(
        fs: &dyn Fs,
        file: &File,
        key: DigestKey,
        size: u64,
        path: &Path,
    ) -> Result<RunningDigest> {
        let mut d = RunningDigest {
            key,
            hasher: Sha256::new(),
            hashed: 0,
            tail: Vec::new(),
        };
        for_each_chunk(fs, file, 0, size, path, |chunk| {
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

/// The running content digest a [`Transcript`](super::transcript::Transcript) handle keeps for its fences
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
    /// appending, and the next snapshot seeds a new one. (The caller tells
    /// the process-wide cache with [`forget_cached_digest`].)
    pub(crate) fn forget(&mut self) {
        *unpoison(self.0.get_mut()) = None;
    }

    /// Brings the digest up to `id` (the file `file` as stat'ed, `meta`),
    /// starting from the handle's own digest of that file, else from the
    /// process-wide cache, else seeding it, and returns it with the file's
    /// last bytes.
    fn advance(
        &self,
        fs: &dyn Fs,
        file: &File,
        id: FileVersion,
        meta: &Metadata,
        path: &Path,
    ) -> Result<Content> {
        let key = DigestKey::of(id, meta);
        // The state is taken out while it is advanced: after an error (or a
        // panic, which poisons the lock) the cell is empty, never half done.
        let mut slot = lock(&self.0);
        let same_file = slot.take().filter(|d| d.key == key && d.hashed <= id.size);
        let mut caught_up = match same_file {
            Some(d) => d.catch_up(fs, file, id.size, path)?,
            None => None,
        };
        if caught_up.is_none() {
            // Another handle's digest of this file, under the same bounds as
            // a seed: at most `DIGEST_SEED_CAP` bytes read to catch it up.
            let cached = seed_cache::get(key).filter(|(d, at)| {
                if d.hashed == id.size {
                    // Nothing appended: as in a fence check, only the same
                    // times prove the bytes unchanged; other times (a chmod
                    // or an edit in place) need the whole file read.
                    (at.mtime_ns, at.ctime_ns) == (id.mtime_ns, id.ctime_ns)
                } else {
                    d.hashed < id.size && id.size - d.hashed <= DIGEST_SEED_CAP
                }
            });
            if let Some((d, _)) = cached {
                caught_up = d.catch_up(fs, file, id.size, path)?;
                if caught_up.is_none() {
                    // Its boundary bytes are gone: it describes no file now.
                    seed_cache::forget(key.dev, key.ino);
                }
            }
        }
        let digest = match caught_up {
            Some(d) => Some(d),
            None if id.size <= DIGEST_SEED_CAP => {
                Some(RunningDigest::seed(fs, file, key, id.size, path)?)
            }
            None => None,
        };
        let Some(digest) = digest else {
            return Ok(Content {
                digest: None,
                tail: read_tail(fs, file, id.size, path)?,
            });
        };
        seed_cache::put(&digest, id);
        let content = Content {
            digest: Some(digest.value()),
            tail: digest.tail.clone(),
        };
        *slot = Some(digest);
        Ok(content)
    }
}

/// Forgets what the process-wide digest cache knows of `meta`'s file: the
/// caller changed it other than by appending (a repair cut its tail), or
/// replaced it at the transcript's path (a rewrite or truncation).
pub(crate) fn forget_cached_digest(meta: &Metadata) {
    seed_cache::forget(meta.dev(), meta.ino());
}

/// The process-wide cache of running digests (see the module docs): every
/// digest a snapshot seeds or catches up is stored here by its file, so
/// that the next handle on that file starts from it instead of reading the
/// whole file. At most [`DIGEST_CACHE_ENTRIES`] files, the least recently
/// stored one evicted (a digest used is stored again once caught up). The
/// lock is held for a lookup, a store or a removal only, never while a file
/// is read or any other code runs, so no panic can poison it.
mod seed_cache {
    use std::sync::{Mutex, MutexGuard};

    use super::{DigestKey, FileVersion, RunningDigest, DIGEST_CACHE_ENTRIES};

    struct Slot {
        digest: RunningDigest,
        /// The file as stat'ed when the digest was stored (it had then
        /// hashed all of it).
        at: FileVersion,
        /// The cache's clock when the entry was last stored.
        used: u64,
    }

    struct Cache {
        slots: Vec<Slot>,
        clock: u64,
    }

    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        slots: Vec::new(),
        clock: 0,
    });

    /// The cache, emptied if a panic poisoned its lock: it only saves work,
    /// so an entry a panic may have left half written is dropped, never
    /// used, and no caller panics.
    fn cache() -> MutexGuard<'static, Cache> {
        CACHE.lock().unwrap_or_else(|poisoned| {
            CACHE.clear_poison();
            let mut c = poisoned.into_inner();
            c.slots.clear();
            c
        })
    }

    /// A copy of the cached digest of `key`'s file, with the file's stamp
    /// when it was stored. (A digest used is stored again once caught up,
    /// which marks it used.)
    pub(super) fn get(key: DigestKey) -> Option<(RunningDigest, FileVersion)> {
        let c = cache();
        let slot = c.slots.iter().find(|s| s.digest.key == key)?;
        Some((slot.digest.clone(), slot.at))
    }

    /// Stores a copy of `digest`, which has hashed all of the file stamped
    /// `at`, replacing what the cache held for its inode (an earlier birth
    /// of the number too), evicting the least recently used entry when full.
    pub(super) fn put(digest: &RunningDigest, at: FileVersion) {
        let mut c = cache();
        c.clock += 1;
        let used = c.clock;
        let (dev, ino) = (digest.key.dev, digest.key.ino);
        let slot = Slot {
            digest: digest.clone(),
            at,
            used,
        };
        if let Some(s) = c
            .slots
            .iter_mut()
            .find(|s| (s.digest.key.dev, s.digest.key.ino) == (dev, ino))
        {
            *s = slot;
        } else if c.slots.len() < DIGEST_CACHE_ENTRIES {
            c.slots.push(slot);
        } else if let Some(lru) = c.slots.iter_mut().min_by_key(|s| s.used) {
            *lru = slot;
        }
    }

    /// Drops what the cache holds for the file `(dev, ino)`.
    pub(super) fn forget(dev: u64, ino: u64) {
        cache()
            .slots
            .retain(|s| (s.digest.key.dev, s.digest.key.ino) != (dev, ino));
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

/// The verdict on a file of `size` bytes, the fence's own size, whose
/// content was found to be the fenced one (`same`) or not.
fn same_content_or(same: bool, size: u64, takeover: Takeover) -> Change {
    if same {
        Change::Benign {
            entries: Vec::new(),
            range: size..size,
        }
    } else {
        Change::Takeover(takeover)
    }
}

/// Whether the first `size` bytes of `a` and `b` are equal.
fn same_bytes(fs: &dyn Fs, a: &File, b: &File, size: u64, path: &Path) -> Result<bool> {
    let len = size.min(CHUNK as u64) as usize;
    let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(CHUNK as u64) as usize;
        read_exact_at(fs, a, &mut x[..n], offset, path)?;
        read_exact_at(fs, b, &mut y[..n], offset, path)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
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
    /// Snapshots the transcript at `path`, open as `handle`, whose running
    /// digest is `digest` (see [`Fence::take`]).
    pub(crate) fn take_at(
        fs: &dyn Fs,
        path: &Path,
        handle_file: &File,
        digest: &DigestCell,
        epoch: u64,
    ) -> Result<Fence> {
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
        let id = FileVersion::of(&meta);
        let handle = fs
            .metadata(handle_file)
            .map_err(io_err("stat transcript", path))?;
        // The handle normally is the file at the path; after a foreign
        // replacement it is not, and the path's file is what we describe.
        let file = if (handle.dev(), handle.ino()) == (id.dev, id.ino) {
            handle_file
                .try_clone()
                .map_err(io_err("duplicate descriptor of", path))?
        } else {
            fs.open_read(path)
                .map_err(io_err("open transcript", path))?
        };
        let content = digest.advance(fs, &file, id, &meta, path)?;
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
            Ok(m) => Some(FileVersion::of(&m)),
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
    fn compare_in_place(
        &self,
        fs: &dyn Fs,
        file: &File,
        old: FileVersion,
        new: FileVersion,
    ) -> Result<Change> {
        let same = match self.digest {
            Some(digest) => hash_file(fs, file, new.size, &self.path)? == digest,
            None => {
                old.mtime_ns == new.mtime_ns
                    && read_tail(fs, file, new.size, &self.path)? == self.tail
            }
        };
        Ok(same_content_or(same, new.size, Takeover::Edited))
    }

    /// A new file at the path is fine only if its bytes are the ones the
    /// fence saw. With a digest that is proven by hashing the new file. The
    /// old inode, which the fence keeps open, may itself have been edited
    /// since (and then copied over the path), so without a digest its bytes
    /// stand for the fenced ones only if its size and mtime are still the
    /// fenced ones and the new file ends with the fence's tail; the ctime
    /// cannot be required, as unlinking or renaming the old inode moves it.
    /// As in place, a writer who sets the mtime back is caught only by the
    /// digest.
    fn compare_replacement(
        &self,
        fs: &dyn Fs,
        new_file: &File,
        old: FileVersion,
        new: FileVersion,
    ) -> Result<Change> {
        if old.size != new.size {
            return Ok(Change::Takeover(Takeover::Replaced));
        }
        let same = match (self.digest, &self.file) {
            (Some(digest), _) => hash_file(fs, new_file, new.size, &self.path)? == digest,
            (None, Some(old_file)) => {
                let kept = fs
                    .metadata(old_file)
                    .map_err(io_err("stat fenced transcript", &self.path))?;
                let kept = FileVersion::of(&kept);
                (kept.size, kept.mtime_ns) == (old.size, old.mtime_ns)
                    && read_tail(fs, new_file, new.size, &self.path)? == self.tail
                    && same_bytes(fs, old_file, new_file, new.size, &self.path)?
            }
            (None, None) => false,
        };
        Ok(same_content_or(same, new.size, Takeover::Replaced))
    }
}
