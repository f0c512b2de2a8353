//! The transcript store ([design §5](crate::design#5-the-transcript-store)): a
//! JSONL file per session whose every mutation is fenced by the session lock.
//!
//! - [`Transcript::append`] writes a batch of entries, one complete line
//!   each, with a single `write(2)` to an `O_APPEND` handle, inside
//!   [`Guard::with_fence`](crate::Guard::with_fence): once a newer epoch exists no write of an older
//!   one can land, because reclaim and revocation take the session's state
//!   lock exclusively and the fenced write holds it shared.
//!   [`Transcript::append_raw`] does the same with entries given as JSON
//!   text ([`RawEntries`]): validated without building a value tree and
//!   written byte for byte, so a batch costs its own size in memory and
//!   numbers keep their spelling (`1.50` stays `1.50`).
//! - [`Transcript::rewrite`] and [`Transcript::truncate`] write a new file
//!   beside the transcript, fsync it, rename it over, and fsync the directory.
//! - [`Transcript::reader`] streams entries; a final line without `\n` (torn
//!   by a crash) is reported, never returned as an entry.
//! - [`Transcript::repair`] (run automatically by the first fenced write
//!   after open) moves a torn tail to `<session>.torn-<epoch>` and truncates
//!   the transcript to its last complete line. Earlier entries are never
//!   touched.
//! - A write or sync error poisons the handle: later writes fail with
//!   `Poisoned` until it is reopened. Nothing is retried silently.
//! - Each handle keeps a running SHA-256 of the file for its fences, and
//!   the process shares these digests between handles through a bounded
//!   cache keyed by the file's device, inode and birth time (see
//!   [`crate::backend::file::fence`]): a new handle's first snapshot starts from the cached
//!   digest when the file only grew and the 64 bytes before the cached end
//!   are intact (or when size and times are unchanged), reading those 64
//!   bytes and the appended ones instead of the whole file. Like the
//!   handle's own catch-up, that trusts the bytes before the boundary: an
//!   edit in place further back, made between two handles' snapshots with
//!   an append, is not seen. [`Transcript::repair`], which cuts the file,
//!   and [`Transcript::rewrite`] and [`Transcript::truncate`], which
//!   replace it, drop the cached digest of the file they cut or replace.
//! - A transcript is a regular file: a FIFO, socket, device or directory at
//!   its path is refused with `InvalidPath` before anything is read or
//!   written (opens never block: a FIFO is opened non-blocking, and only to
//!   be refused).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::fence::{forget_cached_digest, DigestCell, Fence};
use super::fs::{read_exact_at, Fs, RealFs};
use super::key::key_of;
use super::lease::{fenced, FileLease};
use crate::backend::Held;
use crate::blocking::offload;
use crate::error::{Error, Result};
use crate::store::classify::ChangeClassifier;
use crate::store::Valid;
pub use crate::store::{
    Appended, Change, Durability, Entry, RawEntries, Read, Takeover, TornTail, MAX_ENTRY_BYTES,
};

/// What stands at a transcript path instead of a regular file, for messages.
pub(crate) fn not_regular(path: &Path, ft: std::fs::FileType) -> Error {
    Error::InvalidPath {
        path: path.to_owned(),
        reason: format!(
            "is {}, not a regular transcript file",
            crate::backend::file::fs::kind_of(ft)
        ),
    }
}

