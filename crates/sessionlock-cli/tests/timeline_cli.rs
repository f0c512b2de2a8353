//! End-to-end tests of `sessionlock timeline` and `sessionlock demo
//! --timeline`: the page is opened from a file URL in headless Chromium,
//! which must run its script without an error or console message and draw
//! one hold per `acquired` event of the log; a PNG screenshot is saved.
//!
//! Chromium (`chromium`, `chromium-browser`, `google-chrome`, or the
//! binary SESSIONLOCK_CHROMIUM names): without it these tests skip with a
//! loud message, unless `CI` is set, where they fail.
//!
//! The screenshots go to `target/tmp/`; with SESSIONLOCK_SCREENSHOT=FILE the
//! demo test writes its screenshot to FILE instead: that is how the README's
//! `docs/timeline.png` is made (scripts/timeline-screenshot).
//!
//! Timing: the demo test runs one 20 s demo (about 25 s).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{sessionlock, stderr, stdout};

/// The hand-written log of every kind (and a bad line, an unknown kind, an
/// unknown field, a blank line, lines out of time order).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/timeline/events.jsonl")
}

/// Chromium, or `None` (after a loud message) when it is missing and `CI`
/// is unset.
fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("SESSIONLOCK_CHROMIUM").map(PathBuf::from);
    let found = named.or_else(|| {
        let path = std::env::var_os("PATH")?;
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and Chromium is not installed: install it (apt-get install -y chromium) \
             or name it in SESSIONLOCK_CHROMIUM"
        );
        eprintln!(
            "\n\
             ************************************************************\n\
             SKIPPED: Chromium not found (chromium, chromium-browser,\n\
             google-chrome; or SESSIONLOCK_CHROMIUM): the timeline page\n\
             was NOT opened in a browser. apt-get install -y chromium\n\
             ************************************************************\n"
        );
    }
    found
}

/// A `file://` URL of an absolute path.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Runs headless Chromium on `page` with `args`; returns its stdout and
/// stderr. Its profile is a fresh directory; it is killed after two
/// minutes.
fn run_chromium(chromium: &Path, page: &Path, args: &[&str]) -> (String, String) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("stdout");
    let err = scratch.path().join("stderr");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1600,900",
            "--virtual-time-budget=10000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.path().join("profile").display()
        ))
        .args(args)
        .arg(file_url(page))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create stdout file"))
        .stderr(std::fs::File::create(&err).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", chromium.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for chromium") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 2 minutes on {}",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).expect("read output")).into_owned();
    let (stdout, stderr) = (read(&out), read(&err));
    assert!(status.success(), "chromium failed ({status}):\n{stderr}");
    (stdout, stderr)
}

/// What the page said about itself once loaded.
#[derive(Debug)]
struct Rendered {
    /// `<body data-holds>`: holds drawn in the full view.
    holds: u64,
    /// `<body data-errors>`: script errors and console.error calls.
    errors: u64,
    /// `<body data-tips>`: what the probe script counted, if it ran.
    tips: Option<u64>,
    /// The page's console messages (any is a failure: it logs nothing).
    console: Vec<String>,
}

