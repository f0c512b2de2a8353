//! End-to-end tests of the `sessionlock` binary against hostile and unlucky
//! files (issue 9, item 4, CLI side): names that are not UTF-8, payloads
//! carrying terminal escapes, transcripts that are FIFOs, sockets,
//! directories or symlinks out of the sessions directory, and big appends.
//!
//! Each test runs the real binary in its own temporary directory, with a
//! clean lock environment (see `common`).

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sessionlock::payload::format_time;

mod common;
use common::{dead_pid, listed, lock_path, run, sessionlock, stderr, stdout};

/// Runs `cmd` to completion within a generous deadline: a command that
/// blocks (on a FIFO, say) fails the test instead of hanging it.
fn run_within(cmd: &mut Command, deadline: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessionlock");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("wait for sessionlock"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("sessionlock did not finish within {deadline:?}: it blocked");
        }
    }
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn write_lock(lock: &Path, payload: &Value) {
    std::fs::write(lock, serde_json::to_vec(payload).expect("serialize")).expect("write lock");
}

fn status_json(dir: &Path) -> (Output, Vec<Value>) {
    let out = run(sessionlock().arg("status").arg("--json").arg(dir));
    let v: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    let items = listed(&v, "locks");
    (out, items)
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// ------------------------------------------------- untrusted text, names

#[test]
fn status_lists_a_lock_whose_name_is_not_utf8() {
    // Issue 9 item 4: `status` omitted locks whose names are not UTF-8 (the
    // lossy name pointed at no file); they are listed, shown escaped, and
    // their exact bytes are in the JSON.
    let dir = tempfile::tempdir().unwrap();
    let name = b"caf\xe9-\xff.jsonl";
    let session = dir.path().join(OsStr::from_bytes(name));
    write_lock(
        &lock_path(&session),
        &json!({"pid": dead_pid(), "createdAt": format_time(SystemTime::now()), "maxHoldMs": 60_000}),
    );

    let out = run(sessionlock().arg("status").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "a header and one row: {text}");
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with(r"caf\xe9-\xff.jsonl  "),
        "the name is shown with its bytes escaped: {text}"
    );

    let (out, items) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(items.len(), 1, "{items:?}");
    let canonical = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(OsStr::from_bytes(name));
    assert_eq!(
        from_hex(items[0]["sessionHex"].as_str().expect("sessionHex")),
        canonical.as_os_str().as_bytes(),
        "the exact bytes survive in the JSON"
    );
    assert_eq!(
        from_hex(items[0]["lockPathHex"].as_str().expect("lockPathHex")),
        lock_path(&canonical).as_os_str().as_bytes()
    );
}

