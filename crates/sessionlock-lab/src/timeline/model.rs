//! From events to what a timeline draws: holds, waits, prompt windows and
//! markers, each on a session's row.
//!
//! A hold is one `acquired` event. It ends at the `released` or `revoked`
//! of the same process, session and epoch; else at a `reclaimed` that names
//! its process (and epoch) on that session; else at the next `acquired` of
//! that session; else it is open at the end of the log.

use std::collections::{HashMap, VecDeque};

use super::read::{Kind, Reader};

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `released`.
    Released,
    /// `released` with `handed_off`: straight to a waiting lane of its
    /// process.
    HandedOff,
    /// `revoked`, with its cause.
    Revoked(String),
    /// A `reclaimed` by another holder (index into [`Timeline::procs`]).
    Reclaimed(usize),
    /// No end event: the next `acquired` of the session.
    NextAcquired,
    /// No end event before the end of the log.
    Open,
}

impl End {
    /// How the end reads in a hover and a trace.
    pub fn describe(&self, procs: &[super::read::ProcId]) -> String {
        match self {
            End::Released => "released".to_owned(),
            End::HandedOff => "released, handed off to a waiting lane of its process".to_owned(),
            End::Revoked(cause) => format!("revoked ({cause})"),
            End::Reclaimed(p) => match procs.get(*p) {
                Some(p) => format!("reclaimed by pid {}", p.pid),
                None => "reclaimed".to_owned(),
            },
            End::NextAcquired => "no end event: cut at the next acquisition".to_owned(),
            End::Open => "no end event: still held at the end of the log".to_owned(),
        }
    }
}

/// A lock hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// Row (session).
    pub session: usize,
    /// Holder process.
    pub proc: usize,
    /// Lane label (index into the names).
    pub lane: Option<usize>,
    /// Run label.
    pub run: Option<usize>,
    /// Fencing epoch.
    pub epoch: Option<u64>,
    /// When it started and ended (µs since 1970).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// How it ended.
    pub how: End,
    /// The wait before it.
    pub waited_us: u64,
    /// Entries and bytes appended under it.
    pub entries: u64,
    /// See `entries`.
    pub bytes: u64,
    /// When another process reclaimed the lock from it, if that was before
    /// the hold's own end event (a stopped or wedged holder learns of it
    /// later): from then on the holder only believed it held.
    pub lost_at: Option<i64>,
}

/// A wait for a lock, ended by an acquisition or a timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// Row.
    pub session: usize,
    /// Waiting process.
    pub proc: usize,
    /// Lane label.
    pub lane: Option<usize>,
    /// Run label.
    pub run: Option<usize>,
    /// Interval (µs since 1970).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// Whether it ended in a timeout (`gave-up`).
    pub gave_up: bool,
    /// The holder it gave up on, if said.
    pub holder_pid: Option<u32>,
}

/// A prompt window: the lock released for a model call.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Row.
    pub session: usize,
    /// Process.
    pub proc: usize,
    /// Lane label.
    pub lane: Option<usize>,
    /// Run label.
    pub run: Option<usize>,
    /// Interval (µs since 1970).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// No `prompt-end` was seen: it ends at the last event of its run on
    /// that session (or, without a run, its process's last event).
    pub open: bool,
}

/// What a marker marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MarkerKind {
    /// A release straight to a waiting lane of the same process.
    HandOff,
    /// A lock taken from its holder.
    Reclaim,
    /// A holder's lock taken away (watchdog, lock file replaced, ...).
    Revoked,
    /// A fenced write refused.
    Refused,
    /// A takeover detected by an attempt.
    Takeover,
    /// An injected fault.
    Fault,
    /// An acquisition that failed (other than a timeout).
    Failed,
    /// A torn tail cut off.
    Repaired,
}

