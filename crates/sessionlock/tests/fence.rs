//! Fence snapshots and checks on real files (spec §8.3–§8.4, issue 10
//! items 4 and 5): what a benign change returns, which changes of metadata
//! alone are no takeover, which same-size edits are, and what taking and
//! checking a fence reads.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessionlock::attempt::{Attempt, AttemptOptions, State};
use sessionlock::classify::{AcceptNothing, ChangeClassifier, OpenClawClassifier};
use sessionlock::fence::{Change, Fence, Takeover, DIGEST_CACHE_ENTRIES, DIGEST_SEED_CAP};
use sessionlock::fs::{Fs, RealFs};
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{FileBackend, LockOptions, SessionLock};
use sha2::{Digest, Sha256};

/// A file system that counts the bytes `pread` returns.
#[derive(Default)]
struct CountingFs {
    read: AtomicU64,
}

impl CountingFs {
    /// Bytes read since the last call.
    fn take(&self) -> u64 {
        self.read.swap(0, Ordering::SeqCst)
    }
}

impl Fs for CountingFs {
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = RealFs.read_at(file, buf, offset)?;
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

/// A transcript of about `bytes` bytes at `session`, opened through a
/// [`CountingFs`]: the store, the counter and the transcript's size.
fn counted_store(session: &Path, bytes: usize) -> (Transcript, Arc<CountingFs>, u64) {
    let size = write_transcript(session, bytes).len() as u64;
    let counting = Arc::new(CountingFs::default());
    let t = FileBackend::default()
        .with_fs(counting.clone())
        .open_transcript(session)
        .expect("open store");
    (t, counting, size)
}

/// Accepts every entry, so that appends of any kind are read and classified.
struct AcceptAll;

impl ChangeClassifier for AcceptAll {
    fn is_benign(&self, _: &Value) -> bool {
        true
    }
}

fn opts() -> LockOptions {
    LockOptions::default().timeout(Some(Duration::from_secs(5)))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn entry(i: usize) -> Value {
    json!({"type": "message", "id": format!("m{i}"), "message": {"role": "user", "content": "x".repeat(100)}})
}

/// A transcript of about `bytes` bytes of complete lines.
fn write_transcript(path: &Path, bytes: usize) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes + 256);
    let mut i = 0;
    while content.len() < bytes {
        serde_json::to_writer(&mut content, &entry(i)).expect("serialize");
        content.push(b'\n');
        i += 1;
    }
    fs::write(path, &content).expect("write transcript");
    content
}

/// Appends `lines` to the file without any lock (a foreign writer).
fn append_foreign(path: &Path, lines: &[Value]) -> u64 {
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l).expect("serialize");
        buf.push(b'\n');
    }
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(&buf).expect("append");
    buf.len() as u64
}

