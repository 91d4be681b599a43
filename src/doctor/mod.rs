//! `toolgate doctor`: prove that the limits a policy promises bind.
//!
//! For each backend, probes try to break each limit — allocate past the
//! memory cap, spin past the CPU limit, sleep past the wall limit, fork past
//! the pids cap, reach a network, write outside or into a read-only
//! workspace, read a host file planted outside the workspace, flood the
//! output, find host environment values — and each row says whether the
//! limit held, with the evidence. Probes run through the same `Backend`
//! trait and plans as real calls, in a scratch workspace.

pub mod confine;
mod probes;

use crate::plan::BackendKind;
use crate::policy::Policy;
use crate::sandbox::Backend;
use serde::Serialize;
use std::sync::Arc;

/// Errors of setting up the probes (not of a limit: that is a row).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot prepare the probe workspace: {0}")]
    Workspace(#[from] std::io::Error),
}

/// Every limit the probes try to break, in report order.
pub const LIMITS: &[&str] = &probes::limits();

/// How a limit fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The probe tried to break it and was stopped, for the right reason.
    Enforced,
    /// It held, but not as configured (wrong reason reported, late kill).
    Degraded,
    /// The backend cannot run here, or has no such limit (documented).
    Unavailable,
    /// The probe broke it: the policy promises something that does not bind.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enforced => "enforced",
            Status::Degraded => "degraded",
            Status::Unavailable => "unavailable",
            Status::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub backend: &'static str,
    pub limit: &'static str,
    /// What the policy promises, in words.
    pub promised: String,
    pub status: Status,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// Whether every promised limit bound (nothing `Failed`).
    pub fn ok(&self) -> bool {
        !self.rows.iter().any(|r| r.status == Status::Failed)
    }

    /// The report as a fixed-width table for a terminal.
    pub fn table(&self) -> String {
        let mut t = format!(
            "{:<7} {:<17} {:<12} {:<44} evidence\n",
            "backend", "limit", "status", "promised"
        );
        for r in &self.rows {
            t.push_str(&format!(
                "{:<7} {:<17} {:<12} {:<44} {}\n",
                r.backend,
                r.limit,
                r.status.as_str(),
                r.promised,
                r.evidence
            ));
        }
        t
    }

    /// Rows of a backend that could not run at all.
    pub fn unavailable(&self, backend: &str) -> bool {
        let rows: Vec<_> = self.rows.iter().filter(|r| r.backend == backend).collect();
        !rows.is_empty() && rows.iter().all(|r| r.status == Status::Unavailable)
    }
}

/// A backend to probe, or why it could not be set up.
pub type Candidate = (BackendKind, Result<Arc<dyn Backend>, String>);

/// Runs every probe on every given backend under the policy's limits.
pub async fn run(policy: &Policy, backends: &[Candidate]) -> Result<Report, DoctorError> {
    let mut rows = Vec::new();
    for (kind, backend) in backends {
        let name = kind.as_str();
        match backend {
            Err(why) => rows.push(Row {
                backend: name,
                limit: "all",
                promised: "-".into(),
                status: Status::Unavailable,
                evidence: why.clone(),
            }),
            Ok(b) => {
                #[cfg(target_os = "linux")]
                if *kind == BackendKind::Native {
                    rows.extend(native_rows());
                }
                rows.extend(probes::probe_backend(policy, *kind, b.as_ref()).await?);
                rows.push(confine::row(policy, *kind, b.clone()).await);
            }
        }
    }
    Ok(Report { rows })
}

/// The native backend's layers: what the kernel offers, and what is
/// missing (`degraded` when a second layer is absent, `unavailable` when
/// the backend refuses calls).
#[cfg(target_os = "linux")]
fn native_rows() -> Vec<Row> {
    use crate::sandbox::native::Features;
    let f = Features::probe();
    let row = |limit, promised: &str, status, evidence: String| Row {
        backend: "native",
        limit,
        promised: promised.into(),
        status,
        evidence,
    };
    let mut rows = vec![match &f.base {
        Ok(()) => row(
            "namespaces",
            "user, mount, pid, net, ipc, uts, cgroup",
            Status::Enforced,
            "unprivileged user namespaces available; seccomp filter compiled".into(),
        ),
        Err(e) => row(
            "namespaces",
            "user, mount, pid, net, ipc, uts, cgroup",
            Status::Unavailable,
            e.clone(),
        ),
    }];
    rows.push(match &f.cgroups {
        Ok(h) => row(
            "cgroups",
            "per-call memory and pids groups",
            Status::Enforced,
            h.describe(),
        ),
        Err(e) => row(
            "cgroups",
            "per-call memory and pids groups",
            Status::Unavailable,
            format!("{e}: native calls are refused"),
        ),
    });
    rows.push(if f.landlock_abi >= 6 {
        row(
            "landlock",
            "reads and writes only where the view allows; signals scoped",
            Status::Enforced,
            format!("Landlock ABI {}", f.landlock_abi),
        )
    } else if f.landlock_abi > 0 {
        row(
            "landlock",
            "reads and writes only where the view allows; signals scoped",
            Status::Degraded,
            format!("Landlock ABI {} (< 6: no signal/socket scoping; the mount view still binds)", f.landlock_abi),
        )
    } else {
        row(
            "landlock",
            "reads and writes only where the view allows; signals scoped",
            Status::Degraded,
            "Landlock is not enabled in this kernel: the mount view and uid are the only file layers".into(),
        )
    });
    rows
}

