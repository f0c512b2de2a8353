//! Timelines of event logs: `sessionlock timeline` and `sessionlock demo
//! --timeline`.
//!
//! [`load`] reads one or more event logs (the JSON Lines schema of
//! docs/design.md §20.2: one object per line, several processes appending
//! to one file) line by line, keeping only what is drawn; a bad line is a
//! [`Problem`] (file and line number) and is skipped; unknown kinds and
//! fields are ignored. [`model`] turns the events into holds, waits,
//! prompt windows and markers on one row per session; [`render_page`]
//! writes them as one self-contained HTML page (inline CSS and script, a
//! canvas drawn by that script, no network), and [`chrome_trace`] in the
//! Chrome trace-event format for Perfetto and chrome://tracing.
//!
//! The page exposes what a test needs on `<body>`: `data-holds` (holds
//! drawn in the full view: one per `acquired` event), `data-errors` (script
//! errors and `console.error` calls) and `data-ready="1"` once drawn.

mod chrome;
mod html;
pub mod model;
mod read;

use std::path::{Path, PathBuf};

pub use model::Timeline;
pub use read::{Problem, MAX_LINE};

/// Why logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A log could not be opened or read.
    #[error("cannot read the event log {}", path.display())]
    Read {
        /// The log.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A page or trace could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`load`] read.
#[derive(Debug)]
pub struct Loaded {
    /// What the page draws.
    pub timeline: Timeline,
    /// Lines that could not be read, in file and line order.
    pub problems: Vec<Problem>,
    /// Lines read (blank ones not counted).
    pub lines: u64,
    /// Well-formed lines of kinds a timeline does not draw.
    pub skipped: u64,
}

impl Loaded {
    /// Whether any line was a well-formed event.
    pub fn readable(&self) -> bool {
        self.timeline.events > 0 || self.skipped > 0
    }
}

/// Reads the event logs `paths` into a timeline.
///
/// # Errors
///
/// A log cannot be opened or read. Bad lines are not errors: they are
/// listed in [`Loaded::problems`].
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Loaded, Error> {
    let mut r = read::Reader::new();
    for p in paths {
        let path = p.as_ref();
        r.read_file(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
    }
    let problems = std::mem::take(&mut r.problems);
    let (lines, skipped) = (r.lines, r.skipped);
    Ok(Loaded {
        timeline: model::build(r),
        problems,
        lines,
        skipped,
    })
}

/// The HTML page of `loaded`; `caption` says what the run was.
///
/// # Errors
///
/// The data cannot be serialized (it always can: its maps have string keys).
pub fn render_page(loaded: &Loaded, caption: &str) -> serde_json::Result<String> {
    let problems: Vec<String> = loaded
        .problems
        .iter()
        .take(20)
        .map(|p| p.to_string())
        .collect();
    html::render(&loaded.timeline, caption, &problems)
}

/// The Chrome trace-event document of `loaded`.
pub fn chrome_trace(loaded: &Loaded) -> serde_json::Value {
    chrome::trace(&loaded.timeline)
}

/// Writes the page of `loaded` to `page` and its Chrome trace to `trace`
/// (each if given).
///
/// # Errors
///
/// A file cannot be written.
pub fn write(
    loaded: &Loaded,
    caption: &str,
    page: Option<&Path>,
    trace: Option<&Path>,
) -> Result<(), Error> {
    let put = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(path) = page {
        let page = render_page(loaded, caption).map_err(|e| Error::Write {
            path: path.to_owned(),
            source: e.into(),
        })?;
        put(path, page.as_bytes())?;
    }
    if let Some(path) = trace {
        put(path, chrome_trace(loaded).to_string().as_bytes())?;
    }
    Ok(())
}

/// One line about what a page shows, for the terminal.
pub fn summary(loaded: &Loaded) -> String {
    let t = &loaded.timeline;
    let open = t.holds.iter().filter(|h| h.how == model::End::Open).count();
    format!(
        "{} holds ({} still held at the end) on {} sessions by {} processes over {:.1} s; {} markers",
        t.holds.len(),
        open,
        t.sessions.len(),
        t.procs.len(),
        (t.end - t.start) as f64 / 1e6,
        t.markers.len()
    )
}
