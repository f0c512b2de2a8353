//! The backend-neutral types of the transcript store
//! ([design §5](crate::design#5-the-transcript-store),
//! [design §7](crate::design#7-fence-snapshots-and-takeover-detection)): what
//! every [`TranscriptStore`](crate::backend::TranscriptStore) takes and
//! returns, whatever keeps the transcript.

pub mod classify;

use std::ffi::OsString;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One JSON value that a reader can hold as a [`Value`], checked without
/// building it: the parser visits every token the way `Value` does (numbers
/// range-checked, strings and escapes validated, the same nesting limit) and
/// keeps nothing, so memory stays at the parser's. serde's `IgnoredAny`
/// skips numbers unchecked and would pass entries (`1e400`) that readers
/// then refuse.
pub(crate) struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Valid, D::Error> {
        d.deserialize_any(Valid)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = Valid;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// The longest line a reader accepts (64 MiB): a longer one is reported as
/// an invalid entry rather than read into memory.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

/// How durable a write must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// In the page cache: survives a process crash, not a machine crash.
    #[default]
    None,
    /// `fdatasync` after the write: the data survives a machine crash.
    Data,
    /// `fsync` of the file, and of the directory when the file was created.
    Full,
}

/// A final line without `\n`, left by a crash in the middle of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// Where the torn bytes start (the end of the last complete line).
    pub offset: u64,
    /// How many torn bytes there are.
    pub len: u64,
    /// Where the repair set them aside, if it did (the file store: the
    /// path of `<session>.torn-<epoch>`).
    pub saved_to: Option<OsString>,
}

impl TornTail {
    /// A torn tail of `len` bytes at `offset`, set aside at `saved_to` if
    /// the repair did: what a [`TranscriptStore`](crate::backend::TranscriptStore)
    /// of another backend reports from its `repair` and `read`.
    pub fn new(offset: u64, len: u64, saved_to: Option<OsString>) -> TornTail {
        TornTail {
            offset,
            len,
            saved_to,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first byte written.
    pub offset: u64,
    /// Bytes written.
    pub len: u64,
}

/// One entry of a transcript, with its place in the file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Entry {
    /// The JSON value.
    pub value: Value,
    /// Offset of its line.
    pub offset: u64,
    /// Length of its line, `\n` included.
    pub len: u64,
}

/// A batch of entries as JSON text, for [`Transcript::append_raw`](crate::transcript::Transcript::append_raw): each
/// entry is checked to be exactly one JSON value when it is added (without
/// building the value in memory) and later written as given, so the batch
/// costs about its own size and the file gets the caller's bytes (a number
/// spelled `1.50` stays `1.50`).
///
/// Only the layout of an entry is normalized: line breaks between tokens
/// become spaces (so the entry fits on one line; JSON strings cannot contain
/// raw line breaks, so no value changes) and whitespace around the value is
/// dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntries {
    /// Complete lines, each ending in `\n`.
    buf: Vec<u8>,
    count: usize,
}

impl RawEntries {
    /// An empty batch.
    pub fn new() -> RawEntries {
        RawEntries::default()
    }

    /// Adds one entry given as JSON text.
    ///
    /// # Errors
    /// The parser's error when `json` is not exactly one JSON value (with its
    /// line and column within `json`), or when the entry is longer than
    /// [`MAX_ENTRY_BYTES`], which readers refuse. The batch is unchanged
    /// then.
    pub fn push(&mut self, json: &[u8]) -> std::result::Result<(), serde_json::Error> {
        serde_json::from_slice::<Valid>(json)?;
        let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        let start = json.iter().position(|b| !is_space(b)).unwrap_or(json.len());
        let end = json
            .iter()
            .rposition(|b| !is_space(b))
            .map_or(start, |i| i + 1);
        let value = &json[start..end];
        if value.len() > MAX_ENTRY_BYTES {
            return Err(serde::de::Error::custom(format!(
                "the entry is {} bytes; readers accept at most {MAX_ENTRY_BYTES}",
                value.len()
            )));
        }
        self.buf.reserve(value.len() + 1);
        // Valid JSON has raw line breaks only between tokens.
        self.buf.extend(
            value
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        self.buf.push(b'\n');
        self.count += 1;
        Ok(())
    }

    /// How many entries the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The lines as they will be written, each ending in `\n`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// What changed since a fence was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Nothing.
    Unchanged,
    /// Only benign entries were appended, or the file was rewritten with
    /// identical bytes. A gateway merges `entries` into its in-memory
    /// session, or rereads `range` of the transcript, to stay in step.
    Benign {
        /// The accepted foreign entries, in file order, as the classifier saw
        /// them (empty for an identical rewrite).
        entries: Vec<Value>,
        /// The bytes of the transcript they occupy: from its size at the
        /// fence to its size now (`size..size` when nothing was appended).
        range: Range<u64>,
    },
    /// A change the attempt cannot accept.
    Takeover(Takeover),
}

/// Why a change is a takeover.
///
/// Serialized (serde) as an object whose `kind` is the variant's name in
/// snake_case (`truncated`, `edited`, `replaced`, `deleted`,
/// `foreign_entry`, `incomplete_append`), beside its fields:
/// `{"kind": "foreign_entry", "offset": 120}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Takeover {
    /// The transcript got shorter.
    Truncated,
    /// Same size or longer, but earlier bytes changed.
    Edited,
    /// A different file now stands at the path.
    Replaced,
    /// The transcript was deleted.
    Deleted,
    /// An appended entry the classifier does not accept.
    ForeignEntry {
        /// Offset of the entry's line.
        offset: u64,
    },
    /// An appended line is not complete JSON.
    IncompleteAppend {
        /// Offset of the line.
        offset: u64,
    },
}

impl std::fmt::Display for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Takeover::Truncated => f.write_str("truncated"),
            Takeover::Edited => f.write_str("edited"),
            Takeover::Replaced => f.write_str("replaced by another file"),
            Takeover::Deleted => f.write_str("deleted"),
            Takeover::ForeignEntry { offset } => {
                write!(f, "foreign entry appended at byte {offset}")
            }
            Takeover::IncompleteAppend { offset } => {
                write!(f, "incomplete line appended at byte {offset}")
            }
        }
    }
}

/// A whole transcript as read: every complete entry, and the torn final
/// line if there is one (reported, never returned as an entry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Read {
    /// The complete entries, in order.
    pub entries: Vec<Value>,
    /// A final line without `\n`, if any.
    pub torn: Option<TornTail>,
}
