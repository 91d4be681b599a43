//! `toolgate doctor`: prove that the limits a policy promises bind.
//!
//! For each backend, probes try to break each limit — allocate past the
//! memory cap, spin past the CPU limit, sleep past the wall limit, fork past
//! the pids cap, reach a network, write outside or into a read-only
//! workspace, read a host file planted outside the workspace, flood the
//! output, find host environment values — and each row says whether the
//! limit held, with the evidence. Probes run through the same `Backend`
//! trait and plans as real calls, in a scratch workspace.

use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, GUEST_WORKSPACE, Limits, Mount, MountAccess, NetworkMode, Plan};
use crate::policy::Policy;
use crate::sandbox::{Backend, Job, Program, RawOutput, SandboxError};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Errors of setting up the probes (not of a limit: that is a row).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot prepare the probe workspace: {0}")]
    Workspace(#[from] std::io::Error),
}

/// Every limit the probes try to break, in report order.
pub const LIMITS: &[&str] = &[
    "memory",
    "cpu_time",
    "wall_time",
    "pids",
    "network",
    "fs_write_outside",
    "fs_readonly",
    "fs_read_host",
    "file_size",
    "output",
    "environment",
];

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
            Ok(b) => probe_backend(policy, *kind, b.as_ref(), &mut rows).await?,
        }
    }
    Ok(Report { rows })
}

/// A scratch workspace and a host file outside it that no guest may read.
struct Scene {
    _root: tempfile::TempDir,
    workspace: std::path::PathBuf,
    secret_path: std::path::PathBuf,
    secret: String,
}

fn scene() -> Result<Scene, DoctorError> {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir()?;
    let workspace = root.path().join("workspace");
    std::fs::create_dir(&workspace)?;
    // Containers may run as another uid: let it use the scratch workspace.
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777))?;
    let secret = format!("toolgate-doctor-{}", uuid::Uuid::new_v4().simple());
    let secret_path = root.path().join("host-secret.txt");
    std::fs::write(&secret_path, &secret)?;
    std::os::unix::fs::symlink(&secret_path, workspace.join("link-to-secret"))?;
    Ok(Scene {
        _root: root,
        workspace,
        secret_path,
        secret,
    })
}

struct Prober<'a> {
    backend: &'a dyn Backend,
    kind: BackendKind,
    limits: Limits,
    network: NetworkMode,
    image: Option<String>,
    workspace: &'a Path,
}

impl Prober<'_> {
    fn plan(&self, limits: Limits, access: MountAccess) -> Plan {
        Plan {
            backend: self.kind,
            runtime: (self.kind == BackendKind::Wasm).then(|| "python".to_string()),
            image: self.image.clone(),
            limits,
            network: self.network.clone(),
            mounts: vec![Mount {
                host: self.workspace.to_path_buf(),
                guest: GUEST_WORKSPACE.into(),
                access,
            }],
            confirmation: false,
        }
    }

    async fn py(&self, code: &str) -> Result<RawOutput, SandboxError> {
        self.py_with(code, self.limits.clone(), MountAccess::ReadWrite)
            .await
    }

    async fn py_with(
        &self,
        code: &str,
        limits: Limits,
        access: MountAccess,
    ) -> Result<RawOutput, SandboxError> {
        let plan = self.plan(limits, access);
        let job = Job {
            program: Program::Code {
                language: Language::Python,
                code: code.to_string(),
            },
            stdin: None,
            cwd: None,
        };
        self.backend.execute(&plan, &job).await
    }
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn out(o: &RawOutput) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn how(o: &RawOutput) -> String {
    if o.limits_hit.is_empty() {
        match o.exit_code {
            Some(c) => format!("exit {c}"),
            None => "killed".into(),
        }
    } else {
        let hits: Vec<String> = o
            .limits_hit
            .iter()
            .map(|h| {
                serde_json::to_value(h)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{h:?}"))
            })
            .collect();
        format!("stopped: {}", hits.join(", "))
    }
}

