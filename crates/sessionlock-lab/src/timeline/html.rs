//! The page: one self-contained HTML file (`page.html`, its CSS and script
//! inline) with the timeline's data embedded as JSON.
//!
//! The data is columnar, times in microseconds from the log's start, every
//! string given once in a table:
//!
//! - `holds`: `[session, proc, lane, run, epoch, start, end, end_code,
//!   waited_us, entries, bytes, lost_at]`, `end_code` an index into
//!   `end_names` (`open` is drawn with a fading end), `lost_at` when a
//!   reclaim took the lock before the hold's end event (or `null`);
//! - `waits`: `[session, proc, lane, run, start, end, gave_up, holder_pid]`;
//! - `prompts`: `[session, proc, lane, run, start, end, open]`;
//! - `markers`: `[session, proc, kind, ts, lane, run, epoch, detail]`,
//!   `kind` an index into `marker_kinds`;
//!
//! where `session`, `lane` and `run` are `-1` when absent, `epoch` `null`.

use serde::Serialize;
use serde_json::{json, Value};

use super::model::{End, MarkerKind, Timeline};

/// The template; `{{TITLE}}` (twice) and then `{{DATA}}` are filled in.
const TEMPLATE: &str = include_str!("page.html");

/// How each hold end is named (index: `end_code`).
const END_NAMES: [&str; 6] = [
    "released",
    "handed off",
    "revoked",
    "reclaimed",
    "cut at the next acquisition",
    "open",
];

fn end_code(e: &End) -> usize {
    match e {
        End::Released => 0,
        End::HandedOff => 1,
        End::Revoked(_) => 2,
        End::Reclaimed(_) => 3,
        End::NextAcquired => 4,
        End::Open => 5,
    }
}

fn opt(i: Option<usize>) -> i64 {
    i.map_or(-1, |i| i64::try_from(i).unwrap_or(-1))
}

/// The last part of a session's name: a transcript's file name, a key's
/// last segment; the whole name where two would read alike.
pub fn short_names(names: &[String]) -> Vec<String> {
    let last = |n: &str| -> String {
        let trimmed = n.trim_end_matches('/');
        trimmed
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(n)
            .to_owned()
    };
    let shorts: Vec<String> = names.iter().map(|n| last(n)).collect();
    shorts
        .iter()
        .zip(names)
        .map(|(s, full)| {
            if shorts.iter().filter(|o| *o == s).count() > 1 {
                full.clone()
            } else {
                s.clone()
            }
        })
        .collect()
}

/// A UTC time (µs since 1970) as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub fn utc(ts_us: i64) -> String {
    let secs = ts_us.div_euclid(1_000_000);
    let ms = ts_us.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The page's title: what the log covers.
pub fn title(t: &Timeline) -> String {
    format!(
        "sessionlock timeline: {} holds on {} session{} by {} process{}, {:.1} s from {}",
        t.holds.len(),
        t.sessions.len(),
        if t.sessions.len() == 1 { "" } else { "s" },
        t.procs.len(),
        if t.procs.len() == 1 { "" } else { "es" },
        (t.end - t.start) as f64 / 1e6,
        utc(t.start)
    )
}

/// A sequence serialized as it is iterated: a page of a million holds is
/// written without a tree of JSON values first.
struct Lazy<F>(F);

impl<F, I> Serialize for Lazy<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// The data the page's script draws (see the module's documentation).
#[derive(Serialize)]
#[serde(bound(
    serialize = "Lazy<H>: Serialize, Lazy<W>: Serialize, Lazy<P>: Serialize, Lazy<M>: Serialize"
))]
struct Data<'a, H, W, P, M> {
    title: String,
    caption: &'a str,
    start_us: i64,
    start_utc: String,
    span_us: i64,
    sessions: Vec<Value>,
    order: Vec<usize>,
    procs: Vec<Value>,
    names: &'a [String],
    end_names: [&'static str; 6],
    hold_end_details: Vec<(usize, String)>,
    marker_kinds: Vec<&'static str>,
    problems: &'a [String],
    holds: Lazy<H>,
    waits: Lazy<W>,
    prompts: Lazy<P>,
    markers: Lazy<M>,
}

