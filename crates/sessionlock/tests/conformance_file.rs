//! The backend conformance suite (`conformance/`) for the file backend.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use sessionlock::payload::format_time;
use sessionlock::{FileBackend, LockBackend};

use common::dead_pid;
use sessionlock_lab::conformance::{Harness, LockTamper, TranscriptTamper};

sessionlock_lab::conformance_suite!(file, FileHarness::default());

/// Sessions are files in a temporary directory of the harness's own,
/// created when the first session is named (a child process that only
/// receives names makes none).
#[derive(Default)]
struct FileHarness {
    dir: OnceLock<tempfile::TempDir>,
    next: AtomicU32,
}

impl FileHarness {
    fn lock_path(session: &str) -> PathBuf {
        FileBackend::default()
            .key(Path::new(session))
            .expect("key")
            .lock_path
    }
}

impl Harness for FileHarness {
    type Backend = FileBackend;
    type Session = PathBuf;

    fn backend(&self) -> FileBackend {
        FileBackend::default()
    }

    fn fresh_session(&self) -> String {
        let dir = self
            .dir
            .get_or_init(|| tempfile::tempdir().expect("tempdir"));
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        dir.path()
            .join(format!("s{n}.jsonl"))
            .to_str()
            .expect("utf8 path")
            .to_owned()
    }

    fn tamper_lock(&self, session: &str, how: LockTamper) {
        let lock = Self::lock_path(session);
        match how {
            LockTamper::Remove => fs::remove_file(&lock).expect("remove the lock"),
            LockTamper::Plant { epoch } => {
                // A new inode renamed over the old lock: no inspection of the
                // old one can match it.
                let text = format!(
                    "{{\"pid\":{},\"createdAt\":\"{}\",\"maxHoldMs\":1000,\"epoch\":{epoch}}}",
                    dead_pid(),
                    format_time(SystemTime::now())
                );
                let tmp = PathBuf::from(format!("{}.planted", lock.display()));
                fs::write(&tmp, text).expect("write the planted lock");
                fs::rename(&tmp, &lock).expect("plant the lock");
            }
        }
    }

    fn tamper_transcript(&self, session: &str, how: TranscriptTamper) {
        let path = Path::new(session);
        match how {
            TranscriptTamper::Append(bytes) => {
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .expect("open for append");
                f.write_all(&bytes).expect("append");
            }
            TranscriptTamper::DropLast => {
                let content = fs::read(path).expect("read");
                let body = content.strip_suffix(b"\n").expect("complete lines");
                let keep = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                File::options()
                    .write(true)
                    .open(path)
                    .expect("open")
                    .set_len(keep as u64)
                    .expect("truncate");
            }
            TranscriptTamper::EditFirst => {
                // One byte inside the first line's text, rewritten until the
                // file's times show the write (they tick coarsely).
                let content = fs::read(path).expect("read");
                let at = content.iter().position(|&b| b == b'"').expect("a string") + 1;
                let byte = if content[at] == b'y' { b'z' } else { b'y' };
                let f = File::options().write(true).open(path).expect("open");
                until_ctime_moves(path, || f.write_all_at(&[byte], at as u64).expect("pwrite"));
            }
            TranscriptTamper::RewriteIdentical => {
                let content = fs::read(path).expect("read");
                rename_over(path, &content);
            }
            TranscriptTamper::Replace => {
                let mut content = fs::read(path).expect("read");
                content.extend_from_slice(b"{\"type\":\"message\",\"n\":\"replaced\"}\n");
                rename_over(path, &content);
            }
            TranscriptTamper::Delete => fs::remove_file(path).expect("delete"),
        }
    }
}

/// Writes `content` to a new file beside `path` and renames it over `path`.
fn rename_over(path: &Path, content: &[u8]) {
    let tmp = PathBuf::from(format!("{}.foreign", path.display()));
    fs::write(&tmp, content).expect("write the copy");
    fs::rename(&tmp, path).expect("rename over");
}

fn ctime_ns(path: &Path) -> i128 {
    let m = fs::metadata(path).expect("stat");
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// Runs `change` until the file's ctime moves.
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
