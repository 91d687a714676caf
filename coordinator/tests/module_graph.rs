//! The coordinator's top-level modules import each other without a circle (issue 11): each module's
//! production code (its file and folder, without test modules) names other modules through `crate::`; the
//! graph of those names must be acyclic, so every module can be read and changed knowing only what is below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file of a module: `src/NAME.rs` and everything under `src/NAME/`.
fn module_files(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src is readable").flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        if path.extension().is_none_or(|e| e != "rs") || name == "lib" || name == "main" {
            continue;
        }
        let mut files = vec![path.clone()];
        let mut folders = vec![src.join(&name)];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        modules.insert(name, files);
    }
    modules
}

/// The production part of a file: test files are skipped, and a file's `#[cfg(test)] mod tests` is cut off.
fn production_code(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name == "tests.rs" || name == "proptests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("source is readable");
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end].lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The modules `code` names as `crate::NAME`.
fn named(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(at, _)| {
            code[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>()
        })
        .filter(|name| known.contains(name))
        .collect()
}

/// A circle in `edges`, as the modules on it in order, if there is one.
fn find_circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_coordinators_modules_import_each_other_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = module_files(&src);
    assert!(modules.len() > 10, "found the modules: {:?}", modules.keys());
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let edges: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(name, files)| {
            let mut deps: BTreeSet<String> = files.iter().flat_map(|f| named(&production_code(f), &known)).collect();
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect();
    if let Some(circle) = find_circle(&edges) {
        panic!("an import circle between the coordinator's modules: {}", circle.join(" -> "));
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let edge = |a: &str, b: &[&str]| (a.to_string(), b.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    let acyclic: BTreeMap<_, _> = [edge("a", &["b"]), edge("b", &["c"]), edge("c", &[])].into_iter().collect();
    assert_eq!(find_circle(&acyclic), None);
    let circle: BTreeMap<_, _> = [edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a"])].into_iter().collect();
    assert_eq!(find_circle(&circle).map(|c| c.len()), Some(4));
}
