//! Reading event logs (the JSON Lines schema of docs/design.md §20.2)
//! line by line: a line is parsed, its known kind kept in a compact
//! [`Event`], and dropped; a bad line is a [`Problem`] and skipped.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The longest line read; a longer one is a [`Problem`] (and skipped
/// without holding it in memory).
pub const MAX_LINE: usize = 1 << 20;

/// The latest time read, in µs since 1970: 2^53, the largest integer a
/// page's script holds exactly (the year 2255).
pub const MAX_TS: i64 = 1 << 53;

/// What an event says happened (the kinds a timeline draws; other kinds
/// are skipped).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A hold starts; the wait before it took `waited_us`.
    Acquired { waited_us: u64 },
    /// A hold ends (`handed_off`: to a waiting lane of its process).
    Released {
        held_us: Option<u64>,
        handed_off: bool,
    },
    /// A hold ends: the lock was taken away (`cause`).
    Revoked { cause: String, held_us: Option<u64> },
    /// A wait ended in a timeout.
    GaveUp {
        waited_us: u64,
        holder_pid: Option<u32>,
    },
    /// An acquisition failed otherwise.
    Failed { error: String },
    /// The holder (`holder_pid`, `holder_epoch`) lost the lock here.
    Reclaimed {
        reasons: Vec<String>,
        holder_pid: Option<u32>,
        holder_epoch: Option<u64>,
    },
    /// A fenced write of the hold was refused.
    Refused { error: String },
    /// An attempt released its lock for a model call.
    PromptStart,
    /// ... and got it back (or was aborted) after `window_us`.
    PromptEnd { window_us: Option<u64> },
    /// An attempt detected a takeover.
    Takeover { phase: String, detail: String },
    /// A fenced append landed.
    Appended { entries: u64, bytes: u64 },
    /// A torn tail was cut off.
    Repaired { bytes: u64 },
    /// A fault was injected (by a program that injects them).
    Fault {
        fault: String,
        target_pid: Option<u32>,
        detail: Option<String>,
    },
}

/// One event, its strings interned in the [`Reader`]'s tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Wall clock, microseconds since 1970.
    pub ts_us: i64,
    /// The process (index into [`Reader::procs`]).
    pub proc: usize,
    /// The session (index into [`Reader::sessions`]), if any.
    pub session: Option<usize>,
    /// The lane (index into [`Reader::names`]), if any.
    pub lane: Option<usize>,
    /// The run (index into [`Reader::names`]), if any.
    pub run: Option<usize>,
    /// The acquisition's fencing epoch, if known.
    pub epoch: Option<u64>,
    /// What happened.
    pub kind: Kind,
    /// Read order, which breaks ties of `ts_us`.
    pub seq: u64,
}

/// A process that wrote events: host and pid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId {
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

/// A session: its backend and canonical name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId {
    /// `file`, `postgres`, or a custom backend's name (empty if no event
    /// said).
    pub backend: String,
    /// The canonical session (transcript path, PostgreSQL key).
    pub name: String,
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The log.
    pub file: PathBuf,
    /// Its line number (1-based).
    pub line: u64,
    /// What is wrong with it.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

/// A table of distinct values, each with its index.
#[derive(Debug, Clone)]
pub struct Interner<T> {
    index: HashMap<T, usize>,
    /// The values, in order of first appearance.
    pub values: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            index: HashMap::new(),
            values: Vec::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    /// The index of `v`, added if new.
    pub fn intern(&mut self, v: T) -> usize {
        if let Some(&i) = self.index.get(&v) {
            return i;
        }
        let i = self.values.len();
        self.values.push(v.clone());
        self.index.insert(v, i);
        i
    }
}

/// Reads logs into events: the events of known kinds, the interned
/// processes, sessions and names, and the lines that could not be read.
#[derive(Debug, Default)]
pub struct Reader {
    /// The events read, in read order.
    pub events: Vec<Event>,
    /// Every process seen.
    pub procs: Interner<ProcId>,
    /// Every session seen.
    pub sessions: Vec<SessionId>,
    /// The index of each session's name in `sessions`.
    session_index: Interner<String>,
    /// Lane and run labels.
    pub names: Interner<String>,
    /// Lines that could not be read.
    pub problems: Vec<Problem>,
    /// Well-formed lines of a kind (or schema version) this reader does
    /// not draw.
    pub skipped: u64,
    /// Lines read (blank lines not counted).
    pub lines: u64,
}