impl MarkerKind {
    /// Every kind, in legend order.
    pub const ALL: [MarkerKind; 8] = [
        MarkerKind::HandOff,
        MarkerKind::Reclaim,
        MarkerKind::Revoked,
        MarkerKind::Refused,
        MarkerKind::Takeover,
        MarkerKind::Fault,
        MarkerKind::Failed,
        MarkerKind::Repaired,
    ];

    /// Its name in the page and the trace.
    pub fn name(self) -> &'static str {
        match self {
            MarkerKind::HandOff => "hand-off",
            MarkerKind::Reclaim => "reclaim",
            MarkerKind::Revoked => "revoked",
            MarkerKind::Refused => "refused write",
            MarkerKind::Takeover => "takeover",
            MarkerKind::Fault => "fault",
            MarkerKind::Failed => "failed",
            MarkerKind::Repaired => "repaired",
        }
    }
}

/// A moment worth a marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Row; `None`: the row of events without a session.
    pub session: Option<usize>,
    /// The process that wrote the event.
    pub proc: usize,
    /// What it marks.
    pub kind: MarkerKind,
    /// When (µs since 1970).
    pub ts: i64,
    /// Lane label.
    pub lane: Option<usize>,
    /// Run label.
    pub run: Option<usize>,
    /// Fencing epoch.
    pub epoch: Option<u64>,
    /// The rest, for people.
    pub detail: String,
}

/// Everything a timeline draws.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// First and last event time (µs since 1970).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// The processes, indexed by `proc` fields.
    pub procs: Vec<super::read::ProcId>,
    /// The first and last event time of each process.
    pub proc_span: Vec<(i64, i64)>,
    /// The sessions, indexed by `session` fields.
    pub sessions: Vec<super::read::SessionId>,
    /// Lane and run labels.
    pub names: Vec<String>,
    /// Every hold, one per `acquired`, in time order.
    pub holds: Vec<Hold>,
    /// Every wait that took time.
    pub waits: Vec<Wait>,
    /// Every prompt window.
    pub prompts: Vec<Prompt>,
    /// Every marker, in time order.
    pub markers: Vec<Marker>,
    /// `released`/`revoked` events that end no hold of the log (its
    /// `acquired` is before the log starts, or lost).
    pub unmatched_ends: u64,
    /// Events read.
    pub events: u64,
}

/// A `reclaimed` event: when, by which process, and the holder it names
/// (pid, epoch).
type Reclaim = (i64, usize, Option<u32>, Option<u64>);

/// What pairs a `prompt-start` with its `prompt-end`: process, session,
/// lane, run.
type PromptKey = (usize, usize, Option<usize>, Option<usize>);

/// Whether a reclaim names the hold of `pid` at `epoch` (an epoch unsaid
/// on either side matches).
fn names_hold(r: &Reclaim, pid: u32, epoch: Option<u64>) -> bool {
    r.2 == Some(pid) && (r.3.is_none() || epoch.is_none() || r.3 == epoch)
}

/// The start of an interval that ended at `ts` after `d` µs, no earlier
/// than 1970 (times are in `0..=MAX_TS`, so differences never overflow).
fn before(ts: i64, d: u64) -> i64 {
    ts.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX))
        .max(0)
}

fn ms(d: u64) -> String {
    format!("{:.1} ms", d as f64 / 1e3)
}

