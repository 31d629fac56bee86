//! docs/ARCHITECTURE.md names code (the layout of section 1, the
//! `file::function` that does each step of section 2): every name must exist,
//! so that any decision is one hop from the contract. No root needed.
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn contract() -> String {
    std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md")
}

/// A `file.rs` or `file.rs::Type::function` span is relative to the repo or,
/// for the daemon's own modules, to mesh-agent/src.
fn resolve(path: &str) -> Option<PathBuf> {
    [repo(), repo().join("mesh-agent/src")]
        .into_iter()
        .map(|base| base.join(path))
        .find(|p| p.exists())
}

/// Whether `src` defines `name` (fn, type, trait, const or module item).
fn defines(src: &str, name: &str) -> bool {
    ["fn ", "struct ", "enum ", "trait ", "type ", "const "]
        .iter()
        .any(|kw| {
            src.match_indices(&format!("{kw}{name}")).any(|(i, m)| {
                let next = src[i + m.len()..].chars().next();
                !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
}

/// Code spans of the form `path/file.rs` or `path/file.rs::Item::item`.
fn code_references(doc: &str) -> Vec<(String, Vec<String>)> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            let (path, items) = span.split_once("::").unwrap_or((span, ""));
            let is_path = path.ends_with(".rs")
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
            is_path.then(|| {
                let items = items
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                (path.to_owned(), items)
            })
        })
        .collect()
}

#[test]
fn every_file_and_function_the_contract_names_exists() {
    let doc = contract();
    let refs = code_references(&doc);
    assert!(
        refs.len() > 20,
        "expected the data path to name its code: {refs:?}"
    );
    let mut missing = Vec::new();
    for (path, items) in &refs {
        let Some(file) = resolve(path) else {
            missing.push(format!("{path}: no such file"));
            continue;
        };
        let src = std::fs::read_to_string(&file).unwrap_or_default();
        if let Some(last) = items.last() {
            if !defines(&src, last) {
                missing.push(format!("{path}: defines no `{last}`"));
            }
        }
        if let [owner, _, ..] = items.as_slice() {
            if !defines(&src, owner) && !src.contains(&format!(" {owner} {{")) {
                missing.push(format!("{path}: no `impl`/definition of `{owner}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names code that does not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_folder_and_file_of_the_layout_exists() {
    let doc = contract();
    let layout = doc
        .split("## 1. Layout")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("section 1 has a layout block");
    let mut top = String::new();
    let mut missing = Vec::new();
    for line in layout.lines() {
        // Entries start at column 0 (top-level) or 2 (inside the last
        // top-level folder); deeper lines continue an entry's description.
        let indent = line.len() - line.trim_start().len();
        if indent > 2 {
            continue;
        }
        let indented = indent == 2;
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        let looks_like_path =
            first.ends_with('/') || first.ends_with(".rs") || first.ends_with(".toml");
        if !looks_like_path {
            continue;
        }
        if !indented {
            top = first.to_owned();
        }
        let path = if indented {
            format!("{top}{first}")
        } else {
            first.to_owned()
        };
        if !repo().join(&path).exists() {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "section 1 lists paths that do not exist: {missing:?}"
    );
}
