//! What every `--help` and man page ends with: the command's notes, the
//! environment variables it reads ([`environment`], one list for every
//! command, built from the names the library and the backend choice
//! define) and its exit statuses ([`page`], built from [`crate::exit`]).
//!
//! [`command`] is the command line with these sections attached as
//! `after_long_help` (`--help`; `-h` stays a summary); `sessionlock man`
//! renders the same data as roff ([`crate::commands::generate`]).

use std::fmt::Write as _;

use clap::CommandFactory as _;
use sessionlock::config;
use sessionlock_lab::backend_choice::ENV_BACKEND;

use crate::commands::{doctor, exec, serve_metrics, timeline, transcript};
use crate::exit;
use crate::output::{LOG_ENV, NO_COLOR_ENV};

/// An exit status as help shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Status {
    /// That number.
    Is(u8),
    /// `exec`: 128+N for signal N.
    Signal,
    /// `exec`: the command's own status.
    Command,
    /// `exec`: the status for a lock that cannot be had
    /// (`--conflict-exit-code`, shown with its default).
    Conflict,
}

impl Status {
    /// The status as a word: `0`, `128+N`, `N`.
    pub(crate) fn label(self) -> String {
        match self {
            Status::Is(n) => n.to_string(),
            Status::Signal => format!("{}+N", exit::SIGNAL_BASE),
            Status::Command => "N".to_owned(),
            Status::Conflict => exit::DEFAULT_CONFLICT.to_string(),
        }
    }
}

/// An exit status and what it means.
pub(crate) type ExitRow = (Status, &'static str);

/// What a command's help and man page add after its options.
pub(crate) struct Page {
    /// The command's own notes, preformatted (`None`: none).
    pub(crate) notes: Option<&'static str>,
    /// Its exit statuses.
    pub(crate) exit: &'static [ExitRow],
}

/// A variable the command reads.
pub(crate) struct Var {
    /// Its name.
    pub(crate) name: &'static str,
    /// What it does, its values and its default.
    pub(crate) text: String,
}

/// The environment every command reads (each one the variables it
/// needs). Command-line options win over them.
pub(crate) fn environment() -> Vec<Var> {
    let ms = |d: std::time::Duration| d.as_millis();
    let openclaw =
        |name: &str| format!(" (OpenClaw's {name} is read when this one is unset or invalid)");
    let [timeout, timeout_oc] = config::ENV_ACQUIRE_TIMEOUT;
    let [stale, stale_oc] = config::ENV_STALE;
    let [max_hold, max_hold_oc] = config::ENV_MAX_HOLD;
    let vars = [
        (
            timeout,
            format!(
                "How long exec, append and repair wait for a lock, in milliseconds, or \
                 `Infinity`; --timeout-ms wins{} [default: {}]",
                openclaw(timeout_oc),
                ms(config::DEFAULT_ACQUIRE_TIMEOUT)
            ),
        ),
        (
            max_hold,
            format!(
                "The lease of the locks exec, append and repair take, in milliseconds (at \
                 most {}): a holder past it may be taken over, and exec's command is killed \
                 at its end; exec's --max-hold-ms wins{} [default: {}]",
                ms(config::MAX_HOLD_CAP),
                openclaw(max_hold_oc),
                ms(config::DEFAULT_MAX_HOLD)
            ),
        ),
        (
            stale,
            format!(
                "The age, in milliseconds, past which status and doctor report a live \
                 holder's lock as too-old{} [default: {}]",
                openclaw(stale_oc),
                ms(config::DEFAULT_STALE_AFTER)
            ),
        ),
        (
            config::ENV_HOLD_EXCEEDED,
            format!(
                "What a contender does with a live holder past its lease: `reclaim` (take \
                 the lock over; the holder is fenced) or `report` (fail at once: exit status \
                 {}, or exec's --conflict-exit-code). status and doctor judge locks by it \
                 [default: {}]",
                exit::FINDING,
                config::HoldExceededPolicy::default()
            ),
        ),
        (
            config::ENV_FOREIGN_HOLD_EXCEEDED,
            format!(
                "The same for OpenClaw holders past their lease, which cannot be fenced: \
                 `reclaim` or `report` [default: that of {}]",
                config::ENV_HOLD_EXCEEDED
            ),
        ),
        (
            config::ENV_OPENCLAW_COMPAT,
            "`1`: OpenClaw-compatible mode, as --openclaw-compat; `0`: off [default: 0]".to_owned(),
        ),
        (
            config::ENV_NOTIFY,
            "How waiters on the file backend learn that a lock was released: `auto` \
             (inotify and pidfd where the file system supports them) or `poll` \
             [default: auto]"
                .to_owned(),
        ),
        (
            ENV_BACKEND,
            "Where locks and transcripts live when --backend is not given: `file` or a \
             postgres:// URL [default: file]"
                .to_owned(),
        ),
        (
            sessionlock::observe::ENV_EVENT_LOG,
            "A file every process using the library appends its lock events to, as JSON Lines \
             (--event-log) [default: none]"
                .to_owned(),
        ),
        (
            LOG_ENV,
            "What is logged on stderr: a tracing filter such as `info` or \
             `sessionlock=debug` [default: warn]"
                .to_owned(),
        ),
        (
            NO_COLOR_ENV,
            "Set to anything: log lines are not coloured".to_owned(),
        ),
    ];
    vars.into_iter()
        .map(|(name, text)| Var { name, text })
        .collect()
}

/// What follows the list of variables.
pub(crate) const ENVIRONMENT_NOTE: &str =
    "Values that cannot be parsed are ignored with a warning, except SESSIONLOCK_BACKEND \
     (an error, exit 2) and SESSIONLOCK_LOG (the default filter, warn, is used). Command-line \
     options win over these variables.";

const TOP_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "success"),
    (
        Status::Is(exit::FINDING),
        "a finding to act on: a lock held by someone else (exec, append, repair), \
         doctor findings, a torn tail (read), a failed check (verify-fs), a failed \
         demo",
    ),
    (Status::Is(exit::ERROR), "an error, including a usage error"),
    (
        Status::Command,
        "exec: its command's own status (also 126, 127 and 128+N; see `sessionlock exec \
         --help`)",
    ),
];

