//! The engine's folders follow the data flow (formats → text → models →
//! vision → serving) and nothing calls upward: a file may name `crate::X` only for a
//! folder `X` at or below its own. This reads the sources, so a `use` that
//! breaks the rule fails here with the file and line.

use std::path::{Path, PathBuf};

const LAYERS: [&str; 5] = ["formats", "text", "models", "vision", "serving"];

fn rank(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == folder)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(line number, layer named)` for each `crate::LAYER` outside comments.
fn upward_refs(source: &str, own: usize) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if rank(&name).is_some_and(|r| r > own) {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn no_folder_calls_upward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut bad = Vec::new();
    for layer in LAYERS {
        let own = rank(layer).expect("listed");
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} has no Rust files");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read source");
            for (line, name) in upward_refs(&text, own) {
                bad.push(format!("{}:{line} ({layer}) calls up into crate::{name}", f.display()));
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} files read");
    assert!(bad.is_empty(), "upward calls:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_call() {
    let src = "use crate::formats::gguf::GgufFile;\nuse crate::serving::engine::Engine; // here\n// crate::serving in a comment\n";
    assert_eq!(upward_refs(src, rank("models").unwrap()), vec![(2, "serving".to_string())]);
    assert!(upward_refs(src, rank("serving").unwrap()).is_empty());
}
