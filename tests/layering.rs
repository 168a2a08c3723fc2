//! The server's layers depend on each other in one direction only:
//! `server` → `api` → `wire` → `engine` (the facade → `consumers` →
//! `collections` → `streams`, the core) → `storage`. This test reads the
//! sources and fails on any path that points back up, so a cycle cannot
//! creep in unnoticed. `docs/ARCHITECTURE.md` draws the same picture.

use std::path::{Path, PathBuf};

/// Files under a folder of `src/`, and the paths they must never name.
const RULES: &[(&str, &[&str])] = &[
    (
        "storage/",
        &[
            "crate::engine",
            "crate::wire",
            "crate::api",
            "crate::server",
        ],
    ),
    (
        "engine/streams/",
        &[
            "crate::engine::collections",
            "crate::engine::consumers",
            "crate::engine::Engine",
            "super::super::",
        ],
    ),
    (
        "engine/collections/",
        &[
            "crate::engine::consumers",
            "crate::engine::Engine",
            "super::super::",
        ],
    ),
    (
        "engine/consumers/",
        &["crate::engine::Engine", "super::super::"],
    ),
    (
        "engine/",
        &["crate::wire", "crate::api", "crate::server", "crate::cli"],
    ),
    ("wire/", &["crate::api", "crate::server", "crate::cli"]),
    // Sinks run over the engine, as a client of it would; the API shows
    // their status.
    (
        "sinks/",
        &[
            "crate::api",
            "crate::server",
            "crate::cli",
            "crate::connections",
        ],
    ),
    // Sources too; and they write as a client would, not through sinks.
    (
        "sources/",
        &[
            "crate::api",
            "crate::server",
            "crate::cli",
            "crate::connections",
            "crate::sinks",
        ],
    ),
    // A cluster node drives the engine the server gives it, and only
    // knows the storage's leases and an axum router.
    (
        "cluster/",
        &[
            "crate::api",
            "crate::server",
            "crate::cli",
            "crate::engine",
            "crate::wire",
        ],
    ),
    // Counted into by every layer, it uses none of them.
    ("metrics/", &["crate::"]),
    (
        "api/",
        &["crate::server", "crate::cli", "crate::connections"],
    ),
    (
        "tls.rs",
        &[
            "crate::api",
            "crate::engine",
            "crate::server",
            "crate::connections",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `source` that are code, not comments.
fn code_lines(source: &str) -> impl Iterator<Item = (usize, &str)> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
}

#[test]
fn no_layer_names_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(file).expect("source is readable");
        for (folder, forbidden) in RULES {
            if !relative.starts_with(folder) {
                continue;
            }
            for (number, line) in code_lines(&source) {
                for path in *forbidden {
                    if line.contains(path) {
                        violations.push(format!("src/{relative}:{}: {}", number + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    assert!(
        violations.is_empty(),
        "imports that point up a layer:\n{}",
        violations.join("\n")
    );
}

/// A module (`engine::streams::admin`) as the path segments under `src/`.
type Module = Vec<String>;

/// Every module of the server, by its file.
fn modules(src: &Path) -> Vec<(Module, PathBuf)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let relative = file
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            (module, file)
        })
        .collect()
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let (prefix, inner) = (&tree[..open], &tree[open + 1..close]);
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// The module paths `source` (the module `here`) names: its `use` trees,
/// and `crate::`, `super::` or child-module paths in its code. Test
/// modules and comments are left out.
fn named_paths(here: &Module, source: &str, children: &[String]) -> Vec<Module> {
    let source = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut texts = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + 4..];
        let end = tail.find(';').unwrap_or(tail.len());
        if before.is_none_or(|c| c.is_whitespace()) {
            texts.extend(expand(&tail[..end].replace('\n', " ")));
        }
        rest = &tail[end.min(tail.len())..];
    }
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") {
            texts.push(word.to_string());
        } else if let Some((first, _)) = word.split_once("::") {
            if children.iter().any(|c| c == first) {
                texts.push(word.to_string());
            }
        }
    }
    let mut paths = Vec::new();
    for text in texts {
        let segments: Vec<&str> = text.split("::").filter(|s| !s.is_empty()).collect();
        let mut path: Module = match segments.first() {
            Some(&"crate") => Vec::new(),
            Some(&"super") | Some(&"self") => here.clone(),
            Some(first) if children.iter().any(|c| c == first) => here.clone(),
            _ => continue, // another crate
        };
        for segment in segments {
            match segment {
                "crate" | "self" => {}
                "super" => {
                    path.pop();
                }
                name => path.push(name.to_string()),
            }
        }
        paths.push(path);
    }
    paths
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let known: std::collections::HashSet<&Module> = modules.iter().map(|(m, _)| m).collect();
    // Each module's imports, resolved to the module that holds the item.
    let mut imports: std::collections::BTreeMap<Module, std::collections::BTreeSet<Module>> =
        Default::default();
    for (module, file) in &modules {
        let source = std::fs::read_to_string(file).expect("source is readable");
        let children: Vec<String> = known
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].clone())
            .collect();
        let entry = imports.entry(module.clone()).or_default();
        for path in named_paths(module, &source, &children) {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| known.contains(prefix));
            if let Some(target) = target.filter(|t| t != module) {
                entry.insert(target);
            }
        }
    }
    // Any cycle: a module reachable from one it imports.
    let mut cycles = Vec::new();
    for (module, direct) in &imports {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<&Module> = direct.iter().collect();
        while let Some(next) = stack.pop() {
            if next == module {
                cycles.push(module.join("::"));
                break;
            }
            if seen.insert(next) {
                stack.extend(imports.get(next).into_iter().flatten());
            }
        }
    }
    assert!(imports.len() > 20, "read only {} modules", imports.len());
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {}",
        cycles.join(", ")
    );
}
