//! The dependency arrows of docs/architecture.md, checked against the code:
//! every `crate::…` path in `src/` (and every `toolgate::…` path in the
//! binary) must name a module its part may use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The "may use" table of docs/architecture.md.
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let section = doc
        .split("## Which part may use which")
        .nth(1)
        .expect("docs/architecture.md has the arrows section");
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 2 || cells[0] == "module" || cells[0].starts_with("---") {
            continue;
        }
        let uses = cells[1]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        out.insert(cells[0].to_string(), uses);
    }
    out
}

/// The part a source file belongs to.
fn part_of(rel: &Path) -> String {
    let mut parts = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let first = parts.next().unwrap_or_default();
    match first.as_str() {
        "main.rs" | "cli" => "cli".into(),
        f if rel.components().count() == 1 => f.trim_end_matches(".rs").to_string(),
        f => f.to_string(),
    }
}

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

/// The code of a file without comments and without its unit tests (tests
/// may reach anything).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Root re-exports in lib.rs (`pub use policy::{Policy, …}`): name → module.
fn reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mut out = BTreeMap::new();
    for stmt in lib.split(';').map(str::trim) {
        let Some(rest) = stmt.lines().last().and_then(|l| l.strip_prefix("pub use ")) else {
            continue;
        };
        let module = rest.split("::").next().unwrap_or("").to_string();
        let names = rest.rsplit("::").next().unwrap_or("");
        for n in names.trim_matches(['{', '}']).split(',') {
            out.insert(n.trim().to_string(), module.clone());
        }
    }
    out
}

/// Modules referred to by `prefix::name` or `prefix::{a, b}` in `code`.
fn referenced(code: &str, prefix: &str, reexp: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            group
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            vec![
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ]
        };
        for n in names.into_iter().filter(|n| !n.is_empty() && *n != "self") {
            out.insert(reexp.get(n).cloned().unwrap_or_else(|| n.to_string()));
        }
    }
    out
}

#[test]
fn imports_follow_the_arrows() {
    let arrows = arrows();
    let reexp = reexports();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_path_buf();
        let part = part_of(&rel);
        let allowed = arrows.get(&part).unwrap_or_else(|| {
            panic!(
                "{} belongs to part `{part}`, which docs/architecture.md does not list",
                rel.display()
            )
        });
        let text = code(&std::fs::read_to_string(&f).unwrap());
        let prefix = if part == "cli" {
            "toolgate::"
        } else {
            "crate::"
        };
        for used in referenced(&text, prefix, &reexp) {
            if used != part && !allowed.contains(&used) {
                bad.push(format!("{}: `{part}` uses `{used}`", rel.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against docs/architecture.md:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_arrow_check_catches_a_reverse_import() {
    // The checker itself must see the imports it is meant to forbid.
    let reexp = reexports();
    let policy_using_plan = "use crate::plan::{Limits, Plan};\nfn f() { crate::sandbox::x(); }";
    let found = referenced(&code(policy_using_plan), "crate::", &reexp);
    assert_eq!(
        found,
        BTreeSet::from(["plan".to_string(), "sandbox".to_string()])
    );
    let arrows = arrows();
    assert!(!arrows["policy"].contains("plan"));
    assert!(!arrows["sandbox"].contains("policy"));
    assert!(!arrows["sandbox"].contains("server"));
    // A root re-export resolves to the module that owns it.
    assert_eq!(
        referenced("use crate::{Executor, Policy};", "crate::", &reexp),
        BTreeSet::from(["executor".to_string(), "policy".to_string()])
    );
}

#[test]
fn the_cli_only_parses_flags() {
    let main = std::fs::read_to_string(root().join("src/main.rs")).unwrap();
    let n = main.lines().count();
    assert!(
        n <= 400,
        "src/main.rs has {n} lines; library work belongs in the library"
    );
}