#[test]
fn status_doctor_and_errors_escape_hostile_payload_fields_and_names() {
    // Issue 9 item 4: lane, runId and hostname of a lock payload (and file
    // names) reached the terminal raw: an ANSI escape could clear the screen
    // and a newline could fake a row. Human output escapes them; JSON stays
    // exact.
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let lane = "x\u{1b}[2J\nFAKE  999  host  yes";
    let run_id = "r\r\u{7}\u{202e}";
    let host = "h\u{1b}]0;pwned\u{7}";
    write_lock(
        &lock_path(&session),
        &json!({
            "pid": std::process::id(),
            "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 600_000,
            "owner": "sessionlock",
            "epoch": 3,
            "hostname": host,
            "lane": lane,
            "runId": run_id,
        }),
    );
    let clean = |what: &str, bytes: &[u8]| {
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == b'\r' || b == 0x07),
            "{what} holds raw control characters: {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            !String::from_utf8_lossy(bytes).contains('\u{202e}'),
            "{what} holds a raw bidi override"
        );
    };

    let out = run(sessionlock().arg("status").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    clean("status", &out.stdout);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "one lock is one row: {text}");
    assert!(text.contains(r"x\x1b[2J\nFAKE"), "status: {text}");
    assert!(text.contains(r"r\r\x07\u202e"), "status: {text}");
    assert!(text.contains(r"h\x1b]0;pwned\x07"), "status: {text}");

    let (_, items) = status_json(dir.path());
    assert_eq!(items[0]["lane"], lane, "JSON is exact");
    assert_eq!(items[0]["runId"], run_id);
    assert_eq!(items[0]["hostname"], host);

    let out = run(sessionlock().arg("doctor").arg(dir.path()));
    clean("doctor", &out.stdout);
    clean("doctor stderr", &out.stderr);
    let text = stdout(&out);
    assert!(text.contains(r"x\x1b[2J\nFAKE"), "doctor: {text}");
    // A header, one lock, the summary.
    assert_eq!(text.lines().count(), 3, "doctor: {text}");

    // Errors quote what they are given.
    let hostile = dir.path().join("evil\u{1b}[31m\n.jsonl");
    let out = run(sessionlock().arg("read").arg(&hostile));
    assert_eq!(out.status.code(), Some(2));
    clean("read's error", &out.stderr);
    assert!(
        stderr(&out).contains(r"evil\x1b[31m\n.jsonl"),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn status_shows_no_lease_left_for_a_dead_holder() {
    // Issue 9 item 4: `status` showed "lease left" for holders that are
    // gone; a dead holder's lease means nothing.
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    write_lock(
        &lock_path(&session),
        &json!({"pid": dead_pid(), "createdAt": format_time(SystemTime::now()), "maxHoldMs": 3_600_000}),
    );
    let out = run(sessionlock().arg("status").arg(dir.path()));
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    let row = text.lines().nth(1).unwrap();
    let col = header.find("LEASE LEFT").unwrap();
    assert!(
        row[col..].starts_with("- "),
        "no lease for a dead holder:\n{text}"
    );
    let (_, items) = status_json(dir.path());
    assert_eq!(items[0]["alive"], false);
    assert_eq!(items[0]["leaseLeftMs"], Value::Null, "{:?}", items[0]);
}

// ------------------------------------------------- doctor paths and epochs

#[test]
fn doctor_json_paths_are_absolute_and_canonical_like_status() {
    // Issue 9 item 4: `doctor --json` gave paths relative to the directory
    // as given where `status --json` gave absolute ones.
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink("real", base.path().join("alias")).unwrap();
    let session = real.join("s.jsonl");
    write_lock(
        &lock_path(&session),
        &json!({"pid": dead_pid(), "createdAt": format_time(SystemTime::now()), "maxHoldMs": 60_000}),
    );
    let out = run(sessionlock()
        .current_dir(base.path())
        .args(["doctor", "--json", "alias"]));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let out = run(sessionlock()
        .current_dir(base.path())
        .args(["status", "--json", "alias"]));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    let canonical = base.path().canonicalize().unwrap().join("real/s.jsonl");
    assert_eq!(doc["findings"][0]["path"], json!(lock_path(&canonical)));
    assert_eq!(doc["findings"][0]["session"], json!(canonical));
    let status = listed(&status, "locks");
    assert_eq!(doc["findings"][0]["path"], status[0]["lockPath"]);
    assert_eq!(doc["findings"][0]["session"], status[0]["session"]);
}

#[test]
fn doctor_fix_creates_no_epoch_file_for_an_openclaw_lock() {
    // Issue 9 item 4: `doctor --fix` created `.epoch` files in directories
    // that only ever held OpenClaw locks. A foreign lock carries no epoch,
    // so there is nothing to record.
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("oc.jsonl");
    write_lock(
        &lock_path(&session),
        &json!({"pid": dead_pid(), "createdAt": format_time(SystemTime::now()), "maxHoldMs": 300_000}),
    );
    let out = run(sessionlock().arg("doctor").arg("--fix").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stdout: {}", stdout(&out));
    assert!(!lock_path(&session).exists(), "the dead lock is removed");
    assert_eq!(
        names(dir.path()),
        Vec::<String>::new(),
        "nothing was created"
    );
}

// ------------------------------------------------- non-regular transcripts

#[test]
fn read_append_and_repair_refuse_fifos_sockets_directories_and_symlink_loops() {
    // Issue 9 item 4: `read` of a FIFO transcript exited 0 with no output
    // (and `append` locked beside it). Every non-regular transcript is a
    // clear error (exit 2), without blocking, and nothing is created.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let socket = dir.path().join("sock.jsonl");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind socket");
    let subdir = dir.path().join("dir.jsonl");
    std::fs::create_dir(&subdir).unwrap();
    let looped = dir.path().join("loop.jsonl");
    std::os::unix::fs::symlink("loop2.jsonl", &looped).unwrap();
    std::os::unix::fs::symlink("loop.jsonl", dir.path().join("loop2.jsonl")).unwrap();
    let before = names(dir.path());

    let cases: [(&Path, &str); 4] = [
        (&fifo, "it is a named pipe (FIFO), not a regular file"),
        (&socket, "it is a socket, not a regular file"),
        (&subdir, "it is a directory, not a regular file"),
        (&looped, "symbolic links"),
    ];
    for (path, says) in cases {
        for verb in [&["read"][..], &["repair"], &["append", "--entry", "1"]] {
            let out = run_within(sessionlock().args(verb).arg(path), Duration::from_secs(60));
            assert_eq!(
                out.status.code(),
                Some(2),
                "{verb:?} {}: stdout {} stderr {}",
                path.display(),
                stdout(&out),
                stderr(&out)
            );
            assert!(
                stderr(&out).starts_with("error: cannot ") && stderr(&out).contains(says),
                "{verb:?} {}: stderr {}",
                path.display(),
                stderr(&out)
            );
            assert!(stdout(&out).is_empty());
        }
    }
    assert_eq!(names(dir.path()), before, "no lock, epoch or other file");
}

#[test]
fn the_library_reader_refuses_a_fifo() {
    // Issue 9 item 4, library side of the FIFO defect: `Reader::open` on a
    // FIFO streamed "no entries" instead of failing.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("f.jsonl");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let err = sessionlock::transcript::Reader::open(&fifo).expect_err("a FIFO is refused");
    assert!(
        matches!(err, sessionlock::Error::InvalidPath { .. }),
        "{err:?}"
    );
    let err = sessionlock::transcript::Transcript::open(&fifo).expect_err("a FIFO is refused");
    assert!(
        matches!(err, sessionlock::Error::InvalidPath { .. }),
        "{err:?}"
    );
}

// ------------------------------------------------- confinement

/// `sessions/evil.jsonl -> ../other/victim.jsonl`, the victim ending in a
/// torn line. Returns (sessions, other, victim bytes).
fn planted(base: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let sessions = base.join("sessions");
    let other = base.join("other");
    std::fs::create_dir(&sessions).unwrap();
    std::fs::create_dir(&other).unwrap();
    let victim = other.join("victim.jsonl");
    let bytes = b"{\"keep\":1}\n{\"torn\":".to_vec();
    std::fs::write(&victim, &bytes).unwrap();
    std::os::unix::fs::symlink(&victim, sessions.join("evil.jsonl")).unwrap();
    (sessions, other, bytes)
}

#[test]
fn append_repair_read_and_exec_with_root_refuse_a_symlink_out_of_the_sessions_dir() {
    // Issue 9 item 4: a transcript that is a symlink out of the sessions
    // directory made `append`/`repair` create lock, epoch and torn files
    // beside the target and truncate its torn tail. With --root they refuse,
    // and the victim and its directory stay untouched.
    let base = tempfile::tempdir().unwrap();
    let (sessions, other, bytes) = planted(base.path());
    let evil = sessions.join("evil.jsonl");
    let root = || ["--root".as_ref(), sessions.as_os_str()];
    let runs: [Vec<&OsStr>; 4] = [
        vec!["append".as_ref(), "--entry".as_ref(), "1".as_ref()],
        vec!["repair".as_ref()],
        vec!["read".as_ref()],
        vec!["exec".as_ref()],
    ];
    for args in runs {
        let mut cmd = sessionlock();
        cmd.args(&args).args(root()).arg(&evil);
        if args[0] == "exec" {
            cmd.args(["--", "true"]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("outside the sessions root"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert_eq!(std::fs::read(other.join("victim.jsonl")).unwrap(), bytes);
    assert_eq!(
        names(&other),
        ["victim.jsonl"],
        "no side files beside the victim"
    );
    assert_eq!(names(&sessions), ["evil.jsonl"]);

    // A session inside the root works as before, through a relative path.
    let out = run(sessionlock()
        .current_dir(&sessions)
        .args(["append", "--root", ".", "ok.jsonl", "--entry", "1.50"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(std::fs::read(sessions.join("ok.jsonl")).unwrap(), b"1.50\n");
}

#[test]
fn doctor_fix_does_not_follow_a_symlink_out_of_its_directory() {
    // Issue 9 item 4: the doctor takes session locks (to repair, or to
    // remove a rewrite leftover); through a planted symlink it created lock
    // and epoch files beside the target. It is confined to the directory it
    // is given.
    let base = tempfile::tempdir().unwrap();
    let (sessions, other, bytes) = planted(base.path());
    let leftover = sessions.join("evil.jsonl.rewrite-1");
    std::fs::write(&leftover, b"{}\n").unwrap();
    OpenOptions::new()
        .write(true)
        .open(&leftover)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(600)))
        .unwrap();

    let out = run(sessionlock().arg("doctor").arg("--fix").arg(&sessions));
    assert_eq!(std::fs::read(other.join("victim.jsonl")).unwrap(), bytes);
    assert_eq!(
        names(&other),
        ["victim.jsonl"],
        "no side files beside the victim; doctor said: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("outside the sessions root"),
        "stdout: {}",
        stdout(&out)
    );
}

#[test]
fn a_symlink_owned_by_another_user_in_a_shared_dir_is_not_followed() {
    // Issue 9 item 4: anyone able to plant a symlink in a shared (sticky,
    // group- or world-writable) directory could steer a root-run writer to
    // another file. A symlink there owned by neither us nor the directory's
    // owner is refused, whoever we run as (like protected_symlinks).
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let target = base.path().join("target.jsonl");
    std::fs::write(&target, b"1\n").unwrap();

    let theirs = shared.join("theirs.jsonl");
    std::os::unix::fs::symlink(&target, &theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(4242), Some(4242)).unwrap();
    for verb in [&["append", "--entry", "2"][..], &["read"], &["repair"]] {
        let out = run(sessionlock().args(verb).arg(&theirs));
        assert_eq!(out.status.code(), Some(2), "{verb:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("owned by uid 4242 in a directory others can write to"),
            "{verb:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"1\n");
    assert_eq!(names(base.path()), ["shared", "target.jsonl"]);

    // Our own symlink in the same directory is followed.
    let ours = shared.join("ours.jsonl");
    std::os::unix::fs::symlink(&target, &ours).unwrap();
    let out = run(sessionlock().args(["append", "--entry", "2"]).arg(&ours));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), b"1\n2\n");
}

// ------------------------------------------------- memory

/// Serializes the memory tests: a child's `ru_maxrss` starts at the RSS its
/// parent had when it was spawned (the kernel carries the pre-exec high-water
/// mark over), so this process never holds a big buffer (the tests stream
/// what they compare) and no other memory test runs meanwhile.
static MEMORY_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Peak resident set size (kB) of a child, from `wait4`'s rusage (the same
/// figure as `VmHWM` in `/proc/<pid>/status`, which is gone once it exits).
/// It counts this process's RSS at the spawn too: spawn before allocating.
fn wait_peak_rss_kb(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as libc::pid_t, "wait4");
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Line `n` of the big append's input: numbers spelled as JSON allows but
/// a serializer would not (`1.50`, `1E+2`, `-0.0`).
fn big_line(n: u64, out: &mut Vec<u8>) {
    writeln!(
        out,
        r#"{{"n":{n},"price":1.50,"exp":1E+2,"tags":["a","b",{{"k":[0.10,-0.0]}}],"text":"{}"}}"#,
        "x".repeat((n % 200) as usize)
    )
    .unwrap();
}

const BIG: usize = 30 << 20;

#[test]
#[allow(clippy::zombie_processes)] // reaped by wait4, for its rusage
fn a_30_mb_append_keeps_its_bytes_in_bounded_memory() {
    // Issue 9 item 4: `append` held every parsed entry as a
    // serde_json::Value, ~36x the input (30 MB in, 1.09 GB RSS), and
    // re-serialized numbers (`1.50` became `1.5`). It validates without
    // building values and writes the bytes as given.
    let _serial = MEMORY_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("big.jsonl");
    let mut child = sessionlock()
        .arg("append")
        .arg(&session)
        .args(["--durability", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessionlock append");
    let stdin = child.stdin.take().expect("stdin");
    // Fed line by line: this process never holds the input.
    let feeder = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(stdin);
        let (mut n, mut sent, mut line) = (0u64, 0usize, Vec::new());
        while sent < BIG {
            line.clear();
            big_line(n, &mut line);
            w.write_all(&line)?;
            sent += line.len();
            n += 1;
        }
        w.flush().map(|()| (n, sent))
    });
    let (code, peak_kb) = wait_peak_rss_kb(child.id());
    let (n, sent) = feeder.join().unwrap().expect("feed stdin");
    let input_kb = (sent / 1024) as i64;
    eprintln!(
        "append of {n} entries, {input_kb} kB: peak RSS {peak_kb} kB ({:.2}x the input)",
        peak_kb as f64 / input_kb as f64
    );
    assert_eq!(code, 0);
    let mut file = std::io::BufReader::new(std::fs::File::open(&session).unwrap());
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    for i in 0..n {
        expected.clear();
        got.clear();
        big_line(i, &mut expected);
        std::io::BufRead::read_until(&mut file, b'\n', &mut got).unwrap();
        assert!(
            got == expected,
            "line {i}: the transcript holds the input bytes"
        );
    }
    assert_eq!(std::fs::metadata(&session).unwrap().len(), sent as u64);
    assert!(
        peak_kb < 3 * input_kb,
        "peak RSS {peak_kb} kB for {input_kb} kB of input"
    );
}

#[test]
#[allow(clippy::zombie_processes)] // reaped by wait4, for its rusage
fn read_prints_entries_byte_for_byte_in_bounded_memory() {
    // Issue 9 item 4, sibling of the append defect: `read` parsed every
    // line into a serde_json::Value (many times the line's size for an
    // entry of small objects) and printed it re-serialized (`1.50` came
    // out as `1.5`). It checks each line and prints its bytes.
    let _serial = MEMORY_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&session).unwrap());
        w.write_all(b"{\"price\":1.50,\"e\":1E+2}\n[").unwrap();
        for _ in 0..(16 << 20) / 11 {
            w.write_all(b"{\"a\":1.50},").unwrap();
        }
        w.write_all(b"{}]\n").unwrap();
        w.flush().unwrap();
    }

    let child = sessionlock()
        .arg("read")
        .arg(&session)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sessionlock read");
    let pid = child.id();
    let stdout_pipe = child.stdout.expect("stdout");
    // Compared as it streams: this process never holds the output.
    let file = session.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut printed = std::io::BufReader::new(stdout_pipe);
        let mut stored = std::io::BufReader::new(std::fs::File::open(file)?);
        let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
        loop {
            let n = stored.read(&mut a)?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(printed.read(&mut b)? == 0);
            }
            printed.read_exact(&mut b[..n])?;
            if a[..n] != b[..n] {
                return Ok(false);
            }
        }
    });
    let (code, peak_kb) = wait_peak_rss_kb(pid);
    let same = reader.join().unwrap().expect("compare stdout");
    let file_kb = (std::fs::metadata(&session).unwrap().len() / 1024) as i64;
    eprintln!(
        "read of a {file_kb} kB transcript: peak RSS {peak_kb} kB ({:.2}x the file)",
        peak_kb as f64 / file_kb as f64
    );
    assert_eq!(code, 0);
    assert!(same, "read prints the stored bytes");
    assert!(
        peak_kb < 3 * file_kb,
        "peak RSS {peak_kb} kB for a {file_kb} kB transcript"
    );
}

#[test]
fn log_lines_escape_the_paths_and_fields_they_quote() {
    // Issue 9 item 4, sibling of the escaping defect: the library's log
    // lines (here: a torn tail repaired) reached stderr raw, with a
    // transcript name holding a terminal escape.
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("e\u{1b}[2J.jsonl");
    std::fs::write(&session, b"1\n{\"torn\":").unwrap();
    // The repair append asks for first is logged at info (issue 14 item 7).
    let out = run(sessionlock()
        .env("SESSIONLOCK_LOG", "info")
        .arg("append")
        .arg(&session)
        .args(["--entry", "2"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(!out.stderr.contains(&0x1b), "stderr: {:?}", stderr(&out));
    assert!(
        stderr(&out).contains("repaired torn transcript tail"),
        "the log line is there: {}",
        stderr(&out)
    );
}
