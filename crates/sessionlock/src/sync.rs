//! The synchronization primitives of the in-process registry, switched to
//! loom's models under `cfg(loom)` so that the registry's hand-off can be
//! model-checked over every interleaving (tokio's `loom` facade does the
//! same). Only the registry's per-key state goes through here: the global
//! key map is created once per process, outside any model.

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