fn ctime_ns(path: &Path) -> i128 {
    let m = fs::metadata(path).expect("stat");
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// Runs `change` until the file's ctime moves: file times tick with the
/// kernel's coarse clock, so a change right after the fence may leave them
/// equal and prove nothing.
fn until_ctime_moves(path: &Path, mut change: impl FnMut()) {
    let before = ctime_ns(path);
    let deadline = Instant::now() + Duration::from_secs(5);
    change();
    while ctime_ns(path) == before {
        assert!(
            Instant::now() < deadline,
            "the ctime of {path:?} never moved"
        );
        std::thread::sleep(Duration::from_millis(1));
        change();
    }
}

/// A `chmod` that changes the mode each time it runs (0600 and 0640 in turn).
fn chmod(path: &Path) {
    let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    let next = if mode == 0o600 { 0o640 } else { 0o600 };
    fs::set_permissions(path, fs::Permissions::from_mode(next)).expect("chmod");
}

/// Sets the mtime one second later than it is, content unchanged (`touch -d`).
fn touch_later(path: &Path) {
    let m = fs::metadata(path).expect("stat");
    let later = m.modified().expect("mtime") + Duration::from_secs(1);
    let f = File::options().write(true).open(path).expect("open");
    f.set_times(FileTimes::new().set_modified(later))
        .expect("set times");
}

/// Rewrites the file in place with the same bytes: same inode, `O_TRUNC`.
fn rewrite_in_place(path: &Path) {
    let content = fs::read(path).expect("read");
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open with O_TRUNC");
    f.write_all(&content).expect("write back");
}

fn sha256(path: &Path) -> [u8; 32] {
    Sha256::digest(fs::read(path).expect("read")).into()
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").ino()
}

/// What became of an attempt whose prompt window saw a change.
struct Window {
    /// Whether the reacquire accepted the change.
    accepted: bool,
    /// Whether the transcript is still the inode it was before the change.
    same_inode: bool,
}

/// An attempt on a transcript of 16 KiB, released for a prompt: `change`
/// runs in the prompt window.
fn prompt_window_with(change: impl FnOnce(&Path)) -> Window {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    write_transcript(&session, 16 * 1024);
    rt().block_on(async {
        let a = Attempt::begin_file(&session, AttemptOptions::default().lock(opts()))
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        let inode = ino(&session);
        change(&session);
        let same_inode = ino(&session) == inode;
        let accepted = a.reacquire_after_prompt().await.is_ok();
        let expected = if accepted {
            State::Held
        } else {
            State::TakenOver
        };
        assert_eq!(a.state(), expected);
        Window {
            accepted,
            same_inode,
        }
    })
}

// ------------------------------------------------ metadata alone (item 5)

#[test]
fn chmod_in_the_prompt_window_is_no_takeover() {
    // A backup tool or an operator changing the transcript's mode while a
    // model call is in flight used to end the attempt as `Edited`.
    let w = prompt_window_with(|p| until_ctime_moves(p, || chmod(p)));
    assert!(w.accepted, "a chmod was reported as a takeover");
    assert!(w.same_inode);
}

#[test]
fn identical_rewrite_in_place_in_the_prompt_window_is_no_takeover() {
    // Spec §8.4: a byte-identical rewrite is fine, also when it is done in
    // place (`O_TRUNC` and the same bytes written back: same inode).
    let w = prompt_window_with(|p| until_ctime_moves(p, || rewrite_in_place(p)));
    assert!(w.same_inode, "the rewrite must keep the inode");
    assert!(
        w.accepted,
        "an identical rewrite was reported as a takeover"
    );
}

#[test]
fn edit_in_the_prompt_window_is_still_a_takeover() {
    // The other side of the two tests above: a real edit of the same size
    // in the prompt window ends the attempt.
    let w = prompt_window_with(|p| until_ctime_moves(p, || edit_byte(p, 10, b'y')));
    assert!(!w.accepted, "a same-size edit was accepted");
}

#[test]
fn touch_with_the_same_bytes_is_no_takeover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let content = write_transcript(&session, 64 * 1024);
    let t = FileBackend::default()
        .open_transcript(&session)
        .expect("open store");
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(fence.digest(), Some(sha256(&session)));
    touch_later(&session);
    let size = content.len() as u64;
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Benign {
            entries: Vec::new(),
            range: size..size
        }
    );
}

/// Overwrites one byte in place (same inode, same size).
fn edit_byte(path: &Path, offset: u64, byte: u8) {
    let f = File::options().write(true).open(path).expect("open");
    f.write_all_at(&[byte], offset).expect("pwrite");
}

