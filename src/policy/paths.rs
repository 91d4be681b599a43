//! Path rules: turn an agent-supplied path into a workspace-relative path or
//! a reason why not, then judge it against read/write globs.
//!
//! Turning a path into workspace components is [`crate::workpath`]'s job
//! (shared with the sandboxes); this module judges the result.
//! This is the lexical and resolution check that lets dry-run explain a
//! decision. It is not the enforcement: the host file tools open paths
//! through a capability handle on the workspace (`sandbox::hostfs`), which
//! cannot escape even if this check were fooled.

use super::{Decision, MatchedRule};
use crate::workpath::{normalize, resolve};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

/// What a call does to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

/// Which accesses a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessSel {
    Read,
    Write,
    Any,
}

impl AccessSel {
    pub fn covers(self, a: Access) -> bool {
        matches!(
            (self, a),
            (AccessSel::Any, _)
                | (AccessSel::Read, Access::Read)
                | (AccessSel::Write, Access::Write)
        )
    }
}

#[derive(Debug, Clone)]
pub struct PathRule {
    pub id: String,
    pub globs: GlobSet,
    pub access: AccessSel,
    pub decision: Decision,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct PathPolicy {
    pub read_default: Decision,
    pub write_default: Decision,
    pub rules: Vec<PathRule>,
    /// Every rule's globs in one set, matched once per path; `owner[i]` is
    /// the rule of glob `i`.
    combined: GlobSet,
    owner: Vec<usize>,
    /// Glob texts of `rules[i]`, for [`PathPolicy::view`].
    patterns: Vec<Vec<String>>,
}

/// What the path rules make of a workspace inside a sandbox, as `toolgate
/// check` prints it. The sandbox works on a copy without the hidden paths;
/// its changes are judged by the write rules after the run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsView {
    /// Left out of the sandbox's copy (not readable, not listed): what
    /// `read_file` would deny or ask about.
    pub hidden: Vec<ViewRule>,
    /// Everything no rule names is hidden unless this is `allow`.
    pub read_default: Decision,
    /// Changes to these are discarded (`deny`) or confirmed (`ask`) after the run.
    pub protected: Vec<ViewRule>,
    pub write_default: Decision,
}

/// One rule as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ViewRule {
    pub rule: String,
    pub decision: Decision,
    pub globs: Vec<String>,
}

/// The outcome of judging one path.
#[derive(Debug, Clone)]
pub struct PathCheck {
    pub decision: Decision,
    /// Workspace-relative path ("" is the root), when it could be computed.
    pub relative: Option<String>,
    pub matched: Vec<MatchedRule>,
    pub reasons: Vec<String>,
}

/// Compiles one glob the way every path rule uses it: `*` stops at `/`,
/// `**` crosses directories, case-insensitive so `.ENV` cannot dodge `.env`.
pub fn compile_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .case_insensitive(true)
        .backslash_escape(true)
        .build()
}

pub fn compile_globs<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
) -> Result<GlobSet, globset::Error> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(compile_glob(p)?);
    }
    b.build()
}

impl PathPolicy {
    /// Builds the policy; `patterns[i]` are the glob texts of `rules[i]`.
    pub fn new(
        read_default: Decision,
        write_default: Decision,
        rules: Vec<PathRule>,
        patterns: &[Vec<String>],
    ) -> Result<PathPolicy, globset::Error> {
        let mut b = GlobSetBuilder::new();
        let mut owner = Vec::new();
        for (i, ps) in patterns.iter().enumerate() {
            for p in ps {
                b.add(compile_glob(p)?);
                owner.push(i);
            }
        }
        Ok(PathPolicy {
            read_default,
            write_default,
            rules,
            combined: b.build()?,
            owner,
            patterns: patterns.to_vec(),
        })
    }

    /// The sandbox view these rules give (see [`FsView`]).
    pub fn view(&self) -> FsView {
        let pick = |access: Access| {
            self.rules
                .iter()
                .zip(&self.patterns)
                .filter(|(r, _)| r.access.covers(access) && r.decision > Decision::Allow)
                .map(|(r, g)| ViewRule {
                    rule: r.id.clone(),
                    decision: r.decision,
                    globs: g.clone(),
                })
                .collect()
        };
        FsView {
            hidden: pick(Access::Read),
            read_default: self.read_default,
            protected: pick(Access::Write),
            write_default: self.write_default,
        }
    }

