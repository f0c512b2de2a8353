//! Untrusted text on a terminal: file names, lock payload fields (`lane`,
//! `runId`, `hostname`, ...) and the error messages that quote them.
//!
//! Anyone who can write a lock file or name a file in a sessions directory
//! controls these bytes. Printed raw, an escape sequence could rewrite the
//! screen and a newline could fake a table row. Every human-readable output
//! passes such text through [`escape`] (or [`escape_os`] for names that may
//! not be UTF-8); `--json` output is exact JSON and needs none of this.
//!
//! The escapes are those of a shell's `$'...'` strings: `\n`, `\r`, `\t`,
//! `\\`, `\xNN` for other control characters and for bytes that are not
//! UTF-8, `\uNNNN` for C1 controls and bidirectional overrides. A backslash
//! is always escaped, so every output maps back to exactly one input.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

/// The hexadecimal bytes of a name that is not UTF-8 (`None` when it is):
/// what `--json` output adds so that such a name survives exactly.
pub(crate) fn hex_if_not_utf8(s: &OsStr) -> Option<String> {
    if s.to_str().is_some() {
        return None;
    }
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.as_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    Some(out)
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
        assert_eq!(hex_if_not_utf8(name).as_deref(), Some("73fffe2e6a736f6e6c"));
        assert_eq!(hex_if_not_utf8(OsStr::new("s.jsonl")), None);
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
