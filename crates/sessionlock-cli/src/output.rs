//! What the command prints besides its data: errors ([`report`]), the log
//! format, untrusted text made safe for a terminal, and the warnings that
//! `status` and `doctor` both print.
//!
//! # Untrusted text
//!
//! File names, lock payload fields (`lane`, `runId`, `hostname`, ...) and
//! the error messages that quote them are untrusted: anyone who can write a
//! lock file or name a file in a sessions directory controls these bytes.
//! Printed raw, an escape sequence could rewrite the screen and a newline
//! could fake a table row. Every human-readable output passes such text
//! through [`escape`] (or [`escape_os`] for names that may not be UTF-8);
//! `--json` output is exact JSON and needs none of this.
//!
//! The escapes are those of a shell's `$'...'` strings: `\n`, `\r`, `\t`,
//! `\\`, `\xNN` for other control characters and for bytes that are not
//! UTF-8, `\uNNNN` for C1 controls and bidirectional overrides. A backslash
//! is always escaped, so every output maps back to exactly one input.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sessionlock::status::{Exposure, LockStatus};
use tracing_subscriber::field::MakeExt as _;

/// A failure with an optional hint, printed as `error:` / `caused by:` /
/// `hint:` (stderr). Messages quote paths and lock payload fields, so they
/// are escaped ([`escape`]); hints are composed by this program, which
/// escapes what it quotes in them ([`shell_word`], [`path`]).
pub(crate) fn report(err: &anyhow::Error, hint: Option<&str>) {
    report_chain(err.chain(), hint);
}

/// [`report`] of an error that is not an [`anyhow::Error`] (the library's,
/// kept in the data a command prints).
pub(crate) fn report_error(err: &(dyn std::error::Error + 'static), hint: Option<&str>) {
    report_chain(std::iter::successors(Some(err), |e| e.source()), hint);
}

/// Prints an error (the chain's first) and its causes, and the hint.
fn report_chain<'a>(
    mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
    hint: Option<&str>,
) {
    if let Some(err) = chain.next() {
        eprintln!("error: {}", escape(&err.to_string()));
    }
    for cause in chain {
        eprintln!("caused by: {}", escape(&cause.to_string()));
    }
    if let Some(h) = hint {
        eprintln!();
        eprintln!("hint: {h}");
    }
}

/// The variable holding the log filter.
pub(crate) const LOG_ENV: &str = "SESSIONLOCK_LOG";
/// The variable that turns colours off (<https://no-color.org>).
pub(crate) const NO_COLOR_ENV: &str = "NO_COLOR";

/// Logs to stderr, at the level of [`LOG_ENV`] (default `warn`), with
/// field values escaped like every other human output (the colours, when
/// on, are added around them).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let value = escape(&format!("{value:?}")).into_owned();
        if field.name() == "message" {
            write!(w, "{value}")
        } else {
            write!(w, "{field}={value}")
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(fields)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os(NO_COLOR_ENV).is_none() && std::io::stderr().is_terminal())
        .init();
}

/// Whether `c` is shown escaped: control characters (C0, DEL, C1), the
/// bidirectional formatting characters that reorder the text after them,
/// and the backslash that starts every escape.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\\' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if !needs_escape(c) => out.push(c),
        c if u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
    }
}

fn push_str_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        push_escaped(out, c);
    }
}

/// `s` with control characters, bidirectional overrides and backslashes
/// escaped; borrowed when there is nothing to escape.
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_str_escaped(&mut out, s);
    Cow::Owned(out)
}

/// Like [`escape`], for bytes that may not be UTF-8: each invalid byte is
/// shown as `\xNN`.
pub(crate) fn escape_os(s: &OsStr) -> Cow<'_, str> {
    match s.to_str() {
        Some(s) => escape(s),
        None => {
            let mut out = String::with_capacity(s.len() + 8);
            for chunk in s.as_bytes().utf8_chunks() {
                push_str_escaped(&mut out, chunk.valid());
                for b in chunk.invalid() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            Cow::Owned(out)
        }
    }
}

/// A path for people: [`escape_os`] of its bytes.
pub(crate) fn path(p: &Path) -> Cow<'_, str> {
    escape_os(p.as_os_str())
}

/// A word a POSIX shell reads back as `w`: as is when it is plain,
/// single-quoted when it only has printable characters, else a `$'...'`
/// string with the escapes of [`escape_os`] (so a hint never puts a raw
/// control character on the terminal).
pub(crate) fn shell_word(w: &OsStr) -> String {
    let bytes = w.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(b));
    if plain {
        return escape_os(w).into_owned();
    }
    match w.to_str() {
        Some(s) if !s.chars().any(|c| c != '\\' && needs_escape(c)) => {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
        _ => format!("$'{}'", escape_os(w).replace('\'', r"\'")),
    }
}

// ------------------------------------------------ shared by status and doctor

/// Warns (stderr) about sessionlock holders OpenClaw would delete, in a
/// directory that also holds OpenClaw locks.
pub(crate) fn warn_openclaw_exposure(dir: &Path, exposed: &[(&LockStatus, Exposure)]) {
    if exposed.is_empty() {
        return;
    }
    let who: Vec<String> = exposed
        .iter()
        .map(|(st, why)| {
            let pid = st
                .holder
                .pid
                .map_or_else(|| "?".to_owned(), |p| p.to_string());
            let name = st
                .session
                .file_name()
                .map_or_else(|| path(&st.session), escape_os);
            match why {
                Exposure::UnmarkedArgv => format!("{name} (pid {pid}: no `openclaw` argument)"),
                _ => format!("{name} (pid {pid}: lock file unreadable by OpenClaw's user)"),
            }
        })
        .collect();
    eprintln!(
        "warning: {} holds OpenClaw locks, and OpenClaw deletes the locks of these sessionlock \
         holders: {}",
        path(dir),
        who.join(", ")
    );
    eprintln!(
        "hint: run sessionlock writers beside OpenClaw with SESSIONLOCK_OPENCLAW_COMPAT=1 \
         (or `sessionlock --openclaw-compat`); their holders still learn of a deleted lock \
         (Revoked) but no longer exclude OpenClaw"
    );
}

/// Writes a header and rows, in aligned columns (the last one unpadded).
pub(crate) fn write_rows<const N: usize>(
    out: &mut impl std::io::Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn control_characters_bidi_overrides_and_backslashes_are_escaped() {
        assert_eq!(escape("plain lane-1"), "plain lane-1");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), r"a\x1b[2Jb");
        assert_eq!(escape("x\ny\r\tz"), r"x\ny\r\tz");
        assert_eq!(escape("a\\x1b"), r"a\\x1b");
        assert_eq!(escape("\u{7f}\u{85}\u{202e}é"), r"\x7f\u0085\u202eé");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex_escapes() {
        let name = OsStr::from_bytes(b"s\xff\xfe.jsonl");
        assert_eq!(escape_os(name), r"s\xff\xfe.jsonl");
    }

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        let w = |s: &str| shell_word(OsStr::new(s));
        assert_eq!(w("/srv/sessions"), "/srv/sessions");
        assert_eq!(w("my sessions"), "'my sessions'");
        assert_eq!(w("it's"), r"'it'\''s'");
        assert_eq!(w(""), "''");
        assert_eq!(w("a\\b"), r"'a\b'");
        assert_eq!(w("a\nb's"), r"$'a\nb\'s'");
        assert_eq!(shell_word(OsStr::from_bytes(b"x\xff")), r"$'x\xff'");
    }
}
