//! Shared by the fuzz targets: an allocator that turns unbounded allocation
//! into a crash libFuzzer records, and a scratch transcript file.
//!
//! libFuzzer's `-malloc_limit_mb` only works with a sanitizer's malloc hooks,
//! which need a nightly toolchain. Instead every target links this global
//! allocator: one allocation, or all live allocations together, beyond
//! [`LIVE_LIMIT`] abort the process, and libFuzzer saves the input that did
//! it. Inputs are at most tens of KiB, so a legitimate parse stays far below.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most memory the code under test may hold at once.
pub const LIVE_LIMIT: usize = 64 << 20;

struct Capped {
    live: AtomicUsize,
}

#[global_allocator]
static ALLOC: Capped = Capped {
    live: AtomicUsize::new(0),
};

fn over_limit(size: usize) -> ! {
    // Static text only: formatting could allocate again.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"\n==sessionlock-fuzz== allocation limit exceeded (unbounded allocation)\n",
    );
    let _ = size;
    std::process::abort()
}

// SAFETY: every method forwards to `System` with the same arguments; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.grow(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.grow(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.grow(new_size - layout.size());
        } else {
            self.live
                .fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

impl Capped {
    fn grow(&self, size: usize) {
        if size > LIVE_LIMIT {
            over_limit(size);
        }
        let live = self.live.fetch_add(size, Ordering::Relaxed) + size;
        if live > LIVE_LIMIT {
            over_limit(live);
        }
    }
}

/// Splits `data` at NUL bytes into at most `n` fields; fields that are not
/// UTF-8 are absent, as `std::env::var` reports them.
pub fn fields(data: &[u8], n: usize) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = data
        .splitn(n, |&b| b == 0)
        .map(|f| String::from_utf8(f.to_vec()).ok())
        .collect();
    out.resize(n, None);
    out
}

/// A scratch transcript for targets that read through files: one per
/// process (workers run side by side), named after `target`, opened once.
pub fn scratch(target: &str) -> &'static (std::path::PathBuf, std::fs::File) {
    static SCRATCH: std::sync::OnceLock<(std::path::PathBuf, std::fs::File)> =
        std::sync::OnceLock::new();
    SCRATCH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "sessionlock-fuzz-{target}-{}.jsonl",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("scratch transcript");
        (path, file)
    })
}
