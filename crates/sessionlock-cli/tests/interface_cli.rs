//! The command's interface for people and programs (issue 14 item 7): every
//! `--help` ends with ENVIRONMENT and EXIT STATUS sections, every `--json`
//! document carries its schema version, and the shell completions and man
//! pages it generates are valid.

use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{hold, run, sessionlock, stderr, stdout};

/// The visible commands, as `sessionlock --help` lists them.
fn commands() -> Vec<String> {
    let out = run(sessionlock().arg("--help"));
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    let listed = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no commands in: {help}"));
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every variable the command reads.
fn variables() -> Vec<&'static str> {
    use sessionlock::config::*;
    let mut vars = vec![
        ENV_HOLD_EXCEEDED,
        ENV_FOREIGN_HOLD_EXCEEDED,
        ENV_OPENCLAW_COMPAT,
        ENV_NOTIFY,
        "SESSIONLOCK_BACKEND",
        "SESSIONLOCK_LOG",
    ];
    vars.extend(ENV_ACQUIRE_TIMEOUT);
    vars.extend(ENV_STALE);
    vars.extend(ENV_MAX_HOLD);
    vars
}

#[test]
fn every_help_ends_with_the_environment_and_the_exit_statuses() {
    let commands = commands();
    for want in [
        "status",
        "doctor",
        "verify-fs",
        "exec",
        "completions",
        "man",
    ] {
        assert!(commands.iter().any(|c| c == want), "{want} in {commands:?}");
    }
    let mut pages = vec![(String::from("sessionlock"), vec!["--help".to_owned()])];
    pages.extend(commands.iter().map(|c| {
        (
            format!("sessionlock {c}"),
            vec![c.clone(), "--help".to_owned()],
        )
    }));
    for (name, args) in pages {
        let out = run(sessionlock().args(&args));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let help = stdout(&out);
        let env = help
            .find("\nEnvironment:\n")
            .unwrap_or_else(|| panic!("{name} --help has no Environment section:\n{help}"));
        let exit = help
            .find("\nExit status:\n")
            .unwrap_or_else(|| panic!("{name} --help has no Exit status section:\n{help}"));
        assert!(env < exit, "{name}: environment, then exit statuses");
        for var in variables() {
            assert!(
                help[env..exit].contains(var),
                "{name} --help does not name {var}"
            );
        }
        let statuses = &help[exit..];
        assert!(statuses.contains("\n  2 "), "{name}: no 2 in {statuses}");
        // exec's success is its command's: `N`.
        let ok = if name == "sessionlock exec" {
            "\n  N "
        } else {
            "\n  0 "
        };
        assert!(statuses.contains(ok), "{name}: no {ok:?} in {statuses}");
    }
    // exec's own statuses, the conflict one among them.
    let help = stdout(&run(sessionlock().args(["exec", "--help"])));
    let statuses = &help[help.find("\nExit status:\n").unwrap()..];
    for line in ["  128+N ", "  126 ", "  127 ", "(--conflict-exit-code)"] {
        assert!(statuses.contains(line), "no {line:?} in {statuses}");
    }
}

/// `cmd`'s stdout as JSON, after a successful run.
fn json(cmd: &mut Command) -> Value {
    let out = run(cmd);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)))
}

#[test]
fn every_json_document_carries_its_schema_version_first() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let d = dir.path();
    let appended = json(
        sessionlock()
            .arg("append")
            .arg(&session)
            .args(["--json", "--entry", "1"]),
    );
    let guard = hold(&session);
    let watched = run(sessionlock()
        .args(["status", "--watch", "--json", "--count", "1"])
        .arg(d));
    let watched: Value = serde_json::from_slice(&watched.stdout).expect("NDJSON");
    let documents = [
        ("append --json", appended),
        (
            "status --json",
            json(sessionlock().args(["status", "--json"]).arg(d)),
        ),
        ("status --watch --json", watched),
        (
            "doctor --json",
            json(sessionlock().args(["doctor", "--json"]).arg(d)),
        ),
        (
            "verify-fs --json",
            json(sessionlock().args(["verify-fs", "--json"]).arg(d)),
        ),
        (
            "bench --json",
            json(sessionlock().args([
                "bench",
                "--json",
                "--only",
                "lock",
                "--cycles",
                "2",
                "--handoffs",
                "1",
                "--kills",
                "1",
                "--wedges",
                "1",
                "--lease-ms",
                "100",
            ])),
        ),
        (
            "demo --json",
            json(
                sessionlock()
                    .args(["demo", "--json", "--duration", "1", "--processes", "1"])
                    .args(["--faults", "none", "--dir"])
                    .arg(d.join("demo")),
            ),
        ),
    ];
    guard.release().unwrap();
    for (what, doc) in documents {
        let first = doc
            .as_object()
            .and_then(|o| o.iter().next())
            .unwrap_or_else(|| panic!("{what} is not a JSON object: {doc}"));
        assert_eq!(
            first,
            (&"version".to_owned(), &Value::from(1)),
            "{what}: {doc}"
        );
    }
}

#[test]
fn the_bash_completion_script_is_valid_and_every_shell_gets_one() {
    let out = run(sessionlock().args(["completions", "bash"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sessionlock.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let checked = run(Command::new("bash").arg("-n").arg(&script));
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(stdout(&out).contains("verify-fs"), "{}", stdout(&out));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(sessionlock().args(["completions", shell]));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("conflict-exit-code"), "{shell}");
    }
    let out = run(sessionlock().args(["completions", "tcsh"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_man_pages_have_their_sections_and_render() {
    let out = run(sessionlock().arg("man"));
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH ENVIRONMENT",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(page.contains(section), "no {section} in:\n{page}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = run(sessionlock().arg("man").arg("--out-dir").arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = commands()
        .iter()
        .map(|c| format!("sessionlock-{c}.1"))
        .collect();
    expected.push("sessionlock.1".to_owned());
    expected.sort();
    assert_eq!(written, expected);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sessionlock.1")).unwrap(),
        page,
        "the page printed is the one written"
    );

    // Rendered by man(1) where it is installed: the sections a reader sees.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("sessionlock-exec.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::null())
        .output();
    match rendered {
        Ok(r) => {
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
            let text = String::from_utf8_lossy(&r.stdout);
            for heading in ["NAME", "SYNOPSIS", "ENVIRONMENT", "EXIT STATUS"] {
                assert!(
                    text.lines().any(|l| l == heading),
                    "man -l shows no {heading}:\n{text}"
                );
            }
            assert!(text.contains("--conflict-exit-code"), "{text}");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("man(1) is not installed: the roff source was checked only");
        }
        Err(e) => panic!("cannot run man: {e}"),
    }
}