/// An open transcript: the JSONL file of one session, one entry a line.
///
/// Its mutations ([`append`](Transcript::append),
/// [`append_raw`](Transcript::append_raw), [`rewrite`](Transcript::rewrite),
/// [`truncate`](Transcript::truncate), [`repair`](Transcript::repair)) take
/// the session's [`Guard`](crate::Guard) and land only while it owns the
/// session, whole or not at all. Reads ([`reader`](Transcript::reader),
/// [`Reader::open`]) take no lock: they see complete lines only. A write or
/// sync error poisons the handle (later mutations fail with
/// [`Error::Poisoned`]): open a new one.
///
/// # Example
///
/// Append, read back, and repair the torn line a crash left:
///
/// ```
/// use std::io::Write as _;
/// use serde_json::json;
/// use sessionlock::SessionLock;
/// use sessionlock::transcript::{Durability, Reader, Transcript};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let session = dir.path().join("abc.jsonl");
/// let guard = SessionLock::new().acquire(&session)?;
/// let mut transcript = Transcript::open(&session)?;
/// transcript.append(
///     &guard,
///     &[json!({"role": "user", "text": "hi"}), json!({"role": "assistant", "text": "hello"})],
///     Durability::Data,
/// )?;
///
/// // A writer that crashed mid-line (simulated) leaves a line without `\n`.
/// std::fs::OpenOptions::new()
///     .append(true)
///     .open(&session)?
///     .write_all(br#"{"role": "us"#)?;
///
/// // Readers return the complete entries, and report the torn line.
/// let mut reader = transcript.reader()?;
/// let entries = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(entries.len(), 2);
/// assert_eq!(entries[1].value["text"], "hello");
/// assert!(reader.torn_tail().is_some());
///
/// // The repair sets the torn bytes aside in `abc.jsonl.torn-<epoch>` and
/// // cuts them off (the first fenced write of each epoch does it by itself).
/// let torn = transcript.repair(&guard)?.expect("a torn line");
/// let saved = torn.saved_to.expect("set aside");
/// assert_eq!(std::fs::read(saved)?, br#"{"role": "us"#);
///
/// transcript.append(&guard, &[json!({"role": "user", "text": "still there?"})], Durability::Data)?;
/// assert_eq!(Reader::open(&session)?.count(), 3);
/// guard.release()?;
/// # Ok(())
/// # }
/// ```
pub struct Transcript {
    path: PathBuf,
    fs: Arc<dyn Fs>,
    file: File,
    /// This open created the file (a `Full` write then also syncs the directory).
    created: bool,
    poisoned: bool,
    /// The epoch whose fenced writes already checked the tail: the check
    /// runs at the first write of every epoch, since another holder may have
    /// left a torn line in between.
    checked: Option<u64>,
    /// The running content digest of the file, for fences (a copy of each
    /// state is kept in the process-wide cache, see [`crate::backend::file::fence`]).
    digest: DigestCell,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcript")
            .field("path", &self.path)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

impl Transcript {
    /// Opens (creating if needed) the transcript of `session` on the real
    /// file system. The path is canonicalized like lock keys, so it matches
    /// the session of a guard acquired through any path to the same file.
    ///
    /// # Errors
    /// `Io`, `InvalidPath` (a symlink loop, no file name).
    ///
    /// # Example
    ///
    /// ```
    /// use sessionlock::SessionLock;
    /// use sessionlock::transcript::Transcript;
    ///
    /// # fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("sessions").join("abc.jsonl");
    /// let transcript = Transcript::open(&session)?; // creates the file (and its directory)
    /// assert!(session.is_file());
    ///
    /// // Another spelling of the same path names the same session.
    /// let guard = SessionLock::new().acquire(dir.path().join("sessions/./abc.jsonl"))?;
    /// assert_eq!(transcript.path(), guard.session_path());
    /// guard.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(session: impl AsRef<Path>) -> Result<Transcript> {
        Self::open_with(session, Arc::new(RealFs))
    }

    /// [`Transcript::open`] through a given file system.
    ///
    /// # Errors
    /// As [`Transcript::open`].
    pub fn open_with(session: impl AsRef<Path>, fs: Arc<dyn Fs>) -> Result<Transcript> {
        let session = session.as_ref();
        let Some(key) = key_of(session, None, true)? else {
            unreachable!("a key lookup that may create its directory always gives one")
        };
        let path = key.session;
        Self::open_canonical(path, fs)
    }

