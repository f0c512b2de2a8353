//! Diagnostics: what `sessionlock status` and `sessionlock doctor` report
//! about the locks (and, for files, the leftovers) of a sessions tree.

pub mod doctor;
pub mod status;
