//! Diagnostics: what `sessionlock status` and `sessionlock doctor` report
//! about the locks (and, for files, the leftovers) of a sessions tree, and
//! ([`report`]) the same as data with stable field names, what their
//! `--json` output prints.

pub mod doctor;
pub mod report;
pub mod status;
pub mod waitfor;

/// The pid of a process that has exited and been reaped (the diagnostics'
/// unit tests plant locks of dead holders).
#[cfg(test)]
pub(crate) fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("reap true");
    pid
}
