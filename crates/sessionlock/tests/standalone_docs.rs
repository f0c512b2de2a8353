//! The documentation stands alone: neither the source nor the design
//! document cites a section of the behavioural specification (which is not
//! shipped, and whose numbers are not design.md's), and every reference to
//! the design document, which is packaged with the crate and rendered as the
//! `design` module, names a section that exists.
//!
//! Issue 14: 56 "spec §N" references in `src/` pointed docs.rs readers at a
//! document they cannot see, and their numbers did not match design.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under the `src/` of every crate of the workspace.
fn sources() -> Vec<PathBuf> {
    let root = workspace();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("read crates/")
        .map(|e| e.expect("crates/ entry").path().join("src"))
        .collect();
    dirs.push(root.join("bindings/node/src"));
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The places in `text` where "spec" (any case) is followed, across white
/// space and comment markers (a reference wrapped onto the next comment
/// line), by "§": as 1-based line numbers.
fn spec_references(text: &str) -> Vec<usize> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    for (at, _) in lower.match_indices("spec") {
        let rest = lower[at + 4..]
            .trim_start_matches(|c: char| c.is_whitespace() || c == '/' || c == '!' || c == '*');
        if rest.starts_with('§') {
            found.push(lower[..at].matches('\n').count() + 1);
        }
    }
    found
}

#[test]
fn spec_references_are_found_even_when_wrapped() {
    assert_eq!(spec_references("a\n// (Spec §10)\n"), [2]);
    assert_eq!(spec_references("/// the shape of spec\n    /// §12;"), [1]);
    assert!(spec_references("/// the spec defaults; design §4").is_empty());
}

#[test]
fn neither_the_source_nor_the_design_document_cites_the_specification() {
    let files = sources();
    for krate in [
        "crates/sessionlock/",
        "crates/sessionlock-cli/",
        "crates/sessionlock-lab/",
        "crates/sessionlock-postgres/",
        "bindings/node/",
    ] {
        assert!(
            files.iter().any(|f| f.starts_with(workspace().join(krate))),
            "no source file of {krate} was read: is the walk broken?"
        );
    }
    assert!(
        files.len() > 60,
        "found only {} source files: is the walk broken?",
        files.len()
    );
    let mut cited = Vec::new();
    // The design document is rendered on docs.rs too (`sessionlock::design`).
    let design = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/design.md");
    for f in files.iter().chain([&design]) {
        for line in spec_references(&read(f)) {
            cited.push(format!(
                "{}:{line}",
                f.strip_prefix(workspace()).unwrap_or(f).display()
            ));
        }
    }
    assert!(
        cited.is_empty(),
        "\"spec §N\" cites a document that is not shipped; link the design \
         document's section instead ([design §N](crate::design#anchor), or \
         docs/design.md §N outside the library's docs): {cited:?}"
    );
}

/// The anchor rustdoc (and GitHub) gives a heading: lowercase ASCII
/// letters, digits, `-` and `_` kept, ASCII white space turned into `-`,
/// everything else dropped (backticks included).
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_ascii_lowercase())
            } else if c.is_ascii_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The design document's sections: their anchors, and their numbers
/// (`7`, `7.2`).
fn sections() -> (BTreeSet<String>, BTreeSet<String>) {
    let design = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/design.md"));
    let mut anchors = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut fenced = false;
    for line in design.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let heading = heading.trim_start_matches('#').trim();
        assert!(
            anchors.insert(anchor(heading)),
            "two headings share the anchor of {heading:?}"
        );
        let number: String = heading
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let number = number.trim_end_matches('.');
        if !number.is_empty() {
            numbers.insert(number.to_owned());
        }
    }
    (anchors, numbers)
}

/// The section number at the start of `s` (`7.2` of `7.2), …`).
fn number_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches('.')
}

#[test]
fn the_design_document_is_inside_the_crate_and_its_headings_have_distinct_anchors() {
    let (anchors, numbers) = sections();
    assert!(anchors.contains("5-the-transcript-store"), "{anchors:?}");
    assert!(numbers.contains("7.2"), "{numbers:?}");
    // The packaged copy is the document itself (the crate's file is a
    // symlink to docs/design.md, which cargo packages as a file).
    assert_eq!(
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/design.md")),
        read(&workspace().join("docs/design.md"))
    );
}

#[test]
fn every_reference_to_the_design_document_names_a_section_that_exists() {
    let (anchors, numbers) = sections();
    let mut wrong = Vec::new();
    let mut links = 0;
    for f in sources() {
        let text = read(&f);
        let name = f
            .strip_prefix(workspace())
            .unwrap_or(&f)
            .display()
            .to_string();
        // Links: `[design §7.2](crate::design#72-the-check)`.
        for (at, _) in text.match_indices("[design §") {
            let rest = &text[at + "[design §".len()..];
            let number = number_at(rest);
            let Some(target) = rest
                .find("](")
                .map(|i| &rest[i + 2..])
                .and_then(|t| t.split(')').next())
            else {
                wrong.push(format!("{name}: unfinished link {number}"));
                continue;
            };
            links += 1;
            let Some((_, fragment)) = target.split_once("design#") else {
                wrong.push(format!("{name}: §{number} links to {target}"));
                continue;
            };
            if !anchors.contains(fragment) {
                wrong.push(format!("{name}: no heading has the anchor #{fragment}"));
            }
            if !fragment.starts_with(&format!("{}-", number.replace('.', ""))) {
                wrong.push(format!("{name}: §{number} links to #{fragment}"));
            }
        }
        // Text: `docs/design.md §12`, `` `docs/design.md` §11 ``.
        for (at, _) in text.match_indices("design.md") {
            let rest = text[at + "design.md".len()..].trim_start_matches(['`', ' ']);
            if let Some(rest) = rest.strip_prefix('§') {
                let number = number_at(rest);
                if !number.is_empty() && !numbers.contains(number) {
                    wrong.push(format!("{name}: design.md has no §{number}"));
                }
            }
        }
    }
    assert!(links > 40, "found only {links} links: is the scan broken?");
    assert!(wrong.is_empty(), "{wrong:#?}");
}