/// The page's data as JSON.
fn data(t: &Timeline, caption: &str, problems: &[String]) -> serde_json::Result<String> {
    let rel = |ts: i64| ts - t.start;
    let names: Vec<String> = t.sessions.iter().map(|s| s.name.clone()).collect();
    let shorts = short_names(&names);
    let mut order: Vec<usize> = (0..t.sessions.len()).collect();
    order.sort_by(|&a, &b| natural(&shorts[a], &shorts[b]).then(names[a].cmp(&names[b])));
    let marker_code = |k: MarkerKind| MarkerKind::ALL.iter().position(|x| *x == k);
    serde_json::to_string(&Data {
        title: title(t),
        caption,
        start_us: t.start,
        start_utc: utc(t.start),
        span_us: t.end - t.start,
        sessions: t
            .sessions
            .iter()
            .zip(&shorts)
            .map(|(s, short)| json!({"name": s.name, "short": short, "backend": s.backend}))
            .collect(),
        order,
        procs: t
            .procs
            .iter()
            .zip(&t.proc_span)
            .map(|(p, span)| {
                json!({"pid": p.pid, "host": p.host, "first": rel(span.0), "last": rel(span.1)})
            })
            .collect(),
        names: &t.names,
        end_names: END_NAMES,
        hold_end_details: t
            .holds
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match &h.how {
                End::Revoked(_) | End::Reclaimed(_) => Some((i, h.how.describe(&t.procs))),
                _ => None,
            })
            .collect(),
        marker_kinds: MarkerKind::ALL.iter().map(|k| k.name()).collect(),
        problems,
        holds: Lazy(|| {
            t.holds.iter().map(|h| {
                (
                    h.session,
                    h.proc,
                    opt(h.lane),
                    opt(h.run),
                    h.epoch,
                    rel(h.start),
                    rel(h.end),
                    end_code(&h.how),
                    h.waited_us,
                    h.entries,
                    h.bytes,
                    h.lost_at.map(rel),
                )
            })
        }),
        waits: Lazy(|| {
            t.waits.iter().map(|w| {
                (
                    w.session,
                    w.proc,
                    opt(w.lane),
                    opt(w.run),
                    rel(w.start),
                    rel(w.end),
                    u8::from(w.gave_up),
                    w.holder_pid,
                )
            })
        }),
        prompts: Lazy(|| {
            t.prompts.iter().map(|p| {
                (
                    p.session,
                    p.proc,
                    opt(p.lane),
                    opt(p.run),
                    rel(p.start),
                    rel(p.end),
                    u8::from(p.open),
                )
            })
        }),
        markers: Lazy(|| {
            t.markers.iter().map(|m| {
                (
                    opt(m.session),
                    m.proc,
                    marker_code(m.kind),
                    rel(m.ts),
                    opt(m.lane),
                    opt(m.run),
                    m.epoch,
                    m.detail.as_str(),
                )
            })
        }),
    })
}

/// `a` before `b` with digit runs compared as numbers (`s2` before `s10`).
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, p), (true, q)) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            ((_, p), (_, q)) => p.cmp(q),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page of `t`: `caption` says where the log came from; `problems` are
/// the lines that could not be read (the first few are listed on it).
pub fn render(t: &Timeline, caption: &str, problems: &[String]) -> serde_json::Result<String> {
    let json = data(t, caption, problems)?;
    // JSON inside <script>: nothing in it may close the element early, and
    // JSON strings may spell `<`, `>` and `&` as `\u003c`, ... (they occur
    // only inside strings).
    let mut safe = String::with_capacity(json.len() + json.len() / 16);
    for c in json.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            c => safe.push(c),
        }
    }
    let (head, tail) = TEMPLATE.split_once("{{DATA}}").unwrap_or((TEMPLATE, ""));
    let title = escape(&title(t));
    let mut page = String::with_capacity(TEMPLATE.len() + safe.len());
    page.push_str(&head.replace("{{TITLE}}", &title));
    page.push_str(&safe);
    page.push_str(&tail.replace("{{TITLE}}", &title));
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_civil_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(1_796_673_625_123_456), "2026-12-07 20:00:25.123 UTC");
        assert_eq!(utc(951_782_400_000_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn session_names_are_shortened_unless_ambiguous() {
        let names = [
            "/r/sessions/s1.jsonl",
            "/r/other/s1.jsonl",
            "/r/sessions/s2.jsonl",
            "demo-1/s3",
        ]
        .map(str::to_owned);
        assert_eq!(
            short_names(&names),
            [
                "/r/sessions/s1.jsonl",
                "/r/other/s1.jsonl",
                "s2.jsonl",
                "s3"
            ]
        );
    }

    #[test]
    fn natural_order_reads_numbers_as_numbers() {
        let mut v = vec!["s10.jsonl", "s2.jsonl", "s1.jsonl", "a"];
        v.sort_by(|a, b| natural(a, b));
        assert_eq!(v, ["a", "s1.jsonl", "s2.jsonl", "s10.jsonl"]);
    }

    #[test]
    fn the_data_cannot_close_its_script_element() {
        let mut t = Timeline::default();
        t.sessions.push(super::super::read::SessionId {
            backend: "file".into(),
            name: "/x/</script><b>.jsonl".into(),
        });
        let page = render(&t, "a & b", &[]).expect("render");
        assert_eq!(
            page.matches("</script>").count(),
            TEMPLATE.matches("</script>").count()
        );
        assert!(!page.contains("{{DATA}}") && !page.contains("{{TITLE}}"));
    }
}