/// Connects the named backends (wasm and docker when `only` is empty); a
/// backend that cannot be set up is kept with the reason, so its rows say
/// `unavailable` instead of the run failing.
pub async fn connect(only: &[BackendKind]) -> Vec<Candidate> {
    let wanted = |k: BackendKind| only.is_empty() || only.contains(&k);
    let mut out: Vec<Candidate> = Vec::new();
    if wanted(BackendKind::Wasm) {
        let wasm = crate::sandbox::wasm::WasmBackend::new(Default::default())
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| e.to_string());
        out.push((BackendKind::Wasm, wasm));
    }
    #[cfg(target_os = "linux")]
    if wanted(BackendKind::Native) {
        let native = crate::sandbox::native::NativeBackend::new(Default::default());
        out.push((
            BackendKind::Native,
            Ok(Arc::new(native) as Arc<dyn Backend>),
        ));
    }
    if wanted(BackendKind::Docker) {
        let docker = crate::sandbox::docker::DockerBackend::connect(Default::default())
            .await
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| e.to_string());
        out.push((BackendKind::Docker, docker));
    }
    out
}

/// Probes `only` (all when empty) under `policy`, releasing every sandbox
/// the probes used before returning.
pub async fn run_on(policy: &Policy, only: &[BackendKind]) -> Result<Report, DoctorError> {
    let backends = connect(only).await;
    let report = run(policy, &backends).await;
    for b in backends.iter().filter_map(|(_, b)| b.as_ref().ok()) {
        b.shutdown().await;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::sandbox::{Job, Program, RawOutput, SandboxError};
    use std::time::Duration;

    /// A "sandbox" that ignores every limit: each probe gets what an
    /// unconfined run would print.
    struct Unconfined;

    #[async_trait::async_trait]
    impl Backend for Unconfined {
        fn kind(&self) -> BackendKind {
            BackendKind::Docker
        }
        async fn execute(&self, plan: &Plan, job: &Job) -> Result<RawOutput, SandboxError> {
            let Program::Code { code, .. } = &job.program else {
                unreachable!()
            };
            let stdout = if code.contains("print('ready')") {
                "ready\n".to_string()
            } else if code.contains("allocated-all") {
                "16\n32\nallocated-all\n".to_string()
            } else if code.contains("time.sleep(3600)") {
                "woke\n".to_string()
            } else if code.contains("os.fork") {
                format!("{} none\n", plan.limits.pids * 4 + 16)
            } else if code.contains("/proc/net/dev") {
                "socket=ok ifaces=eth0,lo routes=2 routes6=1\n".to_string()
            } else if code.contains("toolgate-doctor-probe") {
                "written=/etc/toolgate-doctor-probe\n".to_string()
            } else if code.contains("ro-probe") {
                "written\n".to_string()
            } else if code.contains("os.environ") {
                std::env::vars()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect()
            } else {
                String::new()
            };
            Ok(RawOutput {
                exit_code: Some(0),
                stdout: stdout.into_bytes(),
                duration: Duration::from_millis(5),
                ..RawOutput::default()
            })
        }
    }

    #[tokio::test]
    async fn limits_that_do_not_bind_are_failed() {
        let policy = Policy::load("strict").unwrap();
        let b: Arc<dyn Backend> = Arc::new(Unconfined);
        let report = run(&policy, &[(BackendKind::Docker, Ok(b))]).await.unwrap();
        assert!(!report.ok());
        let failed: Vec<&str> = report
            .rows
            .iter()
            .filter(|r| r.status == Status::Failed)
            .map(|r| r.limit)
            .collect();
        // File size is judged by the file on the host, which the fake never
        // writes; the environment row depends on the host's variables.
        for l in LIMITS
            .iter()
            .filter(|l| !matches!(**l, "file_size" | "environment"))
        {
            assert!(failed.contains(l), "{l} not failed: {failed:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_unavailable_not_failed() {
        let policy = Policy::builtin_default();
        let report = run(&policy, &[(BackendKind::Docker, Err("no engine".into()))])
            .await
            .unwrap();
        assert!(report.ok());
        assert!(report.unavailable("docker"));
    }
}
