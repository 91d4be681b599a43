//! Starting toolgate: the [`Executor`] with its backends, audit log and
//! pools, assembled one way for the HTTP service, the MCP server and the
//! CLI. Callers say what they want ([`Options`]); this module decides which
//! backends to connect and where the audit log goes.
//!
//! Defaults (written on [`Options::new`]): `ask` answered by
//! [`DenyAll`](crate::gate::DenyAll), confirmations pending for
//! [`gate::DEFAULT_TTL`], no budgets, the
//! workspace is the current directory, the state store is the embedded
//! one, and the audit log is the one named by `--audit`, else by the
//! policy, else (services only) a per-user file outside any workspace.
//! With a shared store (`--state postgres://…`) the audit chain is the
//! store's and no file is written.

use crate::audit::AuditLog;
use crate::budget::Budgets;
use crate::call::ToolCall;
use crate::error::Error;
use crate::executor::{Executor, ExecutorBuilder};
use crate::gate::{self, Approver};
use crate::outcome::Outcome;
use crate::plan::{BackendKind, Plan};
use crate::policy::Policy;
use crate::sandbox::docker::DockerBackend;
use crate::sandbox::native::NativeConfig;
use crate::sandbox::wasm::WasmConfig;
use crate::sandbox::{Backend, Unavailable};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Warm wasm interpreters a long-running service keeps per profile.
pub const SERVICE_WASM_POOL: usize = 4;

/// Built native sandboxes a long-running service keeps per profile.
pub const SERVICE_NATIVE_POOL: usize = 2;

/// What to start.
pub struct Options {
    pub policy: Policy,
    /// Workspace root (default: the current directory).
    pub workspace: Option<PathBuf>,
    /// Audit log file; `None` falls back to the policy's `[audit] path`.
    pub audit: Option<PathBuf>,
    pub approver: Arc<dyn Approver>,
    pub budgets: Budgets,
    pub confirmation_ttl: Duration,
    /// Calls executing at once (default: unbounded); a call waiting for
    /// its confirmation holds no slot.
    pub max_running: Option<usize>,
    /// The state store's URL (`postgres://…`); `None`: the embedded one.
    pub state: Option<String>,
}

impl Options {
    pub fn new(policy: Policy) -> Options {
        Options {
            policy,
            workspace: None,
            audit: None,
            approver: Arc::new(gate::DenyAll),
            budgets: Budgets::default(),
            confirmation_ttl: gate::DEFAULT_TTL,
            max_running: None,
            state: None,
        }
    }

    /// `--audit`, else the policy's `[audit] path`.
    fn audit_path(&self) -> Option<PathBuf> {
        self.audit
            .clone()
            .or_else(|| self.policy.audit_path().map(PathBuf::from))
    }

    fn workspace_dir(&self) -> Result<PathBuf, Error> {
        match &self.workspace {
            Some(w) => Ok(w.clone()),
            None => std::env::current_dir().map_err(|e| Error::Workspace {
                path: ".".into(),
                detail: e.to_string(),
            }),
        }
    }

    /// Opens the audit log at `path`, refusing (before creating anything)
    /// one that lies inside the workspace.
    fn open_audit_outside(&self, ws: &Path, path: &Path) -> Result<AuditLog, Error> {
        let canon = std::fs::canonicalize(ws).map_err(|e| Error::Workspace {
            path: ws.display().to_string(),
            detail: e.to_string(),
        })?;
        crate::executor::refuse_inside(&canon, path, "the audit log")?;
        open_audit(path)
    }

    fn builder(self, workspace: PathBuf) -> ExecutorBuilder {
        let b = Executor::builder(self.policy)
            .approver(self.approver)
            .confirmation_ttl(self.confirmation_ttl)
            .budgets(self.budgets)
            .workspace(workspace);
        match self.max_running {
            Some(n) => b.max_running(n),
            None => b,
        }
    }
}

/// A started service: the executor, and where its audit chain is kept
/// (a file's path or the store's URL, for its startup line).
pub struct Service {
    pub executor: Arc<Executor>,
    pub audit: String,
}

/// Where a long-running service writes its audit log when neither the
/// command line nor the policy says: outside any workspace.
pub fn default_audit_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    // One file per service start: never a chain shared silently with
    // another service or CLI run (the startup line names it).
    let tag = uuid::Uuid::new_v4().simple().to_string();
    base.join("toolgate").join("audit").join(format!(
        "service-{}-{}-{}.jsonl",
        crate::units::now_ms(),
        std::process::id(),
        &tag[..8]
    ))
}