async fn probe_backend(
    policy: &Policy,
    kind: BackendKind,
    backend: &dyn Backend,
    rows: &mut Vec<Row>,
) -> Result<(), DoctorError> {
    let name = kind.as_str();
    let sc = scene()?;
    let network = match kind {
        BackendKind::Docker => policy.network.run_command.clone(),
        _ => policy.network.run_code.clone(),
    };
    let p = Prober {
        backend,
        kind,
        limits: policy.limits.clone(),
        network: network.clone(),
        image: (kind == BackendKind::Docker).then(|| policy.docker.image.clone()),
        workspace: &sc.workspace,
    };
    let l = policy.limits.clone();
    let mut row = |limit: &'static str, promised: String, status: Status, evidence: String| {
        rows.push(Row {
            backend: name,
            limit,
            promised,
            status,
            evidence,
        })
    };

    // Can the backend run anything at all?
    match p.py("print('ready')").await {
        Ok(o) if out(&o) == "ready" => {}
        Ok(o) => {
            row(
                "all",
                "-".into(),
                Status::Unavailable,
                format!(
                    "a trivial python probe did not run ({}): {}",
                    how(&o),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            return Ok(());
        }
        Err(e) => {
            row("all", "-".into(), Status::Unavailable, e.to_string());
            return Ok(());
        }
    }

    // Memory: allocate (and write) twice the cap in 16 MiB steps.
    let target = (l.memory_bytes * 2) >> 20;
    let code = format!(
        "import sys\nkeep=[]\nfor i in range({steps}):\n    keep.append(b'x' * (16 << 20))\n    print(len(keep) * 16, flush=True)\nprint('allocated-all')\n",
        steps = target.div_ceil(16)
    );
    let promised = format!("memory ≤ {}", mib(l.memory_bytes));
    match p.py(&code).await {
        Err(e) => row("memory", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let reached = out(&o)
                .lines()
                .rev()
                .find_map(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let ev = format!("allocating {target} MiB: {} after {reached} MiB", how(&o));
            let status = if out(&o).contains("allocated-all") {
                Status::Failed
            } else if o.limits_hit.contains(&LimitHit::Memory) {
                Status::Enforced
            } else {
                Status::Degraded
            };
            row("memory", promised, status, ev);
        }
    }

    // CPU time: a busy loop, with wall time to spare.
    let mut cpu_limits = l.clone();
    // Wall time to spare even on a loaded machine, so only CPU can stop it.
    cpu_limits.wall_time = l.wall_time.max(l.cpu_time * 4 + Duration::from_secs(5));
    let promised = format!("cpu ≤ {}", secs(l.cpu_time));
    match p
        .py_with(
            "while True:\n    pass\n",
            cpu_limits,
            MountAccess::ReadWrite,
        )
        .await
    {
        Err(e) => row("cpu_time", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let ev = format!("busy loop: {} after {}", how(&o), secs(o.duration));
            let status = if o.limits_hit.contains(&LimitHit::TimeoutCpu) {
                Status::Enforced
            } else if o.limits_hit.contains(&LimitHit::TimeoutWall) {
                Status::Degraded
            } else {
                Status::Failed
            };
            row("cpu_time", promised, status, ev);
        }
    }

    // Wall time: sleep far beyond it.
    let promised = format!("wall ≤ {}", secs(l.wall_time));
    let code = "import time\ntime.sleep(3600)\nprint('woke')\n";
    match p.py(code).await {
        Err(e) => row("wall_time", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let ev = format!("sleep 3600 s: {} after {}", how(&o), secs(o.duration));
            let late = o.duration > l.wall_time + Duration::from_secs(5);
            let status = if out(&o).contains("woke") || o.exit_code == Some(0) {
                Status::Failed
            } else if o.limits_hit.contains(&LimitHit::TimeoutWall) && !late {
                Status::Enforced
            } else {
                Status::Degraded
            };
            row("wall_time", promised, status, ev);
        }
    }

    // Pids: fork until refused.
    let promised = format!("pids ≤ {}", l.pids);
    let code = format!(
        "import os, time\nn = 0\nerr = 'none'\ntry:\n    for i in range({cap}):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept Exception as e:\n    err = type(e).__name__\nprint(n, err)\n",
        cap = l.pids as u64 * 4 + 16
    );
    match p.py(&code).await {
        Err(e) => row("pids", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let text = out(&o);
            let mut it = text.split_whitespace();
            let n: Option<u64> = it.next().and_then(|s| s.parse().ok());
            let err = it.next().unwrap_or("");
            let (status, ev) = match n {
                Some(0) if kind == BackendKind::Wasm => (
                    Status::Enforced,
                    format!("os.fork: {err} (WASI has no process creation)"),
                ),
                Some(n) if n < l.pids as u64 => (
                    Status::Enforced,
                    format!("fork refused ({err}) after {n} children"),
                ),
                Some(n) => (
                    Status::Failed,
                    format!("{n} children forked, over the cap of {}", l.pids),
                ),
                None if o.limits_hit.contains(&LimitHit::Pids) => {
                    (Status::Enforced, format!("fork bomb {}", how(&o)))
                }
                None => (
                    Status::Degraded,
                    format!("probe did not report ({}): {}", how(&o), text),
                ),
            };
            row("pids", promised, status, ev);
        }
    }

    // Network, from the sandbox's own view: interfaces and routes. No
    // packet is sent anywhere.
    let promised = match &network {
        NetworkMode::None => "network: none".to_string(),
        NetworkMode::Open => "network: open (by policy)".to_string(),
        NetworkMode::Allowlist(h) => format!("network: only {}", h.join(", ")),
    };
    let code = r#"
import socket
def read(p):
    try:
        return open(p).read()
    except Exception as e:
        return None
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.close()
    sock = 'ok'
except Exception as e:
    sock = type(e).__name__
dev = read('/proc/net/dev')
ifaces = sorted(l.split(':')[0].strip() for l in dev.splitlines()[2:]) if dev else []
route = read('/proc/net/route')
routes = len(route.splitlines()) - 1 if route else 0
r6 = read('/proc/net/ipv6_route')
routes6 = len([l for l in r6.splitlines() if not l.split()[-1] == 'lo']) if r6 else 0
print('socket=%s ifaces=%s routes=%d routes6=%d' % (sock, ','.join(ifaces) or '-', routes, routes6))
"#;
    match p.py(code).await {
        Err(e) => row("network", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let t = out(&o);
            let field = |k: &str| {
                t.split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_string))
                    .unwrap_or_default()
            };
            let status = match &network {
                NetworkMode::None => {
                    let ifaces = field("ifaces");
                    let only_lo = ifaces == "lo" || ifaces == "-";
                    let no_routes = field("routes") == "0" && field("routes6") == "0";
                    if field("socket") != "ok" || (only_lo && no_routes) {
                        Status::Enforced
                    } else {
                        Status::Failed
                    }
                }
                NetworkMode::Open => Status::Unavailable,
                NetworkMode::Allowlist(_) => Status::Failed,
            };
            let ev = if t.is_empty() {
                format!("probe did not report ({})", how(&o))
            } else {
                format!("from inside: {t}")
            };
            row("network", promised, status, ev);
        }
    }

    // Filesystem: write outside the workspace.
    let code = r#"
import os
hits = []
for d in ['/', '/etc', '/usr', '/home', '/root', '/var']:
    p = os.path.join(d, 'toolgate-doctor-probe')
    try:
        with open(p, 'w') as f:
            f.write('x')
        hits.append(p)
        os.remove(p)
    except Exception:
        pass
print('written=' + (','.join(hits) or '-'))
"#;
    let promised = "no writes outside the workspace".to_string();
    match p.py(code).await {
        Err(e) => row("fs_write_outside", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let t = out(&o);
            let status = if t == "written=-" {
                Status::Enforced
            } else {
                Status::Failed
            };
            row(
                "fs_write_outside",
                promised,
                status,
                format!("tried /, /etc, /usr, /home, /root, /var: {t}"),
            );
        }
    }

    // Filesystem: a read-only workspace stays read-only.
    let code = format!(
        "try:\n    open('{GUEST_WORKSPACE}/ro-probe', 'w').write('x')\n    print('written')\nexcept Exception as e:\n    print('refused', type(e).__name__)\n"
    );
    let promised = "read-only workspace refuses writes".to_string();
    match p.py_with(&code, l.clone(), MountAccess::ReadOnly).await {
        Err(e) => row("fs_readonly", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let t = out(&o);
            let leaked = sc.workspace.join("ro-probe").exists();
            let status = if t.starts_with("refused") && !leaked {
                Status::Enforced
            } else {
                Status::Failed
            };
            row(
                "fs_readonly",
                promised,
                status,
                format!("write attempt: {t}"),
            );
        }
    }

    // Filesystem: a host file outside the workspace, by its host path and
    // through a symlink planted in the workspace.
    let code = format!(
        "res = []\nfor p in [{host:?}, '{GUEST_WORKSPACE}/link-to-secret', 'link-to-secret']:\n    try:\n        res.append(open(p).read())\n    except Exception as e:\n        res.append('refused:' + type(e).__name__)\nprint('|'.join(res))\n",
        host = sc.secret_path.display().to_string()
    );
    let promised = "host files outside the workspace unreadable".to_string();
    match p.py(&code).await {
        Err(e) => row("fs_read_host", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let t = out(&o);
            let leaked = String::from_utf8_lossy(&o.stdout).contains(&sc.secret)
                || String::from_utf8_lossy(&o.stderr).contains(&sc.secret);
            let status = if leaked || t.is_empty() {
                Status::Failed
            } else {
                Status::Enforced
            };
            row(
                "fs_read_host",
                promised,
                status,
                format!("host path, symlink in workspace: {}", t.replace('|', ", ")),
            );
        }
    }

    // File size.
    let promised = format!("files ≤ {}", mib(l.file_size));
    if kind == BackendKind::Wasm {
        row(
            "file_size",
            promised,
            Status::Unavailable,
            "WASI has no file-size limit; write_file checks sizes, and a read-only wasm workspace prevents writes (documented)".into(),
        );
    } else {
        let code = format!(
            "import os\nn = 0\ntry:\n    with open('/workspace/big', 'wb') as f:\n        for i in range({steps}):\n            f.write(b'x' * (1 << 20))\n            f.flush()\n            n += 1\n    print('wrote', n)\nexcept Exception as e:\n    print('refused', n, type(e).__name__)\n",
            steps = (l.file_size >> 20) + 4
        );
        match p.py(&code).await {
            Err(e) => row("file_size", promised, Status::Failed, e.to_string()),
            Ok(o) => {
                let size = std::fs::metadata(sc.workspace.join("big"))
                    .map(|m| m.len())
                    .unwrap_or(0);
                let _ = std::fs::remove_file(sc.workspace.join("big"));
                let status = if size <= l.file_size {
                    Status::Enforced
                } else {
                    Status::Failed
                };
                row(
                    "file_size",
                    promised,
                    status,
                    format!(
                        "writing {} MiB: {} ({}), file is {} bytes",
                        (l.file_size >> 20) + 4,
                        out(&o),
                        how(&o),
                        size
                    ),
                );
            }
        }
    }

    // Output cap: print four times the cap.
    let promised = format!("output ≤ {} bytes per stream", l.output_bytes);
    let code = format!(
        "import sys\nfor i in range({n}):\n    sys.stdout.write('y' * 1023 + '\\n')\n",
        n = (l.output_bytes * 4).div_ceil(1024)
    );
    match p.py(&code).await {
        Err(e) => row("output", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let n = o.stdout.len() as u64;
            let status = if n <= l.output_bytes && o.stdout_truncated {
                Status::Enforced
            } else {
                Status::Failed
            };
            row(
                "output",
                promised,
                status,
                format!(
                    "printed {} bytes: kept {n}, truncated={}",
                    l.output_bytes * 4,
                    o.stdout_truncated
                ),
            );
        }
    }

    // Environment: no host variable's value is visible inside.
    let promised = "no host environment inside".to_string();
    let code = "import os\nfor k, v in os.environ.items():\n    print(k + '=' + v)\n";
    match p.py(code).await {
        Err(e) => row("environment", promised, Status::Failed, e.to_string()),
        Ok(o) => {
            let inside = String::from_utf8_lossy(&o.stdout).to_string();
            let names: Vec<&str> = inside.lines().filter_map(|l| l.split('=').next()).collect();
            // Variables every image sets for itself; their values may match
            // the host's by coincidence.
            const OWN: &[&str] = &[
                "PATH", "HOME", "LANG", "LC_ALL", "TERM", "HOSTNAME", "PWD", "SHLVL", "_", "USER",
                "LOGNAME", "SHELL",
            ];
            let leaked: Vec<String> = std::env::vars()
                .filter(|(k, v)| {
                    !OWN.contains(&k.as_str()) && v.len() >= 6 && inside.contains(v.as_str())
                })
                .map(|(k, _)| k)
                .collect();
            let status = if leaked.is_empty() {
                Status::Enforced
            } else {
                Status::Failed
            };
            let ev = if leaked.is_empty() {
                format!(
                    "{} variables inside ({}); none carries a host value",
                    names.len(),
                    if names.is_empty() {
                        "-".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            } else {
                format!("host values visible inside: {}", leaked.join(", "))
            };
            row("environment", promised, status, ev);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
