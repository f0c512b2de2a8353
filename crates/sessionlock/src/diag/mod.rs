//! Diagnostics: what `sessionlock status` and `sessionlock doctor` report
//! about the locks (and, for files, the leftovers) of a sessions tree, and
//! ([`report`]) the same as data with stable field names, what their
//! `--json` output prints.

pub mod doctor;
pub mod report;
pub mod status;
