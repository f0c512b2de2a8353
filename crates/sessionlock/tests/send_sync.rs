//! Compile-time checks of the auto traits the public API promises (tokio's
//! `tests/async_send_sync.rs` does the same): the handles are
//! `Send + Sync + 'static`, so they can be shared between threads, tasks
//! and a language binding's objects, and every public future is `Send`, so
//! it can run on a multi-threaded runtime. Built from owned handles inside
//! `async move`, the futures are also `'static`, so they can be spawned.
//!
//! Nothing here runs: the futures are built (never polled) inside a
//! function that is never called. A regression is a compile error naming
//! the type and the trait.

use std::future::{self, Future};
use std::path::PathBuf;

use sessionlock::attempt::{blocking, Attempt, AttemptOptions, CleanupLock, Prompted, Resync};
use sessionlock::store::{Appended, RawEntries, Read};
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{
    Error, FileBackend, FileKey, Guard, Holder, LockOptions, SessionLock, Settings, TakeoverPhase,
    TakeoverReason, TryAcquireError,
};

fn send_sync_static<T: Send + Sync + 'static>() {}

fn send<T: Send>(_: &T) {}

fn clone<T: Clone>() {}

fn spawnable<T: Future + Send + 'static>(_: &T)
where
    T::Output: Send + 'static,
{
}

#[test]
fn handles_are_send_sync_static() {
    send_sync_static::<SessionLock>();
    send_sync_static::<Guard>();
    send_sync_static::<Transcript>();
    send_sync_static::<Attempt>();
    send_sync_static::<Error>();
    send_sync_static::<TryAcquireError>();
    send_sync_static::<Holder>();
    send_sync_static::<LockOptions>();
    send_sync_static::<AttemptOptions>();
    send_sync_static::<CleanupLock>();
    send_sync_static::<Resync>();
    send_sync_static::<Prompted<()>>();
    send_sync_static::<blocking::Attempt>();
    send_sync_static::<TakeoverReason>();
    send_sync_static::<TakeoverPhase>();
    send_sync_static::<Appended>();
    send_sync_static::<Read>();
    send_sync_static::<RawEntries>();
    // Cheap handles a binding's objects share: clones are one attempt.
    clone::<Attempt>();
    clone::<blocking::Attempt>();
    // The futures' checks are compiled, never run.
    let _ = futures_are_send as fn(_, _, _);
}

/// Every public async fn, its future borrowed from a handle (`Send`), and
/// built from owned handles inside `async move` (`Send + 'static`: what
/// `tokio::spawn` and a binding's promise need).
fn futures_are_send(locks: SessionLock, guard: Guard, attempt: Attempt) {
    let session = PathBuf::from("/s/a.jsonl");

    // SessionLock
    send(&locks.acquire_async(&session));
    send(&locks.acquire_async_with(&session, &LockOptions::default()));
    {
        let (locks, session) = (locks.clone(), session.clone());
        spawnable(&async move { locks.acquire_async(session).await });
    }

    // Guard
    send(&guard.revoked());
    send(&guard.lost());
    // The guard's store mutations, for any store a binding holds.
    {
        let mut store: Transcript = FileBackend::default()
            .open_transcript(&session)
            .expect("never called");
        let raw = RawEntries::new();
        send(&guard.store_append(&mut store, &raw, Durability::None));
        send(&guard.store_rewrite(&mut store, &raw));
        send(&guard.store_truncate(&mut store, 0));
        send(&guard.store_repair(&mut store));
    }

    // Diagnostics on any backend's listing
    {
        let backend = FileBackend::default();
        let settings = Settings::default();
        let key = FileKey {
            session: session.clone(),
            lock_path: PathBuf::from("/s/a.jsonl.lock"),
        };
        send(&sessionlock::status::inspect(&backend, &key, &settings));
        send(&sessionlock::status::list(
            &backend,
            std::path::Path::new("/s"),
            &settings,
        ));
        send(&sessionlock::doctor::examine_locks(
            &backend,
            std::path::Path::new("/s"),
            &settings,
        ));
    }

    // Attempt
    send(&Attempt::begin(&locks, &session, AttemptOptions::default()));
    send(&Attempt::begin_file(&session, AttemptOptions::default()));
    send(&attempt.release_for_prompt());
    send(&attempt.around_prompt(future::ready(())));
    send(&attempt.reacquire_after_prompt());
    send(&attempt.with_write(|_store, _guard| Ok(())));
    send(&attempt.acquire_for_cleanup());
    send(&attempt.append(&[], Durability::None));
    send(&attempt.append_raw(&RawEntries::new(), Durability::None));
    send(&attempt.rewrite(&[]));
    send(&attempt.truncate(0));
    send(&attempt.read());
    {
        // A binding's promise owns a clone of the attempt and its input.
        let attempt = attempt.clone();
        spawnable(&async move {
            let raw = RawEntries::new();
            attempt.append(&[], Durability::None).await?;
            attempt.append_raw(&raw, Durability::Data).await?;
            attempt.rewrite(&[]).await?;
            attempt.truncate(0).await?;
            attempt.read().await
        });
    }
    {
        let session = session.clone();
        spawnable(&async move { Attempt::begin(&locks, session, AttemptOptions::default()).await });
    }
    spawnable(&async move {
        let _ = guard.lost().await;
        guard.revoked().await;
        guard
    });
    spawnable(&async move {
        attempt.release_for_prompt().await?;
        let _ = attempt.around_prompt(future::ready(())).await?;
        attempt.reacquire_after_prompt().await?;
        attempt
            .with_write(|store, guard| store.append(guard, &[], Default::default()))
            .await?;
        attempt.acquire_for_cleanup().await?;
        attempt.dispose()?;
        Ok::<_, Error>(())
    });
}
