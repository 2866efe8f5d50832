//! The shape of the source, checked: no import circle among the files of `ekka-node` or of
//! `ekka-types`, no file of `ekka-node` over 600 lines, no function over 80 lines, and lock and
//! key-value commands built only in the data module. ARCHITECTURE.md draws the layers these
//! checks keep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// One source file as a module: its path from the crate root (`["data", "locks"]`) and its text
/// without the `#[cfg(test)]` module at its end.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    text: String,
}

fn crate_src(name: &str) -> PathBuf {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    crates.expect("the crates dir").join(name).join("src")
}

fn modules(src: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("read src dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let mut path: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(
                path.last().map(String::as_str),
                Some("lib" | "mod" | "main")
            ) {
                path.pop();
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.push(Module {
                path,
                file: p,
                text,
            });
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path named after `crate::`, `super::` or a child module's name, as a list of segments
/// from the crate root. Use-groups (`crate::a::{b, c::d}`) give one path per leaf.
fn references(m: &Module, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let code: String = m
        .text
        .lines()
        .map(
            |l| match (l.trim_start().starts_with("//"), l.find(" //")) {
                (true, _) => "",
                (false, Some(i)) => &l[..i],
                (false, None) => l,
            },
        )
        .collect::<Vec<_>>()
        .join("\n");
    let chars: Vec<char> = code.chars().collect();
    let inline = inline_mods(&chars);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if chars.get(i) != Some(&':') || chars.get(i + 1) != Some(&':') {
            continue;
        }
        let base: Vec<String> = match word.as_str() {
            "crate" => Vec::new(),
            // In a module written inline (`mod b64 { .. }`), `super` is this file.
            "super" if inline.iter().any(|r| r.contains(&start)) => m.path.clone(),
            "super" => {
                let mut p = m.path.clone();
                p.pop();
                p
            }
            "self" => m.path.clone(),
            w if children.contains(w) => {
                let mut p = m.path.clone();
                p.push(w.to_string());
                p
            }
            _ => continue,
        };
        let mut j = i + 2;
        tree(&chars, &mut j, base, &mut out);
        i = j;
    }
    out
}

/// The spans of the modules written inline in a file (`mod name { .. }`).
fn inline_mods(chars: &[char]) -> Vec<std::ops::Range<usize>> {
    let word = ['m', 'o', 'd', ' '];
    let mut out = Vec::new();
    for at in 0..chars.len().saturating_sub(4) {
        if chars[at..at + 4] != word || (at > 0 && is_ident(chars[at - 1])) {
            continue;
        }
        let rest = &chars[at + 4..];
        let name = rest.iter().take_while(|c| is_ident(**c)).count();
        let mut k = at + 4 + name;
        while chars.get(k) == Some(&' ') {
            k += 1;
        }
        if name == 0 || chars.get(k) != Some(&'{') {
            continue;
        }
        let mut depth = 0;
        for (j, c) in chars.iter().enumerate().skip(k) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(at..j);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Reads a use-tree at `chars[*j..]` below `prefix`, pushing each leaf path.
fn tree(chars: &[char], j: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        while chars.get(*j).is_some_and(|c| c.is_whitespace()) {
            *j += 1;
        }
        if chars.get(*j) == Some(&'{') {
            *j += 1;
            loop {
                tree(chars, j, prefix.clone(), out);
                while chars
                    .get(*j)
                    .is_some_and(|c| c.is_whitespace() || *c == ',')
                {
                    *j += 1;
                }
                match chars.get(*j) {
                    Some('}') => {
                        *j += 1;
                        return;
                    }
                    None => return,
                    _ => {}
                }
            }
        }
        let start = *j;
        while chars.get(*j).is_some_and(|c| is_ident(*c) || *c == '*') {
            *j += 1;
        }
        let seg: String = chars[start..*j].iter().collect();
        if seg == "super" {
            prefix.pop();
        } else if !seg.is_empty() && seg != "self" && seg != "*" {
            prefix.push(seg);
        }
        if chars.get(*j) == Some(&':') && chars.get(*j + 1) == Some(&':') {
            *j += 2;
            continue;
        }
        out.push(prefix);
        return;
    }
}

/// The import graph of a crate: file module → the file modules it names (itself excluded).
fn graph(mods: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut g = BTreeMap::new();
    for m in mods {
        let children: BTreeSet<String> = known
            .iter()
            .filter(|k| k.len() == m.path.len() + 1 && k.starts_with(&m.path))
            .map(|k| k[m.path.len()].clone())
            .collect();
        let mut edges = BTreeSet::new();
        for r in references(m, &children) {
            // The longest prefix that is a file; a path into the module's own file is no edge.
            let target = (0..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| known.contains(p));
            if let Some(t) = target.filter(|t| *t != m.path) {
                edges.insert(t);
            }
        }
        g.insert(m.path.clone(), edges);
    }
    g
}

/// The first import circle found, as the chain of modules around it.
fn circle(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut c: Vec<String> = stack[at..].iter().map(|p| name(p)).collect();
            c.push(name(n));
            return Some(c);
        }
        if !done.insert(n.clone()) {
            return None;
        }
        stack.push(n.clone());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

fn name(p: &[String]) -> String {
    match p.is_empty() {
        true => "lib".into(),
        false => p.join("::"),
    }
}

#[test]
fn no_import_circle_in_node_or_types() {
    for krate in ["node", "types"] {
        let g = graph(&modules(&crate_src(krate)));
        if let Some(c) = circle(&g) {
            panic!("import circle in crates/{krate}/src: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let m = |path: &[&str], text: &str| Module {
        path: path.iter().map(|s| s.to_string()).collect(),
        file: PathBuf::new(),
        text: text.into(),
    };
    let mods = [
        m(&[], "mod a;\nmod b;\npub use a::X;"),
        m(&["a"], "use crate::b::{self, Y};\npub struct X;"),
        m(&["b"], "pub struct Y;\nfn f() { super::a::X; }"),
    ];
    let c = circle(&graph(&mods)).expect("a circle");
    assert_eq!(c, ["a", "b", "a"]);
    let acyclic = [
        m(&[], "mod a;\nmod b;\npub use a::X;"),
        m(&["a"], "use crate::b::{self, Y};\npub struct X;"),
        m(&["b"], "pub struct Y; // crate::a::X"),
    ];
    assert_eq!(circle(&graph(&acyclic)), None);
}

/// Functions longer than `MAX_FN_LINES`, as `file:line name (n lines)`.
fn long_functions(m: &Module) -> Vec<String> {
    let lines: Vec<&str> = m.text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let head = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("async ");
        if !head.starts_with("fn ") {
            continue;
        }
        let indent = &l[..l.len() - t.len()];
        if t.ends_with('}') && t.contains('{') {
            continue;
        }
        // A declaration without a body ends with `;` before any `{`.
        let body = lines[i..].iter().position(|x| x.trim_end().ends_with('{'));
        let decl = lines[i..].iter().position(|x| x.trim_end().ends_with(';'));
        match (body, decl) {
            (None, _) => continue,
            (Some(b), Some(d)) if d < b => continue,
            _ => {}
        }
        // Up to the closing brace at the function's own indentation.
        let close = format!("{indent}}}");
        let Some(end) = lines[i..].iter().position(|x| *x == close) else {
            continue;
        };
        let n = end + 1;
        if n > MAX_FN_LINES {
            let fname: String = head[3..].chars().take_while(|c| is_ident(*c)).collect();
            out.push(format!(
                "{}:{} {fname} ({n} lines)",
                m.file.display(),
                i + 1
            ));
        }
    }
    out
}

#[test]
fn node_files_and_functions_are_short() {
    let mut over = Vec::new();
    for m in modules(&crate_src("node")) {
        let n = std::fs::read_to_string(&m.file)
            .expect("read")
            .lines()
            .count();
        if n > MAX_FILE_LINES {
            over.push(format!("{} ({n} lines)", m.file.display()));
        }
        over.extend(long_functions(&m));
    }
    assert!(over.is_empty(), "over the limits:\n{}", over.join("\n"));
}

#[test]
fn only_the_data_module_builds_lock_and_key_commands() {
    for m in modules(&crate_src("node")) {
        if m.path.first().map(String::as_str) == Some("data") {
            continue;
        }
        for bad in ["LockOp::", "KvOp::", "DataCommand::"] {
            assert!(
                !m.text.contains(bad),
                "{} builds {bad} commands: only the data module does",
                m.file.display()
            );
        }
    }
}