/// Opens (creating its directory) the audit log at `path`, keyed from
/// `TOOLGATE_AUDIT_KEY` when set.
pub fn open_audit(path: &Path) -> Result<AuditLog, Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Internal {
            op: "create audit directory",
            detail: format!("{}: {e}", dir.display()),
        })?;
    }
    AuditLog::open(path, AuditLog::key_from_env()).map_err(|e| Error::Internal {
        op: "open audit log",
        detail: e.to_string(),
    })
}

/// Starts what a long-running service needs: every backend the policy
/// routes to (docker connected now, or replaced by one that answers each
/// call with why it is missing), warm wasm and native pools, and an audit log (the
/// per-user default when none is named).
pub async fn start(o: Options) -> Result<Service, Error> {
    let ws = o.workspace_dir()?;
    let uses_docker = routes_to_docker(&o.policy);
    let (store, audit) = match o.state.clone() {
        Some(url) => {
            if o.audit_path().is_some() {
                return Err(Error::Usage(
                    "--audit (or the policy's [audit] path) and --state were both given: a shared store keeps the audit chain"
                        .into(),
                ));
            }
            let store = crate::state::connect(&url).await?;
            let shown = store.describe();
            (store, shown)
        }
        None => {
            let path = o.audit_path().unwrap_or_else(default_audit_path);
            let log = Arc::new(o.open_audit_outside(&ws, &path)?);
            (
                Arc::new(crate::state::Memory::new(
                    Some(log),
                    crate::state::KEEP_CALLS,
                )) as Arc<dyn crate::state::Store>,
                path.display().to_string(),
            )
        }
    };
    let mut b = o
        .builder(ws)
        .state(store)
        .wasm(Some(WasmConfig {
            pool_size: SERVICE_WASM_POOL,
            ..Default::default()
        }))
        .native(Some(NativeConfig {
            pool_size: SERVICE_NATIVE_POOL,
            ..Default::default()
        }));
    if uses_docker {
        b = b.docker(docker().await);
    }
    Ok(Service {
        executor: Arc::new(b.build()?),
        audit,
    })
}

/// An executor for one call: docker is connected only when this call's plan
/// needs it, and an audit log is written only when one is named.
pub async fn for_call(o: Options, call: &ToolCall) -> Result<Executor, Error> {
    let ws = o.workspace_dir()?;
    let needs_docker = Plan::prepare(&o.policy, call, &ws, false).backend == BackendKind::Docker;
    let audit = match o.audit_path() {
        Some(p) => Some(o.open_audit_outside(&ws, &p)?),
        None => None,
    };
    let mut b = o.builder(ws);
    if let Some(log) = audit {
        b = b.audit(Arc::new(log));
    }
    if needs_docker {
        b = b.docker(docker().await);
    }
    b.build()
}

/// Runs one call through the whole pipeline and releases every sandbox
/// before returning.
pub async fn run_once(o: Options, call: &ToolCall) -> Result<Outcome, Error> {
    let exec = for_call(o, call).await?;
    let outcome = exec.run(call).await;
    exec.close().await;
    outcome
}

/// An executor that can only dry-run: no backend is built, nothing can start.
pub fn for_check(o: Options) -> Result<Executor, Error> {
    let ws = o.workspace_dir()?;
    o.builder(ws).wasm(None).native(None).build()
}

/// Whether any tool or language of the policy runs on docker.
fn routes_to_docker(policy: &Policy) -> bool {
    let b = policy.backends();
    [b.run_command, b.python, b.javascript, b.sh].contains(&BackendKind::Docker)
}

/// The docker backend, or one that answers every call with why it is missing.
pub async fn docker() -> Arc<dyn Backend> {
    match DockerBackend::connect(Default::default()).await {
        Ok(d) => Arc::new(d),
        Err(e) => Arc::new(Unavailable {
            backend: "docker",
            detail: format!(
                "cannot reach the Docker engine ({e}); set DOCKER_HOST or start the daemon"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn services_never_share_a_default_audit_file() {
        let (a, b) = (super::default_audit_path(), super::default_audit_path());
        assert_ne!(a, b);
        assert!(
            a.to_string_lossy().contains("/toolgate/audit/service-"),
            "{a:?}"
        );
    }
}
