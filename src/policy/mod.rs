//! Policy: decide whether a call may run. Pure — it never runs anything and
//! knows no transport; it reads file metadata only to follow symlinks.
//!
//! Loading is two-stage (`raw` → [`Policy`]): the raw serde structs refuse
//! unknown keys; validation compiles globs and regexes, parses sizes, checks
//! every rule's examples and refuses network modes a backend cannot enforce.
//! A `Policy` therefore cannot exist invalid.
//!
//! Evaluation collects every matching rule; the strictest decision wins
//! (`Deny > Ask > Allow`).

pub mod command;
pub mod fileargs;
pub mod inspect;
pub mod paths;
mod raw;
pub mod settings;
pub mod shell;
pub use crate::units;

use crate::call::{Command, Tool, ToolCall};
use command::{CommandPolicy, CommandRule};
use inspect::{Flag, Inspector};
use paths::{Access, AccessSel, PathPolicy, PathRule};
pub use paths::{FsView, ViewRule};
use serde::{Deserialize, Serialize};
pub use settings::{
    BackendChoice, BackendKind, DockerSettings, Limits, MountAccess, NativeSettings, NetworkMode,
    NetworkPolicy, Settings,
};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// The shipped default policy, embedded so the binary works with no files.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");
/// Shipped policies by name, for `--policy strict` and tests.
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    ("default", DEFAULT_POLICY),
    ("strict", include_str!("../../policies/strict.toml")),
    (
        "permissive-dev",
        include_str!("../../policies/permissive-dev.toml"),
    ),
];

/// Allow < Ask < Deny: `max` is "strictest wins".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Ask => "ask",
            Decision::Deny => "deny",
        }
    }

    fn parse(s: &str) -> Option<Decision> {
        match s {
            "allow" => Some(Decision::Allow),
            "ask" => Some(Decision::Ask),
            "deny" => Some(Decision::Deny),
            _ => None,
        }
    }
}

/// A rule that matched, with what it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedRule {
    pub id: String,
    pub decision: Decision,
    pub reason: String,
    pub subject: String,
}

/// The decision on one call and everything that led to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub decision: Decision,
    /// Why the decision is not `allow` (empty when allowed).
    pub reasons: Vec<String>,
    pub matched_rules: Vec<MatchedRule>,
    pub flags: Vec<Flag>,
    /// Whether every `ask` comes from a named rule, so a human may approve
    /// the rules for the rest of a session. An ask raised by something
    /// unnamed — a construct that cannot be resolved, a program or path no
    /// rule covers, flagged input, a tool-level setting — is asked again
    /// every time.
    #[serde(skip)]
    pub session_approvable: bool,
}

/// Errors loading a policy; each names the file and, where known, the line and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A change through [`Policy::with`] that the loader would refuse.
    #[error("{file}: change refused: {key}: {message}")]
    Change {
        file: String,
        key: String,
        message: String,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct RedactionSettings {
    pub enabled: bool,
    pub secret_env: Vec<String>,
    pub secret_files: Vec<String>,
    /// URLs to this machine (localhost, 127.0.0.0/8, ::1) pass the URL
    /// filter.
    pub loopback_urls: bool,
    /// Rules read from `rules_file` (a gitleaks configuration), checked
    /// when the policy loaded.
    pub rules: Vec<crate::filter::RuleSpec>,
}

/// A validated policy. It cannot exist invalid: its fields are private,
/// it is made only by [`Policy::from_toml`] / [`Policy::load`], and changed
/// only through [`Policy::with`], which validates again.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from (file path or `built-in:NAME`), for messages.
    source: String,
    description: String,
    tools: BTreeMap<String, Decision>,
    max_arg_bytes: usize,
    flag_decision: Decision,
    inspector: Inspector,
    paths: PathPolicy,
    commands: CommandPolicy,
    settings: Settings,
    redaction: RedactionSettings,
    audit_path: Option<String>,
}

