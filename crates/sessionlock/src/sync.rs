//! Synchronization helpers.
//!
//! The registry's primitives ([`Mutex`], [`Condvar`]) are switched to
//! loom's models under `cfg(loom)` so that the registry's hand-off can be
//! model-checked over every interleaving (tokio's `loom` facade does the
//! same). Only the registry's per-key state goes through them: the global
//! key map, and every other module's mutexes, stay `std::sync`, outside any
//! model.
//!
//! [`lock`] and [`unpoison`] are the crate's one poison-tolerant way to
//! take a mutex (a `std` one or the facade's), finish a condvar wait or
//! reach into a mutex held exclusively (`get_mut`). The
//! crate's mutexes guard state that is consistent at every unlock point, so
//! a panic elsewhere while one was held does not invalidate it; a lock whose
//! contents a panic can leave half written handles poisoning itself instead
//! of using these.

use std::sync::{LockResult, PoisonError};

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex};

/// What a lock, a condvar wait or `get_mut` yields, whether or not a panic
/// poisoned the mutex.
pub(crate) fn unpoison<G>(result: LockResult<G>) -> G {
    result.unwrap_or_else(PoisonError::into_inner)
}

/// Locks `m`, whether or not a panic poisoned it (see the module docs).
pub(crate) fn lock<M: Lockable + ?Sized>(m: &M) -> M::Guard<'_> {
    unpoison(m.lock_result())
}

/// A mutex [`lock`] can take.
pub(crate) trait Lockable {
    /// Its guard.
    type Guard<'a>
    where
        Self: 'a;
    /// Its own `lock`.
    fn lock_result(&self) -> LockResult<Self::Guard<'_>>;
}

impl<T: ?Sized> Lockable for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn lock_result(&self) -> LockResult<Self::Guard<'_>> {
        self.lock()
    }
}

/// So that a shared mutex is taken as `lock(&shared)`, as with a method
/// call (a generic parameter gets no deref coercion).
impl<M: Lockable + ?Sized> Lockable for std::sync::Arc<M> {
    type Guard<'a>
        = M::Guard<'a>
    where
        Self: 'a;
    fn lock_result(&self) -> LockResult<Self::Guard<'_>> {
        (**self).lock_result()
    }
}

#[cfg(loom)]
impl<T> Lockable for loom::sync::Mutex<T> {
    type Guard<'a>
        = loom::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn lock_result(&self) -> LockResult<Self::Guard<'_>> {
        self.lock()
    }
}
