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
    ("api/", &["crate::server", "crate::cli"]),
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