#[test]
fn same_size_edit_far_from_the_tail_is_a_takeover_even_with_its_times_set_back() {
    // An editor (or a hostile writer) changes one byte early in the file and
    // restores the old atime and mtime: size, inode, mtime and tail all match
    // the fence; only the ctime moved, and only the digest sees the edit.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    write_transcript(&session, 256 * 1024);
    let t = FileBackend::default()
        .open_transcript(&session)
        .expect("open store");
    let fence = t.snapshot(1).expect("snapshot");
    let old = fs::metadata(&session).expect("stat");
    let (atime, mtime) = (
        old.accessed().expect("atime"),
        old.modified().expect("mtime"),
    );
    until_ctime_moves(&session, || {
        edit_byte(&session, 10, b'Y');
        let f = File::options().write(true).open(&session).expect("open");
        f.set_times(FileTimes::new().set_accessed(atime).set_modified(mtime))
            .expect("set times back");
    });
    let now = fs::metadata(&session).expect("stat");
    assert_eq!(
        (now.modified().expect("mtime"), now.len(), now.ino()),
        (mtime, old.len(), old.ino())
    );
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Takeover(Takeover::Edited)
    );
    // And without setting the times back.
    let fence = t.snapshot(1).expect("snapshot");
    until_ctime_moves(&session, || edit_byte(&session, 20, b'Z'));
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Takeover(Takeover::Edited)
    );
}

#[test]
fn over_the_seed_cap_only_a_ctime_change_is_accepted() {
    // A transcript too large to seed a digest: a chmod (ctime only, bytes
    // intact) is let through; a new mtime cannot be proven harmless.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let (t, counting, size) = counted_store(&session, DIGEST_SEED_CAP as usize + 4096);
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(fence.digest(), None);
    assert_eq!(counting.take(), 64, "no seed above the cap: the tail only");

    until_ctime_moves(&session, || chmod(&session));
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Benign {
            entries: Vec::new(),
            range: size..size
        }
    );
    assert_eq!(counting.take(), 64);

    touch_later(&session);
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Takeover(Takeover::Edited)
    );
    // A ctime-only change with the tail edited is no proof either.
    let fence = t.snapshot(1).expect("snapshot");
    let old = fs::metadata(&session).expect("stat");
    until_ctime_moves(&session, || {
        edit_byte(&session, size - 10, b'Q');
        let f = File::options().write(true).open(&session).expect("open");
        f.set_times(
            FileTimes::new()
                .set_accessed(old.accessed().expect("atime"))
                .set_modified(old.modified().expect("mtime")),
        )
        .expect("set times back");
    });
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Takeover(Takeover::Edited)
    );
}

// ------------------------------------------------ a new inode of the same size

/// Copies the transcript to a temp file and renames that over it: a new
/// inode with the same bytes.
fn replace_with_copy(path: &Path) {
    let tmp = path.with_extension("tmp");
    fs::copy(path, &tmp).expect("copy transcript");
    fs::rename(&tmp, path).expect("rename over the transcript");
}

/// A foreign program edits the transcript in place (the first "xxxx" becomes
/// "EVIL": same size, and the mtime moves), then replaces it with a copy of
/// the edited bytes: the old inode, which a fence keeps open, and the new
/// file then agree with each other, not with what the fence saw.
fn edit_then_replace(path: &Path) {
    let bytes = fs::read(path).expect("read");
    let at = bytes
        .windows(4)
        .position(|w| w == b"xxxx")
        .expect("an entry with xxxx");
    let f = File::options().write(true).open(path).expect("open");
    until_ctime_moves(path, || f.write_all_at(b"EVIL", at as u64).expect("pwrite"));
    replace_with_copy(path);
}

#[test]
fn an_edit_then_an_identical_copy_renamed_over_in_the_prompt_window_is_a_takeover() {
    // Spec §1.7, §8.4: the new inode has the size the fence saw, and bytes
    // equal to the old inode's bytes now, but not to the ones fenced.
    let w = prompt_window_with(edit_then_replace);
    assert!(!w.same_inode);
    assert!(
        !w.accepted,
        "an edit passed as a byte-identical replacement"
    );
}

#[test]
fn an_identical_copy_renamed_over_in_the_prompt_window_is_no_takeover() {
    let w = prompt_window_with(replace_with_copy);
    assert!(!w.same_inode, "the copy must be a new inode");
    assert!(w.accepted, "a byte-identical replacement was a takeover");
}

