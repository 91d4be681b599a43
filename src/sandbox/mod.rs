//! Sandboxes: where allowed calls run. One trait, several backends.
//!
//! Backends receive a [`Plan`] (limits, mounts, network, runtime or image)
//! and a [`Job`] (what to run) — never the policy. Each backend owns its
//! isolation and must report which limit stopped a run.

pub mod docker;
pub mod egress;
pub mod hostfs;
pub mod images;
#[cfg(target_os = "linux")]
pub mod native;
pub mod pool;
pub mod session;
pub mod stage;
pub mod wasm;

use crate::call::{Command, Language};
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, Plan};
pub use session::SessionInfo;
use std::time::Duration;

/// Errors of running something in a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The backend is not built, configured or reachable. Exit code 4.
    #[error("backend {backend} is not available: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// A runtime (interpreter) is missing or corrupt. Exit code 4.
    #[error("runtime {name}: {detail}")]
    Runtime { name: String, detail: String },
    /// The job is not something this backend can run (bad input). Exit code 2.
    #[error("{0}")]
    Unsupported(String),
    /// The workspace cannot be given to the sandbox (gone, not a directory).
    /// Exit code 2, HTTP 400: the caller's input, not toolgate, is wrong.
    #[error("workspace {path}: {detail}")]
    Workspace { path: String, detail: String },
    /// The sandbox itself failed (not the guest). Exit code 70.
    #[error("sandbox failure in {op}: {detail}")]
    Internal { op: &'static str, detail: String },
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Program {
    Code { language: Language, code: String },
    Command(Command),
}

#[derive(Debug, Clone)]
pub struct Job {
    pub program: Program,
    pub stdin: Option<String>,
    /// Working directory relative to the workspace.
    pub cwd: Option<String>,
    /// A turn of this session (python on wasm or docker), with its owner.
    pub session: Option<SessionRef>,
}

/// Which session a job is a turn of: sessions are keyed by owner and name,
/// so two principals' sessions of one name are two sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionRef {
    pub principal: String,
    pub name: String,
}

/// The workspace components of a call's `cwd`, which must name a folder
/// in the sandbox's view of the workspace (`host`: the stage or mount it is
/// given): a missing one is the caller's mistake, said before anything runs.
pub(crate) fn working_dir(host: &std::path::Path, cwd: &str) -> Result<Vec<String>, SandboxError> {
    let parts = crate::workpath::resolve(host, cwd)
        .map_err(|e| SandboxError::Unsupported(format!("cwd {cwd}: {e}")))?;
    if !parts
        .iter()
        .fold(host.to_path_buf(), |p, c| p.join(c))
        .is_dir()
    {
        return Err(SandboxError::Workspace {
            path: crate::call::truncate_for_msg(cwd),
            detail: "the working directory is not a folder in the workspace".into(),
        });
    }
    Ok(parts)
}

/// The argv of a command: a shell line runs under `/bin/sh -c`.
pub(crate) fn command_argv(c: &Command) -> Result<Vec<String>, SandboxError> {
    match c {
        Command::Shell(s) => Ok(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
        Command::Argv(v) if !v.is_empty() => Ok(v.clone()),
        Command::Argv(_) => Err(SandboxError::Unsupported("empty argv".into())),
    }
}

/// The value of `key` in a cgroup `key value` file (`memory.events`,
/// `pids.events`, `memory.oom_control`, `cpu.stat`), if readable.
pub(crate) fn cgroup_counter(path: &std::path::Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// What came back from a sandbox, before filtering.
#[derive(Debug, Clone, Default)]
pub struct RawOutput {
    /// None when killed before exiting.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub limits_hit: Vec<LimitHit>,
    pub output_untrusted: bool,
    /// Why the guest died, when it did not exit by itself.
    pub detail: Option<String>,
    pub duration: Duration,
    /// CPU time the guest used, when the backend can measure it.
    pub cpu_time: Option<Duration>,
    /// What the caller should know beyond the output (a session opened).
    pub notes: Vec<String>,
    /// The egress proxy's decisions, under a host allowlist.
    pub egress: Vec<egress::Event>,
}

/// A sandbox backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Runs one job under `plan`. The guest's failures (non-zero exit, a
    /// limit) are a normal `RawOutput`; `Err` means the sandbox failed.
    async fn execute(&self, plan: &Plan, job: &Job) -> Result<RawOutput, SandboxError>;

    /// Releases what the backend holds (pooled sandboxes, pending cleanup).
    async fn shutdown(&self) {}

    /// The uid and gid the sandbox's code runs as, when they are not
    /// toolgate's own: a staged workspace is given to them.
    fn sandbox_user(&self) -> Option<(u32, u32)> {
        None
    }

    /// Warm sandboxes ready for a call (for metrics).
    fn warm(&self) -> usize {
        0
    }

    /// `principal`'s sessions on this backend, open and ended.
    fn sessions(&self, _principal: &str) -> Vec<SessionInfo> {
        Vec::new()
    }

    /// Closes `principal`'s session `name`; `None` if it has none here.
    fn close_session(&self, _principal: &str, _name: &str) -> Option<SessionInfo> {
        None
    }
}

/// A backend that could not be set up: every call gets the same clear error.
pub struct Unavailable {
    pub backend: &'static str,
    pub detail: String,
}

#[async_trait::async_trait]
impl Backend for Unavailable {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    async fn execute(&self, _: &Plan, _: &Job) -> Result<RawOutput, SandboxError> {
        Err(SandboxError::Unavailable {
            backend: self.backend,
            detail: self.detail.clone(),
        })
    }
}
