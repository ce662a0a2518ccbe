//! The layout: crates depend downwards only (core, protocols, runtime, transports, application;
//! nothing but the application depends on a transport), and within each crate the files depend
//! on each other one way only. A file that names another (`use crate::x::..`, a `crate::x::`
//! path, `super::` outside a test module, or `lib.rs` re-exporting with `pub use x::..`) depends
//! on it, and no chain of such dependencies comes back to where it started. (In the protocol
//! crate, `registry.rs` lists the systems, so it depends on their modules; the modules take their
//! types from `spec.rs`, never from the registry.)

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

/// What `lib.rs` re-exports: item name to the module that defines it (`pub use x::Item`).
fn reexports(lib: &str, known: &BTreeMap<String, PathBuf>) -> BTreeMap<String, String> {
    let code = code(lib);
    let mut out = BTreeMap::new();
    for (at, _) in code.match_indices("pub use ") {
        for p in paths_at(&code, at + "pub use ".len()) {
            let module = owner(&p, known);
            if let Some((_, item)) = p.rsplit_once("::") {
                if module != "crate" {
                    out.insert(item.to_string(), module);
                }
            }
        }
    }
    out
}

/// The modules `module`'s source depends on. A path through a re-export of the crate root
/// (`crate::Item`) counts as a dependency on the module that defines the item.
fn dependencies(
    module: &str,
    text: &str,
    known: &BTreeMap<String, PathBuf>,
    reexported: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let code = code(text);
    let mut deps = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // Part of a longer name.
        }
        for p in paths_at(&code, at + "crate::".len()) {
            let first = p.split("::").next().unwrap_or("");
            let dep = match (owner(&p, known), reexported.get(first)) {
                (m, Some(defined)) if m == "crate" => defined.clone(),
                (m, _) => m,
            };
            deps.insert(dep);
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

/// The workspace's `crates/` directory.
fn crates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/server sits in crates/")
        .to_path_buf()
}

/// The file-dependency graph of the crate whose sources are in `src`.
fn file_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut known = BTreeMap::new();
    modules(src, src, &mut known);
    let reexported = known
        .get("crate")
        .map(|lib| reexports(&std::fs::read_to_string(lib).unwrap(), &known))
        .unwrap_or_default();
    known
        .iter()
        .map(|(m, path)| {
            let text = std::fs::read_to_string(path).unwrap();
            (m.clone(), dependencies(m, &text, &known, &reexported))
        })
        .collect()
}

/// Panic with the cycle if `graph` has one.
fn assert_acyclic(krate: &str, graph: &BTreeMap<String, BTreeSet<String>>) {
    fn visit(
        krate: &str,
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
                "files of {krate} depend on each other: {}",
                stack[i..].join(" -> ") + " -> " + m
            );
        }
        stack.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(krate, d, graph, stack, done);
        }
        stack.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(krate, m, graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_two_files_of_a_crate_depend_on_each_other() {
    let mut checked = 0;
    for entry in std::fs::read_dir(crates_dir()).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let name = src
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let graph = file_graph(&src);
        assert_acyclic(&name, &graph);
        checked += 1;
        if name == "protocol" {
            // The cycle this layout exists to prevent is visible to the check.
            assert!(graph["registry"].contains("afc::v1") || graph["registry"].contains("afc"));
            assert!(graph["afc::v1"].contains("spec"));
        }
    }
    assert!(checked >= 8, "only {checked} crates found");
}

/// The `switchboard-*` crates a manifest lists under `[dependencies]` (not dev or build ones).
fn normal_dependencies(manifest: &str) -> (String, Vec<String>) {
    let mut name = String::new();
    let mut deps = Vec::new();
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = if line == "[dependencies]" {
                "deps"
            } else if line == "[package]" {
                "package"
            } else {
                ""
            };
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or("");
        match section {
            "package" if key == "name" => {
                name = line.split('"').nth(1).unwrap_or("").to_string();
            }
            "deps" if key.starts_with("switchboard-") => deps.push(key.to_string()),
            _ => {}
        }
    }
    (name, deps)
}

#[test]
fn crates_depend_downwards_and_only_the_application_on_a_transport() {
    // Each crate's layer; a crate may depend only on crates of lower layers.
    let layer = |name: &str| match name {
        "switchboard-hub" | "switchboard-ws" => 0,
        "switchboard-protocol" | "switchboard-backplane" => 1,
        "switchboard-runtime" => 2,
        "switchboard-tokio"
        | "switchboard-hyper"
        | "switchboard-backplane-redis"
        | "switchboard-inspector" => 3,
        "switchboard-server" => 4,
        _ => 5, // Tools (load generator, benches) sit on top.
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(crates_dir()).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let (name, deps) = normal_dependencies(&text);
        seen += 1;
        for dep in deps {
            assert!(
                layer(&dep) < layer(&name),
                "{name} depends on {dep}, which is not below it"
            );
            if dep == "switchboard-tokio" || dep == "switchboard-hyper" {
                assert_eq!(name, "switchboard-server", "{name} depends on a transport");
            }
        }
    }
    assert!(seen >= 8, "only {seen} manifests found");
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
        &BTreeMap::new(),
    );
    assert_eq!(registry, ["afc::v1", "spec"].map(String::from).into());
    let module = dependencies(
        "afc::v1",
        "use crate::registry::{Auth, Options};\n// use crate::nothing;\nuse super::x;",
        &known,
        &BTreeMap::new(),
    );
    assert_eq!(module, ["afc", "registry"].map(String::from).into());
    let root = dependencies(
        "crate",
        "pub use spec::{A, B};\nuse crate::{afc, X};",
        &known,
        &BTreeMap::new(),
    );
    assert_eq!(root, ["afc", "spec"].map(String::from).into());
}

/// The backplane's logic is sans-IO: no async runtime and no Redis client anywhere in its
/// normal dependency tree (`cargo tree -e normal`), so it runs on a fake clock in tests and
/// could be driven by another client or runtime.
#[test]
fn the_backplane_logic_has_no_runtime_and_no_redis_client() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "switchboard-backplane",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(crates_dir())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.contains("switchboard-hub"), "{tree}");
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        for forbidden in ["tokio", "redis", "mio", "futures", "async-"] {
            assert!(
                !name.starts_with(forbidden),
                "switchboard-backplane depends on {name}"
            );
        }
    }
}