/// A fence on a transcript of about `bytes` bytes, checked after an edit
/// then a replacement (a takeover) and, fenced again, after a byte-identical
/// replacement (benign). Returns whether the fences had a digest, the
/// transcript's size and the bytes each check read.
fn replacements_of(bytes: usize) -> (bool, u64, [u64; 2]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let (t, counting, size) = counted_store(&session, bytes);
    let fence = t.snapshot(1).expect("snapshot");
    edit_then_replace(&session);
    counting.take();
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Takeover(Takeover::Replaced)
    );
    let edited = counting.take();

    let fence = t.snapshot(1).expect("snapshot");
    let digest = fence.digest().is_some();
    replace_with_copy(&session);
    counting.take();
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Benign {
            entries: Vec::new(),
            range: size..size
        }
    );
    (digest, size, [edited, counting.take()])
}

#[test]
fn a_same_size_replacement_is_judged_by_the_digest_in_one_read() {
    let (digest, size, read) = replacements_of(256 * 1024);
    assert!(digest);
    assert_eq!(
        read,
        [size, size],
        "the new file is read once, the old never"
    );
}

#[test]
fn over_the_seed_cap_a_same_size_replacement_needs_the_old_inode_as_fenced() {
    // No digest: the old inode's mtime moved with the edit, so its bytes
    // are not the fenced ones and are not compared; an untouched old inode
    // is compared with the new file after the 64 bytes of the tail.
    let (digest, size, read) = replacements_of(DIGEST_SEED_CAP as usize + 4096);
    assert!(!digest);
    assert_eq!(read, [0, 64 + 2 * size]);
}

// ------------------------------------------------ what was accepted (item 4)

#[test]
fn benign_foreign_append_returns_its_entries_and_byte_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let content = write_transcript(&session, 4096);
    let t = FileBackend::default()
        .open_transcript(&session)
        .expect("open store");
    let fence = t.snapshot(1).expect("snapshot");
    let accepted = vec![
        json!({"type": "custom", "customType": "ext-state", "id": "c1", "parentId": null,
               "timestamp": "2026-01-01T00:00:00Z", "data": {"n": 1.50, "k": [1, 2]}}),
        json!({"type": "label", "targetId": "m3", "label": "x", "id": "l1", "parentId": "c1",
               "timestamp": "2026-01-01T00:00:01Z"}),
    ];
    let appended = append_foreign(&session, &accepted);
    let old = content.len() as u64;
    assert_eq!(
        t.check(&fence, &OpenClawClassifier).expect("check"),
        Change::Benign {
            entries: accepted,
            range: old..old + appended
        }
    );
    // Nothing appended, nothing returned.
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(
        t.check(&fence, &OpenClawClassifier).expect("check"),
        Change::Unchanged
    );
}

// ------------------------------------------------ the digest itself

#[test]
fn the_digest_follows_appends_rewrites_and_edits_between_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    write_transcript(&session, 100 * 1024);
    let locks = SessionLock::with_backend(FileBackend::default(), opts());
    let mut t = Transcript::open(&session).expect("open");
    assert_eq!(
        t.snapshot(1).expect("seed").digest(),
        Some(sha256(&session))
    );

    // Own appends, small and larger than a read chunk, and foreign ones.
    let g = locks.acquire(&session).expect("acquire");
    t.append(&g, &[entry(1000)], Durability::None)
        .expect("append");
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );
    let batch: Vec<Value> = (0..700).map(entry).collect();
    t.append(&g, &batch, Durability::None).expect("append");
    append_foreign(&session, &[entry(2000)]);
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );

    // An in-place edit of the last bytes hashed: the next snapshot must
    // describe the file as it is, not the bytes it hashed before.
    let size = fs::metadata(&session).expect("stat").len();
    edit_byte(&session, size - 5, b'W');
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );

    // A foreign shrink in place, below what was hashed.
    let now = fs::read(&session).expect("read");
    fs::write(&session, &now[..now.len() / 2]).expect("shrink in place");
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );

    // A foreign replacement (a new inode) that differs early but ends with
    // the bytes hashed last, then grows: the digest is of another file.
    let mut other = fs::read(&session).expect("read");
    other[10] = b'V';
    other.extend_from_slice(b"{\"b\":2}\n");
    let tmp = dir.path().join("other");
    fs::write(&tmp, &other).expect("write replacement");
    fs::rename(&tmp, &session).expect("replace");
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );

    // The handle's own rewrite (a new inode) and truncation.
    t.rewrite(&g, &[entry(1), entry(2)]).expect("rewrite");
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );
    t.truncate(&g, 1).expect("truncate");
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );
    g.release().expect("release");

    // A foreign rewrite to a shorter file on the same inode, then appends.
    fs::write(&session, b"{\"a\":1}\n").expect("shorten in place");
    append_foreign(&session, &[entry(3)]);
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );
}

