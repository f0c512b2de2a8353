//! The transcript store (spec §7), as callers use it: the file backend's
//! [`Transcript`] with its blocking API taking a [`Guard`], and the
//! backend-neutral types of [`crate::store`]. The store itself, whose
//! mutations take a lease ([`crate::backend::TranscriptStore`]), is
//! [`crate::backend::file::transcript`]; this module adds what needs the
//! lock core (a guard), which sits above the backends.

use serde_json::Value;

use crate::backend::file::transcript::serialize;
pub use crate::backend::file::transcript::*;
use crate::blocking::block_on;
use crate::error::Result;
use crate::lock::guard::Guard;

impl Transcript {
    /// Appends `entries`, one line each, with one write, under the fence.
    ///
    /// # Errors
    /// `Revoked`/`Fenced` when `guard` no longer owns the session (nothing is
    /// written); `Poisoned` after an earlier failure; `Io` when the write or
    /// sync fails (the handle is then poisoned).
    pub fn append(
        &mut self,
        guard: &Guard,
        entries: &[Value],
        durability: Durability,
    ) -> Result<Appended> {
        let buf = serialize(entries, self.path())?;
        let this = &mut *self;
        block_on(
            guard.with_lease(move |held| async move { this.append_held(&held, &buf, durability) }),
        )
    }
    /// Appends entries given as JSON text, byte for byte, with one write,
    /// under the fence, exactly like [`Transcript::append`].
    ///
    /// # Errors
    /// As [`Transcript::append`].
    pub fn append_raw(
        &mut self,
        guard: &Guard,
        entries: &RawEntries,
        durability: Durability,
    ) -> Result<Appended> {
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move {
            this.append_held(&held, entries.as_bytes(), durability)
        }))
    }
    /// Detects a torn final line and, if there is one, moves it to
    /// `<session>.torn-<epoch>` and truncates the transcript to its last
    /// complete line. Runs automatically before the first fenced write of a
    /// handle.
    ///
    /// # Errors
    /// `Revoked`/`Fenced`; `Io` (the handle is then poisoned).
    pub fn repair(&mut self, guard: &Guard) -> Result<Option<TornTail>> {
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move { this.repair_held(&held) }))
    }
    /// Replaces the transcript with `entries` (compaction): a new file is
    /// written beside it, fsynced, renamed over it, and the directory fsynced.
    ///
    /// # Errors
    /// `Revoked`/`Fenced`; `Poisoned`; `Io` (the handle is then poisoned; the
    /// old transcript is left in place unless the failure came after the
    /// rename, in the directory sync or the reopen).
    pub fn rewrite(&mut self, guard: &Guard, entries: &[Value]) -> Result<()> {
        let buf = serialize(entries, self.path())?;
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move { this.rewrite_held(&held, &buf) }))
    }
    /// Keeps the first `keep` complete entries (byte for byte) and drops the
    /// rest, like [`Transcript::rewrite`].
    ///
    /// # Errors
    /// As [`Transcript::rewrite`].
    pub fn truncate(&mut self, guard: &Guard, keep: usize) -> Result<()> {
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move { this.truncate_held(&held, keep) }))
    }
}
