//! The probes: one function per limit, each trying to break it from inside
//! a sandbox and judging what came back. [`PROBES`] is the table `doctor`
//! runs, in report order.

use super::{DoctorError, Row, Status};
use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, GUEST_WORKSPACE, Limits, Mount, MountAccess, NetworkMode, Plan};
use crate::policy::Policy;
use crate::sandbox::{Backend, Job, Program, RawOutput, SandboxError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every probe, in report order.
pub(super) const PROBES: [Probe; 11] = [
    Probe::Memory,
    Probe::CpuTime,
    Probe::WallTime,
    Probe::Pids,
    Probe::Network,
    Probe::FsWriteOutside,
    Probe::FsReadonly,
    Probe::FsReadHost,
    Probe::FileSize,
    Probe::Output,
    Probe::Environment,
];

/// The limit names of [`PROBES`], in the same order.
pub(super) const fn limits() -> [&'static str; PROBES.len()] {
    let mut out = [""; PROBES.len()];
    let mut i = 0;
    while i < PROBES.len() {
        out[i] = PROBES[i].limit();
        i += 1;
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Probe {
    Memory,
    CpuTime,
    WallTime,
    Pids,
    Network,
    FsWriteOutside,
    FsReadonly,
    FsReadHost,
    FileSize,
    Output,
    Environment,
}

/// What one probe found.
struct Finding {
    promised: String,
    status: Status,
    evidence: String,
}

impl Finding {
    fn new(promised: String, status: Status, evidence: String) -> Finding {
        Finding {
            promised,
            status,
            evidence,
        }
    }

    /// The sandbox itself failed while probing: the limit is not proven.
    fn sandbox_failed(promised: &str, e: SandboxError) -> Finding {
        Finding::new(promised.to_string(), Status::Failed, e.to_string())
    }
}

impl Probe {
    pub(super) const fn limit(self) -> &'static str {
        match self {
            Probe::Memory => "memory",
            Probe::CpuTime => "cpu_time",
            Probe::WallTime => "wall_time",
            Probe::Pids => "pids",
            Probe::Network => "network",
            Probe::FsWriteOutside => "fs_write_outside",
            Probe::FsReadonly => "fs_readonly",
            Probe::FsReadHost => "fs_read_host",
            Probe::FileSize => "file_size",
            Probe::Output => "output",
            Probe::Environment => "environment",
        }
    }

    /// The probe's finding; a sandbox that failed to run it is one too.
    async fn run(self, p: &Prober<'_>) -> Finding {
        let found = match self {
            Probe::Memory => memory(p).await,
            Probe::CpuTime => cpu_time(p).await,
            Probe::WallTime => wall_time(p).await,
            Probe::Pids => pids(p).await,
            Probe::Network => network(p).await,
            Probe::FsWriteOutside => fs_write_outside(p).await,
            Probe::FsReadonly => fs_readonly(p).await,
            Probe::FsReadHost => fs_read_host(p).await,
            Probe::FileSize => file_size(p).await,
            Probe::Output => output(p).await,
            Probe::Environment => environment(p).await,
        };
        found.unwrap_or_else(|failed| failed)
    }
}

/// Runs every probe of [`PROBES`] on one backend under the policy's limits.
pub(super) async fn probe_backend(
    policy: &Policy,
    kind: BackendKind,
    backend: &dyn Backend,
) -> Result<Vec<Row>, DoctorError> {
    let name = kind.as_str();
    let scene = Scene::new()?;
    let p = Prober {
        backend,
        kind,
        limits: policy.limits().clone(),
        network: match kind {
            BackendKind::Docker | BackendKind::Native => policy.network().run_command.clone(),
            _ => policy.network().run_code.clone(),
        },
        image: (kind == BackendKind::Docker).then(|| policy.settings().docker.image.clone()),
        scene: &scene,
    };
    let row = |limit: &'static str, f: Finding| Row {
        backend: name,
        limit,
        promised: f.promised,
        status: f.status,
        evidence: f.evidence,
    };
    // Can the backend run anything at all?
    let ready = match p.py("print('ready')").await {
        Ok(o) if out(&o) == "ready" => None,
        Ok(o) => Some(format!(
            "a trivial python probe did not run ({}): {}",
            how(&o),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = ready {
        return Ok(vec![row(
            "all",
            Finding::new("-".into(), Status::Unavailable, why),
        )]);
    }
    let mut rows = Vec::with_capacity(PROBES.len());
    for probe in PROBES {
        rows.push(row(probe.limit(), probe.run(&p).await));
    }
    Ok(rows)
}

/// A scratch workspace and a host file outside it that no guest may read.
struct Scene {
    _root: tempfile::TempDir,
    workspace: PathBuf,
    secret_path: PathBuf,
    secret: String,
}

impl Scene {
    fn new() -> Result<Scene, DoctorError> {
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
}

struct Prober<'a> {
    backend: &'a dyn Backend,
    kind: BackendKind,
    limits: Limits,
    network: NetworkMode,
    image: Option<String>,
    scene: &'a Scene,
}

impl Prober<'_> {
    fn workspace(&self) -> &Path {
        &self.scene.workspace
    }

    /// Where the guest sees the workspace.
    fn guest(&self) -> String {
        match self.kind {
            BackendKind::Native => self.workspace().display().to_string(),
            _ => GUEST_WORKSPACE.into(),
        }
    }

    fn plan(&self, limits: Limits, access: MountAccess) -> Plan {
        Plan {
            pass_env: vec![],
            backend: self.kind,
            runtime: (self.kind == BackendKind::Wasm).then(|| "python".to_string()),
            image: self.image.clone(),
            limits,
            network: self.network.clone(),
            mounts: vec![Mount {
                host: self.workspace().to_path_buf(),
                guest: self.guest(),
                access,
                stage: false,
            }],
            view: None,
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
            session: None,
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
        let hits: Vec<&str> = o.limits_hit.iter().map(|h| h.as_str()).collect();
        format!("stopped: {}", hits.join(", "))
    }
}

/// Allocate (and write) twice the cap in 16 MiB steps.
async fn memory(p: &Prober<'_>) -> Result<Finding, Finding> {
    let l = &p.limits;
    let target = (l.memory_bytes * 2) >> 20;
    let code = format!(
        "import sys\nkeep=[]\nfor i in range({steps}):\n    keep.append(b'x' * (16 << 20))\n    print(len(keep) * 16, flush=True)\nprint('allocated-all')\n",
        steps = target.div_ceil(16)
    );
    let promised = format!("memory ≤ {}", mib(l.memory_bytes));
    let o = p
        .py(&code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let reached = out(&o)
        .lines()
        .rev()
        .find_map(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let status = if out(&o).contains("allocated-all") {
        Status::Failed
    } else if o.limits_hit.contains(&LimitHit::Memory) {
        Status::Enforced
    } else {
        Status::Degraded
    };
    Ok(Finding::new(
        promised,
        status,
        format!("allocating {target} MiB: {} after {reached} MiB", how(&o)),
    ))
}

/// A busy loop, with wall time to spare so only CPU can stop it.
async fn cpu_time(p: &Prober<'_>) -> Result<Finding, Finding> {
    let l = &p.limits;
    let mut cpu_limits = l.clone();
    // Wall time to spare even on a loaded machine, so only CPU can stop it.
    cpu_limits.wall_time = l.wall_time.max(l.cpu_time * 4 + Duration::from_secs(5));
    let promised = format!("cpu ≤ {}", secs(l.cpu_time));
    let o = p
        .py_with("while True:\n pass\n", cpu_limits, MountAccess::ReadWrite)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let status = if o.limits_hit.contains(&LimitHit::TimeoutCpu) {
        Status::Enforced
    } else if o.limits_hit.contains(&LimitHit::TimeoutWall) {
        Status::Degraded
    } else {
        Status::Failed
    };
    Ok(Finding::new(
        promised,
        status,
        format!("busy loop: {} after {}", how(&o), secs(o.duration)),
    ))
}

/// Sleep far beyond the wall limit.
async fn wall_time(p: &Prober<'_>) -> Result<Finding, Finding> {
    let l = &p.limits;
    let promised = format!("wall ≤ {}", secs(l.wall_time));
    let o = p
        .py("import time\ntime.sleep(3600)\nprint('woke')\n")
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let late = o.duration > l.wall_time + Duration::from_secs(5);
    let status = if out(&o).contains("woke") || o.exit_code == Some(0) {
        Status::Failed
    } else if o.limits_hit.contains(&LimitHit::TimeoutWall) && !late {
        Status::Enforced
    } else {
        Status::Degraded
    };
    Ok(Finding::new(
        promised,
        status,
        format!("sleep 3600 s: {} after {}", how(&o), secs(o.duration)),
    ))
}

/// Fork until refused.
async fn pids(p: &Prober<'_>) -> Result<Finding, Finding> {
    let l = &p.limits;
    let promised = format!("pids ≤ {}", l.pids);
    let code = format!(
        "import os, time\nn = 0\nerr = 'none'\ntry:\n    for i in range({cap}):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept Exception as e:\n    err = type(e).__name__\nprint(n, err)\n",
        cap = l.pids as u64 * 4 + 16
    );
    let o = p
        .py(&code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let text = out(&o);
    let mut it = text.split_whitespace();
    let n: Option<u64> = it.next().and_then(|s| s.parse().ok());
    let err = it.next().unwrap_or("");
    let (status, ev) = match n {
        Some(0) if p.kind == BackendKind::Wasm => (
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
    Ok(Finding::new(promised, status, ev))
}

/// The sandbox's own view of the network: interfaces and routes. No packet
/// is sent anywhere.
async fn network(p: &Prober<'_>) -> Result<Finding, Finding> {
    let promised = match &p.network {
        NetworkMode::None => "network: none".to_string(),
        NetworkMode::Open(_) => {
            "network: any public host through the egress proxy; not the host, another sandbox or the metadata service".to_string()
        }
        NetworkMode::Allowlist(h) => format!("network: only {}", h.join(", ")),
    };
    // What the proxy must refuse before it dials (nothing leaves): under
    // an allowlist a name it does not list (refused before it is
    // resolved); under both, the host's loopback and the metadata
    // address, unless the policy names them (then they are not probed).
    let named = |a: &str| {
        crate::hosts::HostList::parse(match &p.network {
            NetworkMode::Allowlist(h) | NetworkMode::Open(h) => h,
            NetworkMode::None => &[],
        })
        .is_ok_and(|l| a.parse().is_ok_and(|a| l.names_address(a)))
    };
    let mut refuse: Vec<&str> = Vec::new();
    if matches!(p.network, NetworkMode::Allowlist(_)) {
        refuse.push("toolgate-doctor.invalid:443");
    }
    for (addr, target) in [
        ("127.0.0.1", "127.0.0.1:9"),
        ("169.254.169.254", "169.254.169.254:80"),
    ] {
        if !named(addr) {
            refuse.push(target);
        }
    }
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
import os
proxy = os.environ.get('HTTPS_PROXY', '')
# Under a proxy: what it must refuse, each answered before anything is dialled.
answers = []
for t in TARGETS:
    try:
        c = socket.create_connection(('127.0.0.1', 3128), timeout=5)
        c.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (t, t)).encode())
        answers.append(c.recv(64).split(b' ')[1].decode())
    except Exception as e:
        answers.append(type(e).__name__)
print('proxy=%s refused=%s' % (proxy or '-', ','.join(answers) or '-'))
"#
    .replace("TARGETS", &format!("{refuse:?}"));
    let o = p
        .py(&code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let t = out(&o);
    let field = |k: &str| {
        t.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_default()
    };
    let status = match &p.network {
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
        // Only lo and no route, as under none, and the one way out is the
        // proxy, which refuses what it must.
        NetworkMode::Allowlist(_) | NetworkMode::Open(_) => {
            let only_lo = field("ifaces") == "lo";
            let no_routes = field("routes") == "0" && field("routes6") == "0";
            let refused = field("refused");
            let answers: Vec<&str> = refused.split(',').filter(|a| *a != "-").collect();
            let proxied = field("proxy").ends_with(":3128")
                && answers.len() == refuse.len()
                && answers.iter().all(|a| *a == "403");
            if only_lo && no_routes && proxied {
                Status::Enforced
            } else {
                Status::Failed
            }
        }
    };
    let ev = if t.is_empty() {
        format!("probe did not report ({})", how(&o))
    } else {
        format!("from inside: {t}")
    };
    Ok(Finding::new(promised, status, ev))
}

/// Write outside the workspace.
async fn fs_write_outside(p: &Prober<'_>) -> Result<Finding, Finding> {
    let code = r#"
import os
hits = []
for d in ['/', '/etc', '/usr', '/home', '/root', '/var']:
    p = os.path.join(d, 'toolgate-doctor-probe')
    try:
        with open(p, 'w') as f:
            f.write('x')
        hits.append(p)
    except Exception:
        pass
print('written=' + (','.join(hits) or '-'))
"#;
    let promised = "no writes outside the workspace".to_string();
    // The probe leaves what it wrote: a write that reached the host shows
    // there (and is removed); one into the sandbox's own private home or
    // temp space (native) is gone with the sandbox.
    let dirs = ["/", "/etc", "/usr", "/home", "/root", "/var"];
    let path = |d: &str| Path::new(d).join("toolgate-doctor-probe");
    let before: Vec<bool> = dirs.iter().map(|d| path(d).exists()).collect();
    let o = p
        .py(code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let t = out(&o);
    let on_host: Vec<String> = dirs
        .iter()
        .zip(before)
        .filter(|(d, was)| !was && path(d).exists())
        .map(|(d, _)| {
            let _ = std::fs::remove_file(path(d));
            path(d).display().to_string()
        })
        .collect();
    let (status, ev) = if !on_host.is_empty() {
        (
            Status::Failed,
            format!("reached the host: {}", on_host.join(",")),
        )
    } else if t == "written=-" {
        (Status::Enforced, t)
    } else if let Some(hits) = t.strip_prefix("written=")
        && p.kind == BackendKind::Native
        && hits
            .split(',')
            .all(|h| h.starts_with("/root/") || h.starts_with("/home/"))
    {
        // Home directories are the sandbox's own empty tmpfs there; a
        // write into a system directory is a failure even if it did not
        // show on the host.
        (
            Status::Enforced,
            format!("{t} (the sandbox's private home; nothing on the host)"),
        )
    } else if t.starts_with("written=") {
        (Status::Failed, t)
    } else {
        (
            Status::Failed,
            format!("the probe did not report ({})", how(&o)),
        )
    };
    Ok(Finding::new(
        promised,
        status,
        format!("tried /, /etc, /usr, /home, /root, /var: {ev}"),
    ))
}

/// A read-only workspace stays read-only (checked on the host too).
async fn fs_readonly(p: &Prober<'_>) -> Result<Finding, Finding> {
    let ws = p.guest();
    let code = format!(
        "try:\n    open('{ws}/ro-probe', 'w').write('x')\n    print('written')\nexcept Exception as e:\n    print('refused', type(e).__name__)\n"
    );
    let promised = "read-only workspace refuses writes".to_string();
    let o = p
        .py_with(&code, p.limits.clone(), MountAccess::ReadOnly)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let t = out(&o);
    let leaked = p.workspace().join("ro-probe").exists();
    let status = if t.starts_with("refused") && !leaked {
        Status::Enforced
    } else {
        Status::Failed
    };
    Ok(Finding::new(
        promised,
        status,
        format!("write attempt: {t}"),
    ))
}

/// A host file outside the workspace, by its host path and through a
/// symlink planted in the workspace.
async fn fs_read_host(p: &Prober<'_>) -> Result<Finding, Finding> {
    let ws = p.guest();
    let code = format!(
        "res = []\nfor p in [{host:?}, '{ws}/link-to-secret', 'link-to-secret']:\n    try:\n        res.append(open(p).read())\n    except Exception as e:\n        res.append('refused:' + type(e).__name__)\nprint('|'.join(res))\n",
        host = p.scene.secret_path.display().to_string()
    );
    let promised = "host files outside the workspace unreadable".to_string();
    let o = p
        .py(&code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let t = out(&o);
    let secret = p.scene.secret.as_str();
    let leaked = String::from_utf8_lossy(&o.stdout).contains(secret)
        || String::from_utf8_lossy(&o.stderr).contains(secret);
    let status = if leaked || t.is_empty() {
        Status::Failed
    } else {
        Status::Enforced
    };
    Ok(Finding::new(
        promised,
        status,
        format!("host path, symlink in workspace: {}", t.replace('|', ", ")),
    ))
}

/// Write a file past the size limit; the file on the host is the judge.
async fn file_size(p: &Prober<'_>) -> Result<Finding, Finding> {
    let l = &p.limits;
    let promised = format!("files ≤ {}", mib(l.file_size));
    if p.kind == BackendKind::Wasm {
        return Ok(Finding::new(
            promised,
            Status::Unavailable,
            "WASI has no file-size limit; write_file checks sizes, and a read-only wasm workspace prevents writes (documented)".into(),
        ));
    }
    let steps = (l.file_size >> 20) + 4;
    let ws = p.guest();
    let code = format!(
        "import os\nn = 0\ntry:\n    with open('{ws}/big', 'wb') as f:\n        for i in range({steps}):\n            f.write(b'x' * (1 << 20))\n            f.flush()\n            n += 1\n    print('wrote', n)\nexcept Exception as e:\n    print('refused', n, type(e).__name__)\n"
    );
    let o = p
        .py(&code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let big = p.workspace().join("big");
    let size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&big);
    let status = if size <= l.file_size {
        Status::Enforced
    } else {
        Status::Failed
    };
    Ok(Finding::new(
        promised,
        status,
        format!(
            "writing {steps} MiB: {} ({}), file is {size} bytes",
            out(&o),
            how(&o)
        ),
    ))
}

/// Print four times the output cap.
async fn output(p: &Prober<'_>) -> Result<Finding, Finding> {
    let l = &p.limits;
    let promised = format!("output ≤ {} bytes per stream", l.output_bytes);
    let code = format!(
        "import sys\nfor i in range({n}):\n    sys.stdout.write('y' * 1023 + '\\n')\n",
        n = (l.output_bytes * 4).div_ceil(1024)
    );
    let o = p
        .py(&code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let n = o.stdout.len() as u64;
    let status = if n <= l.output_bytes && o.stdout_truncated {
        Status::Enforced
    } else {
        Status::Failed
    };
    Ok(Finding::new(
        promised,
        status,
        format!(
            "printed {} bytes: kept {n}, truncated={}",
            l.output_bytes * 4,
            o.stdout_truncated
        ),
    ))
}

/// No host variable's value is visible inside.
async fn environment(p: &Prober<'_>) -> Result<Finding, Finding> {
    let promised = "no host environment inside".to_string();
    let code = "import os\nfor k, v in os.environ.items():\n    print(k + '=' + v)\n";
    let o = p
        .py(code)
        .await
        .map_err(|e| Finding::sandbox_failed(&promised, e))?;
    let inside = String::from_utf8_lossy(&o.stdout).to_string();
    let names: Vec<&str> = inside.lines().filter_map(|l| l.split('=').next()).collect();
    // Variables every image sets for itself; their values may match the
    // host's by coincidence.
    const OWN: &[&str] = &[
        "PATH", "HOME", "LANG", "LC_ALL", "TERM", "HOSTNAME", "PWD", "SHLVL", "_", "USER",
        "LOGNAME", "SHELL",
    ];
    let leaked: Vec<String> = std::env::vars()
        .filter(|(k, v)| !OWN.contains(&k.as_str()) && v.len() >= 6 && inside.contains(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    if !leaked.is_empty() {
        return Ok(Finding::new(
            promised,
            Status::Failed,
            format!("host values visible inside: {}", leaked.join(", ")),
        ));
    }
    let shown = if names.is_empty() {
        "-".to_string()
    } else {
        names.join(", ")
    };
    Ok(Finding::new(
        promised,
        Status::Enforced,
        format!(
            "{} variables inside ({shown}); none carries a host value",
            names.len()
        ),
    ))
}