#[test]
fn the_digest_follows_a_repair_of_a_torn_tail() {
    // The repair cuts the torn bytes the digest hashed and the next append
    // fills their place. This append's bytes match the last 64 torn bytes
    // (so the boundary check passes) but not the first: only forgetting the
    // digest at the repair keeps it true to the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let content = write_transcript(&session, 4096);
    let next = json!({"type": "message", "id": "n", "message": {"content": "z".repeat(300)}});
    let line = serde_json::to_vec(&next).expect("serialize");
    let mut torn = line[..200].to_vec();
    torn[0] = b'X';
    fs::write(&session, [&content[..], &torn[..]].concat()).expect("write torn tail");
    let locks = SessionLock::with_backend(FileBackend::default(), opts());
    let mut t = Transcript::open(&session).expect("open");
    assert_eq!(
        t.snapshot(1).expect("seed").digest(),
        Some(sha256(&session))
    );
    let g = locks.acquire(&session).expect("acquire");
    t.append(&g, &[next], Durability::None)
        .expect("repair and append");
    g.release().expect("release");
    let now = fs::read(&session).expect("read");
    assert_eq!(now, [&content[..], &line[..], b"\n"].concat());
    assert_eq!(
        t.snapshot(1).expect("snap").digest(),
        Some(sha256(&session))
    );
}

// ------------------------------------------------ cost (spec §8.3)

#[test]
fn fences_read_the_file_once_per_handle_then_only_what_was_appended() {
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let content = write_transcript(&session, 3 * 1024 * 1024);
    let size = content.len() as u64;
    let counting = Arc::new(CountingFs::default());
    let t = FileBackend::default()
        .with_fs(counting.clone())
        .open_transcript(&session)
        .expect("open store");

    // The first snapshot seeds the digest: one read of the file.
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), size);
    // An unchanged file: no read to check, 64 bytes to snapshot again.
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Unchanged
    );
    assert_eq!(counting.take(), 0);
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), 64);

    // N bytes appended: the check reads the old tail and the N bytes, the
    // next snapshot the last 64 bytes hashed and the N bytes.
    let n = append_foreign(&session, &[entry(1), entry(2), entry(3)]);
    assert!(matches!(
        t.check(&fence, &AcceptAll).expect("check"),
        Change::Benign { ref entries, .. } if entries.len() == 3
    ));
    assert_eq!(counting.take(), n + 64);
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), n + 64);
    assert_eq!(fence.digest(), Some(sha256(&session)));

    // A larger append (over one read chunk).
    let batch: Vec<Value> = (0..1000).map(entry).collect();
    let n = append_foreign(&session, &batch);
    assert!(n > 64 * 1024);
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), n + 64);
    assert_eq!(fence.digest(), Some(sha256(&session)));

    // Metadata alone changed: the one check that hashes the whole file.
    until_ctime_moves(&session, || chmod(&session));
    assert!(matches!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Benign { ref entries, .. } if entries.is_empty()
    ));
    assert_eq!(counting.take(), fence.size());

    // A fresh handle starts from the digest the first one left in the
    // process-wide cache: the times changed (the chmod) but the first
    // handle's snapshot after it stored them, so only the 64 boundary bytes
    // are read. `Fence::take` is the same as `snapshot`.
    let _ = t.snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), 64);
    let t2 = Transcript::open_with(&session, counting.clone()).expect("open");
    let fence = Fence::take(&t2, 2).expect("take");
    assert_eq!(counting.take(), 64);
    assert_eq!(fence.digest(), Some(sha256(&session)));
}

