//! `sessionlock timeline`: event logs drawn as one self-contained HTML page
//! (and, with `--chrome-trace`, a trace for Perfetto / chrome://tracing).
//! The reading and drawing are [`sessionlock_lab::timeline`]'s; this is the
//! command line around them.

use std::path::PathBuf;
use std::process::ExitCode;

use sessionlock_lab::timeline;

use crate::exit;
use crate::help::{ExitRow, Status};
use crate::output::{escape, path, report, report_error};

/// How many bad lines are listed on stderr (the page lists the first 20).
const SHOWN_PROBLEMS: usize = 10;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// An event log: the JSON Lines file SESSIONLOCK_EVENT_LOG names (several
    /// processes may share one). Repeat to merge the logs of several files
    /// or machines into one timeline.
    #[arg(long = "from", value_name = "EVENTS.jsonl", required = true)]
    from: Vec<PathBuf>,
    /// Write the page here: one HTML file with everything inline (no
    /// network), to open in any browser.
    #[arg(
        long,
        value_name = "FILE.html",
        required_unless_present = "chrome_trace"
    )]
    out: Option<PathBuf>,
    /// Also write the run in the Chrome trace-event format (JSON), which
    /// Perfetto (ui.perfetto.dev) and chrome://tracing open.
    #[arg(long, value_name = "FILE.json")]
    chrome_trace: Option<PathBuf>,
}

/// What `--help` says after the options.
pub(crate) const NOTES: &str = "\
The page has one row per session: each lock hold is a bar coloured by its
process (hue) and lane (shade), the waits for the lock are thin bars under
it and the prompt windows (the lock released for a model call) thin bars
above; hand-offs, reclaims, revocations, refused writes, takeovers and
injected faults are markers. Hover over anything for its process, lane, run,
epoch and times; zoom with the wheel or the buttons, pan by dragging.

A hold is one `acquired` event; it ends at the `released` or `revoked` of the
same process, session and epoch, else at a `reclaimed` that names it, else at
the session's next `acquired`, else it is drawn open to the end of the log.
Lines that cannot be read are reported with their file and line number and
skipped; unknown kinds and fields are ignored.";

/// `timeline`'s exit statuses.
pub(crate) const EXIT_STATUS: &[ExitRow] = &[
    (
        Status::Is(exit::OK),
        "written (bad lines, if any, are reported and skipped)",
    ),
    (
        Status::Is(exit::ERROR),
        "a log could not be read, no line of any log was an event, or an output \
         could not be written",
    ),
];

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match timeline::load(&args.from) {
        Ok(l) => l,
        Err(e) => {
            report_error(&e, None);
            return Ok(ExitCode::from(exit::ERROR));
        }
    };
    for p in loaded.problems.iter().take(SHOWN_PROBLEMS) {
        eprintln!("warning: skipped {}", escape(&p.to_string()));
    }
    if loaded.problems.len() > SHOWN_PROBLEMS {
        eprintln!(
            "warning: skipped {} more bad lines",
            loaded.problems.len() - SHOWN_PROBLEMS
        );
    }
    if !loaded.readable() {
        let names: Vec<String> = args.from.iter().map(|p| path(p).into_owned()).collect();
        report(
            &anyhow::anyhow!("no line of {} is an event", names.join(", ")),
            Some(
                "an event log is what a program using sessionlock writes when \
                 SESSIONLOCK_EVENT_LOG names a file (docs/design.md §20.2)",
            ),
        );
        return Ok(ExitCode::from(exit::ERROR));
    }
    let caption = format!(
        "from {}",
        args.from
            .iter()
            .map(|p| path(p).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Err(e) = timeline::write(
        &loaded,
        &caption,
        args.out.as_deref(),
        args.chrome_trace.as_deref(),
    ) {
        report_error(&e, None);
        return Ok(ExitCode::from(exit::ERROR));
    }
    eprintln!("timeline: {}", timeline::summary(&loaded));
    for p in [&args.out, &args.chrome_trace].into_iter().flatten() {
        eprintln!("timeline: wrote {}", path(p));
    }
    Ok(ExitCode::SUCCESS)
}
