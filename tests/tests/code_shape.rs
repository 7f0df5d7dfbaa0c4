//! The shape of the shipped code, held by the suite: no import circle
//! between the modules of one crate (a module uses the ones below it, see
//! docs/design.md), no function over 80 lines and no source file over 800.
//! Shipped code is `crates/`, `plugins/` and `cmd/`, without their test
//! modules (`#[cfg(test)]` onwards, `*_tests.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 800;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Each shipped crate's `src` directory.
fn crate_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["crates", "plugins", "cmd"] {
        for entry in fs::read_dir(root().join(group)).expect("read crate group") {
            let src = entry.expect("dir entry").path().join("src");
            if src.is_dir() {
                out.push(src);
            }
        }
    }
    out.sort();
    out
}

/// The `.rs` files of one `src` directory, test-only files left out.
fn shipped_files(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read src dir") {
            let p = entry.expect("dir entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                dirs.push(p);
            } else if name.ends_with(".rs") && !name.ends_with("_tests.rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A file's lines up to its test module.
fn shipped_lines(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect()
}

/// The modules of this crate that `lines` names (`crate::name`), outside
/// comments.
fn imports(lines: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lines.iter().filter(|l| !l.trim_start().starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Functions longer than the limit: (line, name, length). rustfmt puts a
/// function's closing brace at the indentation of its `fn` line.
fn long_functions(lines: &[&str]) -> Vec<(usize, String, usize)> {
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(at) = fn_keyword(trimmed) else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let closing = format!("{}}}", " ".repeat(indent));
        // A declaration (`;`) or a one-line body has no closing line.
        let opens = lines[start..]
            .iter()
            .position(|l| l.ends_with('{') || l.ends_with(';') || l.ends_with('}'));
        if opens.is_none_or(|p| !lines[start + p].ends_with('{')) {
            continue;
        }
        let end = lines[start..]
            .iter()
            .position(|l| *l == closing)
            .map(|p| start + p);
        let Some(end) = end else { continue };
        let len = end - start + 1;
        if len > MAX_FN_LINES {
            let name: String = trimmed[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((start + 1, name, len));
        }
    }
    out
}

/// Where the name starts when `line` declares a function.
fn fn_keyword(line: &str) -> Option<usize> {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    rest.strip_prefix("fn ")
        .map(|_| line.len() - rest.len() + "fn ".len())
}

/// One import circle among `graph`'s modules, if any.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        let here = path.last()?.clone();
        for next in graph.get(&here).into_iter().flatten() {
            if let Some(i) = path.iter().position(|m| m == next) {
                let mut c = path[i..].to_vec();
                c.push(next.clone());
                return Some(c);
            }
            if graph.contains_key(next) && !done.contains(next) {
                path.push(next.clone());
                if let Some(c) = visit(graph, path, done) {
                    return Some(c);
                }
                path.pop();
            }
        }
        done.insert(here);
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(c) = visit(graph, &mut vec![m.clone()], &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn shipped_code_keeps_its_shape() {
    let mut problems = Vec::new();
    for src in crate_sources() {
        let mut graph = BTreeMap::new();
        for file in shipped_files(&src) {
            let text = fs::read_to_string(&file).expect("read source");
            let shown = file
                .strip_prefix(root())
                .unwrap_or(&file)
                .display()
                .to_string();
            let lines = shipped_lines(&text);
            if lines.len() > MAX_FILE_LINES {
                problems.push(format!(
                    "{shown}: {} lines (max {MAX_FILE_LINES})",
                    lines.len()
                ));
            }
            for (line, name, len) in long_functions(&lines) {
                problems.push(format!(
                    "{shown}:{line}: fn {name} is {len} lines (max {MAX_FN_LINES})"
                ));
            }
            let module = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let mut uses = imports(&lines);
            uses.remove(&module);
            graph.insert(module, uses);
        }
        // lib.rs and main.rs declare the modules; they are the top.
        graph.remove("lib");
        graph.remove("main");
        if let Some(c) = circle(&graph) {
            problems.push(format!(
                "{}: import circle {}",
                src.display(),
                c.join(" -> ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_see_what_they_check() {
    let f = "fn short() {\n    x();\n}\n";
    assert!(long_functions(&f.lines().collect::<Vec<_>>()).is_empty());
    let body = "    x();\n".repeat(MAX_FN_LINES);
    let long = format!("    pub(crate) fn long(a: u8) -> u8 {{\n{body}    }}\n");
    let found = long_functions(&long.lines().collect::<Vec<_>>());
    assert_eq!(found, vec![(1, "long".to_string(), MAX_FN_LINES + 2)]);
    let decl = "    fn required(&self) -> u8;\n    fn other() {\n    }\n";
    assert!(long_functions(&decl.lines().collect::<Vec<_>>()).is_empty());
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circle(&g).map(|c| c.len()), Some(4));
    let lines = [
        "use crate::config::X;",
        "// crate::doc",
        "let y = crate::tc::f();",
    ];
    assert_eq!(
        imports(&lines).into_iter().collect::<Vec<_>>(),
        vec!["config".to_string(), "tc".to_string()]
    );
}