// ------------------------------------------------ the process-wide digest cache

/// Serializes the tests that expect a handle to find the digest another
/// handle left in the process-wide cache: the bound test evicts entries.
fn cache_tests() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn a_second_handle_starts_from_the_cached_digest_and_reads_only_what_was_appended() {
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let size = write_transcript(&session, 3 * 1024 * 1024).len() as u64;
    let counting = Arc::new(CountingFs::default());
    let open = || Transcript::open_with(&session, counting.clone()).expect("open");

    let first = open();
    let _ = first.snapshot(1).expect("seed");
    assert_eq!(counting.take(), size, "the first handle seeds");
    drop(first);

    // Appended since: the boundary bytes and the appended ones.
    let n = append_foreign(&session, &[entry(1), entry(2)]);
    let fence = open().snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), n + 64);
    assert_eq!(fence.digest(), Some(sha256(&session)));

    // Nothing appended, times unchanged: the boundary bytes only.
    let fence = open().snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), 64);
    assert_eq!(fence.digest(), Some(sha256(&session)));
}

#[test]
fn a_second_attempt_starts_from_the_digest_the_first_left() {
    // The attempt controller opens a handle per attempt: the second attempt
    // of the process on a session must not read the whole transcript again
    // while it holds the lock.
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let size = write_transcript(&session, 3 * 1024 * 1024).len() as u64;
    let counting = Arc::new(CountingFs::default());
    let locks = SessionLock::with_backend(FileBackend::default().with_fs(counting.clone()), opts());
    let options = || AttemptOptions::default().lock(opts());
    rt().block_on(async {
        let a = Attempt::begin(&locks, &session, options())
            .await
            .expect("begin");
        assert_eq!(counting.take(), size, "the first attempt seeds");
        a.with_write(|t, g| t.append(g, &[entry(1)], Durability::None))
            .await
            .expect("write");
        a.dispose().expect("dispose");
        drop(a);

        let n = append_foreign(&session, &[entry(2)]);
        counting.take();
        let b = Attempt::begin(&locks, &session, options())
            .await
            .expect("begin");
        assert_eq!(
            counting.take(),
            n + 64,
            "the second attempt reads the append only"
        );
        b.dispose().expect("dispose");
    });
    // The digest the cache now holds (the second attempt's) is the file's.
    let t = FileBackend::default()
        .open_transcript(&session)
        .expect("open");
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(fence.digest(), Some(sha256(&session)));
}

