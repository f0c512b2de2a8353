//! The sessionlock lab: what `sessionlock demo` and `sessionlock bench` run,
//! kept apart from the command-line tool's own commands.
//!
//! - [`demo`]: a gateway simulation with injected faults, judged by a pure
//!   verdict;
//! - [`bench`](mod@bench): the figures behind sessionlock's speed goals;
//! - [`worker`]: the roles of their child processes;
//! - [`harness`]: spawning and talking to child processes, shared with
//!   the workspace's tests;
//! - [`conformance`]: the backend conformance suite every backend passes;
//! - [`testkit`]: what test binaries share (children running a role of
//!   the test binary);
//! - [`pgserver`]: a throwaway PostgreSQL server for the tests that need
//!   one;
//! - [`timeline`]: event logs drawn as one self-contained HTML page (and
//!   as a Chrome trace), for `sessionlock timeline` and `demo --timeline`;
//! - [`backend_choice`]: the `--backend` choice (files or a PostgreSQL
//!   URL) that the tool, the demo and the bench share.
//!
//! The lab runs inside the `sessionlock` binary: its workers are that
//! binary re-executed ([`std::env::current_exe`]) with the `worker`
//! subcommand, which must call [`worker::run`]; the `exec` hand-off of the
//! bench runs the binary's `exec` subcommand.

pub mod backend_choice;
pub mod bench;
pub mod conformance;
pub mod demo;
pub mod harness;
pub mod pgserver;
pub mod testkit;
pub mod timeline;
pub mod trace_recorder;
pub mod worker;
pub mod worker_pg;