    /// Whether a sandbox's copy of the workspace leaves `rel` out: reading
    /// it would be denied or asked about. `rel` is an existing path as the
    /// stage walks it (no symlink in its parents).
    pub fn hides(&self, workspace: &Path, rel: &str) -> bool {
        self.check(workspace, rel, Access::Read).decision > Decision::Allow
    }

    /// Indices of the rules matching `p` (a directory also matches `dir/**`).
    fn hits(&self, p: &str, out: &mut [bool]) {
        for g in self.combined.matches(p) {
            out[self.owner[g]] = true;
        }
        if !p.is_empty() {
            for g in self.combined.matches(format!("{p}/x")) {
                out[self.owner[g]] = true;
            }
        }
    }

    /// Judges `input` for `access` in `workspace`. Never touches file contents;
    /// reads only metadata to follow symlinks.
    pub fn check(&self, workspace: &Path, input: &str, access: Access) -> PathCheck {
        let deny = |reason: String| PathCheck {
            decision: Decision::Deny,
            relative: None,
            matched: vec![],
            reasons: vec![format!(
                "{}: {reason}",
                crate::call::sanitize_for_msg(input)
            )],
        };
        let lexical = match normalize(workspace, input) {
            Ok(p) => p,
            Err(r) => return deny(r),
        };
        // Where the kernel would land, following each symlink where it
        // stands (`link/..` is beside the link's target): judged too, and
        // what the file tools open.
        let resolved = match resolve(workspace, input) {
            Ok(p) => p,
            Err(r) => return deny(r),
        };
        let rel = lexical.join("/");
        let resolved_rel = resolved.join("/");
        let mut decision = match access {
            Access::Read => self.read_default,
            Access::Write => self.write_default,
        };
        let mut matched = Vec::new();
        let mut reasons = Vec::new();
        let mut any_match = false;
        // Judge both the name used and what it points at: a symlink to
        // `.env` is `.env`.
        let mut hits = vec![false; self.rules.len()];
        self.hits(&rel, &mut hits);
        if resolved_rel != rel {
            self.hits(&resolved_rel, &mut hits);
        }
        for (rule, hit) in self.rules.iter().zip(hits) {
            if !rule.access.covers(access) {
                continue;
            }
            if hit {
                if !any_match {
                    decision = rule.decision;
                    any_match = true;
                } else {
                    decision = decision.max(rule.decision);
                }
                matched.push(MatchedRule {
                    id: rule.id.clone(),
                    decision: rule.decision,
                    reason: rule.reason.clone(),
                    subject: if rel.is_empty() {
                        ".".into()
                    } else {
                        rel.clone()
                    },
                });
                if rule.decision > Decision::Allow {
                    reasons.push(format!("{}: {}", display(&rel), rule.reason));
                }
            }
        }
        if !any_match && decision > Decision::Allow {
            reasons.push(format!(
                "{}: no rule allows {} here (default {})",
                display(&rel),
                match access {
                    Access::Read => "reading",
                    Access::Write => "writing",
                },
                decision.as_str()
            ));
        }
        PathCheck {
            decision,
            relative: Some(rel),
            matched,
            reasons,
        }
    }
}

/// Most files a glob in a command may expand to before it counts as
/// unresolvable.
pub const GLOB_LIMIT: usize = 512;

/// Expands a shell glob inside the workspace the way the shell would when
/// the command runs, so each file it names can be judged. Returns the
/// workspace-relative matches (none when nothing matches or the pattern
/// leaves the workspace, which the literal check already refused), or
/// `None` when more than [`GLOB_LIMIT`] entries would have to be examined.
pub fn expand_glob(workspace: &Path, pattern: &str) -> Option<Vec<String>> {
    let Ok(parts) = normalize(workspace, pattern) else {
        return Some(Vec::new());
    };
    let mut current: Vec<String> = vec![String::new()];
    let mut examined = 0usize;
    for part in &parts {
        let is_glob = part.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for prefix in &current {
            let join = |name: &str| {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                }
            };
            if !is_glob {
                next.push(join(part));
                continue;
            }
            let Ok(glob) = compile_glob(part) else {
                return None;
            };
            let m = glob.compile_matcher();
            let Ok(rd) = std::fs::read_dir(workspace.join(prefix)) else {
                continue;
            };
            for entry in rd.flatten() {
                examined += 1;
                if examined > GLOB_LIMIT {
                    return None;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                // As in the shell: a dotfile matches only a pattern that
                // starts with a dot (`*` skips `.env`, `.e*` does not).
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if m.is_match(&name) {
                    next.push(join(&name));
                }
            }
        }
        current = next;
    }
    Some(current.into_iter().filter(|p| !p.is_empty()).collect())
}

