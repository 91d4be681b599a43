//! Stage one of policy loading: the file as written. Every table refuses
//! unknown keys, so a typo is a load error rather than a silently ignored rule.
//! Values that need compiling (globs, regexes, sizes) keep their span so the
//! error can name the line.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: u32,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tools: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub input: RawInput,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub commands: RawCommands,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub backends: RawBackends,
    #[serde(default)]
    pub wasm: RawWasm,
    #[serde(default)]
    pub docker: RawDocker,
    #[serde(default)]
    pub native: RawNative,
    #[serde(default)]
    pub redaction: RawRedaction,
    #[serde(default)]
    pub audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub max_arg_bytes: Option<Spanned<String>>,
    pub flag_decision: Option<Spanned<String>>,
    /// Extra prompt-injection phrases (regexes) on top of the built-in set.
    #[serde(default)]
    pub injection_patterns: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExamples {
    #[serde(default, rename = "match")]
    pub must_match: Vec<String>,
    #[serde(default)]
    pub no_match: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub read_default: Option<Spanned<String>>,
    pub write_default: Option<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<Spanned<RawPathRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRule {
    pub id: Option<String>,
    pub globs: Vec<Spanned<String>>,
    #[serde(default = "any")]
    pub access: Spanned<String>,
    pub decision: Spanned<String>,
    pub reason: String,
    #[serde(default)]
    pub examples: RawExamples,
}

fn any() -> Spanned<String> {
    Spanned::new(0..0, "any".to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommands {
    pub default: Option<Spanned<String>>,
    pub unresolved: Option<Spanned<String>>,
    pub workspace_scripts: Option<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<Spanned<RawCommandRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommandRule {
    pub id: Option<String>,
    #[serde(default)]
    pub programs: Vec<String>,
    pub args: Option<Spanned<String>>,
    pub except_args: Option<Spanned<String>>,
    pub pattern: Option<Spanned<String>>,
    pub decision: Spanned<String>,
    /// The decision instead when `network.run_command = "allowlist"` (the
    /// egress proxy then lets only listed hosts be reached).
    pub under_allowlist: Option<Spanned<String>>,
    pub reason: String,
    #[serde(default)]
    pub examples: RawExamples,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub run_command: Option<Spanned<String>>,
    pub run_code: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub memory: Option<Spanned<String>>,
    pub cpu_time: Option<Spanned<String>>,
    pub wall_time: Option<Spanned<String>>,
    pub pids: Option<u32>,
    pub output_bytes: Option<Spanned<String>>,
    pub file_size: Option<Spanned<String>>,
    pub stage_bytes: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackends {
    pub run_command: Option<Spanned<String>>,
    pub python: Option<Spanned<String>>,
    pub javascript: Option<Spanned<String>>,
    pub sh: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWasm {
    pub workspace: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    pub image: Option<String>,
    pub workspace: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNative {
    pub workspace: Option<Spanned<String>>,
    pub expose: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedaction {
    pub enabled: Option<bool>,
    /// Globs over environment variable names whose values are host secrets.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Files whose contents (one secret per line) are host secrets.
    #[serde(default)]
    pub secret_files: Vec<String>,
    /// URLs to this machine pass the URL filter (default true).
    pub loopback_urls: Option<bool>,
    /// A gitleaks configuration whose rules are added to the built-in ones.
    pub rules_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<String>,
}

impl RawPolicy {
    /// Where a settings key was written, for error lines (0..0 when unknown).
    pub fn span_of(&self, key: &str) -> std::ops::Range<usize> {
        let v = match key {
            "limits.memory" => &self.limits.memory,
            "limits.cpu_time" => &self.limits.cpu_time,
            "limits.wall_time" => &self.limits.wall_time,
            "network.run_command" => &self.network.run_command,
            "network.run_code" => &self.network.run_code,
            _ => &None,
        };
        v.as_ref().map_or(0..0, |v| v.span())
    }
}