    /// Opens the transcript at `path`, a canonical session path (a backend's
    /// [`FileKey`](super::FileKey)`::session`).
    ///
    /// # Errors
    /// As [`Transcript::open`].
    pub(crate) fn open_canonical(path: PathBuf, fs: Arc<dyn Fs>) -> Result<Transcript> {
        // Look before opening: opening creates a missing file, and nothing
        // but a regular file (or nothing) may stand at a transcript's path.
        let existed = match fs.stat(&path) {
            Ok(m) if !m.is_file() => return Err(not_regular(&path, m.file_type())),
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("stat transcript", &path, e)),
        };
        let file = fs
            .open_append(&path)
            .map_err(io_err("open transcript", &path))?;
        let meta = fs
            .metadata(&file)
            .map_err(io_err("stat transcript", &path))?;
        if !meta.is_file() {
            return Err(not_regular(&path, meta.file_type()));
        }
        Ok(Transcript {
            path,
            fs,
            file,
            created: !existed,
            poisoned: false,
            checked: None,
            digest: DigestCell::default(),
        })
    }

    /// The canonical transcript path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file system this handle uses.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// Whether an earlier write error made this handle unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The descriptor of the open transcript (for fence snapshots: it keeps
    /// the inode it was opened on readable even after a rename over it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The running content digest of the file, for fences.
    pub(crate) fn digest(&self) -> &DigestCell {
        &self.digest
    }

    /// Whether this handle may write under `lease`: not poisoned, and the
    /// lease is of this transcript's session.
    fn ready(&self, lease: &FileLease) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned {
                path: self.path.clone(),
            });
        }
        let session = &lease.key().session;
        if *session != self.path {
            return Err(Error::InvalidPath {
                path: session.clone(),
                reason: format!(
                    "the guard is for another session than {}",
                    self.path.display()
                ),
            });
        }
        Ok(())
    }

    /// Runs `op`, a mutation of this transcript, as one unit with the
    /// lease's epoch check: under the file backend's fence, unless the
    /// caller runs inside it already.
    fn fenced_unit<T>(
        &mut self,
        held: &Held<FileLease>,
        op: impl FnOnce(&mut Self, u64) -> Result<T>,
    ) -> Result<T> {
        let lease = held.lease();
        self.ready(lease)?;
        let (epoch, _) = lease.epoch_ino();
        if held.inside_fence() {
            op(self, epoch)
        } else {
            fenced(lease, || op(self, epoch))?
        }
    }

    /// Makes sure the handle still writes to the file at the path: another
    /// holder's rewrite renames a new file over it, and an append through a
    /// handle on the old inode would land in a file nobody reads. Runs under
    /// the fence, so the path cannot change again before the write.
    fn follow_path(&mut self) -> Result<()> {
        let at_path = self.fs.stat(&self.path);
        let ours = self
            .fs
            .metadata(&self.file)
            .map_err(io_err("stat transcript", &self.path))?;
        let same = matches!(&at_path, Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()));
        if !same {
            self.file = self
                .fs
                .open_append(&self.path)
                .map_err(io_err("reopen transcript", &self.path))?;
            self.checked = None;
        }
        Ok(())
    }

    /// Marks the handle poisoned and passes the error on.
    fn poison(&mut self, e: Error) -> Error {
        self.poisoned = true;
        tracing::error!(
            target: "sessionlock::transcript",
            path = %self.path.display(),
            error = %e,
            "transcript write failed; handle poisoned"
        );
        e
    }

    pub(crate) fn append_held(
        &mut self,
        held: &Held<FileLease>,
        buf: &[u8],
        durability: Durability,
    ) -> Result<Appended> {
        self.fenced_unit(held, |this, epoch| {
            this.append_fenced(buf, durability, epoch)
        })
    }

    fn append_fenced(
        &mut self,
        buf: &[u8],
        durability: Durability,
        epoch: u64,
    ) -> Result<Appended> {
        self.follow_path()?;
        if self.checked != Some(epoch) {
            self.repair_fenced(epoch, false)?;
        }
        let offset = self
            .fs
            .metadata(&self.file)
            .map_err(io_err("stat transcript", &self.path))?
            .len();
        if !buf.is_empty() {
            match self.fs.write(&self.file, buf) {
                Ok(n) if n == buf.len() => {}
                Ok(n) => {
                    let e = io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {} bytes", buf.len()),
                    );
                    return Err(self.poison(Error::io("append to transcript", &self.path, e)));
                }
                Err(e) => {
                    return Err(self.poison(Error::io("append to transcript", &self.path, e)))
                }
            }
        }
        self.sync(durability)?;
        Ok(Appended {
            offset,
            len: buf.len() as u64,
        })
    }

    fn sync(&mut self, durability: Durability) -> Result<()> {
        // An fsync blocks: never on an async runtime's worker thread.
        let r = offload(|| match durability {
            Durability::None => Ok(()),
            Durability::Data => self.fs.sync_data(&self.file),
            Durability::Full => self.fs.sync_all(&self.file).and_then(|()| {
                if self.created {
                    self.fs.sync_dir(parent(&self.path))?;
                    self.created = false;
                }
                Ok(())
            }),
        });
        r.map_err(|e| self.poison(Error::io("sync transcript", &self.path, e)))
    }

    pub(crate) fn repair_held(&mut self, held: &Held<FileLease>) -> Result<Option<TornTail>> {
        self.fenced_unit(held, |this, epoch| {
            offload(|| this.repair_fenced(epoch, true))
        })
    }

    /// Repairs a torn tail and logs it: at `info` when the caller asked for
    /// the repair (`requested`: it is the outcome they wanted), as a warning
    /// when it comes unasked before an append (a crash tore the tail).
    fn repair_fenced(&mut self, epoch: u64, requested: bool) -> Result<Option<TornTail>> {
        let r = self.repair_inner(epoch);
        match r {
            Ok(t) => {
                self.checked = Some(epoch);
                if let Some(torn) = &t {
                    crate::observe::repaired("file", self.path.as_os_str(), torn.len);
                    let saved_to = Path::new(torn.saved_to.as_deref().unwrap_or_default());
                    if requested {
                        tracing::info!(
                            target: "sessionlock::transcript",
                            path = %self.path.display(),
                            bytes = torn.len,
                            saved_to = %saved_to.display(),
                            "repaired torn transcript tail"
                        );
                    } else {
                        tracing::warn!(
                            target: "sessionlock::transcript",
                            path = %self.path.display(),
                            bytes = torn.len,
                            saved_to = %saved_to.display(),
                            "repaired torn transcript tail before an append"
                        );
                    }
                }
                Ok(t)
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    fn repair_inner(&mut self, epoch: u64) -> Result<Option<TornTail>> {
        let Some(torn) = torn_tail(self.fs.as_ref(), &self.file, &self.path)? else {
            return Ok(None);
        };
        let cut = self
            .fs
            .metadata(&self.file)
            .map_err(io_err("stat transcript", &self.path))?;
        // Save the torn bytes before removing them.
        let mut side = with_suffix(&self.path, &format!(".torn-{epoch}"));
        let mut n = 1;
        let out = loop {
            match self.fs.create_new(&side) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => {
                    side = with_suffix(&self.path, &format!(".torn-{epoch}-{n}"));
                    n += 1;
                }
                Err(e) => return Err(Error::io("create torn-tail file", &side, e)),
            }
        };
        let saved = (|| {
            copy_range(
                self.fs.as_ref(),
                &self.file,
                &out,
                torn.offset,
                torn.len,
                &side,
            )?;
            // The saved bytes (file and name) are durable before anything is cut.
            self.fs
                .sync_all(&out)
                .map_err(io_err("sync torn-tail file", &side))?;
            self.fs
                .sync_dir(parent(&self.path))
                .map_err(io_err("sync directory of", &self.path))?;
            self.fs
                .set_len(&self.file, torn.offset)
                .map_err(io_err("truncate torn tail of", &self.path))
        })();
        if let Err(e) = saved {
            // Nothing was cut: the torn bytes are still in the transcript, so
            // the side file holds nothing the operator needs. Leaving it
            // would leave one (empty or partial) file per failed attempt.
            if let Err(re) = self.fs.remove(&side) {
                tracing::warn!(
                    target: "sessionlock::transcript",
                    path = %side.display(),
                    error = %re,
                    "cannot remove the side file of a failed repair"
                );
            }
            return Err(e);
        }
        // Cut in place: neither the handle's digest nor a cached one (which
        // may have hashed the torn bytes) describes the file any more.
        self.digest.forget();
        forget_cached_digest(&cut);
        self.fs
            .sync_all(&self.file)
            .map_err(io_err("sync transcript", &self.path))?;
        Ok(Some(TornTail {
            saved_to: Some(side.into_os_string()),
            ..torn
        }))
    }

    pub(crate) fn rewrite_held(&mut self, held: &Held<FileLease>, content: &[u8]) -> Result<()> {
        self.fenced_unit(held, |this, epoch| {
            offload(|| this.replace_fenced(content, epoch))
        })
    }

    pub(crate) fn truncate_held(&mut self, held: &Held<FileLease>, keep: usize) -> Result<()> {
        self.fenced_unit(held, |this, epoch| {
            offload(|| {
                let mut kept = Vec::new();
                let mut reader = BufReader::new(
                    this.fs
                        .open_read(&this.path)
                        .map_err(io_err("open transcript", &this.path))?,
                );
                let mut line = Vec::new();
                for _ in 0..keep {
                    line.clear();
                    let n = reader
                        .read_until(b'\n', &mut line)
                        .map_err(io_err("read transcript", &this.path))?;
                    if n == 0 || line.last() != Some(&b'\n') {
                        break;
                    }
                    kept.extend_from_slice(&line);
                }
                this.replace_fenced(&kept, epoch)
            })
        })
    }

    fn replace_fenced(&mut self, content: &[u8], epoch: u64) -> Result<()> {
        let tmp = with_suffix(&self.path, &format!(".rewrite-{epoch}"));
        let _ = self.fs.remove(&tmp); // a leftover of a crashed rewrite of this epoch
        let result = (|| -> Result<File> {
            let f = self.fs.create_new(&tmp).map_err(io_err("create", &tmp))?;
            let mut done = 0;
            while done < content.len() {
                match self.fs.write(&f, &content[done..]) {
                    Ok(0) => {
                        return Err(Error::io(
                            "write",
                            &tmp,
                            io::Error::from(io::ErrorKind::WriteZero),
                        ))
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("write", &tmp, e)),
                }
            }
            self.fs.sync_all(&f).map_err(io_err("sync", &tmp))?;
            // The file about to be replaced: its cached digest goes with it.
            let replaced = self.fs.stat(&self.path).ok();
            self.fs
                .rename(&tmp, &self.path)
                .map_err(io_err("rename over", &self.path))?;
            if let Some(m) = &replaced {
                forget_cached_digest(m);
            }
            self.fs
                .sync_dir(parent(&self.path))
                .map_err(io_err("sync directory of", &self.path))?;
            self.fs
                .open_append(&self.path)
                .map_err(io_err("reopen", &self.path))
        })();
        match result {
            Ok(f) => {
                self.file = f;
                self.checked = Some(epoch);
                self.digest.forget();
                Ok(())
            }
            Err(e) => {
                let _ = self.fs.remove(&tmp);
                Err(self.poison(e))
            }
        }
    }

    /// Snapshots the transcript for the session epoch `epoch` (a fence, see
    /// [`crate::fence`]): the blocking twin of [`TranscriptStore::snapshot`](crate::backend::TranscriptStore::snapshot).
    ///
    /// # Errors
    /// `Io` when it cannot be examined.
    pub fn snapshot(&self, epoch: u64) -> Result<Fence> {
        Fence::take(self, epoch)
    }

    /// What changed since `fence`, judged by `classifier`: the blocking twin
    /// of [`TranscriptStore::check`](crate::backend::TranscriptStore::check).
    ///
    /// # Errors
    /// `Io` when it cannot be examined.
    pub fn check(&self, fence: &Fence, classifier: &dyn ChangeClassifier) -> Result<Change> {
        fence.check(self.fs.as_ref(), classifier)
    }

    /// Streams the transcript's entries from the start. Reading takes no
    /// lock; it sees complete lines only (a line being appended is not yet
    /// one).
    ///
    /// # Errors
    /// `Io` when the file cannot be opened; each entry may be
    /// `InvalidEntry` (a line that is not JSON; the reader goes on after it)
    /// or `Io` (which ends the stream).
    ///
    /// # Example
    ///
    /// ```
    /// use serde_json::json;
    /// use sessionlock::SessionLock;
    /// use sessionlock::transcript::{Durability, Transcript};
    ///
    /// # fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let mut transcript = Transcript::open(&session)?;
    /// let guard = SessionLock::new().acquire(&session)?;
    /// transcript.append(&guard, &[json!({"n": 1}), json!({"n": 2})], Durability::None)?;
    /// guard.release()?;
    ///
    /// let mut sum = 0;
    /// for entry in transcript.reader()? {
    ///     let entry = entry?;
    ///     sum += entry.value["n"].as_u64().unwrap_or(0);
    /// }
    /// assert_eq!(sum, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reader(&self) -> Result<Reader> {
        Reader::open_with(&self.path, self.fs.clone())
    }
}

