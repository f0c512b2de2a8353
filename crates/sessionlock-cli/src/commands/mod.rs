//! The subcommands, one module each (`append`, `read` and `repair` share
//! [`transcript`]); [`lock`] holds what the lock-holding commands share.

pub(crate) mod doctor;
pub(crate) mod exec;
pub(crate) mod generate;
pub(crate) mod keeper;
pub(crate) mod lock;
pub(crate) mod openclaw;
pub(crate) mod serve_metrics;
pub(crate) mod status;
pub(crate) mod timeline;
pub(crate) mod transcript;
pub(crate) mod verify_fs;
