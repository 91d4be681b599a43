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
            Error::Sandbox(SandboxError::Unsupported(_)) => exit::BAD_INPUT,
            Error::Sandbox(SandboxError::Internal { .. }) => exit::INTERNAL,
            Error::Workspace { .. } => exit::BAD_INPUT,
            Error::Internal { .. } => exit::INTERNAL,
            Error::Refused(_) => exit::REFUSED,
            Error::Usage(_) => exit::BAD_INPUT,
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
            Error::Workspace { .. } => "bad_workspace",
            Error::Internal { .. } => "internal",
            Error::Usage(_) => "usage",
            Error::Refused(crate::budget::Refusal::Rate { .. }) => "rate_limited",
            Error::Refused(crate::budget::Refusal::Budget { .. }) => "budget_exhausted",
        }
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Error {
        Error::Internal {
            op: "file tool",
            detail: e.to_string(),
        }
    }
}