impl Fence {
    /// Snapshots `transcript`: O(1) in its size plus what was appended since
    /// the handle's previous snapshot, or, at the handle's first snapshot,
    /// since the digest the process-wide cache has of the file; without one
    /// usable, the whole file (up to [`DIGEST_SEED_CAP`](crate::fence::DIGEST_SEED_CAP)) is read to seed
    /// the digest (see the module docs).
    ///
    /// # Errors
    /// `Io` when the transcript cannot be examined.
    pub fn take(transcript: &Transcript, epoch: u64) -> Result<Fence> {
        Fence::take_at(
            transcript.fs().as_ref(),
            transcript.path(),
            transcript.file(),
            transcript.digest(),
            epoch,
        )
    }
}

/// Serializes entries as JSONL lines.
pub(crate) fn serialize(entries: &[Value], path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(entries.len() * 128);
    for e in entries {
        serde_json::to_writer(&mut buf, e)
            .map_err(|e| Error::io("serialize entry for", path, io::Error::other(e)))?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Finds a torn final line: the bytes after the last `\n`. Reads backwards
/// from the end, so it costs the size of the torn tail, not of the file.
/// Agrees with what a [`Reader`] reports once it reaches the end.
///
/// # Errors
/// `Io` when the file cannot be stat'ed or read (a file that shrinks while
/// it is read fails with `UnexpectedEof`).
pub fn torn_tail(fs: &dyn Fs, file: &File, path: &Path) -> Result<Option<TornTail>> {
    let len = fs
        .metadata(file)
        .map_err(io_err("stat transcript", path))?
        .len();
    let mut end = len;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        read_exact_at(fs, file, chunk, start, path)?;
        if end == len && chunk.last() == Some(&b'\n') {
            return Ok(None);
        }
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let offset = start + i as u64 + 1;
            return Ok(Some(TornTail {
                offset,
                len: len - offset,
                saved_to: None,
            }));
        }
        end = start;
    }
    Ok((len > 0).then_some(TornTail {
        offset: 0,
        len,
        saved_to: None,
    }))
}

