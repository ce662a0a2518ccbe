//! Source hygiene: the files of this crate depend on each other one way only. A file that
//! names another (`use crate::x::..`, a `crate::x::` path, `super::` outside a test module, or
//! `lib.rs` re-exporting with `pub use x::..`) depends on it, and no chain of such dependencies
//! comes back to where it started. (`registry.rs` lists the systems, so it depends on their
//! modules; the modules take their types from `spec.rs`, never from the registry.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, by module path (`crate`, `codec`, `afc`, `afc::v1`, ...).
fn modules(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modules(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let name = if parts == ["lib"] {
            "crate".to_string()
        } else {
            parts.join("::")
        };
        out.insert(name, path);
    }
}

/// The code of a file without comments (line comments only: the crate has no block comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module a path names: the longest prefix of `path` (`a::b::Item`) that is a module, or
/// the crate root.
fn owner(path: &str, known: &BTreeMap<String, PathBuf>) -> String {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| known.contains_key(m))
        .unwrap_or_else(|| "crate".to_string())
}

/// The identifiers-and-`::` run starting at `at`, and the items of a `{..}` group after it.
fn paths_at(text: &str, at: usize) -> Vec<String> {
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let head = rest[..end].trim_end_matches("::").to_string();
    if rest[end..].starts_with('{') && (end == 0 || rest[..end].ends_with("::")) {
        let close = rest[end..].find('}').map_or(rest.len(), |i| end + i);
        let items = rest[end + 1..close]
            .split(',')
            .map(|item| item.trim().split([' ', ':', '{']).next().unwrap_or(""))
            .filter(|item| !item.is_empty() && *item != "self");
        return if head.is_empty() {
            items.map(String::from).collect()
        } else {
            items
                .map(|item| format!("{head}::{item}"))
                .chain([head.clone()])
                .collect()
        };
    }
    vec![head]
}

fn dependencies(module: &str, text: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let code = code(text);
    let mut deps = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // Part of a longer name.
        }
        for p in paths_at(&code, at + "crate::".len()) {
            deps.insert(owner(&p, known));
        }
    }
    // `super::` outside a test module names the parent module.
    let outside_tests = code.split("#[cfg(test)]").next().unwrap_or("");
    if outside_tests.contains("super::") {
        let parent = module.rsplit_once("::").map_or("crate", |(p, _)| p);
        deps.insert(parent.to_string());
    }
    if module == "crate" {
        for line in code.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub use ") {
                if let Some(first) = rest.split("::").next() {
                    if known.contains_key(first) {
                        deps.insert(first.to_string());
                    }
                }
            }
        }
    }
    deps.remove(module);
    deps
}

#[test]
fn no_two_files_depend_on_each_other() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut known = BTreeMap::new();
    modules(&root, &root, &mut known);
    assert!(known.contains_key("spec") && known.contains_key("afc::v1"));
    let graph: BTreeMap<String, BTreeSet<String>> = known
        .iter()
        .map(|(m, path)| {
            let text = std::fs::read_to_string(path).unwrap();
            (m.clone(), dependencies(m, &text, &known))
        })
        .collect();
    // The cycle this layout exists to prevent is visible to the check.
    assert!(graph["registry"].contains("afc::v1") || graph["registry"].contains("afc"));
    assert!(graph["afc::v1"].contains("spec"));
    assert!(graph["crate"].contains("spec"));

    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = stack.iter().position(|s| s == m) {
            panic!(
                "files depend on each other: {}",
                stack[i..].join(" -> ") + " -> " + m
            );
        }
        stack.push(m.to_string());
        for d in &graph[m] {
            visit(d, graph, stack, done);
        }
        stack.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let known: BTreeMap<String, PathBuf> = ["crate", "spec", "registry", "afc", "afc::v1"]
        .into_iter()
        .map(|m| (m.to_string(), PathBuf::new()))
        .collect();
    let registry = dependencies(
        "registry",
        "use crate::spec::SystemSpec;\nstatic S: &[X] = &[crate::afc::v1::SPEC];",
        &known,
    );
    assert_eq!(registry, ["afc::v1", "spec"].map(String::from).into());
    let module = dependencies(
        "afc::v1",
        "use crate::registry::{Auth, Options};\n// use crate::nothing;\nuse super::x;",
        &known,
    );
    assert_eq!(module, ["afc", "registry"].map(String::from).into());
    let root = dependencies(
        "crate",
        "pub use spec::{A, B};\nuse crate::{afc, X};",
        &known,
    );
    assert_eq!(root, ["afc", "spec"].map(String::from).into());
}
