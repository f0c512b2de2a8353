//! `sessionlock append`, `read` and `repair`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct AppendArgs {}
#[derive(clap::Args)]
pub(crate) struct ReadArgs {}
#[derive(clap::Args)]
pub(crate) struct RepairArgs {}

pub(crate) fn append(_a: AppendArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
pub(crate) fn read(_a: ReadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
pub(crate) fn repair(_a: RepairArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
