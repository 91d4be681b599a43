//! The prepared plan: everything a backend needs to run one call, and
//! everything dry-run shows. Backends receive a `Plan`, never the policy.
//!
//! `prepare` is pure: it reads the policy and the call and decides the
//! backend, the exact limits, the network mode and the mounts. Nothing is
//! started here.

use crate::call::{Tool, ToolCall};
pub use crate::policy::settings::{BackendChoice, BackendKind, Limits, MountAccess, NetworkMode};
use crate::policy::{FsView, Policy};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub access: MountAccess,
    /// `host` is a disposable stage (see `sandbox::stage`): a backend may
    /// lend its entries to a sandbox made with its own directory.
    #[serde(skip)]
    pub stage: bool,
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
    /// What a sandbox sees of the workspace (wasm, docker): a private copy
    /// without the hidden paths, its changes judged after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<FsView>,
    /// Environment variables the sandbox takes from the host (native);
    /// every other variable is dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
    /// Whether a human will be asked before this runs.
    pub confirmation: bool,
}

/// Guest path of the workspace in every sandbox.
pub const GUEST_WORKSPACE: &str = "/workspace";

impl Plan {
    /// Decides backend, limits, network and mounts for `call`. Pure.
    /// Pure but for `~` in `native.expose`, read from `$HOME`.
    pub fn prepare(policy: &Policy, call: &ToolCall, workspace: &Path, confirmation: bool) -> Plan {
        let mut limits = policy.limits().clone();
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
                policy.backends().run_command,
                None,
                policy.network().run_command.clone(),
            ),
            Tool::RunCode(a) => {
                let b = policy.backends().for_language(a.language);
                let rt = (b == BackendKind::Wasm).then(|| a.language.as_str().to_string());
                (b, rt, policy.network().run_code.clone())
            }
            _ => (BackendKind::Host, None, NetworkMode::None),
        };
        let access = match backend {
            BackendKind::Wasm => policy.settings().wasm_workspace,
            BackendKind::Docker => policy.settings().docker.workspace,
            BackendKind::Native => policy.settings().native.workspace,
            BackendKind::Host => match call.tool {
                Tool::WriteFile(_) => MountAccess::ReadWrite,
                _ => MountAccess::ReadOnly,
            },
        };
        let image =
            (backend == BackendKind::Docker).then(|| policy.settings().docker.image.clone());
        let guest = match backend {
            BackendKind::Host => ".".into(),
            // The host's own tools see the workspace where it is on the
            // host (paths in build files and caches stay true).
            BackendKind::Native => workspace.display().to_string(),
            _ => GUEST_WORKSPACE.into(),
        };
        let mut mounts = vec![Mount {
            host: workspace.to_path_buf(),
            guest,
            access,
            stage: false,
        }];
        let native = &policy.settings().native;
        if backend == BackendKind::Native {
            mounts.extend(native.expose.iter().filter_map(|p| {
                let host = match p.strip_prefix("~/") {
                    Some(rest) => PathBuf::from(std::env::var_os("HOME")?).join(rest),
                    None => PathBuf::from(p),
                };
                Some(Mount {
                    guest: host.display().to_string(),
                    host,
                    access: MountAccess::ReadOnly,
                    stage: false,
                })
            }));
        }
        Plan {
            backend,
            runtime,
            image,
            limits,
            network,
            mounts,
            view: (backend != BackendKind::Host).then(|| policy.paths().view()),
            pass_env: if backend == BackendKind::Native {
                native.env.clone()
            } else {
                vec![]
            },
            confirmation,
        }
    }
}
