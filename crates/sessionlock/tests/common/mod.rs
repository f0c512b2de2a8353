//! What the library's test binaries share: child processes running a role
//! of the test binary itself, with line-based I/O and deadlines.
//!
//! A test binary re-executes itself with `SESSIONLOCK_TEST_ROLE=<role>` and
//! `--exact child_entry`; its `child_entry` test runs the role.
#![allow(dead_code)] // each test binary uses a different subset

pub mod sessions;
pub mod waits;

#[allow(unused_imports)] // each test binary uses a different subset
pub use sessionlock_lab::testkit::*;
