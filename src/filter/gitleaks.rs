//! Secret rules from a gitleaks configuration (`[redaction] rules_file`),
//! so that a team's scanner rules apply to tool output as well.
//!
//! Read: each `[[rules]]` entry's `id`, `regex`, `secretGroup`, `entropy`,
//! `keywords` and allowlists (`[rules.allowlist]` or `[[rules.allowlists]]`:
//! `regexes` matched against the secret, the whole match or the line per
//! `regexTarget`, and `stopwords`), and the global `[allowlist]` /
//! `[[allowlists]]` regexes and stopwords, which apply to these rules. A
//! rule without `regex` (a `path` rule) concerns files, not output, and is
//! skipped; so are paths, commits and `[extend]` (the built-in rules always
//! apply). A rule without keywords runs on all output.

use super::{FilterError, RuleSpec};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    allowlist: Option<Allow>,
    #[serde(default)]
    allowlists: Vec<Allow>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: String,
    regex: Option<String>,
    secret_group: Option<usize>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    allowlist: Option<Allow>,
    #[serde(default)]
    allowlists: Vec<Allow>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Allow {
    #[serde(default)]
    regexes: Vec<String>,
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

/// What an allowlist regex is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Secret,
    Match,
    Line,
}

/// One allowlist of a rule: a finding it matches is not a secret.
#[derive(Debug, Clone)]
pub struct AllowSpec {
    pub regexes: Vec<String>,
    pub target: Target,
    pub stopwords: Vec<String>,
}

/// The rules of a gitleaks configuration, as toolgate rules.
pub fn parse(text: &str) -> Result<Vec<RuleSpec>, FilterError> {
    let cfg: Config =
        toml::from_str(text).map_err(|e| FilterError::Rules(e.message().to_string()))?;
    let global: Vec<Allow> = cfg.allowlist.into_iter().chain(cfg.allowlists).collect();
    let mut out = Vec::new();
    for r in cfg.rules {
        let Some(regex) = r.regex else { continue };
        let bad = |detail: String| FilterError::Rule {
            id: r.id.clone(),
            detail,
        };
        if !super::valid_id(&r.id) {
            return Err(bad(super::ID_RULE.into()));
        }
        let allow = r
            .allowlist
            .into_iter()
            .chain(r.allowlists)
            .chain(global.iter().cloned())
            .map(|a| {
                let target = match a.regex_target.as_deref() {
                    None | Some("secret") => Target::Secret,
                    Some("match") => Target::Match,
                    Some("line") => Target::Line,
                    Some(t) => return Err(bad(format!("unknown regexTarget {t:?}"))),
                };
                Ok(AllowSpec {
                    regexes: a.regexes,
                    target,
                    stopwords: a.stopwords.iter().map(|s| s.to_lowercase()).collect(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RuleSpec {
            id: r.id.clone(),
            keywords: r.keywords.iter().map(|k| k.to_lowercase()).collect(),
            regex,
            // gitleaks: the first group when there is one, else the match.
            group: r.secret_group.unwrap_or(usize::MAX),
            entropy: r.entropy,
            generic: false,
            examples: vec![],
            negatives: vec![],
            multiline: false,
            next_line: false,
            allow_match: vec![],
            allow,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Redactor;

    const CONFIG: &str = r#"
title = "team rules"

[extend]
useDefault = true

[allowlist]
description = "global"
stopwords = ["sandbox"]

[[rules]]
id = "acme-api-token"
description = "Acme API token"
regex = '''\b(acme_(?:live|test)_[A-Za-z0-9]{24})\b'''
secretGroup = 1
entropy = 3.0
keywords = ["acme_"]
tags = ["acme"]

[[rules]]
id = "internal-session"
regex = '''sess-[0-9a-f]{32}'''

[[rules]]
id = "corp-token"
regex = '''(?i)corp_handle\s*=\s*([a-z0-9.]{20,})'''
keywords = ["corp_handle"]
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''#\s*example''']

[[rules]]
id = "only-a-path"
path = '''\.pem$'''
"#;

    #[test]
    fn a_gitleaks_config_adds_rules_with_their_allowlists() {
        let rules = parse(CONFIG).unwrap();
        let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["acme-api-token", "internal-session", "corp-token"]);
        let r = Redactor::with_rules(&[], None, &rules).unwrap();
        let redact = |s: &str| r.redact(s).0;
        assert_eq!(
            redact("key acme_live_Zq8Lm2Xp9Kk4Wv1Nb8Tc3Rg6 ok"),
            "key [REDACTED:acme-api-token] ok"
        );
        // No keywords: runs on all text; no group: the whole match.
        assert_eq!(
            redact("cookie: sess-3f9a0c1be2d4478a9c6e5b1f0d2a7c8e;"),
            "cookie: [REDACTED:internal-session];"
        );
        assert_eq!(
            redact("CORP_HANDLE = cq8lm2xp9kk4wv1nb8tc3rg6"),
            "CORP_HANDLE = [REDACTED:corp-token]"
        );
        // The rule's line allowlist, the global stopword, the entropy.
        for keep in [
            "corp_handle = cq8lm2xp9kk4wv1nb8tc3rg6  # example",
            "acme_test_sandboxZq8Lm2Xp9Kk4Wv1Nb8",
            "acme_live_aaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(redact(keep), keep);
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (cfg, want) in [
            ("[[rules]]\nid = 'x'\nregex = '(unclosed'", "secret rule x"),
            ("[[rules]]\nid = 'bad id!'\nregex = 'x'", "an id is"),
            (
                "[[rules]]\nid = 'x'\nregex = 'a(b)'\nsecretGroup = 3",
                "valid group",
            ),
            (
                "[[rules]]\nid = 'x'\nregex = 'a'\n[[rules.allowlists]]\nregexTarget = 'file'",
                "regexTarget",
            ),
            ("rules = 3", "invalid type"),
        ] {
            let e = parse(cfg)
                .and_then(|r| Redactor::with_rules(&[], None, &r).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{cfg}: {e}");
        }
    }
}