fn u64_of(o: &Map<String, Value>, k: &str) -> Option<u64> {
    let v = o.get(k)?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn str_of(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn pid_of(o: &Map<String, Value>, k: &str) -> Option<u32> {
    u64_of(o, k).and_then(|p| u32::try_from(p).ok())
}

impl Reader {
    /// A reader with nothing read yet.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Reads the log at `path` (see [`Reader::read`]).
    ///
    /// # Errors
    ///
    /// The file cannot be opened or read (a bad line is not an error).
    pub fn read_file(&mut self, path: &Path) -> io::Result<()> {
        let file = std::fs::File::open(path)?;
        self.read(path, io::BufReader::with_capacity(1 << 16, file))
    }

    /// Reads every line of `input` (named `file` in problems): one event
    /// per line; lines longer than [`MAX_LINE`] are skipped unread.
    ///
    /// # Errors
    ///
    /// `input` cannot be read.
    pub fn read(&mut self, file: &Path, mut input: impl BufRead) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let (n, whole) = read_line_capped(&mut input, &mut buf, MAX_LINE)?;
            if n == 0 {
                return Ok(());
            }
            line_no += 1;
            if !whole {
                self.problem(file, line_no, format!("longer than {MAX_LINE} bytes"));
                continue;
            }
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.lines += 1;
            match self.parse(text) {
                Ok(Some(e)) => self.events.push(e),
                Ok(None) => self.skipped += 1,
                Err(what) => self.problem(file, line_no, what),
            }
        }
    }

    fn problem(&mut self, file: &Path, line: u64, what: String) {
        self.problems.push(Problem {
            file: file.to_owned(),
            line,
            what,
        });
    }

    /// One line: `Ok(None)` for a well-formed event of a kind not drawn.
    fn parse(&mut self, text: &[u8]) -> Result<Option<Event>, String> {
        let value: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(o) = value else {
            return Err("not a JSON object".to_owned());
        };
        let v = u64_of(&o, "v").ok_or("no schema version (v)")?;
        let ts_us = o
            .get("ts_us")
            .and_then(|t| t.as_i64().or_else(|| t.as_f64().map(|f| f as i64)))
            .ok_or("no time (ts_us)")?;
        if !(0..=MAX_TS).contains(&ts_us) {
            return Err(format!("time (ts_us) {ts_us} out of range"));
        }
        let pid = pid_of(&o, "pid").ok_or("no process id (pid)")?;
        let kind_name = o
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("no kind")?
            .to_owned();
        if v < 1 {
            return Err(format!("schema version {v} does not exist"));
        }
        let kind = match kind_name.as_str() {
            "acquired" => Kind::Acquired {
                waited_us: u64_of(&o, "waited_us").unwrap_or(0),
            },
            "released" => Kind::Released {
                held_us: u64_of(&o, "held_us"),
                handed_off: o.get("handed_off").and_then(Value::as_bool) == Some(true),
            },
            "revoked" => Kind::Revoked {
                cause: str_of(&o, "cause").unwrap_or_default(),
                held_us: u64_of(&o, "held_us"),
            },
            "gave-up" => Kind::GaveUp {
                waited_us: u64_of(&o, "waited_us").unwrap_or(0),
                holder_pid: pid_of(&o, "holder_pid"),
            },
            "failed" => Kind::Failed {
                error: str_of(&o, "error").unwrap_or_default(),
            },
            "reclaimed" => Kind::Reclaimed {
                reasons: o
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                holder_pid: pid_of(&o, "holder_pid"),
                holder_epoch: u64_of(&o, "holder_epoch"),
            },
            "refused" => Kind::Refused {
                error: str_of(&o, "error").unwrap_or_default(),
            },
            "prompt-start" => Kind::PromptStart,
            "prompt-end" => Kind::PromptEnd {
                window_us: u64_of(&o, "window_us"),
            },
            "takeover" => Kind::Takeover {
                phase: str_of(&o, "phase").unwrap_or_default(),
                detail: str_of(&o, "detail").unwrap_or_default(),
            },
            "appended" => Kind::Appended {
                entries: u64_of(&o, "entries").unwrap_or(0),
                bytes: u64_of(&o, "bytes").unwrap_or(0),
            },
            "repaired" => Kind::Repaired {
                bytes: u64_of(&o, "bytes").unwrap_or(0),
            },
            "fault" => Kind::Fault {
                fault: str_of(&o, "fault").unwrap_or_else(|| "fault".to_owned()),
                target_pid: pid_of(&o, "target_pid"),
                detail: str_of(&o, "detail"),
            },
            _ => return Ok(None),
        };
        let proc = self.procs.intern(ProcId {
            host: str_of(&o, "host").unwrap_or_default(),
            pid,
        });
        // A session is known by its name: an event without a `backend`
        // (a fault a program wrote) is on the same row.
        let session = str_of(&o, "session").map(|name| {
            let i = self.session_index.intern(name.clone());
            if i == self.sessions.len() {
                self.sessions.push(SessionId {
                    backend: String::new(),
                    name,
                });
            }
            if self.sessions[i].backend.is_empty() {
                self.sessions[i].backend = str_of(&o, "backend").unwrap_or_default();
            }
            i
        });
        let lane = str_of(&o, "lane").map(|l| self.names.intern(l));
        let run = str_of(&o, "run").map(|r| self.names.intern(r));
        let seq = self.events.len() as u64;
        Ok(Some(Event {
            ts_us,
            proc,
            session,
            lane,
            run,
            epoch: u64_of(&o, "epoch"),
            kind,
            seq,
        }))
    }
}

