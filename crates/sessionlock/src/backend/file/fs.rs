//! The file-system seam: every transcript and fence operation goes through
//! [`Fs`], so tests can inject faults (EIO, EMFILE, ENOSPC, short writes)
//! into a real store without test-only branches in it. [`RealFs`] is the
//! only production implementation.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys;

/// The file operations the transcript store and fence use.
///
/// Every method is one step of a protocol (one system call, except
/// `sync_dir`: open, fsync, close), so a fault injector can fail exactly the
/// step it targets.
pub trait Fs: Send + Sync + 'static {
    /// Opens (creating, mode 0600) a transcript for appending and reading;
    /// never through a symlink, and never blocking (a FIFO put in the
    /// transcript's place opens at once, to be refused; `O_NONBLOCK` does
    /// nothing to a regular file).
    fn open_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(sys::NOFOLLOW_NONBLOCK)
            .open(path)
    }
    /// Opens a file for reading; never through a symlink.
    fn open_read(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(sys::NOFOLLOW_NONBLOCK)
            .open(path)
    }
    /// Creates a new file (mode 0600) that must not exist yet.
    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(sys::NOFOLLOW)
            .open(path)
    }
    /// One `write(2)`; returns how much was written.
    fn write(&self, file: &File, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &*file, buf)
    }
    /// One `pread(2)`.
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        file.read_at(buf, offset)
    }
    /// `fstat(2)`.
    fn metadata(&self, file: &File) -> io::Result<Metadata> {
        file.metadata()
    }
    /// `stat(2)` of a path.
    fn stat(&self, path: &Path) -> io::Result<Metadata> {
        std::fs::metadata(path)
    }
    /// `fdatasync(2)`.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    /// `fsync(2)`.
    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
    /// `ftruncate(2)`.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    /// `rename(2)`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// `unlink(2)`.
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    /// `fsync(2)` of a directory (makes a rename or creation durable).
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl Fs for RealFs {}

/// What a file type is, in words, for messages about a path where a regular
/// file belongs: `a directory`, `a named pipe (FIFO)`, `a socket`, ...
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Reads exactly `buf.len()` bytes at `offset` through `fs`, retrying short
/// reads; end of file first is `UnexpectedEof`.
pub(crate) fn read_exact_at(
    fs: &dyn Fs,
    file: &File,
    mut buf: &mut [u8],
    mut offset: u64,
    path: &Path,
) -> Result<()> {
    while !buf.is_empty() {
        match fs.read_at(file, buf, offset) {
            Ok(0) => {
                return Err(Error::io(
                    "read",
                    path,
                    io::Error::from(io::ErrorKind::UnexpectedEof),
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(())
}
