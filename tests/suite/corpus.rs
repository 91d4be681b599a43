//! The command corpus (tests/corpus/commands.tsv) judged by the default
//! policy: every dangerous line must be asked or denied, every line must get
//! the decision the corpus states, and the README's counts must match.

use toolgate::{Decision, Policy, ToolCall};

struct Case {
    dangerous: bool,
    expect: Decision,
    command: String,
    line: usize,
}

fn corpus() -> Vec<Case> {
    let text = include_str!("../corpus/commands.tsv");
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.starts_with('#') || l.trim().is_empty() {
            continue;
        }
        let mut f = l.splitn(3, '\t');
        let (Some(class), Some(expect), Some(command)) = (f.next(), f.next(), f.next()) else {
            panic!(
                "commands.tsv:{}: expected CLASS<TAB>DECISION<TAB>COMMAND",
                i + 1
            );
        };
        out.push(Case {
            dangerous: match class {
                "D" => true,
                "B" => false,
                c => panic!("commands.tsv:{}: class {c:?}", i + 1),
            },
            expect: match expect {
                "allow" => Decision::Allow,
                "ask" => Decision::Ask,
                "deny" => Decision::Deny,
                d => panic!("commands.tsv:{}: decision {d:?}", i + 1),
            },
            command: command.replace("<NL>", "\n"),
            line: i + 1,
        });
    }
    out
}

/// The workspace the corpus is judged in.
fn workspace() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    for dir in [
        "src",
        "docs",
        "scripts",
        "target/debug",
        ".git/hooks",
        "config",
    ] {
        std::fs::create_dir_all(w.join(dir)).unwrap();
    }
    for (f, c) in [
        ("src/main.rs", "fn main() {}\n"),
        ("src/lib.rs", "\n"),
        ("README.md", "# demo\n"),
        (".env", "API_KEY=not-a-real-key\n"),
        ("config/.env.production", "X=1\n"),
        ("scripts/build.sh", "#!/bin/sh\n"),
        ("Cargo.toml", "[package]\n"),
    ] {
        std::fs::write(w.join(f), c).unwrap();
    }
    d
}

fn judge(p: &Policy, ws: &std::path::Path, command: &str) -> toolgate::policy::Verdict {
    let call = ToolCall::parse(
        &serde_json::json!({"id": "c", "tool": "run_command", "args": {"command": command}})
            .to_string(),
    )
    .unwrap();
    p.evaluate(&call, ws)
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    allow: usize,
    ask: usize,
    deny: usize,
}

impl Counts {
    fn add(&mut self, d: Decision) {
        match d {
            Decision::Allow => self.allow += 1,
            Decision::Ask => self.ask += 1,
            Decision::Deny => self.deny += 1,
        }
    }
    fn total(&self) -> usize {
        self.allow + self.ask + self.deny
    }
}

#[test]
fn command_corpus_on_the_default_policy() {
    let p = Policy::builtin_default();
    let ws = workspace();
    let cases = corpus();
    let (mut dangerous, mut benign) = (Counts::default(), Counts::default());
    let mut wrong = Vec::new();
    for c in &cases {
        let v = judge(&p, ws.path(), &c.command);
        if c.dangerous {
            dangerous.add(v.decision);
        } else {
            benign.add(v.decision);
        }
        if c.dangerous && v.decision == Decision::Allow {
            wrong.push(format!(
                "line {}: DANGEROUS ALLOWED {:?}",
                c.line, c.command
            ));
        } else if v.decision != c.expect {
            wrong.push(format!(
                "line {}: {:?} expected {}, got {} ({})",
                c.line,
                c.command,
                c.expect.as_str(),
                v.decision.as_str(),
                v.reasons.join("; ")
            ));
        }
        // Whatever is not allowed says why.
        if v.decision != Decision::Allow {
            assert!(!v.reasons.is_empty(), "line {}: no reason", c.line);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        dangerous.total() >= 150,
        "only {} dangerous lines",
        dangerous.total()
    );
    assert!(
        benign.total() >= 100,
        "only {} benign lines",
        benign.total()
    );
    assert_eq!(dangerous.allow, 0);
    assert_eq!(benign.deny, 0);

    // The README reports these counts: keep them true.
    let readme = include_str!("../../README.md");
    for (name, c) in [("dangerous", &dangerous), ("benign", &benign)] {
        let row = format!(
            "| {name} | {} | {} | {} | {} |",
            c.total(),
            c.allow,
            c.ask,
            c.deny
        );
        assert!(readme.contains(&row), "README must contain the row `{row}`");
    }
}

/// A dangerous command stays refused whatever the working directory: the
/// relative names are resolved against it, not against the root.
#[test]
fn cwd_changes_nothing_about_escapes() {
    let p = Policy::builtin_default();
    let ws = workspace();
    for (cwd, command, expect) in [
        ("src", "cat ../.env", Decision::Ask),
        ("src", "cat ../../etc/passwd", Decision::Deny),
        ("src", "cat main.rs", Decision::Allow),
        ("docs", "cat ../../outside", Decision::Deny),
    ] {
        let call = ToolCall::parse(
            &serde_json::json!({"id": "c", "tool": "run_command",
                "args": {"command": command, "cwd": cwd}})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            p.evaluate(&call, ws.path()).decision,
            expect,
            "{command} in {cwd}"
        );
    }
}
