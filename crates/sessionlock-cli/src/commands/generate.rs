//! `sessionlock completions SHELL` and `sessionlock man`: the shell
//! completion scripts (clap_complete) and the manual pages (clap_mangen),
//! generated from the command line itself, so they cannot fall behind it.
//!
//! A man page is clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION (with the
//! command's notes), OPTIONS and COMMANDS, then the sections of
//! [`crate::help`]: ENVIRONMENT and EXIT STATUS, and SEE ALSO.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::exit;
use crate::help::{self, Page};

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

#[derive(clap::Args)]
pub(crate) struct ManArgs {
    /// Write sessionlock.1 and a page per command (sessionlock-exec.1, ...)
    /// into DIR instead of printing sessionlock.1 on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// The name completions and man pages know the command by.
const BIN: &str = "sessionlock";

pub(crate) fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = help::command();
    // Into memory first: clap_complete panics on a write error, and a
    // reader that goes away is not one.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, BIN, &mut script);
    print(&script)
}

pub(crate) fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let pages = pages().context("cannot render the manual pages")?;
    let Some(dir) = args.out_dir else {
        let (_, top) = pages.first().context("no manual page rendered")?;
        return print(top);
    };
    for (name, page) in &pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", crate::output::path(&path));
    }
    Ok(ExitCode::from(exit::OK))
}

/// Writes `bytes` to stdout; a reader that went away is not an error.
fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::from(exit::OK)),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::from(exit::OK)),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// Every manual page, `sessionlock` first, then one per visible command:
/// `(file name without .1, roff source)`.
pub(crate) fn pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut top = help::command().disable_help_subcommand(true);
    top.build();
    let subs: Vec<clap::Command> = top
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let sub_pages: Vec<String> = subs.iter().map(page_name).collect();
    let see_top = vec![BIN.to_owned()];
    let mut pages = vec![(BIN.to_owned(), render(&top, &help::page(None), &sub_pages)?)];
    for sub in &subs {
        let p = help::page(Some(sub.get_name()));
        pages.push((page_name(sub), render(sub, &p, &see_top)?));
    }
    Ok(pages)
}

/// `sessionlock-exec` for `exec` (clap's display name once built).
fn page_name(sub: &clap::Command) -> String {
    sub.get_display_name()
        .map_or_else(|| format!("{BIN}-{}", sub.get_name()), str::to_owned)
}

/// One manual page.
fn render(cmd: &clap::Command, page: &Page, see_also: &[String]) -> io::Result<Vec<u8>> {
    let man = Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    let mut roff = Roff::new();
    if let Some(notes) = page.notes {
        // Preformatted (lists and tables of variables): kept as laid out.
        roff.control("PP", []);
        roff.control("nf", []);
        for line in notes.lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.to_writer(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|c| !c.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for v in help::environment() {
        roff.control("TP", []);
        roff.text([bold(v.name)]);
        roff.text([roman(v.text)]);
    }
    roff.control("PP", []);
    roff.text([roman(help::ENVIRONMENT_NOTE)]);
    roff.control("SH", ["EXIT STATUS"]);
    for (status, text) in page.exit {
        roff.control("TP", []);
        roff.text([bold(status.label())]);
        roff.text([roman(*text)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let refs: Vec<String> = see_also.iter().map(|p| format!("{p}(1)")).collect();
    roff.text([roman(refs.join(", "))]);
    roff.to_writer(&mut out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_the_sections_of_a_manual_page() {
        let pages = pages().unwrap();
        assert!(pages.len() > 5, "{} pages", pages.len());
        assert_eq!(pages[0].0, "sessionlock");
        assert!(pages.iter().any(|(n, _)| n == "sessionlock-exec"));
        for (name, page) in &pages {
            let text = String::from_utf8(page.clone()).unwrap();
            for section in [
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH DESCRIPTION",
                ".SH ENVIRONMENT",
                ".SH \"EXIT STATUS\"",
                ".SH \"SEE ALSO\"",
            ] {
                assert!(text.contains(section), "{name}: no {section}:\n{text}");
            }
        }
    }
}