/// Converts byte spans to line numbers for error messages.
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    /// Reads and checks the gitleaks rules file a policy names (a
    /// relative path is taken from the current directory).
    fn gitleaks_rules(
        &self,
        f: &toml::Spanned<String>,
    ) -> Result<Vec<crate::filter::RuleSpec>, PolicyError> {
        let key = "redaction.rules_file";
        let text = std::fs::read_to_string(f.get_ref())
            .map_err(|e| self.err(f.span(), key, format!("{}: {e}", f.get_ref())))?;
        let rules = crate::filter::gitleaks::parse(&text)
            .map_err(|e| self.err(f.span(), key, format!("{}: {e}", f.get_ref())))?;
        crate::filter::Redactor::with_rules(&[], None, &rules)
            .map_err(|e| self.err(f.span(), key, format!("{}: {e}", f.get_ref())))?;
        Ok(rules)
    }

    fn err(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_string(),
            line: self.line(span),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn decision(&self, v: &Spanned<String>, key: &str) -> Result<Decision, PolicyError> {
        Decision::parse(v.get_ref()).ok_or_else(|| {
            self.err(
                v.span(),
                key,
                format!("{:?} is not allow, ask or deny", v.get_ref()),
            )
        })
    }

    fn opt_decision(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Decision,
    ) -> Result<Decision, PolicyError> {
        v.as_ref().map_or(Ok(default), |v| self.decision(v, key))
    }

    fn size(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: u64,
    ) -> Result<u64, PolicyError> {
        match v {
            None => Ok(default),
            Some(v) => units::parse_size(v.get_ref()).map_err(|m| self.err(v.span(), key, m)),
        }
    }

    fn duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, PolicyError> {
        match v {
            None => Ok(default),
            Some(v) => units::parse_duration(v.get_ref()).map_err(|m| self.err(v.span(), key, m)),
        }
    }

    fn regex(&self, v: &Spanned<String>, key: &str) -> Result<regex::Regex, PolicyError> {
        regex::RegexBuilder::new(v.get_ref())
            .size_limit(1 << 20)
            .build()
            .map_err(|e| self.err(v.span(), key, format!("invalid regex: {e}")))
    }

    fn network(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        hosts: &[String],
    ) -> Result<NetworkMode, PolicyError> {
        match v.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("none", _)) => Ok(NetworkMode::None),
            Some(("open", span)) => {
                crate::hosts::HostList::parse(hosts)
                    .map_err(|e| self.err(span.clone(), key, e.to_string()))?;
                Ok(NetworkMode::Open(hosts.to_vec()))
            }
            Some(("allowlist", span)) => {
                if hosts.is_empty() {
                    return Err(self.err(span, key, "allowlist mode needs network.allow_hosts"));
                }
                crate::hosts::HostList::parse(hosts)
                    .map_err(|e| self.err(span.clone(), key, e.to_string()))?;
                Ok(NetworkMode::Allowlist(hosts.to_vec()))
            }
            Some((other, span)) => Err(self.err(
                span,
                key,
                format!("{other:?} is not none, allowlist or open"),
            )),
        }
    }

    fn backend(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: BackendKind,
    ) -> Result<BackendKind, PolicyError> {
        match v {
            None => Ok(default),
            Some(v) => BackendKind::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    key,
                    format!("{:?} is not wasm, docker or native", v.get_ref()),
                )
            }),
        }
    }

    fn mount(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: MountAccess,
    ) -> Result<MountAccess, PolicyError> {
        match v.as_ref().map(|v| v.get_ref().as_str()) {
            None => Ok(default),
            Some("ro" | "read-only") => Ok(MountAccess::ReadOnly),
            Some("rw" | "read-write") => Ok(MountAccess::ReadWrite),
            Some(other) => Err(self.err(
                v.as_ref().map_or(0..0, |v| v.span()),
                key,
                format!("{other:?} is not ro or rw"),
            )),
        }
    }
}

impl Policy {
    /// Where it came from (file path or `built-in:NAME`), for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Largest argument (string) a call may carry.
    pub fn max_arg_bytes(&self) -> usize {
        self.max_arg_bytes
    }

