//! The library's architecture, checked from its source: its modules import
//! each other without a circle (so they can be ordered, each importing only
//! lower ones), and the backend seam names no file-system or process type.
//!
//! Every `.rs` file under `src/` is a module. An edge goes from a module to
//! every module a path in its code starts with (`crate::a::b::Item`,
//! `super::x`, `self::x`, or a child module's name), test code
//! (`#[cfg(test)]`) excluded; a parent's `mod child;` declaration is not an
//! import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Module path (`lock::guard`) → its file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Collects the leading segments of every path and `use` tree in a file's
/// non-test code.
#[derive(Default)]
struct Paths {
    found: Vec<Vec<String>>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.found.push(prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.found.push(prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.found.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.found
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
}

/// The modules `module` (whose file is `file`) imports.
fn imports(
    module: &[String],
    file: &Path,
    all: &BTreeMap<Vec<String>, PathBuf>,
) -> BTreeSet<Vec<String>> {
    let text = std::fs::read_to_string(file).expect("read module");
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
    let mut paths = Paths::default();
    paths.visit_file(&ast);
    // `mod.rs` and `lib.rs` are their directory's module: `super` of a file
    // `a/b.rs` is `a`, of `a/b/mod.rs` it is `a` as well.
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = BTreeSet::new();
    for p in paths.found {
        let Some(first) = p.first() else { continue };
        let absolute: Vec<String> = match first.as_str() {
            "crate" => p[1..].to_vec(),
            "super" => parent
                .iter()
                .cloned()
                .chain(p[1..].iter().cloned())
                .collect(),
            "self" => module
                .iter()
                .cloned()
                .chain(p[1..].iter().cloned())
                .collect(),
            _ => {
                // A child module's name, as `use child::Item` says it.
                let mut child = module.to_vec();
                child.push(first.clone());
                if all.contains_key(&child) {
                    module.iter().cloned().chain(p.iter().cloned()).collect()
                } else {
                    continue;
                }
            }
        };
        // The longest module the path starts with.
        let target = (0..=absolute.len())
            .rev()
            .map(|n| absolute[..n].to_vec())
            .find(|m| all.contains_key(m));
        if let Some(t) = target {
            // A module's own items, and a child's path through its parent's
            // re-exports of it, are not imports of another module.
            if t != module && !module.starts_with(&t) {
                out.insert(t);
            }
        }
    }
    out
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// The circles of the import graph (strongly connected components of more
/// than one module).
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a [String], usize>,
        low: BTreeMap<&'a [String], usize>,
        stack: Vec<&'a [String]>,
        on: BTreeSet<&'a [String]>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a [String]) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.edges[v] {
                let w = w.as_slice();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(name(w));
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_slice()) {
            t.visit(v);
        }
    }
    t.out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_library_modules_import_each_other_without_a_circle() {
    let all = modules(&src_dir());
    assert!(
        all.len() > 20,
        "found only {} modules: is the walk broken?",
        all.len()
    );
    let edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = all
        .iter()
        .map(|(m, f)| (m.clone(), imports(m, f, &all)))
        .collect();
    // The check sees real imports (so a passing run means something).
    let guard = edges
        .get(&vec!["lock".to_owned(), "guard".to_owned()])
        .expect("lock::guard exists");
    assert!(
        guard.contains(&vec!["backend".to_owned()]),
        "lock::guard imports the seam: {guard:?}"
    );
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "import circles among the library's modules: {found:?}"
    );

    // lib.rs declares the top-level modules as layers, lowest first: a
    // module may import only layers declared before its own.
    let root =
        syn::parse_file(&std::fs::read_to_string(src_dir().join("lib.rs")).expect("read lib.rs"))
            .expect("parse lib.rs");
    let layers: Vec<String> = root
        .items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect();
    let layer = |m: &[String]| {
        layers
            .iter()
            .position(|l| m.first() == Some(l))
            .unwrap_or_else(|| panic!("{} is not under a layer of lib.rs", name(m)))
    };
    let mut upward = Vec::new();
    for (from, tos) in &edges {
        if from.is_empty() {
            continue; // the crate root re-exports everything
        }
        for to in tos.iter().filter(|t| !t.is_empty()) {
            if layer(to) > layer(from) {
                upward.push(format!("{} imports {}", name(from), name(to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports of a higher layer than lib.rs declares: {upward:?}"
    );
}

/// The names no type in the seam's signatures may mention.
const FILE_SHAPED: [&str; 9] = [
    "Path", "PathBuf", "File", "Metadata", "fs", "pid", "Pid", "ino", "RawFd",
];

#[test]
fn the_backend_seam_names_no_file_or_process_type() {
    let file = src_dir().join("backend/mod.rs");
    let text = std::fs::read_to_string(&file).expect("read the seam");
    let ast = syn::parse_file(&text).expect("parse the seam");
    struct Idents(Vec<String>);
    impl<'ast> Visit<'ast> for Idents {
        fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
            // `pub mod file;`: the file backend is not the seam.
        }
        fn visit_ident(&mut self, i: &'ast syn::Ident) {
            self.0.push(i.to_string());
        }
    }
    let mut idents = Idents(Vec::new());
    idents.visit_file(&ast);
    assert!(
        idents.0.iter().any(|i| i == "LockBackend"),
        "the seam was read"
    );
    let named: BTreeSet<&String> = idents
        .0
        .iter()
        .filter(|i| FILE_SHAPED.contains(&i.as_str()))
        .collect();
    assert!(
        named.is_empty(),
        "the seam mentions file-shaped names: {named:?}"
    );
}
