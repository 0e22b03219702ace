//! The architecture drawing of `src/`, checked: which module imports which
//! (`crate::…`, `super::…` and a `mod.rs`'s own `child::…` paths, test code
//! left out), with no circle and none of the imports that run against the
//! data flow. Run with `--nocapture` to print the drawing.
//!
//! The floors, as the data flows (module → floor):
//! - Face: `main`, `lib`, `cli`; Commands: `cmd`; Config: `config`, `paths`;
//! - Sources: `source`; Settings: `hermes_settings`, `home`;
//! - Model: `model`, `message`, `content`, `rebuild`, `shape`;
//! - Select: `select`; Curate: `curate`; Formats: `format`; Tokens: `tokens`;
//!   Redact: `redact`;
//! - Sinks: `output`, `sink`, `manifest`, `card`; Memory: `state`, `coverage`,
//!   `dataset`;
//! - Send: `send`; Validate: `validate`; everything else is a helper floor.
//!
//! A module and its own files (`format/mod.rs` and `format/fit.rs`) are one
//! unit: imports between a `mod.rs` and its direct children are not circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Imports that must never exist, floor to floor.
const NEVER: &[(&str, &str)] = &[
    ("Sources", "Formats"),
    ("Sources", "Memory"),
    ("Sources", "Sinks"),
    ("Memory", "Select"),
    ("Memory", "Sources"),
    ("Sinks", "Sources"),
    ("Formats", "Config"),
    ("Formats", "Curate"),
    ("Formats", "Sinks"),
    ("Curate", "Config"),
    ("Tokens", "Formats"),
    ("Tokens", "Sinks"),
];

fn floor(module: &str) -> &'static str {
    match module.split("::").next().unwrap_or("") {
        "main" | "lib" | "cli" => "Face",
        "cmd" => "Commands",
        "config" | "paths" => "Config",
        "source" => "Sources",
        "hermes_settings" | "home" => "Settings",
        "model" | "message" | "content" | "rebuild" | "shape" => "Model",
        "select" => "Select",
        "curate" => "Curate",
        "format" => "Formats",
        "tokens" => "Tokens",
        "redact" => "Redact",
        "output" | "sink" | "manifest" | "card" => "Sinks",
        "state" | "coverage" | "dataset" => "Memory",
        "send" => "Send",
        "validate" => "Validate",
        _ => "Helpers",
    }
}

/// Every module of `src/` with the code it holds (test code cut off).
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.expect("walking src/");
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&root).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let text = std::fs::read_to_string(path).expect("reading a source file");
        out.insert(parts.join("::"), code_only(&text));
    }
    out
}

/// The text without comment lines and without its test module (a
/// `#[cfg(test)]` on a `mod`). Other test-only items stay: what they import
/// counts, so that nothing after them is ever missed.
fn code_only(text: &str) -> String {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let starts_tests = line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                let next = next.trim_start();
                next.starts_with("mod ") || next.starts_with("pub mod ")
            });
        if starts_tests {
            break;
        }
        if !line.trim_start().starts_with("//") {
            out.push(line);
        }
    }
    out.join("\n")
}

/// The longest module that `path` (`a::b::Item`) names, if any.
fn resolve(mods: &BTreeMap<String, String>, path: &str) -> Option<String> {
    let mut segs: Vec<&str> = Vec::new();
    for seg in path.split("::").map(str::trim) {
        match seg {
            "super" => {
                segs.pop();
            }
            "self" | "" => {}
            _ => segs.push(seg),
        }
    }
    (1..=segs.len())
        .rev()
        .map(|i| segs[..i].join("::"))
        .find(|m| mods.contains_key(m))
}

