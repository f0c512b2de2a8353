//! `sessionlock worker gateway --victim FAULT`: one holder on PostgreSQL
//! that the demo puts out of play mid-hold, for the faults a gateway's
//! lanes cannot inject on themselves: `conn-cut` (the demo ends the
//! holder's liveness connection with `pg_terminate_backend`) and
//! `stop-past-lease` (the demo SIGSTOPs the process past its lease, then
//! SIGCONTs it). A process of its own, so the cut or the stop hits this
//! holder and no gateway's other lanes.
//!
//! Protocol on stdout: `HELD <pid>` once it holds and wrote, then `DONE`;
//! on stdin: `go <what the demo's contender found>` once the demo did its
//! part.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use sessionlock::monotonic_ns;
use sessionlock_postgres::PgBackend;

use super::lanes::Shared;
use super::record::{Fact, FaultKind, FaultRecord};
use super::turns::victim_turn;

fn say(line: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush().context("write to the demo")
}

/// Plays out `fault` on `session` and logs it.
pub(super) fn run(
    sh: &Shared,
    be: &PgBackend,
    fault: FaultKind,
    session: usize,
) -> Result<ExitCode> {
    if !matches!(fault, FaultKind::ConnCut | FaultKind::StopPastLease) {
        bail!("{fault} is not a victim's fault");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let at_ns = monotonic_ns();
    let at_us = super::events::wall_us();
    let note = rt.block_on(victim_turn(sh, be, fault, session, || {
        say(&format!("HELD {}", std::process::id()))?;
        let mut line = String::new();
        loop {
            line.clear();
            if io::stdin().lock().read_line(&mut line)? == 0 {
                return Ok("the demo went away before its contender ran".to_owned());
            }
            if let Some(found) = line.trim().strip_prefix("go ") {
                return Ok(found.to_owned());
            }
        }
    }))?;
    let record = FaultRecord {
        kind: fault,
        slot: sh.slot,
        inc: sh.inc,
        at_ns,
        ok: note.ok,
        detail: note.detail,
    };
    sh.log_fault(at_us, fault, session, "victim", &record)?;
    sh.fact(&Fact::Fault(record))?;
    say("DONE")?;
    Ok(ExitCode::SUCCESS)
}