#[test]
fn a_cached_digest_is_not_trusted_after_an_edit_in_place() {
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let size = write_transcript(&session, 256 * 1024).len() as u64;
    let counting = Arc::new(CountingFs::default());
    let open = || Transcript::open_with(&session, counting.clone()).expect("open");
    let _ = open().snapshot(1).expect("seed");
    counting.take();

    // Another program changes bytes at the boundary (the last 64 hashed):
    // same inode, same size, other times. Like a fence check, the cache
    // trusts no bytes whose times moved without an append: the next handle
    // seeds from scratch.
    let inode = ino(&session);
    until_ctime_moves(&session, || edit_byte(&session, size - 5, b'W'));
    let now = fs::metadata(&session).expect("stat");
    assert_eq!((now.ino(), now.len()), (inode, size));
    let t = open();
    let fence = t.snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), size, "a full seed");
    assert_eq!(fence.digest(), Some(sha256(&session)));
    // The fence describes the file as it is: a change of metadata alone is
    // accepted, and a same-size edit is still seen.
    until_ctime_moves(&session, || chmod(&session));
    assert!(matches!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Benign { ref entries, .. } if entries.is_empty()
    ));
    until_ctime_moves(&session, || edit_byte(&session, 10, b'Y'));
    assert_eq!(
        t.check(&fence, &AcceptNothing).expect("check"),
        Change::Takeover(Takeover::Edited)
    );

    // Far from the boundary, same size: the boundary bytes are intact and
    // prove nothing; the moved times make the next handle seed.
    let _ = open().snapshot(1).expect("snapshot");
    counting.take();
    until_ctime_moves(&session, || edit_byte(&session, 20, b'Z'));
    let fence = open().snapshot(1).expect("snapshot");
    assert_eq!(counting.take(), size, "a full seed");
    assert_eq!(fence.digest(), Some(sha256(&session)));

    // At the boundary, then appended to: the boundary check fails, and the
    // next handle seeds from scratch.
    let _ = open().snapshot(1).expect("snapshot");
    counting.take();
    edit_byte(&session, size - 5, b'X');
    let n = append_foreign(&session, &[entry(1)]);
    let fence = open().snapshot(1).expect("snapshot");
    assert_eq!(
        counting.take(),
        (64 + n) + (size + n),
        "the boundary and appended bytes (read in one go), then a full seed"
    );
    assert_eq!(fence.digest(), Some(sha256(&session)));
}

#[test]
fn a_cached_digest_is_caught_up_by_at_most_the_seed_cap() {
    // A first snapshot never reads more than a seed would: a cached digest
    // that far behind the file is not caught up, and a file over the cap
    // then has no digest, as without the cache.
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    write_transcript(&session, 1024 * 1024);
    let counting = Arc::new(CountingFs::default());
    let open = || Transcript::open_with(&session, counting.clone()).expect("open");
    let _ = open().snapshot(1).expect("seed");
    let batch: Vec<Value> = (0..DIGEST_SEED_CAP as usize / 150).map(entry).collect();
    let n = append_foreign(&session, &batch);
    assert!(n > DIGEST_SEED_CAP);
    counting.take();
    let fence = open().snapshot(1).expect("snapshot");
    assert_eq!(fence.digest(), None);
    assert_eq!(counting.take(), 64, "the tail only");
}

#[test]
fn after_its_own_repair_no_handle_starts_from_the_bytes_it_cut() {
    // As in `the_digest_follows_a_repair_of_a_torn_tail`, but the next
    // handle would find the digest of the torn bytes in the cache, and the
    // append that filled their place keeps the 64 boundary bytes.
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let content = write_transcript(&session, 4096);
    let next = json!({"type": "message", "id": "n", "message": {"content": "z".repeat(300)}});
    let line = serde_json::to_vec(&next).expect("serialize");
    let mut torn = line[..200].to_vec();
    torn[0] = b'X';
    fs::write(&session, [&content[..], &torn[..]].concat()).expect("write torn tail");
    let locks = SessionLock::with_backend(FileBackend::default(), opts());
    let mut t = Transcript::open(&session).expect("open");
    let _ = t.snapshot(1).expect("seed");
    let g = locks.acquire(&session).expect("acquire");
    t.append(&g, &[next], Durability::None)
        .expect("repair and append");
    g.release().expect("release");
    assert_eq!(
        fs::read(&session).expect("read"),
        [&content[..], &line[..], b"\n"].concat()
    );
    let next_handle = Transcript::open(&session).expect("open");
    assert_eq!(
        next_handle.snapshot(1).expect("snapshot").digest(),
        Some(sha256(&session))
    );
}