const STATUS_EXIT: &[ExitRow] = &[
    (
        Status::Is(exit::OK),
        "every directory and lock could be read (held and stale locks are not findings)",
    ),
    (
        Status::Is(exit::ERROR),
        "a directory or a lock could not be read, or another error; with --watch, the \
         status of the last refresh",
    ),
];

const VERIFY_FS_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "no check failed (fallbacks are fine)"),
    (
        Status::Is(exit::FINDING),
        "a check failed: sessionlock's guarantees do not hold in DIR",
    ),
    (
        Status::Is(exit::ERROR),
        "DIR could not be checked, or the backend is not `file`",
    ),
];

const DEMO_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "every check passed (PASS)"),
    (
        Status::Is(exit::FINDING),
        "a check failed (FAIL; the violations are listed on stderr)",
    ),
    (Status::Is(exit::ERROR), "error"),
];

const BENCH_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "the figures were measured"),
    (
        Status::Is(exit::FINDING),
        "a transcript did not hold exactly the expected entries after a throughput run, \
         or a contention run lost, duplicated or interleaved a line or overlapped critical \
         sections (the figures are still printed)",
    ),
    (Status::Is(exit::ERROR), "error"),
];

const GENERATE_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "written"),
    (
        Status::Is(exit::ERROR),
        "error (the output could not be written)",
    ),
];

/// The notes and exit statuses of `command` (`None`: the top level, and
/// any command not listed in [`known_page`]).
pub(crate) fn page(command: Option<&str>) -> Page {
    command.and_then(known_page).unwrap_or(Page {
        notes: None,
        exit: TOP_EXIT,
    })
}

/// The notes and exit statuses of a command.
fn known_page(command: &str) -> Option<Page> {
    let (notes, exit) = match command {
        "status" => (None, STATUS_EXIT),
        "doctor" => (Some(doctor::NOTES), doctor::EXIT_STATUS),
        "serve-metrics" => (Some(serve_metrics::NOTES), serve_metrics::EXIT_STATUS),
        "verify-fs" => (None, VERIFY_FS_EXIT),
        "exec" => (Some(exec::NOTES), exec::EXIT_STATUS),
        "append" => (Some(transcript::APPEND_NOTES), transcript::APPEND_EXIT),
        "read" => (Some(transcript::READ_NOTES), transcript::READ_EXIT),
        "repair" => (Some(transcript::REPAIR_NOTES), transcript::REPAIR_EXIT),
        "demo" => (None, DEMO_EXIT),
        "timeline" => (Some(timeline::NOTES), timeline::EXIT_STATUS),
        "bench" => (None, BENCH_EXIT),
        "completions" | "man" => (None, GENERATE_EXIT),
        _ => return None,
    };
    Some(Page { notes, exit })
}

/// The command line, every visible command's `--help` ending with its
/// notes, environment and exit statuses.
pub(crate) fn command() -> clap::Command {
    let mut cmd = crate::Cli::command().after_long_help(long_help(&page(None)));
    let names: Vec<String> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect();
    for name in names {
        let text = long_help(&page(Some(&name)));
        cmd = cmd.mut_subcommand(&name, |c| c.after_long_help(text));
    }
    cmd
}

/// Where descriptions start, as in clap's long help.
const INDENT: usize = 10;
/// Where text wraps.
const WIDTH: usize = 80;