/// Builds the timeline of everything `r` read.
pub fn build(r: Reader) -> Timeline {
    let Reader {
        mut events,
        procs,
        sessions,
        names,
        ..
    } = r;
    events.sort_by_key(|e| (e.ts_us, e.seq));
    let mut t = Timeline {
        start: events.first().map_or(0, |e| e.ts_us),
        end: events.last().map_or(0, |e| e.ts_us),
        proc_span: vec![(i64::MAX, i64::MIN); procs.values.len()],
        procs: procs.values,
        sessions,
        names: names.values,
        events: events.len() as u64,
        ..Timeline::default()
    };
    // The last event of each run of a process on a session.
    let mut run_last: HashMap<(usize, usize, usize), i64> = HashMap::new();
    for e in &events {
        let span = &mut t.proc_span[e.proc];
        span.0 = span.0.min(e.ts_us);
        span.1 = span.1.max(e.ts_us);
        if let (Some(s), Some(r)) = (e.session, e.run) {
            run_last.insert((e.proc, s, r), e.ts_us);
        }
    }
    // Holds not ended yet, by (process, session, epoch), oldest first.
    let mut open: HashMap<(usize, usize, Option<u64>), VecDeque<usize>> = HashMap::new();
    // Per session: its holds' indices in start order, and its reclaims.
    let mut by_session: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut reclaims: HashMap<usize, Vec<Reclaim>> = HashMap::new();
    let mut prompts_open: HashMap<PromptKey, Vec<usize>> = HashMap::new();
    for e in &events {
        let marker = |kind, detail: String| Marker {
            session: e.session,
            proc: e.proc,
            kind,
            ts: e.ts_us,
            lane: e.lane,
            run: e.run,
            epoch: e.epoch,
            detail,
        };
        match (&e.kind, e.session) {
            (Kind::Acquired { waited_us }, Some(s)) => {
                let i = t.holds.len();
                t.holds.push(Hold {
                    session: s,
                    proc: e.proc,
                    lane: e.lane,
                    run: e.run,
                    epoch: e.epoch,
                    start: e.ts_us,
                    end: e.ts_us,
                    how: End::Open,
                    waited_us: *waited_us,
                    entries: 0,
                    bytes: 0,
                    lost_at: None,
                });
                open.entry((e.proc, s, e.epoch)).or_default().push_back(i);
                by_session.entry(s).or_default().push(i);
                if *waited_us > 0 {
                    t.waits.push(Wait {
                        session: s,
                        proc: e.proc,
                        lane: e.lane,
                        run: e.run,
                        start: before(e.ts_us, *waited_us),
                        end: e.ts_us,
                        gave_up: false,
                        holder_pid: None,
                    });
                }
            }
            (Kind::Released { handed_off, .. }, Some(s)) => {
                let ended = open
                    .get_mut(&(e.proc, s, e.epoch))
                    .and_then(VecDeque::pop_front);
                match ended {
                    Some(i) => {
                        let h = &mut t.holds[i];
                        h.end = e.ts_us;
                        h.how = if *handed_off {
                            End::HandedOff
                        } else {
                            End::Released
                        };
                    }
                    None => t.unmatched_ends += 1,
                }
                if *handed_off {
                    t.markers.push(marker(
                        MarkerKind::HandOff,
                        "released straight to a waiting lane of the same process".to_owned(),
                    ));
                }
            }
            (Kind::Revoked { cause, held_us }, Some(s)) => {
                match open
                    .get_mut(&(e.proc, s, e.epoch))
                    .and_then(VecDeque::pop_front)
                {
                    Some(i) => {
                        let h = &mut t.holds[i];
                        h.end = e.ts_us;
                        h.how = End::Revoked(cause.clone());
                    }
                    None => t.unmatched_ends += 1,
                }
                let held = held_us
                    .map(|h| format!(" after {}", ms(h)))
                    .unwrap_or_default();
                t.markers.push(marker(
                    MarkerKind::Revoked,
                    format!("the lock was taken away ({cause}){held}"),
                ));
            }
            (
                Kind::Reclaimed {
                    reasons,
                    holder_pid,
                    holder_epoch,
                },
                Some(s),
            ) => {
                reclaims
                    .entry(s)
                    .or_default()
                    .push((e.ts_us, e.proc, *holder_pid, *holder_epoch));
                let holder = match (holder_pid, holder_epoch) {
                    (Some(p), Some(ep)) => format!(" from pid {p} (epoch {ep})"),
                    (Some(p), None) => format!(" from pid {p}"),
                    _ => String::new(),
                };
                t.markers.push(marker(
                    MarkerKind::Reclaim,
                    format!("reclaimed{holder}: {}", reasons.join(", ")),
                ));
            }
            (
                Kind::GaveUp {
                    waited_us,
                    holder_pid,
                },
                Some(s),
            ) => t.waits.push(Wait {
                session: s,
                proc: e.proc,
                lane: e.lane,
                run: e.run,
                start: before(e.ts_us, *waited_us),
                end: e.ts_us,
                gave_up: true,
                holder_pid: *holder_pid,
            }),
            (Kind::Failed { error }, _) => {
                t.markers.push(marker(
                    MarkerKind::Failed,
                    format!("acquisition failed: {error}"),
                ));
            }
            (Kind::Refused { error }, _) => {
                t.markers.push(marker(
                    MarkerKind::Refused,
                    format!("a fenced write was refused ({error})"),
                ));
            }
            (Kind::Takeover { phase, detail }, _) => {
                t.markers.push(marker(
                    MarkerKind::Takeover,
                    format!("takeover detected at {phase}: {detail}"),
                ));
            }
            (Kind::Repaired { bytes }, _) => {
                t.markers.push(marker(
                    MarkerKind::Repaired,
                    format!("a torn tail of {bytes} bytes was cut off"),
                ));
            }
            (
                Kind::Fault {
                    fault,
                    target_pid,
                    detail,
                },
                _,
            ) => {
                let mut text = fault.clone();
                if let Some(p) = target_pid {
                    text.push_str(&format!(" → pid {p}"));
                }
                if let Some(d) = detail {
                    text.push_str(": ");
                    text.push_str(d);
                }
                t.markers.push(marker(MarkerKind::Fault, text));
            }
            (Kind::PromptStart, Some(s)) => {
                let i = t.prompts.len();
                t.prompts.push(Prompt {
                    session: s,
                    proc: e.proc,
                    lane: e.lane,
                    run: e.run,
                    start: e.ts_us,
                    end: e.ts_us,
                    open: true,
                });
                prompts_open
                    .entry((e.proc, s, e.lane, e.run))
                    .or_default()
                    .push(i);
            }
            (Kind::PromptEnd { window_us }, Some(s)) => {
                let started = prompts_open
                    .get_mut(&(e.proc, s, e.lane, e.run))
                    .and_then(Vec::pop);
                let start = match (window_us, started) {
                    (Some(w), _) => before(e.ts_us, *w),
                    (None, Some(i)) => t.prompts[i].start,
                    (None, None) => e.ts_us,
                };
                match started {
                    Some(i) => {
                        let p = &mut t.prompts[i];
                        p.start = start;
                        p.end = e.ts_us;
                        p.open = false;
                    }
                    None => t.prompts.push(Prompt {
                        session: s,
                        proc: e.proc,
                        lane: e.lane,
                        run: e.run,
                        start,
                        end: e.ts_us,
                        open: false,
                    }),
                }
            }
            (Kind::Appended { entries, bytes }, Some(s)) => {
                if let Some(&i) = open.get(&(e.proc, s, e.epoch)).and_then(|q| q.back()) {
                    t.holds[i].entries += entries;
                    t.holds[i].bytes += bytes;
                }
            }
            _ => {}
        }
    }
    // The span covers the waits and windows that ended in it.
    let starts = t
        .waits
        .iter()
        .map(|w| w.start)
        .chain(t.prompts.iter().map(|p| p.start));
    t.start = starts.fold(t.start, i64::min);
    // Prompt windows without an end (the attempt was taken over, or its
    // process died): until the last event of their run.
    for p in t.prompts.iter_mut().filter(|p| p.open) {
        let last = match p.run {
            Some(r) => run_last.get(&(p.proc, p.session, r)).copied(),
            None => None,
        };
        p.end = last.unwrap_or(t.proc_span[p.proc].1).max(p.start);
    }
    // Holds that ended by their own event after a reclaim took the lock.
    for h in &mut t.holds {
        if matches!(h.how, End::Released | End::HandedOff | End::Revoked(_)) {
            let pid = t.procs[h.proc].pid;
            h.lost_at = reclaims.get(&h.session).and_then(|rs| {
                rs.iter()
                    .find(|r| r.0 > h.start && r.0 < h.end && names_hold(r, pid, h.epoch))
                    .map(|r| r.0)
            });
        }
    }
    // Holds without an end event.
    let unended: Vec<usize> = open.into_values().flatten().collect();
    for i in unended {
        let h = &t.holds[i];
        let holder = &t.procs[h.proc];
        let reclaim = reclaims.get(&h.session).and_then(|rs| {
            rs.iter()
                .find(|r| r.0 >= h.start && names_hold(r, holder.pid, h.epoch))
        });
        let next = || {
            let order = &by_session[&h.session];
            let at = order.iter().position(|&j| j == i)?;
            order.get(at + 1).map(|&j| t.holds[j].start)
        };
        let (end, how) = match (reclaim, next()) {
            (Some(&(ts, by, ..)), _) => (ts, End::Reclaimed(by)),
            (None, Some(ts)) => (ts, End::NextAcquired),
            (None, None) => (t.end, End::Open),
        };
        let h = &mut t.holds[i];
        h.end = end.max(h.start);
        h.how = how;
    }
    t
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn timeline(lines: &[&str]) -> Timeline {
        let mut r = Reader::new();
        r.read(Path::new("t"), lines.join("\n").as_bytes())
            .expect("read from memory");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        build(r)
    }

    fn ev(ts: i64, pid: u32, kind: &str, session: &str, epoch: u64, extra: &str) -> String {
        format!(
            r#"{{"v":1,"ts_us":{ts},"pid":{pid},"host":"h","kind":"{kind}","backend":"file","session":"{session}","lane":"channel","epoch":{epoch}{extra}}}"#
        )
    }

    #[test]
    fn each_acquired_is_one_hold_ended_by_the_rules_in_order() {
        let lines = [
            // Released (the end event arrives out of order in the file).
            ev(
                200,
                1,
                "released",
                "/a",
                1,
                r#","held_us":100,"handed_off":true"#,
            ),
            ev(100, 1, "acquired", "/a", 1, r#","waited_us":30"#),
            // Revoked.
            ev(300, 2, "acquired", "/a", 2, r#","waited_us":0"#),
            ev(350, 2, "revoked", "/a", 2, r#","cause":"overdue""#),
            // No end event: the reclaim that names it, even after the
            // next acquisition by someone else.
            ev(400, 3, "acquired", "/a", 3, ""),
            ev(450, 4, "acquired", "/b", 1, ""),
            ev(
                500,
                5,
                "reclaimed",
                "/a",
                4,
                r#","reasons":["dead-pid"],"holder_pid":3,"holder_epoch":3"#,
            ),
            ev(501, 5, "acquired", "/a", 4, ""),
            // No end, no reclaim: the next acquisition of the session.
            ev(600, 5, "released", "/a", 4, ""),
            ev(700, 6, "acquired", "/a", 5, ""),
            ev(800, 7, "acquired", "/a", 6, ""),
            // The last event of the log.
            ev(900, 7, "appended", "/a", 6, r#","entries":2,"bytes":40"#),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let t = timeline(&lines);
        assert_eq!(t.holds.len(), 7, "one hold per acquired");
        let got: Vec<(i64, i64, End)> = t
            .holds
            .iter()
            .map(|h| (h.start, h.end, h.how.clone()))
            .collect();
        let reclaimer = t.holds[4].proc;
        assert_eq!(
            got,
            [
                (100, 200, End::HandedOff),
                (300, 350, End::Revoked("overdue".into())),
                (400, 500, End::Reclaimed(reclaimer)),
                (450, 900, End::Open),
                (501, 600, End::Released),
                (700, 800, End::NextAcquired),
                (800, 900, End::Open),
            ]
        );
        assert_eq!((t.holds[6].entries, t.holds[6].bytes), (2, 40));
        assert!(t.holds.iter().all(|h| h.lost_at.is_none()));
        assert_eq!(t.waits.len(), 1);
        assert_eq!((t.waits[0].start, t.waits[0].end), (70, 100));
        let kinds: Vec<MarkerKind> = t.markers.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MarkerKind::HandOff,
                MarkerKind::Revoked,
                MarkerKind::Reclaim
            ]
        );
        // The wait before the first hold starts the log.
        assert_eq!((t.start, t.end), (70, 900));
        assert_eq!(t.unmatched_ends, 0);
    }

    #[test]
    fn a_hold_revoked_after_a_reclaim_is_marked_lost_from_the_reclaim() {
        // A stopped holder: reclaimed at 200, it learns at 400.
        let lines = [
            ev(100, 1, "acquired", "/a", 1, ""),
            ev(
                200,
                2,
                "reclaimed",
                "/a",
                2,
                r#","reasons":["hold-exceeded"],"holder_pid":1,"holder_epoch":1"#,
            ),
            ev(201, 2, "acquired", "/a", 2, ""),
            ev(250, 2, "released", "/a", 2, ""),
            ev(400, 1, "revoked", "/a", 1, r#","cause":"overdue""#),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let t = timeline(&lines);
        let h = &t.holds[0];
        assert_eq!(
            (h.end, h.how.clone(), h.lost_at),
            (400, End::Revoked("overdue".into()), Some(200))
        );
        assert_eq!(t.holds[1].lost_at, None);
    }

    #[test]
    fn a_release_names_its_hold_by_process_session_and_epoch() {
        let lines = [
            ev(100, 1, "acquired", "/a", 1, ""),
            // Another process, another epoch, another session: not its end.
            ev(110, 2, "released", "/a", 1, ""),
            ev(120, 1, "released", "/a", 2, ""),
            ev(130, 1, "released", "/b", 1, ""),
            ev(140, 1, "released", "/a", 1, ""),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let t = timeline(&lines);
        assert_eq!(t.holds.len(), 1);
        assert_eq!(
            (t.holds[0].end, t.holds[0].how.clone()),
            (140, End::Released)
        );
        assert_eq!(t.unmatched_ends, 3);
    }

    #[test]
    fn waits_prompts_and_session_less_faults() {
        let lines = [
            ev(100, 1, "gave-up", "/a", 1, r#","waited_us":50,"holder_pid":9"#),
            ev(200, 1, "prompt-start", "/a", 1, ""),
            ev(260, 1, "prompt-end", "/a", 1, r#","window_us":55"#),
            ev(300, 1, "prompt-start", "/a", 1, r#","run":"r1""#),
            ev(320, 1, "takeover", "/a", 1, r#","run":"r1","phase":"prompt_reacquire","detail":"x""#),
            ev(330, 1, "prompt-start", "/a", 1, ""),
            ev(340, 1, "acquired", "/b", 1, r#","run":"r1""#),
            r#"{"v":1,"ts_us":350,"pid":99,"host":"h","kind":"fault","fault":"sigkill","target_pid":1,"detail":"killed"}"#.to_owned(),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let t = timeline(&lines);
        assert_eq!(t.waits.len(), 1);
        assert!(t.waits[0].gave_up);
        assert_eq!((t.waits[0].start, t.waits[0].end), (50, 100));
        let p: Vec<(i64, i64, bool)> = t.prompts.iter().map(|p| (p.start, p.end, p.open)).collect();
        // The windows without an end end with their run's last event on the
        // session, or without a run, their process's last event.
        assert_eq!(p, [(205, 260, false), (300, 320, true), (330, 340, true)]);
        let fault = t.markers.last().expect("markers");
        assert_eq!(fault.session, None);
        assert_eq!(fault.detail, "sigkill → pid 1: killed");
    }
}
