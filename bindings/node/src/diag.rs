//! `status` and `doctor`: the command-line tool's JSON reports.
