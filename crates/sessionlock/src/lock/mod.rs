//! The lock core, the same for every backend: the acquire loop, guards, the
//! in-process registry (one FIFO line per session) and the watchdog thread.

pub(crate) mod acquire;
pub(crate) mod guard;
pub(crate) mod registry;
pub(crate) mod scoped;
pub(crate) mod watchdog;