/// The text after the options: notes, `Environment:`, `Exit status:`.
fn long_help(page: &Page) -> String {
    let mut s = String::new();
    if let Some(notes) = page.notes {
        s.push_str(notes);
        s.push_str("\n\n");
    }
    s.push_str("Environment:\n");
    for v in environment() {
        let _ = writeln!(s, "  {}", v.name);
        wrap_into(&mut s, &v.text, INDENT, INDENT);
    }
    s.push('\n');
    wrap_into(&mut s, ENVIRONMENT_NOTE, 2, 2);
    s.push_str("\nExit status:\n");
    for (status, text) in page.exit {
        let label = status.label();
        let mut line = format!("  {label}");
        let pad = INDENT.saturating_sub(line.len()).max(2);
        line.extend(std::iter::repeat_n(' ', pad));
        let first = line.len();
        s.push_str(&line);
        wrap_into(&mut s, text, 0, first);
    }
    s.truncate(s.trim_end().len());
    s
}

/// Appends `text` wrapped at [`WIDTH`]: its first line indented by
/// `first`, the others by `rest` (the first line's start counts as
/// column `rest` when `first` is 0, as after a label).
fn wrap_into(out: &mut String, text: &str, first: usize, rest: usize) {
    let mut col = if first == 0 { rest } else { first };
    out.extend(std::iter::repeat_n(' ', first));
    let mut at_start = true;
    for word in text.split_whitespace() {
        if !at_start && col + 1 + word.chars().count() > WIDTH {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', rest));
            col = rest;
            at_start = true;
        }
        if !at_start {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.chars().count();
        at_start = false;
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_wraps_at_80_columns_with_a_hanging_indent() {
        let mut s = String::new();
        wrap_into(&mut s, &"word ".repeat(40), 4, 8);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines.len() > 1, "{s}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{s}");
        assert!(lines[0].starts_with("    word"), "{s}");
        assert!(lines[1].starts_with("        word"), "{s}");
    }

    #[test]
    fn every_visible_command_has_its_own_exit_statuses() {
        // A command missing from `known_page` would get the top level's.
        let cmd = crate::Cli::command();
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            let name = sub.get_name();
            assert!(
                known_page(name).is_some(),
                "{name} has no exit statuses of its own in help::known_page"
            );
        }
    }

    /// `docs/cli.md`, which documents the command for people.
    fn cli_doc() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }

    /// The visible long options of `cmd`, without the global ones.
    fn options(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "help" && *l != "version")
            .map(|l| format!("--{l}"))
            .collect()
    }

    /// Issue 14 item 7: the CLI's documentation must not fall behind it.
    /// Every visible command has its section in docs/cli.md, naming each
    /// of its options; the global options and every variable are there too.
    #[test]
    fn docs_cli_md_names_every_command_option_and_variable() {
        let doc = cli_doc();
        let mut cmd = command().disable_help_subcommand(true);
        cmd.build();
        let globals = doc
            .split("\n## Global options\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/cli.md has a `## Global options` section");
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = a.get_long() {
                assert!(
                    globals.contains(&format!("--{long}")),
                    "docs/cli.md's global options miss --{long}"
                );
            }
        }
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            let name = sub.get_name();
            let heading = format!("\n## `sessionlock {name}`\n");
            let section = doc
                .split(heading.as_str())
                .nth(1)
                .and_then(|rest| rest.split("\n## ").next())
                .unwrap_or_else(|| panic!("docs/cli.md has no section{heading}"));
            for option in options(sub) {
                assert!(
                    section.contains(&option),
                    "docs/cli.md's `sessionlock {name}` misses {option}"
                );
            }
            assert!(
                section.contains("Exit status"),
                "docs/cli.md's `sessionlock {name}` has no exit status"
            );
        }
        for v in environment() {
            assert!(doc.contains(v.name), "docs/cli.md misses {}", v.name);
        }
    }

    #[test]
    fn the_environment_lists_every_variable_of_the_library_once() {
        let names: Vec<&str> = environment().iter().map(|v| v.name).collect();
        let mut expected = vec![
            config::ENV_HOLD_EXCEEDED,
            config::ENV_FOREIGN_HOLD_EXCEEDED,
            config::ENV_OPENCLAW_COMPAT,
            config::ENV_NOTIFY,
            ENV_BACKEND,
            LOG_ENV,
        ];
        expected.extend([
            config::ENV_ACQUIRE_TIMEOUT[0],
            config::ENV_STALE[0],
            config::ENV_MAX_HOLD[0],
        ]);
        for name in expected {
            assert_eq!(
                names.iter().filter(|n| **n == name).count(),
                1,
                "{name} in {names:?}"
            );
        }
        let text: String = environment().iter().map(|v| v.text.clone()).collect();
        for fallback in [
            config::ENV_ACQUIRE_TIMEOUT[1],
            config::ENV_STALE[1],
            config::ENV_MAX_HOLD[1],
        ] {
            assert!(text.contains(fallback), "{fallback} is not mentioned");
        }
    }
}
