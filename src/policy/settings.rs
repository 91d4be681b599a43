//! The policy's own value types: limits, network modes, backend choice,
//! mount access. They are part of a validated [`Policy`](super::Policy) and
//! are copied into each per-call plan; they know nothing of plans or
//! backends.

use crate::call::Language;
use serde::Serialize;
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
    /// Workspace bytes copied into a sandbox's private stage per call
    /// (a larger workspace is refused, not half-copied).
    pub stage_bytes: u64,
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
            stage_bytes: 256 << 20,
        }
    }
}

impl Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Limits", 7)?;
        st.serialize_field("memory_bytes", &self.memory_bytes)?;
        st.serialize_field("cpu_time_ms", &(self.cpu_time.as_millis() as u64))?;
        st.serialize_field("wall_time_ms", &(self.wall_time.as_millis() as u64))?;
        st.serialize_field("pids", &self.pids)?;
        st.serialize_field("output_bytes", &self.output_bytes)?;
        st.serialize_field("file_size_bytes", &self.file_size)?;
        st.serialize_field("stage_bytes", &self.stage_bytes)?;
        st.end()
    }
}

/// Network reachable from inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "hosts")]
pub enum NetworkMode {
    /// No interface but loopback.
    None,
    /// Only these hosts, through the call's egress proxy.
    Allowlist(Vec<String>),
    /// Any public host, through the call's egress proxy; loopback, private,
    /// link-local (metadata) and other special addresses only where these
    /// entries (the policy's `allow_hosts`) name them. Another sandbox,
    /// the host and the metadata service are therefore unreachable.
    Open(Vec<String>),
}

impl NetworkMode {
    /// Whether the call's way out is the egress proxy.
    pub fn proxied(&self) -> bool {
        !matches!(self, NetworkMode::None)
    }
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In-process Wasmtime with WASI (python, javascript).
    Wasm,
    /// A hardened Docker container.
    Docker,
    /// The host's own toolchain in namespaces, Landlock and seccomp (Linux).
    Native,
    /// The host file tools, confined by a directory capability.
    Host,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Wasm => "wasm",
            BackendKind::Docker => "docker",
            BackendKind::Native => "native",
            BackendKind::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "wasm" => Some(BackendKind::Wasm),
            "docker" => Some(BackendKind::Docker),
            "native" => Some(BackendKind::Native),
            _ => None,
        }
    }

    /// Network modes the backend can actually enforce. A policy asking for
    /// another is refused at load rather than silently widened.
    pub fn supports_network(self, n: &NetworkMode) -> bool {
        match self {
            BackendKind::Wasm | BackendKind::Host => matches!(n, NetworkMode::None),
            // Native and docker: a network namespace with only `lo`, where
            // under `allowlist` and `open` the call's egress proxy listens.
            BackendKind::Native | BackendKind::Docker => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountAccess {
    ReadOnly,
    ReadWrite,
}

/// Which backend runs which language; read by `Plan::prepare`.
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

    pub fn for_language_mut(&mut self, l: Language) -> &mut BackendKind {
        match l {
            Language::Python => &mut self.python,
            Language::Javascript => &mut self.javascript,
            Language::Sh => &mut self.sh,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    pub run_command: NetworkMode,
    pub run_code: NetworkMode,
    /// Hosts the output filter lets URLs point at.
    pub allow_hosts: Vec<String>,
}

/// How the native backend shows the host: what it exposes beyond the
/// system directories, and which environment variables it passes.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    pub workspace: MountAccess,
    /// Host directories visible read-only (toolchains under a home
    /// directory, which is otherwise hidden). `~/` is toolgate's `$HOME`.
    pub expose: Vec<String>,
    /// Names of environment variables passed through (their values are
    /// toolgate's own); every other variable is dropped.
    pub env: Vec<String>,
}

impl Default for NativeSettings {
    fn default() -> NativeSettings {
        NativeSettings {
            workspace: MountAccess::ReadOnly,
            expose: vec![],
            env: ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub image: String,
    pub workspace: MountAccess,
}

/// What a policy says about how calls run (as opposed to whether they may):
/// limits, backends, network and mounts. Editable only through
/// [`Policy::with`](super::Policy::with), which runs [`Settings::validate`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    pub backends: BackendChoice,
    pub network: NetworkPolicy,
    /// How the workspace is mounted in wasm guests.
    pub wasm_workspace: MountAccess,
    pub docker: DockerSettings,
    pub native: NativeSettings,
}

impl Settings {
    /// The checks every policy passes, at load and after every change.
    /// `Err((key, message))` names the offending policy key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let l = &self.limits;
        if l.memory_bytes < (16 << 20) || l.memory_bytes > (64u64 << 30) {
            return Err(("limits.memory", "must be between 16MiB and 64GiB".into()));
        }
        if l.wall_time.is_zero() || l.cpu_time.is_zero() {
            return Err(("limits", "cpu_time and wall_time must be positive".into()));
        }
        if l.pids == 0 {
            return Err(("limits.pids", "must be at least 1".into()));
        }
        let b = &self.backends;
        if b.sh == BackendKind::Wasm || b.run_command == BackendKind::Wasm {
            return Err((
                "backends",
                "the wasm backend runs python and javascript only; sh and run_command need docker or native"
                    .into(),
            ));
        }
        if [b.run_command, b.python, b.javascript, b.sh].contains(&BackendKind::Host) {
            return Err((
                "backends",
                "the host backend runs the file tools only".into(),
            ));
        }
        // Refuse what a backend cannot enforce rather than widen it silently.
        if !b.run_command.supports_network(&self.network.run_command) {
            return Err((
                "network.run_command",
                format!(
                    "the {} backend cannot enforce this network mode",
                    b.run_command.as_str()
                ),
            ));
        }
        if let Some(k) = [b.python, b.javascript, b.sh]
            .iter()
            .find(|k| !k.supports_network(&self.network.run_code))
        {
            return Err((
                "network.run_code",
                format!(
                    "the {} backend cannot enforce this network mode",
                    k.as_str()
                ),
            ));
        }
        Ok(())
    }
}