/// Reads one line (with its `\n`) into `buf`, keeping at most `cap` bytes
/// of it: returns the bytes consumed and whether the whole line fit.
fn read_line_capped(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut whole = true;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((consumed, whole));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if whole && buf.len() + take <= cap {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            whole = false;
            buf.clear();
        }
        input.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Reader {
        let mut r = Reader::new();
        r.read(Path::new("log.jsonl"), text.as_bytes())
            .expect("read from memory");
        r
    }

    #[test]
    fn known_kinds_are_kept_unknown_ones_skipped_bad_lines_reported() {
        let r = read(concat!(
            r#"{"v":1,"ts_us":10,"pid":7,"host":"h","kind":"acquired","backend":"file","session":"/s/a.jsonl","lane":"channel","run":"r1","epoch":3,"waited_us":4,"later":true}"#,
            "\n",
            r#"{"v":1,"ts_us":11,"pid":7,"host":"h","kind":"something-new"}"#,
            "\n\n",
            "not json\n",
            r#"{"v":1,"pid":7,"kind":"released"}"#,
            "\n",
            r#"[1,2]"#,
            "\n",
            r#"{"v":2,"ts_us":12,"pid":7,"host":"h","kind":"released","session":"/s/a.jsonl","backend":"file","epoch":3,"held_us":2,"handed_off":true}"#,
        ));
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.skipped, 1);
        assert_eq!(r.lines, 6);
        let lines: Vec<u64> = r.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 5, 6], "{:?}", r.problems);
        assert!(r.problems[1]
            .to_string()
            .starts_with("log.jsonl:5: no time"));
        let e = &r.events[0];
        assert_eq!(e.kind, Kind::Acquired { waited_us: 4 });
        assert_eq!((e.ts_us, e.epoch), (10, Some(3)));
        assert_eq!(r.names.values[e.lane.expect("lane")], "channel");
        assert_eq!(r.events[1].session, e.session, "one session");
        assert_eq!(r.events[1].proc, e.proc, "one process");
        assert_eq!(
            r.events[1].kind,
            Kind::Released {
                held_us: Some(2),
                handed_off: true
            }
        );
    }

    #[test]
    fn hostile_lines_are_problems_not_panics() {
        let mut text = Vec::new();
        for line in [
            &b"{\"v\":1,\"ts_us\":-5,\"pid\":1,\"kind\":\"acquired\"}"[..],
            b"{\"v\":1,\"ts_us\":1e300,\"pid\":1,\"kind\":\"acquired\"}",
            b"{\"v\":1,\"ts_us\":1,\"pid\":99999999999,\"kind\":\"acquired\"}",
            b"{\"v\":0,\"ts_us\":1,\"pid\":1,\"kind\":\"acquired\"}",
            b"{\"v\":1,\"ts_us\":1,\"pid\":1,\"kind\":7}",
            b"\xff\xfe not utf-8",
            b"{\"v\":1,\"ts_us\":10,\"pid\":1,\"host\":\"h\",\"kind\":\"acquired\",\"session\":\"s\",\"waited_us\":18446744073709551615,\"epoch\":-3}",
            b"{\"v\":1,\"ts_us\":20,\"pid\":1,\"host\":\"h\",\"kind\":\"prompt-end\",\"session\":\"s\",\"window_us\":1e30}",
        ] {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let mut r = Reader::new();
        r.read(Path::new("f"), text.as_slice()).expect("read");
        let lines: Vec<u64> = r.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6], "{:?}", r.problems);
        assert_eq!(r.events.len(), 2);
        let t = super::super::model::build(r);
        // Intervals start no earlier than 1970.
        assert_eq!((t.start, t.end), (0, 20));
        assert_eq!(t.waits[0].start, 0);
    }

    #[test]
    fn an_overlong_line_is_reported_and_the_next_one_read() {
        let long = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(MAX_LINE + 10));
        let ok = r#"{"v":1,"ts_us":1,"pid":1,"host":"h","kind":"fault","fault":"sigkill"}"#;
        let text = format!("{long}{ok}\n");
        let mut r = Reader::new();
        // A small buffer: the long line arrives in many chunks.
        r.read(
            Path::new("f"),
            io::BufReader::with_capacity(4096, text.as_bytes()),
        )
        .expect("read");
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].line, 1);
        assert_eq!(r.events.len(), 1);
    }
}