fn display(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn normalizes_inside_and_refuses_escapes() {
        let d = ws();
        let w = d.path();
        assert_eq!(normalize(w, "a/./b/../c").unwrap(), vec!["a", "c"]);
        assert_eq!(normalize(w, ".").unwrap(), Vec::<String>::new());
        let abs = format!("{}/src/x", w.display());
        assert_eq!(normalize(w, &abs).unwrap(), vec!["src", "x"]);
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "~/.ssh/id_rsa",
            "~root/x",
            "$HOME/.bashrc",
            "${HOME}/x",
            "%2e%2e/x",
            "..%2fx",
            "a\\..\\..\\x",
            "a\0b",
            "a\nb",
            "\u{FF0E}\u{FF0E}/x",
            "\u{2024}\u{2024}/x",
            "a\u{2215}b",
            "\u{202E}txt.exe",
            "a\u{200B}b",
            "`id`",
        ] {
            assert!(normalize(w, bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn symlinks_resolving_outside_are_refused() {
        let d = ws();
        let outside = ws();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("s")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/zzz", d.path().join("dangling")).unwrap();
        std::fs::create_dir(d.path().join("in")).unwrap();
        std::os::unix::fs::symlink("in", d.path().join("alias")).unwrap();
        let w = d.path();
        for p in ["out/secret", "out", "s", "out/new-file", "dangling"] {
            assert!(resolve(w, p).is_err(), "{p} must not resolve inside");
        }
        assert_eq!(resolve(w, "alias/f").unwrap(), vec!["in", "f"]);
    }

    /// Issue 12: `..` after a symlink goes up from the link's target, as
    /// the kernel does; the lexical reading would stay inside.
    #[test]
    fn dot_dot_after_a_symlink_follows_the_kernel() {
        let d = ws();
        let w = d.path();
        std::os::unix::fs::symlink("/", w.join("escape_link")).unwrap();
        std::fs::create_dir_all(w.join("deep/er")).unwrap();
        std::os::unix::fs::symlink("deep/er", w.join("down")).unwrap();
        std::os::unix::fs::symlink("../..", w.join("deep/er/up2")).unwrap();
        std::os::unix::fs::symlink("loop2", w.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", w.join("loop2")).unwrap();
        // Lexically `etc/passwd` inside; for the kernel, /etc/passwd.
        assert_eq!(
            normalize(w, "escape_link/../etc/passwd").unwrap(),
            vec!["etc", "passwd"]
        );
        assert!(resolve(w, "escape_link/../etc/passwd").is_err());
        // `down/..` is `deep`, not the root.
        assert_eq!(resolve(w, "down/../x").unwrap(), vec!["deep", "x"]);
        // A relative link climbing out through its own `..`.
        assert!(resolve(w, "deep/er/up2/../y").is_err());
        assert_eq!(resolve(w, "deep/er/up2/z").unwrap(), vec!["z"]);
        assert!(
            resolve(w, "loop1/x")
                .unwrap_err()
                .contains("too many levels")
        );
        assert!(resolve(w, "missing/../x").is_err());
        let abs = format!("{}/down/../x", w.display());
        assert_eq!(resolve(w, &abs).unwrap(), vec!["deep", "x"]);
        // The policy judges the kernel's reading: denied, not allowed.
        let p = crate::Policy::builtin_default();
        let c = p
            .paths()
            .check(w, "escape_link/../etc/passwd", Access::Read);
        assert_eq!(c.decision, Decision::Deny, "{:?}", c.reasons);
    }
}
