//! The CLI against a session whose state file another program keeps locked
//! (issue 9, item 4): `flock(1)` holding the `.epoch` file made `append
//! --timeout-ms 2000` and `doctor --fix` hang forever.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{dead_pid, lock_path, run, sessionlock, stderr, stdout};

fn epoch_path(session: &Path) -> PathBuf {
    let mut s = session.as_os_str().to_owned();
    s.push(".epoch");
    PathBuf::from(s)
}

/// `flock <file> sleep 1000` in its own process group, killed (the group,
/// by its id) and reaped on drop.
struct Flock(Child);

impl Flock {
    /// Starts it and returns once the kernel lists it as holding the lock.
    fn hold(file: &Path) -> Flock {
        let child = Command::new("flock")
            .arg(file)
            .args(["sleep", "1000"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn flock(1)");
        let f = Flock(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ino = std::fs::metadata(file).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
            if let Ok(ino) = ino {
                let needle = format!(":{ino} ");
                if locks
                    .lines()
                    .any(|l| l.contains("FLOCK") && !l.contains("->") && l.contains(&needle))
                {
                    return f;
                }
            }
            assert!(Instant::now() < deadline, "flock(1) never took the lock");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

// Issue 9 item 4, fourth defect: the state-lock wait was a blocking
// flock(2) without a bound. `append --timeout-ms 2000` must fail within its
// budget, naming the process that holds the state file, and exit 1; `doctor
// --fix` must finish, reporting the session as held.
#[test]
fn a_foreign_flock_on_the_epoch_file_bounds_append_and_doctor_fix() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, b"{\"a\":1}\n{\"torn\":").unwrap();
    let blocker = Flock::hold(&epoch_path(&session));

    let started = Instant::now();
    let out = run(sessionlock()
        .arg("append")
        .args(["--timeout-ms", "2000", "--entry", "1"])
        .arg(&session));
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        took < Duration::from_secs(10),
        "{took:?}: bounded by the budget"
    );
    assert!(
        err.contains(&format!(
            "session file locked (timeout 2000ms): pid={} alive=true",
            blocker.pid()
        )),
        "stderr: {err}"
    );
    assert!(err.contains(".epoch"), "names the state file: {err}");

    // A dead holder's lock and a torn tail: both need the state lock.
    std::fs::write(
        lock_path(&session),
        serde_json::to_vec(&serde_json::json!({
            "pid": dead_pid(),
            "createdAt": sessionlock::payload::format_time(SystemTime::now()),
            "maxHoldMs": 300_000,
        }))
        .unwrap(),
    )
    .unwrap();
    let started = Instant::now();
    let out = run(sessionlock()
        .arg("doctor")
        .arg(dir.path())
        .args(["--fix", "--json"]));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "{took:?}: doctor --fix finished"
    );
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let text = report.to_string();
    assert!(text.contains("\"held\""), "{report:#}");
    assert!(text.contains(&blocker.pid().to_string()), "{report:#}");
    assert_eq!(
        std::fs::read(&session).unwrap(),
        b"{\"a\":1}\n{\"torn\":",
        "nothing was written without the state lock"
    );

    drop(blocker);
    let out = run(sessionlock()
        .arg("append")
        .args(["--timeout-ms", "10000", "--entry", "2"])
        .arg(&session));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

// Issue 9 item 4, first defect: `doctor` said "nothing to do" about an epoch
// file longer than its record, which fenced every holder. It now reports it
// (exit 1) and `--fix` rewrites it (exit 0), never lowering the epoch.
#[test]
fn doctor_reports_and_fixes_an_invalid_epoch_file() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(
        epoch_path(&session),
        b"00000000000000000009\n\x1b[31mgarbage",
    )
    .unwrap();

    let out = run(sessionlock().arg("doctor").arg(dir.path()));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("s.jsonl.epoch  repairable  invalid-epoch"),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no raw escape reaches the terminal: {text:?}"
    );
    assert!(
        stderr(&out).contains("to rewrite 1 invalid epoch file"),
        "stderr: {}",
        stderr(&out)
    );

    let out = run(sessionlock().arg("doctor").arg(dir.path()).arg("--fix"));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).contains("rewrote 1 epoch file"),
        "{}",
        stdout(&out)
    );
    let record = std::fs::read(epoch_path(&session)).unwrap();
    let epoch = sessionlock::epoch::parse(&record).expect("one record");
    assert!(epoch > 9, "{epoch}");
    assert_eq!(record.len(), sessionlock::epoch::RECORD_LEN);
}