/// The paths a `use` tree names, with `prefix` before each: `a::{b, c::{d}}`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let (mut depth, mut start) = (0, 0);
    let bytes = tree.as_bytes();
    let mut items = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                items.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        match item.find('{') {
            Some(k) => {
                let head = item[..k].trim_end_matches(':');
                let inner = &item[k + 1..item.rfind('}').unwrap_or(item.len())];
                expand(&join(prefix, head), inner, out);
            }
            None => out.push(join(prefix, item.split(" as ").next().unwrap_or(item))),
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// The path that starts at byte `at` of `code` (just after a `crate::` or
/// `super::`, or at a child's name): identifiers and `::`, and a brace
/// group after a final `::`.
fn path_at(code: &str, at: usize) -> (String, Option<String>) {
    let rest = &code[at..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let path = rest[..end].trim_end_matches(':').to_string();
    let group_follows = end == 0 || rest[..end].ends_with("::");
    if group_follows && rest[end..].starts_with('{') {
        let mut depth = 0;
        for (i, c) in rest[end..].char_indices() {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            if depth == 0 {
                return (path, Some(rest[end + 1..end + i].to_string()));
            }
        }
    }
    (path, None)
}

/// Where a path written in `module` as `kind::path` points: `crate::` from
/// the root, `super::` from the parent, a bare child name from the module.
fn base_of(module: &str, kind: &str) -> String {
    match kind {
        "crate::" => String::new(),
        "super::" => module
            .rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_string()),
        _ => module.to_string(),
    }
}

/// Which modules each module imports.
fn imports(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in mods {
        let children: Vec<String> = mods
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{module}::")).map(str::to_string))
            .filter(|c| !c.contains("::"))
            .collect();
        let mut starts = vec!["crate::".to_string(), "super::".to_string()];
        starts.extend(children.iter().map(|c| format!("{c}::")));
        let mut paths = Vec::new();
        for start in &starts {
            for (at, _) in code.match_indices(start.as_str()) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let kind = if start == "crate::" || start == "super::" {
                    start.as_str()
                } else {
                    ""
                };
                let skip = if kind.is_empty() { 0 } else { kind.len() };
                let (path, group) = path_at(code, at + skip);
                let base = join(&base_of(module, kind), &path);
                match group {
                    Some(g) => expand(&base, &g, &mut paths),
                    None => paths.push(base),
                }
            }
        }
        let set = edges.entry(module.clone()).or_default();
        for p in paths {
            if let Some(target) = resolve(mods, &p).filter(|t| t != module) {
                set.insert(target);
            }
        }
    }
    edges
}

/// Whether `a` and `b` are a `mod.rs` and one of its direct children.
fn one_unit(a: &str, b: &str) -> bool {
    let parent = |m: &str| m.rsplit_once("::").map(|(p, _)| p.to_string());
    parent(a).as_deref() == Some(b) || parent(b).as_deref() == Some(a)
}

/// The circles of the graph: its strongly connected parts of more than one
/// module (Tarjan's algorithm).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for t in w.edges.get(v).into_iter().flatten() {
            if one_unit(v, t) {
                continue;
            }
            if !w.index.contains_key(t.as_str()) {
                visit(w, t);
                let lt = w.low[t.as_str()];
                w.low.insert(v, w.low[v].min(lt));
            } else if w.stack.contains(&t.as_str()) {
                let it = w.index[t.as_str()];
                w.low.insert(v, w.low[v].min(it));
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().rposition(|m| *m == v).unwrap();
            let part: Vec<String> = w.stack.drain(at..).map(str::to_string).collect();
            if part.len() > 1 {
                w.found.push(part);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        found: vec![],
    };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn the_module_drawing_has_no_circle_and_no_import_against_the_flow() {
    let mods = modules();
    let edges = imports(&mods);
    for (m, targets) in &edges {
        let list: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("{:<10} {m} -> {}", floor(m), list.join(", "));
    }
    let circles = circles(&edges);
    assert!(circles.is_empty(), "import circles: {circles:?}");
    let against: Vec<String> = edges
        .iter()
        .flat_map(|(m, ts)| ts.iter().map(move |t| (m, t)))
        .filter(|(m, t)| NEVER.contains(&(floor(m), floor(t))))
        .map(|(m, t)| format!("{m} ({}) -> {t} ({})", floor(m), floor(t)))
        .collect();
    assert!(against.is_empty(), "imports against the flow: {against:#?}");
}

#[test]
fn the_drawing_sees_every_kind_of_import() {
    // The parser itself, on a made-up crate: a test that could not fail if
    // the parser saw nothing would prove nothing.
    let mut mods = BTreeMap::new();
    for m in ["a", "a::child", "b", "c", "d"] {
        mods.insert(m.to_string(), String::new());
    }
    mods.insert(
        "a".into(),
        "use crate::{b, c::{Thing}};\nfn f() { child::g(); }".into(),
    );
    mods.insert("a::child".into(), "use super::super::d;".into());
    mods.insert("d".into(), "fn h() { crate::a::child::g() }".into());
    let edges = imports(&mods);
    let got = |m: &str| edges[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(got("a"), ["a::child", "b", "c"]);
    assert_eq!(got("a::child"), ["d"]);
    assert_eq!(got("d"), ["a::child"]);
    assert_eq!(circles(&edges).len(), 1, "a::child -> d -> a::child");
    assert_eq!(
        code_only("x\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}"),
        "x"
    );
}
