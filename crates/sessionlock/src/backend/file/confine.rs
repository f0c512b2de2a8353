//! Which files a session path may lead a writer to.
//!
//! A session path is resolved through symlinks
//! ([design §2](crate::design#2-on-disk-formats)), and everything a writer
//! creates or changes (lock, epoch, torn-tail and rewrite files, the transcript
//! itself) lives beside the resolved file. Whoever can plant a symlink where a
//! session file is expected can therefore steer a writer, perhaps one running
//! as root, to files elsewhere. Two rules close that:
//!
//! - **A sessions root** ([`FileBackend::confined`](crate::FileBackend::confined)):
//!   a session whose canonical path lies outside the root is refused with
//!   `InvalidPath`, before any directory is created or file touched.
//! - **No untrusted symlinks** (always on): a symlink is not followed when
//!   it sits in a directory others may write to (sticky, group- or
//!   world-writable) and is owned neither by us (the effective uid) nor by
//!   the directory's owner. This is the kernel's `protected_symlinks` rule,
//!   widened from sticky world-writable directories to every shared one and
//!   applied to every caller, root included.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Mode bits that let others than the owner add names to a directory (or,
/// for sticky, that mark a directory as shared).
const SHARED_DIR_BITS: u32 = 0o1000 | 0o020 | 0o002;

/// Refuses to follow the symlink `link` (with metadata `link_meta`, from
/// `lstat`) in the canonical directory `dir` when someone we do not trust
/// may have planted it there.
pub(crate) fn may_follow(dir: &Path, link: &Path, link_meta: &std::fs::Metadata) -> Result<()> {
    let d = std::fs::metadata(dir).map_err(|e| Error::io("stat directory", dir, e))?;
    let owner = link_meta.uid();
    if d.mode() & SHARED_DIR_BITS != 0 && owner != d.uid() && owner != sys::euid() {
        return Err(Error::InvalidPath {
            path: link.to_owned(),
            reason: format!(
                "is a symbolic link owned by uid {owner} in a directory others can write to \
                 (owned by uid {}, mode {:o}); it is not followed",
                d.uid(),
                d.mode() & 0o7777
            ),
        });
    }
    Ok(())
}

/// Refuses a canonical session path outside `root` (itself canonical).
/// `given` is the path as the caller gave it, for the message.
pub(crate) fn check_inside(root: &Path, session: &Path, given: &Path) -> Result<()> {
    let inside = session.starts_with(root) && session != root;
    if inside {
        return Ok(());
    }
    Err(outside(root, session, given))
}

/// Before creating the missing directory `dir` (absolute): refuses unless
/// it would end up inside `root`. The deepest existing ancestor is resolved;
/// what follows it must be plain names (no `..`).
pub(crate) fn check_creatable(root: &Path, dir: &Path, given: &Path) -> Result<()> {
    let mut existing = dir;
    let mut rest = Vec::new();
    while !existing.exists() {
        let (Some(up), Some(name)) = (existing.parent(), existing.file_name()) else {
            break;
        };
        rest.push(name);
        existing = up;
    }
    let plain = dir
        .strip_prefix(existing)
        .map(|r| r.components().all(|c| matches!(c, Component::Normal(_))))
        .unwrap_or(false);
    let resolved =
        std::fs::canonicalize(existing).map_err(|e| Error::io("resolve directory", existing, e))?;
    let target: PathBuf = rest.iter().rev().fold(resolved, |p, n| p.join(n));
    if plain && target.starts_with(root) {
        return Ok(());
    }
    Err(outside(root, &target, given))
}

fn outside(root: &Path, resolved: &Path, given: &Path) -> Error {
    Error::InvalidPath {
        path: given.to_owned(),
        reason: format!(
            "resolves to {}, outside the sessions root {}",
            resolved.display(),
            root.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, FileBackend, LockBackend};

    #[test]
    fn a_confined_backend_refuses_sessions_outside_its_root_and_creates_nothing() {
        // Issue 9 item 4: session paths resolving outside the sessions root
        // are refused before any directory or file is created.
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("sessions");
        std::fs::create_dir(&root).expect("mkdir");
        let b = FileBackend::default().confined(&root).expect("confined");
        assert_eq!(b.root(), Some(root.canonicalize().expect("root").as_path()));

        let inside = b.key(&root.join("new/s.jsonl")).expect("inside");
        assert!(inside.session.starts_with(b.root().expect("root")));
        assert!(root.join("new").is_dir(), "a directory inside is created");

        for outside in [
            root.join("../elsewhere/s.jsonl"),
            root.join("new/../../elsewhere/s.jsonl"),
            base.path().join("elsewhere/deeper/s.jsonl"),
            root.clone(),
        ] {
            let err = b.key(&outside).expect_err("outside the root");
            assert!(
                matches!(&err, Error::InvalidPath { reason, .. } if reason.contains("outside the sessions root")),
                "{}: {err}",
                outside.display()
            );
        }
        assert!(
            !base.path().join("elsewhere").exists(),
            "nothing created outside"
        );

        std::os::unix::fs::symlink(base.path(), root.join("up")).expect("symlink");
        let err = b
            .key(&root.join("up/x/s.jsonl"))
            .expect_err("a directory symlink out");
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
        assert!(!base.path().join("x").exists(), "nothing created outside");
    }
}
