//! The fuzz targets' invariants, checked on every test run by deterministic
//! mutation of the seed corpora in `fuzz/seeds/` (coverage-guided fuzzing:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run <target>` on the stable toolchain).

use std::path::Path;
use toolgate::{Decision, Policy, ToolCall};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[&str] = &[
    ";", "&", "|", "&&", "||", "$(", ")", "`", "'", "\"", "\\", "$", "{", "}", ",", "..", "<", ">",
    ">>", "<<", "\n", " ", "(", "*", "?", "[", "=", "rm", "sh", "-c", "eval", "sudo", "/", "~",
    "%2e", "\u{FF0E}", "\u{202E}", "\u{200B}", "\0", "#", "x", "EOF",
];

fn seeds(target: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn mutants(target: &str, n: usize, seed: u64) -> Vec<String> {
    let base = seeds(target);
    let mut r = Rng(seed);
    let mut out = base.clone();
    for _ in 0..n {
        let mut s: Vec<char> = base[r.below(base.len())].chars().collect();
        for _ in 0..1 + r.below(4) {
            let at = r.below(s.len() + 1);
            match r.below(3) {
                0 => {
                    s.splice(at..at, ALPHABET[r.below(ALPHABET.len())].chars());
                }
                1 if at < s.len() => {
                    let end = (at + 1 + r.below(3)).min(s.len());
                    s.drain(at..end);
                }
                _ => s.insert(at, char::from(b' ' + r.below(95) as u8)),
            }
        }
        out.push(s.into_iter().collect());
    }
    out
}

#[test]
fn unresolved_commands_are_never_allowed() {
    let p = Policy::builtin_default();
    let ws = tempfile::tempdir().unwrap();
    for src in mutants("shell_parse", 20_000, 0x5eed) {
        let an = toolgate::policy::command::analyse_shell(&src);
        if an.unresolved.is_empty() {
            continue;
        }
        let call = ToolCall::parse(
            &serde_json::json!({"tool": "run_command", "args": {"command": src}}).to_string(),
        )
        .unwrap();
        let v = p.evaluate(&call, ws.path());
        assert_ne!(
            v.decision,
            Decision::Allow,
            "{src:?}: unresolved {:?}",
            an.unresolved
        );
    }
}

#[test]
fn normalized_paths_stay_inside() {
    for input in mutants("path_normalize", 20_000, 0xfade) {
        if let Ok(parts) = toolgate::workpath::normalize(Path::new("/work/space"), &input) {
            for p in &parts {
                assert!(
                    !p.is_empty() && p != ".." && p != "." && !p.contains(['/', '\\', '\0']),
                    "{input:?} -> {parts:?}"
                );
            }
        }
    }
}

#[test]
fn parsed_calls_round_trip() {
    for text in mutants("call_parse", 20_000, 0xca11) {
        if let Ok(calls) = ToolCall::parse_many(&text) {
            for c in calls {
                let again = ToolCall::from_value(serde_json::to_value(&c).unwrap()).unwrap();
                assert_eq!(again[0].tool, c.tool, "{text:?}");
            }
        }
    }
}

#[test]
fn seeded_secrets_never_survive_and_filtering_is_idempotent() {
    let r = toolgate::filter::Redactor::new().unwrap();
    let secrets: Vec<String> = toolgate::filter::rule_specs()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.examples)
        .collect();
    let texts = mutants("shell_parse", 3_000, 0x5ec2e7);
    let mut rng = Rng(0xfeed);
    for (i, text) in texts.iter().enumerate() {
        let secret = &secrets[i % secrets.len()];
        let mut at = rng.below(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let seeded = format!("{}\n{secret}\n{}", &text[..at], &text[at..]);
        let (out, _) = r.redact(&seeded);
        // The secret's part: the longest token the filter removes from the
        // example on its own (`registry.example` in a `docker login` line
        // stays), which must be removed in any context too.
        let alone = r.redact(secret).0;
        let core = secret
            .split(|c: char| c.is_whitespace() || "=:'\"".contains(c))
            .filter(|t| !t.is_empty() && !alone.contains(t))
            .max_by_key(|t| t.len())
            .unwrap_or_else(|| panic!("the example {secret:?} is not redacted on its own"));
        assert!(
            !out.contains(core),
            "survived: {secret:?} in {seeded:?} -> {out:?}"
        );
        assert_eq!(r.redact(&out).0, out, "not idempotent on {seeded:?}");
    }
}

#[test]
fn the_egress_proxy_dials_and_allows_only_what_it_lists() {
    for text in mutants("egress_request", 3_000, 0xe9e55) {
        toolgate::sandbox::egress::check_input(text.as_bytes());
    }
}