#[test]
fn after_its_own_rewrite_or_truncation_the_replaced_file_is_not_cached() {
    // The replaced inode lives on under another link (a backup tool's hard
    // link), where another program edits it early (its last bytes intact)
    // and grows it, then puts it back. Nothing watched it since the
    // rewrite replaced it, so its old digest must not be used.
    let _serial = cache_tests();
    for op in ["rewrite", "truncate"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.jsonl");
        write_transcript(&session, 16 * 1024);
        let link = dir.path().join("backup.jsonl");
        fs::hard_link(&session, &link).expect("link");
        let locks = SessionLock::with_backend(FileBackend::default(), opts());
        let mut t = Transcript::open(&session).expect("open");
        let _ = t.snapshot(1).expect("seed");
        let g = locks.acquire(&session).expect("acquire");
        match op {
            "rewrite" => t.rewrite(&g, &[entry(1), entry(2)]),
            _ => t.truncate(&g, 2),
        }
        .expect(op);
        g.release().expect("release");
        drop(t);

        edit_byte(&link, 10, b'Y');
        append_foreign(&link, &[entry(9)]);
        fs::rename(&link, &session).expect("put back");
        let next_handle = Transcript::open(&session).expect("open");
        assert_eq!(
            next_handle.snapshot(1).expect("snapshot").digest(),
            Some(sha256(&session)),
            "{op}"
        );
    }
}

#[test]
fn a_new_file_on_a_reused_inode_number_is_not_the_cached_one() {
    // The kernel hands a freed inode number to the next file created: the
    // cache knows files by device, inode and birth time.
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.jsonl");
    let content = write_transcript(&old, 16 * 1024);
    let _ = Transcript::open(&old)
        .expect("open")
        .snapshot(1)
        .expect("seed");
    let inode = ino(&old);
    fs::remove_file(&old).expect("delete");
    // The same bytes but one early, then grown: the old digest's boundary
    // bytes match.
    let mut other = content.clone();
    other[10] = b'V';
    other.extend_from_slice(b"{\"b\":2}\n");
    let mut reused = None;
    for k in 0..256 {
        let p = dir.path().join(format!("new-{k}.jsonl"));
        fs::write(&p, &other).expect("write");
        if ino(&p) == inode {
            reused = Some(p);
            break;
        }
    }
    let Some(session) = reused else {
        eprintln!("the file system did not reuse inode {inode}; nothing to check");
        return;
    };
    let t = Transcript::open(&session).expect("open");
    assert_eq!(
        t.snapshot(1).expect("snapshot").digest(),
        Some(sha256(&session))
    );
}

#[test]
fn more_files_than_the_cache_holds_still_work_and_the_least_recently_used_go_first() {
    let _serial = cache_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(CountingFs::default());
    let files: Vec<_> = (0..DIGEST_CACHE_ENTRIES + 8)
        .map(|i| {
            let p = dir.path().join(format!("s{i}.jsonl"));
            write_transcript(&p, 1024);
            p
        })
        .collect();
    let first_snapshot = |p: &Path| {
        let fence = Transcript::open_with(p, counting.clone())
            .expect("open")
            .snapshot(1)
            .expect("snapshot");
        assert_eq!(fence.digest(), Some(sha256(p)), "{p:?}");
        (counting.take(), fence.size())
    };
    for p in &files[..DIGEST_CACHE_ENTRIES] {
        let (read, size) = first_snapshot(p);
        assert_eq!(read, size, "a new file seeds");
    }
    // The first file used again: it is now the most recently used.
    assert_eq!(first_snapshot(&files[0]).0, 64);
    for p in &files[DIGEST_CACHE_ENTRIES..] {
        let (read, size) = first_snapshot(p);
        assert_eq!(read, size, "a new file seeds");
    }
    assert_eq!(first_snapshot(&files[0]).0, 64, "recently used: kept");
    let (read, size) = first_snapshot(&files[1]);
    assert_eq!(read, size, "least recently used: evicted, seeds again");
    assert_eq!(
        first_snapshot(&files[files.len() - 1]).0,
        64,
        "the newest: kept"
    );
}
