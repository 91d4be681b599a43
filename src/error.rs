//! The crate's error type and the exit codes the CLI maps it to.

use crate::call::CallError;
use crate::policy::PolicyError;
use crate::sandbox::SandboxError;
use crate::sandbox::hostfs::FsError;

/// Documented exit codes of the `toolgate` CLI.
pub mod exit {
    /// Allowed (check) / ran and exited 0 (run).
    pub const OK: i32 = 0;
    /// The tool ran and failed (non-zero exit, file not found, …).
    pub const TOOL_FAILED: i32 = 1;
    /// Bad input: usage, malformed JSON, unknown tool, bad or oversize arguments.
    pub const BAD_INPUT: i32 = 2;
    /// The policy file is invalid.
    pub const BAD_POLICY: i32 = 3;
    /// A backend, runtime or image is not available.
    pub const UNAVAILABLE: i32 = 4;
    /// Needs confirmation (check) — nothing ran.
    pub const ASK: i32 = 10;
    /// Denied by policy, by a human, or by an expired confirmation.
    pub const DENIED: i32 = 11;
    /// Stopped by a limit (timeout, memory, trap).
    pub const KILLED: i32 = 12;
    /// A rate limit or budget refused the call; nothing ran.
    pub const REFUSED: i32 = 13;
    /// Internal error (a bug or an environment failure).
    pub const INTERNAL: i32 = 70;
    /// `exec`: the program was stopped by a CPU or wall-time limit (as `timeout(1)`).
    pub const EXEC_TIMEOUT: i32 = 124;
    /// `exec`: the program was killed otherwise (memory, trap), as by SIGKILL.
    pub const EXEC_KILLED: i32 = 137;

    use crate::outcome::{LimitHit, Outcome, Status};

    /// The exit code of `run` for an outcome.
    pub fn for_outcome(o: &Outcome) -> i32 {
        match o.status {
            Status::Completed if o.exit_code.unwrap_or(0) == 0 => OK,
            Status::Completed | Status::Failed => TOOL_FAILED,
            Status::Denied => DENIED,
            Status::Killed => KILLED,
        }
    }

    /// The exit code of `exec`: the program's own when it ran, like a shell.
    pub fn for_exec(o: &Outcome) -> i32 {
        match o.status {
            Status::Completed => o.exit_code.unwrap_or(0),
            Status::Denied => DENIED,
            Status::Failed => TOOL_FAILED,
            Status::Killed
                if o.limits_hit
                    .iter()
                    .any(|h| matches!(h, LimitHit::TimeoutCpu | LimitHit::TimeoutWall)) =>
            {
                EXEC_TIMEOUT
            }
            Status::Killed => EXEC_KILLED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("workspace {path}: {detail}")]
    Workspace { path: String, detail: String },
    #[error("{op}: {detail}")]
    Internal { op: &'static str, detail: String },
    /// A bad command line or service setting (tokens, address). Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// A rate limit or budget refused the call before it ran. Exit code 13.
    #[error(transparent)]
    Refused(crate::budget::Refusal),
    /// The state store cannot be reached or read: nothing is decided
    /// without it. Exit code 4, HTTP 503.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl Error {
    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Call(_) => exit::BAD_INPUT,
            Error::Policy(_) => exit::BAD_POLICY,
            Error::Sandbox(SandboxError::Unavailable { .. } | SandboxError::Runtime { .. }) => {
                exit::UNAVAILABLE
            }
            Error::Sandbox(SandboxError::Unsupported(_) | SandboxError::Workspace { .. }) => {
                exit::BAD_INPUT
            }
            Error::Sandbox(SandboxError::Internal { .. }) => exit::INTERNAL,
            Error::Workspace { .. } => exit::BAD_INPUT,
            Error::Internal { .. } => exit::INTERNAL,
            Error::Refused(_) => exit::REFUSED,
            Error::Usage(_) => exit::BAD_INPUT,
            Error::State(crate::state::StateError::BadUrl(_)) => exit::BAD_INPUT,
            Error::State(_) => exit::UNAVAILABLE,
        }
    }

    /// A short, stable name for `--json` errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Call(CallError::Json(_)) => "malformed_json",
            Error::Call(CallError::UnknownTool(_)) => "unknown_tool",
            Error::Call(CallError::TooLarge { .. } | CallError::TooDeep) => "oversize_input",
            Error::Call(CallError::Args { .. }) => "invalid_arguments",
            Error::Call(_) => "invalid_call",
            Error::Policy(_) => "invalid_policy",
            Error::Sandbox(SandboxError::Unavailable { .. }) => "backend_unavailable",
            Error::Sandbox(SandboxError::Runtime { .. }) => "runtime_unavailable",
            Error::Sandbox(SandboxError::Unsupported(_)) => "unsupported",
            Error::Sandbox(SandboxError::Internal { .. }) => "internal",
            Error::Workspace { .. } | Error::Sandbox(SandboxError::Workspace { .. }) => {
                "bad_workspace"
            }
            Error::Internal { .. } => "internal",
            Error::Usage(_) => "usage",
            Error::Refused(crate::budget::Refusal::Rate { .. }) => "rate_limited",
            Error::Refused(crate::budget::Refusal::Budget { .. }) => "budget_exhausted",
            Error::State(crate::state::StateError::BadUrl(_)) => "usage",
            Error::State(_) => "state_unavailable",
        }
    }
}

impl Error {
    /// The HTTP status the service answers with: the caller's mistakes are
    /// 4xx, a missing backend 503, toolgate's own failures 500.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Call(_) | Error::Workspace { .. } | Error::Usage(_) => 400,
            Error::Sandbox(SandboxError::Unsupported(_) | SandboxError::Workspace { .. }) => 400,
            Error::Refused(_) => 429,
            Error::Sandbox(SandboxError::Unavailable { .. } | SandboxError::Runtime { .. }) => 503,
            Error::State(crate::state::StateError::BadUrl(_)) => 400,
            Error::State(_) => 503,
            // A policy is the operator's, not the caller's: a service error.
            Error::Policy(_) => 500,
            Error::Sandbox(SandboxError::Internal { .. }) | Error::Internal { .. } => 500,
        }
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Error {
        match e {
            FsError::Workspace { path, source } => Error::Workspace {
                path,
                detail: source.to_string(),
            },
            // Per-file failures are outcomes, not errors; reaching here is a bug.
            other => Error::Internal {
                op: "file tool",
                detail: other.to_string(),
            },
        }
    }
}
