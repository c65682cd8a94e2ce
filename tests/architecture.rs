//! The crate's layering, checked on its source: `gpu/` depends on the leaf modules alone and
//! its runtime on no kernel family, no
//! production code uses the test oracle in `reference/`, and the on-disk formats are written
//! and read in `store/` alone.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `(file relative to src/, its code without unit tests and comments)` for every source file.
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    // A module's unit tests in a file of their own (`tests.rs`) are tests, not production code.
    files.retain(|p| p.file_name().is_none_or(|n| n != "tests.rs"));
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            // Unit tests sit at the end of a file, behind #[cfg(test)].
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let rel = p.strip_prefix(&src).unwrap().display().to_string();
            (rel, code)
        })
        .collect()
}

/// The crate modules `code` names (`crate::x`, `crosspool::x`).
fn modules_used(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in ["crate::", "crosspool::"] {
        for (i, _) in code.match_indices(root) {
            let rest = &code[i + root.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::Result` and the like are the error module's re-exports.
            let name = if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                "error".to_string()
            } else {
                name
            };
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Modules that import nothing from the crate but errors (and `weights` its shapes).
const LEAVES: &[&str] = &["error", "shape", "weights", "pooling", "tune", "choice"];

#[test]
fn gpu_depends_on_the_leaf_modules_alone() {
    let mut seen = 0;
    for (file, code) in sources() {
        let module = file.split(['/', '.']).next().unwrap().to_string();
        let used = modules_used(&code);
        if file.starts_with("gpu/") {
            seen += 1;
            for m in &used {
                assert!(
                    m == "gpu" || LEAVES.contains(&m.as_str()),
                    "src/{file} uses crate::{m}; gpu/ may use only {LEAVES:?}"
                );
            }
        }
        if LEAVES.contains(&module.as_str()) {
            for m in &used {
                assert!(
                    ["error", "shape", "choice"].contains(&m.as_str()) || *m == module,
                    "leaf module src/{file} uses crate::{m}"
                );
            }
        }
    }
    assert!(seen > 10, "found the gpu sources");
}

/// The GPU runtime knows no particular kernel: the kernel families build on it, never the
/// other way round (so a new kernel touches its own folder, not the runtime).
#[test]
fn the_gpu_runtime_imports_no_kernel_family() {
    let families = [
        "conv",
        "crosslayer",
        "normalize",
        "pool",
        "quantize",
        "region_pool",
        "relu",
        "score",
        "kernels",
    ];
    let mut seen = 0;
    for (file, code) in sources() {
        if !file.starts_with("gpu/runtime/") {
            continue;
        }
        seen += 1;
        for f in families {
            for path in [
                format!("gpu::{f}::"),
                format!("gpu::{f};"),
                format!("super::{f}"),
            ] {
                assert!(
                    !code.contains(&path),
                    "src/{file} names {path}: the runtime must not depend on a kernel family"
                );
            }
        }
    }
    assert!(seen >= 9, "found the runtime's sources");
}

/// Images in (`input/`) come before the on-disk formats (`store/`), which may name them; the
/// other way round would make an import circle.
#[test]
fn input_does_not_import_store() {
    let mut seen = 0;
    for (file, code) in sources() {
        if file.starts_with("input/") {
            seen += 1;
            assert!(
                !modules_used(&code).contains(&"store".to_string()),
                "src/{file} uses crate::store; store/ builds on input/, not the reverse"
            );
        }
    }
    assert!(seen >= 3, "found the input sources");
}

#[test]
fn production_code_does_not_use_the_test_oracle() {
    for (file, code) in sources() {
        // `selftest` is the one production module that uses it: it holds the kernels to the
        // oracle on a user's adapter, as the tests do on theirs.
        if file.starts_with("reference/") || file.starts_with("selftest/") || file == "lib.rs" {
            continue;
        }
        assert!(
            !modules_used(&code).contains(&"reference".to_string()),
            "src/{file} uses the CPU reference, which exists for the tests"
        );
    }
}

#[test]
fn on_disk_names_live_in_store() {
    for (file, code) in sources() {
        if file.starts_with("store/") {
            continue;
        }
        for name in [
            "\"extract.json",
            "\"shard-",
            "crosspool.settings",
            "\"status\"",
        ] {
            assert!(
                !code.contains(name),
                "src/{file} spells the on-disk name {name}; use crate::store"
            );
        }
    }
}

/// The library's top-level modules import one another without a circle, so each can be read,
/// tested and changed knowing only those below it.
#[test]
fn top_level_modules_form_no_import_circle() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in sources() {
        // The binary's front end and the crate root sit above everything.
        if file.starts_with("cli/") || file == "main.rs" || file == "lib.rs" {
            continue;
        }
        let module = file.split(['/', '.']).next().unwrap().to_string();
        let used = graph.entry(module.clone()).or_default();
        used.extend(modules_used(&code).into_iter().filter(|m| *m != module));
    }
    assert!(graph.len() > 15, "found the modules");
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import circle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

/// The bytes of every file crosspool writes or reads besides images (feature shards,
/// settings, PCA, classifiers, AConv layers, the retrieval index, network weights) are
/// spelled in `store/`: only there is the safetensors crate imported, or a file mapped.
#[test]
fn file_formats_are_read_and_written_in_store() {
    let mut seen = 0;
    for (file, code) in sources() {
        if file.starts_with("store/") {
            seen += code.contains("safetensors::") as usize;
            continue;
        }
        for name in ["safetensors::", "use safetensors", "memmap2::"] {
            assert!(
                !code.contains(name),
                "src/{file} names {name}: files are read and written through crate::store"
            );
        }
    }
    assert!(seen >= 1, "found the safetensors container in store/");
}

#[test]
fn the_library_knows_no_command_line_parser() {
    let mut seen = 0;
    for (file, code) in sources() {
        if file.starts_with("cli/") || file == "main.rs" {
            continue;
        }
        seen += 1;
        assert!(
            !code.contains("clap::") && !code.contains("use clap"),
            "src/{file} uses clap: the library's named values are crate::choice::Choice, which the command line adapts"
        );
    }
    assert!(seen > 50, "only {seen} library files read");
}
