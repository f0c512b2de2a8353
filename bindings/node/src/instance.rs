//! One native instance per process, whatever copies of the package load.
//!
//! The library's lock state (the registry of held locks and waiters, the
//! watchdog) is per loaded copy of the native module. Two copies in one
//! process would each take the other's locks, which name the same pid, for
//! orphans of this process and reclaim them. Worker threads that load the
//! same file share one copy (the dynamic loader maps a file once), but two
//! packages installed in different directories are two files.
//!
//! So every copy exports a marker symbol, and `index.js` asks its copy for
//! [`primary_path`]: the file of the first copy loaded into this process
//! that carries the same marker (the same binding interface), which it then
//! loads instead of its own. Every copy of the package in the process thus
//! drives one native instance. A copy with another marker (an incompatible
//! version) keeps its own instance: see `bindings/node/README.md`.

use std::ffi::{CStr, CString};

use napi_derive::napi;

/// The marker: bump its version whenever the interface between `index.js`
/// and the native module changes incompatibly.
#[no_mangle]
#[used]
pub static SESSIONLOCK_NODE_INSTANCE_V1: u8 = 1;

const MARKER: &CStr = c"SESSIONLOCK_NODE_INSTANCE_V1";

/// The loaded objects of this process, in load order.
fn loaded() -> Vec<CString> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `info` for the duration of the
        // call, and `data` is the vector below.
        let (info, names) = unsafe { (&*info, &mut *data.cast::<Vec<CString>>()) };
        if !info.dlpi_name.is_null() {
            // SAFETY: `dlpi_name` is a NUL-terminated string owned by the loader.
            let name = unsafe { CStr::from_ptr(info.dlpi_name) };
            if !name.is_empty() {
                names.push(name.to_owned());
            }
        }
        0
    }
    let mut names: Vec<CString> = Vec::new();
    // SAFETY: `each` only reads what the loader hands it and pushes to `names`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut names).cast()) };
    names
}

/// Whether the loaded object `name` exports this copy's marker.
fn has_marker(name: &CStr) -> bool {
    // SAFETY: RTLD_NOLOAD only looks an already loaded object up (it loads
    // nothing and runs no code); the handle is closed again at once.
    unsafe {
        let h = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return false;
        }
        let found = !libc::dlsym(h, MARKER.as_ptr()).is_null();
        libc::dlclose(h);
        found
    }
}

/// The file of the first copy of this native module (same marker) loaded
/// into this process; `null` if it cannot be told.
#[napi]
pub fn primary_path() -> Option<String> {
    loaded()
        .into_iter()
        .find(|n| has_marker(n))
        .map(|n| n.to_string_lossy().into_owned())
}
