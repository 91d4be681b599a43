//! The Outcome: what a call returns to the agent, as JSON.

use crate::plan::BackendKind;
use crate::policy::Decision;
use serde::Serialize;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It ran to an exit; see `exit_code` (which may be non-zero).
    Completed,
    /// Refused by policy, by a human, or by an expired confirmation.
    Denied,
    /// Stopped by a limit or a trap; see `limits_hit`.
    Killed,
    /// The tool could not do its job (file not found, not a directory, …).
    Failed,
}

/// Which limit stopped or shaped a run. Never a generic error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHit {
    TimeoutCpu,
    TimeoutWall,
    Memory,
    Pids,
    OutputTruncated,
    /// The guest trapped (e.g. stack overflow in the interpreter): killed, output untrusted.
    Trap,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Denied => "denied",
            Status::Killed => "killed",
            Status::Failed => "failed",
        }
    }
}

impl LimitHit {
    /// The name in JSON and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::TimeoutCpu => "timeout_cpu",
            LimitHit::TimeoutWall => "timeout_wall",
            LimitHit::Memory => "memory",
            LimitHit::Pids => "pids",
            LimitHit::OutputTruncated => "output_truncated",
            LimitHit::Trap => "trap",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Truncation {
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub id: String,
    pub tool: String,
    pub decision: Decision,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: Truncation,
    pub limits_hit: Vec<LimitHit>,
    /// Set when the guest died in a way that may have corrupted its own output.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_untrusted: bool,
    pub duration_ms: f64,
    /// CPU time the sandbox used, where the backend measures it (wasm: the
    /// guest thread; docker: the container's cgroup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<crate::gate::Answer>,
    /// What the sandbox did to the workspace (its private copy), each change
    /// judged by the write rules: applied, discarded or confirmed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FileChange>,
    /// Files a `run_code` call created or changed and the write rules let
    /// into the workspace (figures, tables, reports), described and, when
    /// small, inlined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// What the output filter removed (kinds and counts, never values).
    #[serde(skip_serializing_if = "crate::filter::Report::is_empty")]
    pub redactions: crate::filter::Report,
    /// Each connection the sandbox asked the egress proxy for, allowed or
    /// refused (under `network = "allowlist"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Egress>,
}

/// One decision of the egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Egress {
    /// `connect` (a tunnel) or `http` (a forwarded request).
    pub kind: &'static str,
    pub host: String,
    pub port: u16,
    /// The address dialled, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A file a call left in the workspace, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifact {
    /// Workspace-relative.
    pub path: String,
    /// From the name: `image/png`, `text/csv`, … (`application/octet-stream` otherwise).
    pub media_type: &'static str,
    pub size: u64,
    pub sha256: String,
    /// An image's bytes, when it is at most [`Artifact::INLINE_IMAGE`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// A text file's content, filtered like the output, when it is at most
    /// [`Artifact::INLINE_TEXT`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Artifact {
    /// Largest image inlined (base64).
    pub const INLINE_IMAGE: u64 = 512 << 10;
    /// Largest text file inlined.
    pub const INLINE_TEXT: u64 = 64 << 10;
    /// Most artifacts one call reports.
    pub const MAX: usize = 16;

    /// The media type a file's name says, and whether it is an image or text.
    pub fn media_type(path: &str) -> (&'static str, Inline) {
        let ext = path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" => ("image/png", Inline::Image),
            "jpg" | "jpeg" => ("image/jpeg", Inline::Image),
            "gif" => ("image/gif", Inline::Image),
            "webp" => ("image/webp", Inline::Image),
            "svg" => ("image/svg+xml", Inline::Text),
            "csv" => ("text/csv", Inline::Text),
            "tsv" => ("text/tab-separated-values", Inline::Text),
            "json" => ("application/json", Inline::Text),
            "txt" | "log" => ("text/plain", Inline::Text),
            "md" => ("text/markdown", Inline::Text),
            "html" | "htm" => ("text/html", Inline::Text),
            "xml" => ("application/xml", Inline::Text),
            "pdf" => ("application/pdf", Inline::No),
            _ => ("application/octet-stream", Inline::No),
        }
    }
}

/// How an artifact's content may come back inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inline {
    Image,
    Text,
    No,
}

/// One change a sandbox made to its copy of the workspace, and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Workspace-relative.
    pub path: String,
    /// `create`, `modify`, `delete`, `chmod` or `replace`.
    pub action: &'static str,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    pub decision: Decision,
    /// Whether the workspace now has it.
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Outcome {
    pub(crate) fn new(id: &str, tool: &str, decision: Decision, status: Status) -> Outcome {
        Outcome {
            id: id.to_string(),
            tool: tool.to_string(),
            decision,
            status,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: Truncation::default(),
            limits_hit: Vec::new(),
            output_untrusted: false,
            artifacts: Vec::new(),
            duration_ms: 0.0,
            cpu_ms: None,
            backend: None,
            reasons: Vec::new(),
            error: None,
            confirmation: None,
            changes: Vec::new(),
            redactions: crate::filter::Report::default(),
            egress: Vec::new(),
        }
    }

    /// Ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.status == Status::Completed && self.exit_code.unwrap_or(0) == 0
    }

    /// What a person at a terminal is told beside the program's own output:
    /// the reasons, the limits hit, the error.
    pub fn notes(&self) -> Vec<String> {
        let mut v = self.reasons.clone();
        if !self.limits_hit.is_empty() {
            let hits: Vec<&str> = self.limits_hit.iter().map(|h| h.as_str()).collect();
            v.push(format!("limits hit: {}", hits.join(", ")));
        }
        v.extend(self.error.clone());
        v
    }
}