    /// Limits, backends, network and mounts.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    pub fn backends(&self) -> &BackendChoice {
        &self.settings.backends
    }

    pub fn network(&self) -> &NetworkPolicy {
        &self.settings.network
    }

    pub fn redaction(&self) -> &RedactionSettings {
        &self.redaction
    }

    /// The audit log the policy names, if any.
    pub fn audit_path(&self) -> Option<&str> {
        self.audit_path.as_deref()
    }

    /// The path rules (read by the sandboxes' filesystem view).
    pub fn paths(&self) -> &PathPolicy {
        &self.paths
    }

    /// A copy with its settings changed by `edit`, validated again: a change
    /// the loader would refuse (a 1 MiB memory cap, sh on wasm, a network
    /// mode the backend cannot enforce) is refused here too.
    pub fn with(&self, edit: impl FnOnce(&mut Settings)) -> Result<Policy, PolicyError> {
        let mut p = self.clone();
        edit(&mut p.settings);
        p.settings
            .validate()
            .map_err(|(key, message)| PolicyError::Change {
                file: p.source.clone(),
                key: key.to_string(),
                message,
            })?;
        Ok(p)
    }

    /// The embedded `policies/default.toml`.
    pub fn builtin_default() -> Policy {
        match Policy::from_toml(DEFAULT_POLICY, "built-in:default") {
            Ok(p) => p,
            // The shipped file is checked by tests; reaching this is a build defect.
            Err(e) => panic!("embedded default policy is invalid: {e}"),
        }
    }

    /// Loads a policy file, or a built-in one by name (`default`, `strict`, `permissive-dev`).
    pub fn load(spec: &str) -> Result<Policy, PolicyError> {
        if let Some((name, text)) = BUILTIN_POLICIES.iter().find(|(n, _)| *n == spec) {
            return Policy::from_toml(text, &format!("built-in:{name}"));
        }
        let text = std::fs::read_to_string(spec).map_err(|source| PolicyError::Io {
            path: spec.to_string(),
            source,
        })?;
        Policy::from_toml(&text, spec)
    }

    /// Parses and validates policy text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Policy, PolicyError> {
        let raw: raw::RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            file: file.to_string(),
            message: e.to_string().trim().replace('\n', " ").replace("  ", " "),
        })?;
        let cx = Ctx { file, text };
        if raw.version != 1 {
            return Err(cx.err(
                0..0,
                "version",
                format!("unsupported policy version {} (expected 1)", raw.version),
            ));
        }

        let mut tools = BTreeMap::new();
        for (name, d) in &raw.tools {
            if !crate::call::TOOL_NAMES.contains(&name.as_str()) {
                return Err(cx.err(d.span(), &format!("tools.{name}"), "unknown tool"));
            }
            tools.insert(name.clone(), cx.decision(d, &format!("tools.{name}"))?);
        }

        let inj: Vec<String> = raw
            .input
            .injection_patterns
            .iter()
            .map(|p| p.get_ref().clone())
            .collect();
        for (i, p) in raw.input.injection_patterns.iter().enumerate() {
            cx.regex(p, &format!("input.injection_patterns[{i}]"))?;
        }
        let inspector = Inspector::new(&inj)
            .map_err(|e| cx.err(0..0, "input.injection_patterns", e.to_string()))?;

        let paths = Self::path_policy(&cx, &raw.paths)?;
        // Commands whose only danger is the network are judged again when
        // the network is the egress proxy's (rules' `under_allowlist`).
        let egress = raw
            .network
            .run_command
            .as_ref()
            .is_some_and(|v| v.get_ref() == "allowlist");
        let commands = Self::command_policy(&cx, &raw.commands, egress)?;

        let settings = Self::parse_settings(&cx, &raw)?;
        if let Err((key, message)) = settings.validate() {
            return Err(cx.err(raw.span_of(key), key, message));
        }

        for g in &raw.redaction.secret_env {
            paths::compile_glob(g)
                .map_err(|e| cx.err(0..0, "redaction.secret_env", e.to_string()))?;
        }

        Ok(Policy {
            source: file.to_string(),
            description: raw.description.clone(),
            tools,
            max_arg_bytes: cx.size(&raw.input.max_arg_bytes, "input.max_arg_bytes", 256 << 10)?
                as usize,
            flag_decision: cx.opt_decision(
                &raw.input.flag_decision,
                "input.flag_decision",
                Decision::Ask,
            )?,
            inspector,
            paths,
            commands,
            settings,
            redaction: RedactionSettings {
                enabled: raw.redaction.enabled.unwrap_or(true),
                secret_env: raw.redaction.secret_env.clone(),
                secret_files: raw.redaction.secret_files.clone(),
                loopback_urls: raw.redaction.loopback_urls.unwrap_or(true),
                rules: match &raw.redaction.rules_file {
                    None => vec![],
                    Some(f) => cx.gitleaks_rules(f)?,
                },
            },
            audit_path: raw.audit.path.clone(),
        })
    }

    /// Limits, backends, network and mounts from the raw file (each value
    /// parsed; the cross-checks are [`Settings::validate`]).
    fn parse_settings(cx: &Ctx, raw: &raw::RawPolicy) -> Result<Settings, PolicyError> {
        let defaults = Limits::default();
        let limits = Limits {
            memory_bytes: cx.size(&raw.limits.memory, "limits.memory", defaults.memory_bytes)?,
            cpu_time: cx.duration(&raw.limits.cpu_time, "limits.cpu_time", defaults.cpu_time)?,
            wall_time: cx.duration(
                &raw.limits.wall_time,
                "limits.wall_time",
                defaults.wall_time,
            )?,
            pids: raw.limits.pids.unwrap_or(defaults.pids),
            output_bytes: cx.size(
                &raw.limits.output_bytes,
                "limits.output_bytes",
                defaults.output_bytes,
            )?,
            file_size: cx.size(
                &raw.limits.file_size,
                "limits.file_size",
                defaults.file_size,
            )?,
            stage_bytes: cx.size(
                &raw.limits.stage_bytes,
                "limits.stage_bytes",
                defaults.stage_bytes,
            )?,
        };
        let backends = BackendChoice {
            run_command: cx.backend(
                &raw.backends.run_command,
                "backends.run_command",
                BackendKind::Docker,
            )?,
            python: cx.backend(&raw.backends.python, "backends.python", BackendKind::Wasm)?,
            javascript: cx.backend(
                &raw.backends.javascript,
                "backends.javascript",
                BackendKind::Wasm,
            )?,
            sh: cx.backend(&raw.backends.sh, "backends.sh", BackendKind::Docker)?,
        };
        let network = NetworkPolicy {
            run_command: cx.network(
                &raw.network.run_command,
                "network.run_command",
                &raw.network.allow_hosts,
            )?,
            run_code: cx.network(
                &raw.network.run_code,
                "network.run_code",
                &raw.network.allow_hosts,
            )?,
            allow_hosts: raw.network.allow_hosts.clone(),
        };
        let settings = Settings {
            limits,
            backends,
            network,
            wasm_workspace: cx.mount(
                &raw.wasm.workspace,
                "wasm.workspace",
                MountAccess::ReadOnly,
            )?,
            docker: DockerSettings {
                image: raw
                    .docker
                    .image
                    .clone()
                    .unwrap_or_else(|| "toolgate-python:bookworm".into()),
                workspace: cx.mount(
                    &raw.docker.workspace,
                    "docker.workspace",
                    MountAccess::ReadOnly,
                )?,
            },
            native: Self::native_settings(cx, &raw.native)?,
        };
        Ok(settings)
    }

    fn native_settings(cx: &Ctx, raw: &raw::RawNative) -> Result<NativeSettings, PolicyError> {
        let d = NativeSettings::default();
        let expose = raw.expose.clone().unwrap_or_default();
        for (i, p) in expose.iter().enumerate() {
            // Absolute or under `~/`, never `..`: the list names what the
            // sandbox may read, so it must say it plainly.
            let plain =
                (p.starts_with('/') || p.starts_with("~/")) && !p.split('/').any(|c| c == "..");
            if !plain {
                return Err(cx.err(
                    0..0,
                    &format!("native.expose[{i}]"),
                    format!("{p:?} is not an absolute path or ~/path without .."),
                ));
            }
        }
        let env = raw.env.clone().unwrap_or(d.env);
        for (i, n) in env.iter().enumerate() {
            let ok = !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || ["HOME", "TMPDIR"].contains(&n.as_str()) {
                return Err(cx.err(
                    0..0,
                    &format!("native.env[{i}]"),
                    format!("{n:?} is not a variable name the sandbox may take from the host (HOME and TMPDIR are the sandbox's own)"),
                ));
            }
        }
        Ok(NativeSettings {
            workspace: cx.mount(&raw.workspace, "native.workspace", d.workspace)?,
            expose,
            env,
        })
    }

    fn path_policy(cx: &Ctx, raw: &raw::RawPaths) -> Result<PathPolicy, PolicyError> {
        let mut rules = Vec::new();
        let mut patterns = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let key = format!("paths.rules[{i}]");
            let span = r.span();
            let r = r.get_ref();
            if r.globs.is_empty() {
                return Err(cx.err(span, &key, "globs is empty"));
            }
            if r.reason.trim().is_empty() {
                return Err(cx.err(span, &key, "every rule needs a reason"));
            }
            let mut b = globset::GlobSetBuilder::new();
            for g in &r.globs {
                b.add(paths::compile_glob(g.get_ref()).map_err(|e| {
                    cx.err(
                        g.span(),
                        &format!("{key}.globs"),
                        format!("invalid glob: {e}"),
                    )
                })?);
            }
            let globs = b
                .build()
                .map_err(|e| cx.err(span.clone(), &key, e.to_string()))?;
            let access = match r.access.get_ref().as_str() {
                "read" => AccessSel::Read,
                "write" => AccessSel::Write,
                "any" => AccessSel::Any,
                other => {
                    return Err(cx.err(
                        r.access.span(),
                        &format!("{key}.access"),
                        format!("{other:?} is not read, write or any"),
                    ));
                }
            };
            for ex in &r.examples.must_match {
                if !globs.is_match(ex) {
                    return Err(cx.err(
                        span.clone(),
                        &format!("{key}.examples.match"),
                        format!("example {ex:?} does not match the rule"),
                    ));
                }
            }
            for ex in &r.examples.no_match {
                if globs.is_match(ex) {
                    return Err(cx.err(
                        span.clone(),
                        &format!("{key}.examples.no_match"),
                        format!("example {ex:?} matches the rule"),
                    ));
                }
            }
            patterns.push(
                r.globs
                    .iter()
                    .map(|g| g.get_ref().clone())
                    .collect::<Vec<_>>(),
            );
            rules.push(PathRule {
                id: r.id.clone().unwrap_or(key.clone()),
                globs,
                access,
                decision: cx.decision(&r.decision, &format!("{key}.decision"))?,
                reason: r.reason.clone(),
            });
        }
        // Deny by default: a policy that says nothing about paths grants nothing.
        let read_default =
            cx.opt_decision(&raw.read_default, "paths.read_default", Decision::Deny)?;
        let write_default =
            cx.opt_decision(&raw.write_default, "paths.write_default", Decision::Deny)?;
        PathPolicy::new(read_default, write_default, rules, &patterns)
            .map_err(|e| cx.err(0..0, "paths.rules", e.to_string()))
    }

    fn command_policy(
        cx: &Ctx,
        raw: &raw::RawCommands,
        egress: bool,
    ) -> Result<CommandPolicy, PolicyError> {
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let key = format!("commands.rules[{i}]");
            let span = r.span();
            let r = r.get_ref();
            if r.programs.is_empty() && r.args.is_none() && r.pattern.is_none() {
                return Err(cx.err(span, &key, "a rule needs programs, args or pattern"));
            }
            if r.reason.trim().is_empty() {
                return Err(cx.err(span, &key, "every rule needs a reason"));
            }
            let rule = CommandRule {
                id: r.id.clone().unwrap_or(key.clone()),
                programs: r.programs.clone(),
                args: r
                    .args
                    .as_ref()
                    .map(|a| cx.regex(a, &format!("{key}.args")))
                    .transpose()?,
                except_args: r
                    .except_args
                    .as_ref()
                    .map(|a| cx.regex(a, &format!("{key}.except_args")))
                    .transpose()?,
                pattern: r
                    .pattern
                    .as_ref()
                    .map(|a| cx.regex(a, &format!("{key}.pattern")))
                    .transpose()?,
                decision: cx.decision(&r.decision, &format!("{key}.decision"))?,
                reason: r.reason.clone(),
            };
            let under = r
                .under_allowlist
                .as_ref()
                .map(|d| cx.decision(d, &format!("{key}.under_allowlist")))
                .transpose()?;
            let rule = match under {
                Some(d) if egress => CommandRule {
                    decision: d,
                    reason: format!(
                        "{} (network = \"allowlist\": only network.allow_hosts are reachable)",
                        rule.reason
                    ),
                    ..rule
                },
                _ => rule,
            };
            // Examples are judged against this rule alone, through the real parser.
            let single = CommandPolicy {
                default: Decision::Allow,
                unresolved: Decision::Allow,
                workspace_scripts: Decision::Allow,
                rules: vec![rule.clone()],
            };
            let hits = |ex: &str| {
                let mut m = Vec::new();
                single.judge(
                    &command::analyse_shell(ex),
                    &mut m,
                    &mut Vec::new(),
                    &mut Decision::Allow,
                );
                !m.is_empty()
            };
            for ex in &r.examples.must_match {
                if !hits(ex) {
                    return Err(cx.err(
                        span.clone(),
                        &format!("{key}.examples.match"),
                        format!("example {ex:?} does not match the rule"),
                    ));
                }
            }
            for ex in &r.examples.no_match {
                if hits(ex) {
                    return Err(cx.err(
                        span.clone(),
                        &format!("{key}.examples.no_match"),
                        format!("example {ex:?} matches the rule"),
                    ));
                }
            }
            rules.push(rule);
        }
        let unresolved = cx.opt_decision(&raw.unresolved, "commands.unresolved", Decision::Ask)?;
        if unresolved == Decision::Allow {
            return Err(cx.err(
                raw.unresolved.as_ref().map_or(0..0, |v| v.span()),
                "commands.unresolved",
                "what cannot be resolved statically is never allowed: use ask or deny",
            ));
        }
        let default = cx.opt_decision(&raw.default, "commands.default", Decision::Deny)?;
        Ok(CommandPolicy {
            default,
            unresolved,
            workspace_scripts: cx.opt_decision(
                &raw.workspace_scripts,
                "commands.workspace_scripts",
                default,
            )?,
            rules,
        })
    }

    /// Refuses arguments over `input.max_arg_bytes` (bad input, not a verdict).
    pub fn check_sizes(&self, call: &ToolCall) -> Result<(), crate::call::CallError> {
        for (arg, s) in call.tool.strings() {
            if s.len() > self.max_arg_bytes {
                return Err(crate::call::CallError::Args {
                    tool: call.tool.name(),
                    detail: format!(
                        "argument `{arg}` is {} bytes, over the policy's {}-byte limit",
                        s.len(),
                        self.max_arg_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Judges a call. Pure: no side effects, nothing runs.
    pub fn evaluate(&self, call: &ToolCall, workspace: &Path) -> Verdict {
        let mut v = Eval::new();
        let tool = call.tool.name();
        match self.tools.get(tool) {
            Some(d) => {
                v.raise_unnamed(*d);
                if *d > Decision::Allow {
                    v.reasons.push(format!(
                        "tool `{tool}` is set to {} by the policy",
                        d.as_str()
                    ));
                }
            }
            None => {
                v.raise(Decision::Deny);
                v.reasons
                    .push(format!("tool `{tool}` is not enabled by the policy"));
            }
        }
        // Inspect every string argument.
        let mut flags = Vec::new();
        for (arg, s) in call.tool.strings() {
            let text_like = matches!(arg, "content" | "code" | "stdin" | "files.content");
            if s.contains('\0') {
                v.raise(Decision::Deny);
                v.reasons
                    .push(format!("argument `{arg}` contains a NUL byte"));
            } else if !text_like && s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                v.raise(Decision::Deny);
                v.reasons
                    .push(format!("argument `{arg}` contains a control character"));
            }
            self.inspector.inspect(arg, s, &mut flags);
        }
        if !flags.is_empty() {
            v.raise_unnamed(self.flag_decision);
            for f in &flags {
                v.reasons
                    .push(format!("suspicious input in `{}`: {}", f.arg, f.detail));
            }
        }
        v.flags = flags;

        match &call.tool {
            Tool::ReadFile(a) => v.path(self, workspace, &a.path, Access::Read),
            Tool::ListDir(a) => v.path(self, workspace, &a.path, Access::Read),
            Tool::WriteFile(a) => {
                v.path(self, workspace, &a.path, Access::Write);
                if a.content.len() as u64 > self.settings.limits.file_size {
                    v.raise(Decision::Deny);
                    v.reasons.push(format!(
                        "content is {} bytes, over the {}-byte file size limit",
                        a.content.len(),
                        self.settings.limits.file_size
                    ));
                }
            }
            Tool::RunCommand(a) => {
                let an = match &a.command {
                    Command::Shell(s) => command::analyse_shell(s),
                    Command::Argv(argv) => command::analyse_argv(argv),
                };
                v.commands(self, workspace, a.cwd.as_deref(), &an);
                if let Some(cwd) = &a.cwd {
                    v.path(self, workspace, cwd, Access::Read);
                }
            }
            Tool::RunCode(a) => {
                if a.language == crate::call::Language::Sh {
                    v.commands(self, workspace, None, &command::analyse_shell(&a.code));
                }
                for f in &a.files {
                    v.path(self, workspace, &f.path, Access::Write);
                }
            }
        }
        Verdict {
            decision: v.decision,
            reasons: dedup(v.reasons),
            matched_rules: v.matched,
            flags: v.flags,
            session_approvable: v.unnamed == Decision::Allow,
        }
    }
}

/// `v` without repeats, first occurrences kept in order.
pub(crate) fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Accumulator for one evaluation; the decision only ever rises.
struct Eval {
    decision: Decision,
    /// The strictest decision not explained by a named rule.
    unnamed: Decision,
    reasons: Vec<String>,
    matched: Vec<MatchedRule>,
    flags: Vec<Flag>,
}

impl Eval {
    fn new() -> Eval {
        Eval {
            decision: Decision::Allow,
            unnamed: Decision::Allow,
            reasons: Vec::new(),
            matched: Vec::new(),
            flags: Vec::new(),
        }
    }

    fn raise(&mut self, d: Decision) {
        self.decision = self.decision.max(d);
    }

    /// Raises the decision for a reason no named rule gives.
    fn raise_unnamed(&mut self, d: Decision) {
        self.raise(d);
        self.unnamed = self.unnamed.max(d);
    }

    fn path(&mut self, p: &Policy, ws: &Path, input: &str, access: Access) {
        let c = p.paths.check(ws, input, access);
        // Without a matching rule the decision is the default or a refusal.
        if c.matched.is_empty() {
            self.raise_unnamed(c.decision);
        } else {
            self.raise(c.decision);
        }
        self.matched.extend(c.matched);
        self.reasons.extend(c.reasons);
    }

    fn commands(&mut self, p: &Policy, ws: &Path, cwd: Option<&str>, an: &command::Analysis) {
        let d = p
            .commands
            .judge(an, &mut self.matched, &mut self.reasons, &mut self.unnamed);
        self.raise(d);
        for arg in &an.paths {
            // Relative names are relative to the call's working directory.
            let path = match cwd {
                Some(c) if !arg.path.starts_with('/') && !arg.path.starts_with('~') => {
                    format!("{}/{}", c.trim_end_matches('/'), arg.path)
                }
                _ => arg.path.clone(),
            };
            self.path(p, ws, &path, arg.access);
            if arg.glob {
                // The shell hands the program what the glob matches: judge
                // those files too (`cat .e*` reads `.env`).
                match paths::expand_glob(ws, &path) {
                    Some(found) => {
                        for f in found {
                            self.path(p, ws, &f, arg.access);
                        }
                    }
                    None => {
                        self.raise_unnamed(p.commands.unresolved);
                        self.reasons.push(format!(
                            "cannot resolve statically: `{}` matches too many files to judge",
                            crate::call::sanitize_for_msg(&path)
                        ));
                    }
                }
            }
        }
    }
}

impl Verdict {
    /// Whether the verdict lets the call proceed without a human.
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}
