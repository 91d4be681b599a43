//! The prepared plan: everything a backend needs to run one call, and
//! everything dry-run shows. Backends receive a `Plan`, never the policy.
//!
//! `prepare` is pure: it reads the policy and the call and decides the
//! backend, the exact limits, the network mode and the mounts. Nothing is
//! started here.

use crate::call::{Language, Tool, ToolCall};
use crate::policy::Policy;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Resource limits of one execution. Each field names the threat it bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory bombs: linear memory (wasm) or cgroup memory = memory+swap (docker).
    pub memory_bytes: u64,
    /// Busy loops: CPU time of the guest.
    pub cpu_time: Duration,
    /// Sleeps, blocking I/O, hangs: elapsed time from start to kill.
    pub wall_time: Duration,
    /// Fork bombs: processes/threads in the container.
    pub pids: u32,
    /// Output floods: bytes kept from each of stdout and stderr.
    pub output_bytes: u64,
    /// Disk filling: largest file a call may write (write_file, docker;
    /// not enforced inside wasm guests — use a read-only workspace there).
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 256 << 20,
            cpu_time: Duration::from_secs(5),
            wall_time: Duration::from_secs(10),
            pids: 64,
            output_bytes: 64 << 10,
            file_size: 10 << 20,
        }
    }
}

impl Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Limits", 6)?;
        st.serialize_field("memory_bytes", &self.memory_bytes)?;
        st.serialize_field("cpu_time_ms", &(self.cpu_time.as_millis() as u64))?;
        st.serialize_field("wall_time_ms", &(self.wall_time.as_millis() as u64))?;
        st.serialize_field("pids", &self.pids)?;
        st.serialize_field("output_bytes", &self.output_bytes)?;
        st.serialize_field("file_size_bytes", &self.file_size)?;
        st.end()
    }
}

/// Network reachable from inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "hosts")]
pub enum NetworkMode {
    /// No interface but loopback.
    None,
    /// Only these hosts (needs an egress proxy; backends refuse it until then).
    Allowlist(Vec<String>),
    /// Unrestricted egress on a dedicated bridge (never the host network).
    Open,
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In-process Wasmtime with WASI (python, javascript).
    Wasm,
    /// A hardened Docker container.
    Docker,
    /// The host file tools, confined by a directory capability.
    Host,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Wasm => "wasm",
            BackendKind::Docker => "docker",
            BackendKind::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "wasm" => Some(BackendKind::Wasm),
            "docker" => Some(BackendKind::Docker),
            _ => None,
        }
    }

    /// Network modes the backend can actually enforce. A policy asking for
    /// another is refused at load rather than silently widened.
    pub fn supports_network(self, n: &NetworkMode) -> bool {
        match self {
            BackendKind::Wasm | BackendKind::Host => matches!(n, NetworkMode::None),
            BackendKind::Docker => matches!(n, NetworkMode::None | NetworkMode::Open),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountAccess {
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub access: MountAccess,
}

/// What will run and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub backend: BackendKind,
    /// The wasm runtime (`python`, `javascript`) or docker image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub limits: Limits,
    pub network: NetworkMode,
    pub mounts: Vec<Mount>,
    /// Whether a human will be asked before this runs.
    pub confirmation: bool,
}

/// Guest path of the workspace in every sandbox.
pub const GUEST_WORKSPACE: &str = "/workspace";

impl Plan {
    /// Decides backend, limits, network and mounts for `call`. Pure.
    pub fn prepare(policy: &Policy, call: &ToolCall, workspace: &Path, confirmation: bool) -> Plan {
        let mut limits = policy.limits.clone();
        let requested = match &call.tool {
            Tool::RunCommand(a) => a.timeout,
            Tool::RunCode(a) => a.timeout,
            _ => None,
        };
        // A call may ask for less time than the policy allows, never more.
        if let Some(t) = requested.and_then(|t| Duration::try_from_secs_f64(t).ok())
            && t < limits.wall_time
        {
            limits.wall_time = t;
            limits.cpu_time = limits.cpu_time.min(t);
        }
        let (backend, runtime, network) = match &call.tool {
            Tool::RunCommand(_) => (
                policy.backends.run_command,
                None,
                policy.network.run_command.clone(),
            ),
            Tool::RunCode(a) => {
                let b = policy.backends.for_language(a.language);
                let rt = (b == BackendKind::Wasm).then(|| a.language.as_str().to_string());
                (b, rt, policy.network.run_code.clone())
            }
            _ => (BackendKind::Host, None, NetworkMode::None),
        };
        let access = match backend {
            BackendKind::Wasm => policy.wasm_workspace,
            BackendKind::Docker => policy.docker.workspace,
            BackendKind::Host => match call.tool {
                Tool::WriteFile(_) => MountAccess::ReadWrite,
                _ => MountAccess::ReadOnly,
            },
        };
        let image = (backend == BackendKind::Docker).then(|| policy.docker.image.clone());
        Plan {
            backend,
            runtime,
            image,
            limits,
            network,
            mounts: vec![Mount {
                host: workspace.to_path_buf(),
                guest: if backend == BackendKind::Host {
                    ".".into()
                } else {
                    GUEST_WORKSPACE.into()
                },
                access,
            }],
            confirmation,
        }
    }
}

/// Which backend runs which language; used by `Plan::prepare`.
#[derive(Debug, Clone)]
pub struct BackendChoice {
    pub run_command: BackendKind,
    pub python: BackendKind,
    pub javascript: BackendKind,
    pub sh: BackendKind,
}

impl BackendChoice {
    pub fn for_language(&self, l: Language) -> BackendKind {
        match l {
            Language::Python => self.python,
            Language::Javascript => self.javascript,
            Language::Sh => self.sh,
        }
    }
}