/// The value of `data-NAME` on the `<body>` of a DOM dump.
fn body_data<'d>(dom: &'d str, name: &str) -> Option<&'d str> {
    let start = dom.find("<body")?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!("data-{name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// Opens `page` in Chromium: its DOM once loaded and its console.
fn render(chromium: &Path, page: &Path) -> Rendered {
    let (dom, log) = run_chromium(
        chromium,
        page,
        &["--enable-logging=stderr", "--v=0", "--dump-dom"],
    );
    assert_eq!(
        body_data(&dom, "ready"),
        Some("1"),
        "the page's script did not finish drawing:\n{log}\n{}",
        dom.get(..2000).unwrap_or(&dom)
    );
    let num = |name: &str| -> u64 {
        body_data(&dom, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric data-{name} on <body>"))
    };
    Rendered {
        holds: num("holds"),
        errors: num("errors"),
        tips: body_data(&dom, "tips").and_then(|v| v.parse().ok()),
        console: log
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

/// Saves a screenshot of `page` at `png`; asserts it is a PNG.
fn screenshot(chromium: &Path, page: &Path, png: &Path) {
    let arg = format!("--screenshot={}", png.display());
    run_chromium(chromium, page, &[&arg]);
    let bytes =
        std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    eprintln!("screenshot: {} ({} KB)", png.display(), bytes.len() / 1024);
}

/// The `acquired` events of an event log (every line that is one).
fn acquired_in(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).expect("read the event log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "acquired")
        .count() as u64
}

/// Asserts a clean render of `page` drawing `holds` holds.
fn assert_renders(chromium: &Path, page: &Path, holds: u64) {
    let r = render(chromium, page);
    assert!(
        r.console.is_empty(),
        "console messages:\n{}",
        r.console.join("\n")
    );
    assert_eq!(r.errors, 0, "script errors on the page: {r:?}");
    assert_eq!(r.holds, holds, "holds drawn vs acquired events in the log");
}

/// A script run after the page's own: moves the mouse over every part of
/// the chart (counting the hovers that showed details), zooms with the
/// wheel, drags, and presses every button, so that an error in any of
/// those handlers shows in `data-errors`.
const PROBE: &str = r#"<script>
(function () {
  var c = document.getElementById('canvas'), tip = document.getElementById('tip');
  var b = c.getBoundingClientRect(), tips = 0;
  function at(type, x, y, target) {
    (target || c).dispatchEvent(new MouseEvent(type, { clientX: x, clientY: y, bubbles: true }));
  }
  for (var y = b.top + 1; y < b.bottom; y += 3)
    for (var x = b.left + 1; x < b.right; x += 5) {
      at('mousemove', x, y);
      if (tip.style.display === 'block' && tip.textContent) tips++;
    }
  c.dispatchEvent(new WheelEvent('wheel', { clientX: b.left + 700, clientY: b.top + 60, deltaY: -400, bubbles: true, cancelable: true }));
  c.dispatchEvent(new WheelEvent('wheel', { clientX: b.left + 700, clientY: b.top + 60, deltaX: 300, bubbles: true, cancelable: true }));
  at('mousedown', b.left + 700, b.top + 60);
  at('mousemove', b.left + 400, b.top + 60, window);
  at('mouseup', b.left + 400, b.top + 60, window);
  at('dblclick', b.left + 500, b.top + 60);
  ['zoom-in', 'zoom-in', 'pan-left', 'pan-right', 'zoom-out', 'reset'].forEach(function (id) {
    document.getElementById(id).click();
  });
  document.body.dataset.tips = String(tips);
})();
</script>
</body>"#;

/// Runs [`PROBE`] on a copy of `page`: no error, and details shown.
fn assert_interactions_work(chromium: &Path, page: &Path) {
    let html = std::fs::read_to_string(page).expect("read the page");
    let probed = page.with_extension("probe.html");
    std::fs::write(&probed, html.replacen("</body>", PROBE, 1)).expect("write the probe page");
    let r = render(chromium, &probed);
    assert!(
        r.console.is_empty(),
        "console messages:\n{}",
        r.console.join("\n")
    );
    assert_eq!(
        r.errors, 0,
        "script errors while hovering, zooming and panning: {r:?}"
    );
    assert!(
        r.tips.is_some_and(|t| t > 0),
        "no hover showed details: {r:?}"
    );
}

#[test]
fn a_log_of_every_kind_is_drawn_with_one_bar_per_acquired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("page.html");
    let trace = dir.path().join("trace.json");
    let out = sessionlock()
        .args(["timeline", "--from"])
        .arg(fixture())
        .arg("--out")
        .arg(&page)
        .arg("--chrome-trace")
        .arg(&trace)
        .output()
        .expect("run sessionlock timeline");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // The bad line is named by file and line, and skipped.
    assert!(err.contains("events.jsonl:19: not JSON"), "{err}");
    assert!(
        err.contains("8 holds (2 still held at the end) on 3 sessions"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    let html = std::fs::read_to_string(&page).expect("read the page");
    // Self-contained: nothing is fetched.
    for external in ["src=\"http", "href=\"http", "<link", "import(", "fetch("] {
        assert!(
            !html.contains(external),
            "the page loads something: {external}"
        );
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(&trace).expect("read the trace"))
        .expect("the trace is JSON");
    let events = doc["traceEvents"].as_array().expect("traceEvents");
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), 8);
    let begins = events.iter().filter(|e| e["ph"] == "b").count();
    assert_eq!(begins, events.iter().filter(|e| e["ph"] == "e").count());
    let instants: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "i")
        .filter_map(|e| e["name"].as_str())
        .collect();
    for marker in [
        "hand-off",
        "reclaim",
        "revoked",
        "refused write",
        "takeover",
        "fault",
        "failed",
        "repaired",
    ] {
        assert!(instants.contains(&marker), "no {marker} in {instants:?}");
    }

    let Some(chromium) = chromium() else { return };
    assert_renders(&chromium, &page, acquired_in(&fixture()));
    assert_interactions_work(&chromium, &page);
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline-fixture.png");
    screenshot(&chromium, &page, &png);
}

#[test]
fn logs_that_cannot_be_read_are_errors_bad_lines_are_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("page.html");
    let run = |args: &[&Path]| {
        let mut cmd = sessionlock();
        cmd.arg("timeline");
        for a in args {
            cmd.arg("--from").arg(a);
        }
        cmd.arg("--out")
            .arg(&page)
            .output()
            .expect("run sessionlock timeline")
    };

    let missing = dir.path().join("missing.jsonl");
    let out = run(&[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the event log"),
        "{}",
        stderr(&out)
    );

    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "{\"fact\":\"turn\"}\nnot json\n").expect("write");
    let out = run(&[&garbage]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("garbage.jsonl:1: no schema version"), "{err}");
    assert!(err.contains("garbage.jsonl:2: not JSON"), "{err}");
    assert!(err.contains("error: no line of"), "{err}");
    assert!(!page.exists(), "no page for nothing");

    // Two logs merge; the bad one's lines are skipped.
    let out = run(&[&garbage, &fixture()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("8 holds"), "{}", stderr(&out));
    assert!(page.exists());

    let out = sessionlock()
        .args(["timeline", "--from"])
        .arg(fixture())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "--out or --chrome-trace is needed"
    );
}
#[test]
fn a_20_s_demo_timeline_opens_in_chromium_with_every_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run_dir = dir.path().join("run");
    let page = dir.path().join("timeline.html");
    let out = sessionlock()
        .args(["demo", "--json", "--duration", "20", "--dir"])
        .arg(&run_dir)
        .arg("--timeline")
        .arg(&page)
        .output()
        .expect("run sessionlock demo");
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "demo failed:\n{}\n{err}",
        stdout(&out)
    );
    assert!(
        err.contains(&format!("in {}", page.display())),
        "the demo says where the page is:\n{err}"
    );
    let verdict: Value = serde_json::from_str(&stdout(&out)).expect("the verdict is JSON");
    let log = run_dir.join("events.jsonl");
    let acquired = acquired_in(&log);
    assert!(
        acquired > 100,
        "only {acquired} acquired events in {}",
        log.display()
    );

    // One fault event per injected fault.
    let text = std::fs::read_to_string(&log).expect("read the log");
    let mut faults = std::collections::BTreeMap::<String, u64>::new();
    for e in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if e["kind"] == "fault" {
            let name = e["fault"].as_str().expect("a fault's name").to_owned();
            *faults.entry(name).or_default() += 1;
        }
    }
    let injected: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(verdict["figures"]["faults_injected"].clone())
            .expect("faults_injected");
    assert_eq!(faults, injected, "fault events vs faults injected");

    let Some(chromium) = chromium() else { return };
    assert_renders(&chromium, &page, acquired);
    assert_interactions_work(&chromium, &page);
    let png = std::env::var_os("SESSIONLOCK_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline-demo.png"));
    screenshot(&chromium, &page, &png);
}
