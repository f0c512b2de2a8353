//! Platform specifics: process identity, liveness, kernel locks, change
//! notifications and clocks. Everything that talks to the OS directly lives
//! here, with the same function names per OS.
//!
//! Only Linux is implemented today; other Unix systems would provide the same
//! functions (with polling in place of inotify and pidfd).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("sessionlock currently supports Linux only (see docs/design.md, portability)");