fn copy_range(
    fs: &dyn Fs,
    from: &File,
    to: &File,
    offset: u64,
    len: u64,
    to_path: &Path,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read_exact_at(fs, from, &mut buf[..n], offset + done, to_path)?;
        let mut written = 0;
        while written < n {
            match fs.write(to, &buf[written..n]) {
                Ok(0) => {
                    return Err(Error::io(
                        "write",
                        to_path,
                        io::Error::from(io::ErrorKind::WriteZero),
                    ))
                }
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("write", to_path, e)),
            }
        }
        done += n as u64;
    }
    Ok(())
}

/// Streams a transcript's entries. After the last entry, [`Reader::torn_tail`]
/// tells whether a torn final line was skipped.
pub struct Reader {
    path: PathBuf,
    inner: Option<BufReader<File>>,
    offset: u64,
    torn: Option<TornTail>,
    line: Vec<u8>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Reader {
    /// Streams `path` (a missing file has no entries).
    ///
    /// # Errors
    /// `Io` when the file exists but cannot be opened (a symlink at `path`
    /// is not followed); `InvalidPath` when it is not a regular file (a
    /// FIFO, socket, device or directory).
    pub fn open(path: impl AsRef<Path>) -> Result<Reader> {
        Self::open_with(path.as_ref(), Arc::new(RealFs))
    }

    fn open_with(path: &Path, fs: Arc<dyn Fs>) -> Result<Reader> {
        let inner = match fs.open_read(path) {
            Ok(f) => {
                // A FIFO opens at once (non-blocking) and reads as empty: it
                // must be refused, not reported as a transcript with no entries.
                let m = fs
                    .metadata(&f)
                    .map_err(|e| Error::io("stat transcript", path, e))?;
                if !m.is_file() {
                    return Err(not_regular(path, m.file_type()));
                }
                Some(BufReader::with_capacity(64 * 1024, f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open transcript", path, e)),
        };
        Ok(Reader {
            path: path.to_owned(),
            inner,
            offset: 0,
            torn: None,
            line: Vec::new(),
        })
    }

    /// The torn final line, once the reader has reached it.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }
}

/// One entry as stored: the bytes of its line, checked to be one JSON
/// value, from [`Reader::next_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawEntry<'a> {
    /// The line without its `\n`.
    pub json: &'a [u8],
    /// Offset of the line.
    pub offset: u64,
    /// Length of the line, `\n` included.
    pub len: u64,
}

impl Reader {
    /// Reads the next complete line into `self.line`: its offset and
    /// length, `None` at the end (or at a torn final line, which is
    /// recorded), or the error that ends the stream.
    fn next_line(&mut self) -> Option<Result<(u64, usize)>> {
        let inner = self.inner.as_mut()?;
        self.line.clear();
        let limit = MAX_ENTRY_BYTES as u64 + 1;
        let n = match io::Read::take(&mut *inner, limit).read_until(b'\n', &mut self.line) {
            Ok(n) => n,
            Err(e) => {
                self.inner = None;
                return Some(Err(Error::io("read transcript", &self.path, e)));
            }
        };
        if n == 0 {
            self.inner = None;
            return None;
        }
        let offset = self.offset;
        self.offset += n as u64;
        if self.line.last() != Some(&b'\n') {
            self.inner = None;
            if n as u64 == limit {
                return Some(Err(Error::InvalidEntry {
                    path: self.path.clone(),
                    offset,
                    reason: format!("line longer than {MAX_ENTRY_BYTES} bytes"),
                }));
            }
            self.torn = Some(TornTail {
                offset,
                len: n as u64,
                saved_to: None,
            });
            return None;
        }
        Some(Ok((offset, n)))
    }

    /// The error for the complete line at `offset` that is not a value.
    fn invalid_entry(&self, offset: u64, e: &serde_json::Error) -> Error {
        Error::InvalidEntry {
            path: self.path.clone(),
            offset,
            reason: e.to_string(),
        }
    }

    /// The next entry as stored, without building its value: the line's
    /// bytes, checked to be exactly one JSON value. Memory stays at one line
    /// whatever the entry holds, and the bytes are the file's (numbers keep
    /// their spelling). Like the iterator, it ends at a torn final line
    /// (see [`Reader::torn_tail`]), and yields `InvalidEntry` for a line
    /// that is not JSON and goes on after it.
    ///
    /// # Errors
    /// `InvalidEntry`, `Io` (which ends the stream).
    pub fn next_raw(&mut self) -> Option<Result<RawEntry<'_>>> {
        let (offset, n) = match self.next_line()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        let json = &self.line[..n - 1];
        match serde_json::from_slice::<Valid>(json) {
            Ok(_) => Some(Ok(RawEntry {
                json,
                offset,
                len: n as u64,
            })),
            Err(e) => Some(Err(self.invalid_entry(offset, &e))),
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        let (offset, n) = match self.next_line()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        match serde_json::from_slice(&self.line[..n - 1]) {
            Ok(value) => Some(Ok(Entry {
                value,
                offset,
                len: n as u64,
            })),
            Err(e) => Some(Err(self.invalid_entry(offset, &e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Found by the fuzz oracles (issue 9 §5): `append` validated entries with
    // serde's `IgnoredAny`, which does not range-check numbers, so it wrote
    // `{"n":1e400}`, and `next_raw` passed it, while the value reader (and
    // every consumer of `Entry`) reported the same line as invalid.
    #[test]
    fn raw_paths_accept_exactly_what_the_value_reader_accepts() {
        for bad in [&br#"{"n":1e400}"#[..], br#"[-1e999]"#, br#"{"\ud800":1}"#] {
            assert!(serde_json::from_slice::<Value>(bad).is_err());
            let mut batch = RawEntries::new();
            assert!(batch.push(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(batch.is_empty());
        }
        let mut batch = RawEntries::new();
        for good in [
            &br#"{"n":18446744073709551616,"m":-0.0,"s":"\ud83d\ude00"}"#[..],
            b" [1, {\"a\": [null, true]}]\r\n",
        ] {
            batch.push(good).expect("a value the reader can hold");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.jsonl");
        let mut bytes = batch.as_bytes().to_vec();
        bytes.extend_from_slice(b"{\"n\":1e400}\n");
        std::fs::write(&path, &bytes).expect("write");
        let mut raw = Reader::open(&path).expect("open");
        assert!(matches!(raw.next_raw(), Some(Ok(_))));
        assert!(matches!(raw.next_raw(), Some(Ok(_))));
        assert!(matches!(
            raw.next_raw(),
            Some(Err(Error::InvalidEntry { offset, .. })) if offset == batch.as_bytes().len() as u64
        ));
        assert!(raw.next_raw().is_none());
        let values: Vec<_> = Reader::open(&path).expect("open").collect();
        assert!(values[0].is_ok() && values[1].is_ok() && values[2].is_err());
    }
}
