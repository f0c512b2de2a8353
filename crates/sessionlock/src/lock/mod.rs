//! The lock core, the same for every backend: the acquire loop, guards, the
//! in-process registry (one FIFO line per session), the watchdog thread and
//! stale classification.

pub(crate) mod acquire;
pub(crate) mod guard;
pub mod reclaim;
pub(crate) mod registry;
pub(crate) mod watchdog;
