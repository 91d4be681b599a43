//! The native backend: the host's own toolchain, confined (Linux).
//!
//! Each call gets new user, mount, pid, network, ipc, uts and cgroup
//! namespaces. Its root is the host's, read-only, with home directories,
//! `/run`, `/tmp` and the like replaced by empty size-capped tmpfs; a
//! fresh `/proc`, a minimal `/dev`, only `lo`. The workspace is the call's
//! stage (hidden paths absent, changes judged after the run) at the
//! workspace's own path. Landlock limits reads and writes to those places
//! again, seccomp removes what a tool never needs (`seccomp.rs`), the
//! process runs as an unprivileged uid with no capabilities and an
//! allowlisted environment. Memory and pids are bounded by a per-call
//! cgroup, CPU by the cgroup's clock and `RLIMIT_CPU`, file size by
//! `RLIMIT_FSIZE`; wall time by killing the namespace's init.
//!
//! A sandbox is built before its call is known (`Shared::build`): the
//! namespace's init waits on a pipe for the call, which `execute` sends
//! once it has a sandbox, warm from the pool or built on the spot. Each
//! sandbox runs one call; a reaper thread tears it down and a filler
//! thread builds the pool's next one, both after the call has returned.
//!
//! `$HOME` inside is an empty private directory at the host's `$HOME`
//! path (caches written there are dropped with the call); toolchains that
//! live under a home directory are shown read-only through the policy's
//! `native.expose`.

mod cgroup;
pub mod child;
pub mod seccomp;

use super::pool::{Capped, Lease, Slot, WarmPool};
use super::{Backend, Job, Program, RawOutput, SandboxError};
use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, MountAccess, Plan};
pub use cgroup::Hierarchy;
use child::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, Spec, Step};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The uid and gid calls run as when toolgate runs as root (`nobody`).
pub const SANDBOX_ID: u32 = 65534;

/// Directories replaced by an empty tmpfs: other users' files, runtime
/// sockets (a Docker socket is root on the host), shared temp space.
const MASKED: &[&str] = &[
    "/home", "/root", "/run", "/tmp", "/var/tmp", "/mnt", "/media", "/srv",
];

/// System directories the tool may read and execute (Landlock); what is
/// not here, the workspace, `$HOME`, temp dirs or exposed is unreadable.
const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/var", "/nix",
    "/snap", "/proc", "/sys",
];

/// Device nodes of the host in the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What a host offers the native backend, found once.
#[derive(Debug, Clone)]
pub struct Features {
    /// Namespaces + seccomp usable (`Err` says why not).
    pub base: Result<(), String>,
    pub cgroups: Result<Hierarchy, String>,
    /// Landlock ABI version, 0 when absent.
    pub landlock_abi: i32,
}

impl Features {
    pub fn probe() -> Features {
        let base = if !cfg!(target_os = "linux") {
            Err("the native backend needs Linux".to_string())
        } else if seccomp::arch().is_none() {
            Err("the native backend supports x86_64 and aarch64".to_string())
        } else {
            userns_enabled()
        };
        Features {
            base,
            cgroups: Hierarchy::find(),
            landlock_abi: landlock_abi(),
        }
    }
}

fn userns_enabled() -> Result<(), String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
                .into(),
        );
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Err("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)".into());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query; no pointers are dereferenced.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0) as i32
}

/// Settings of the native backend.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Run as this uid/gid when toolgate is root (default `nobody`).
    pub sandbox_user: Option<(u32, u32)>,
    /// Sandboxes kept built and waiting, per profile (default 0: each call
    /// builds its own). A warm sandbox runs exactly one call.
    pub pool_size: usize,
    /// Sandboxes existing at once, warm or running; more calls wait.
    pub max_sandboxes: usize,
}

impl Default for NativeConfig {
    fn default() -> NativeConfig {
        NativeConfig {
            sandbox_user: None,
            pool_size: 0,
            max_sandboxes: 64,
        }
    }
}

/// Profiles kept warm at once (the oldest one's sandboxes go first).
const MAX_POOL_PROFILES: usize = 4;

/// How long a sandbox may take to be built before it counts as failed.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30);

/// What makes two calls' sandboxes interchangeable: everything the view
/// and the limits fixed before the call is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Profile {
    memory: u64,
    pids: u32,
    file_size: u64,
    cpu_secs: u64,
    /// The workspace's host directory, or `None` for a directory of the
    /// sandbox's own to which each call's stage is lent.
    workspace: Option<PathBuf>,
    guest: PathBuf,
    access: MountAccess,
    /// Directories shown read-only (host, guest).
    exposed: Vec<(PathBuf, PathBuf)>,
}

impl Profile {
    fn of(plan: &Plan) -> Result<Profile, SandboxError> {
        let ws = plan.mounts.first().ok_or_else(|| SandboxError::Internal {
            op: "native plan",
            detail: "no workspace mount".into(),
        })?;
        Ok(Profile {
            memory: plan.limits.memory_bytes,
            pids: plan.limits.pids,
            file_size: plan.limits.file_size,
            cpu_secs: plan.limits.cpu_time.as_secs_f64().ceil().max(1.0) as u64,
            workspace: (!ws.stage).then(|| ws.host.clone()),
            guest: PathBuf::from(&ws.guest),
            access: ws.access,
            exposed: plan
                .mounts
                .iter()
                .skip(1)
                .map(|m| (m.host.clone(), PathBuf::from(&m.guest)))
                .collect(),
        })
    }
}

/// A built sandbox: C spawned, G waiting for its call (or running it).
struct Warm {
    /// C; G dies with it.
    child: std::process::Child,
    /// Write end of the call pipe (non-blocking).
    ctl: OwnedFd,
    /// Read end of G's report pipe (non-blocking).
    report: OwnedFd,
    /// Read end of the setup-error pipe (non-blocking).
    err: OwnedFd,
    group: Arc<cgroup::CallGroup>,
    /// The directory bound at the workspace's path, when the profile lends
    /// each call's stage to it.
    ws: Option<tempfile::TempDir>,
    /// The view's root and the relays.
    _dir: tempfile::TempDir,
    /// The view's steps, to name one in a setup error.
    views: Vec<String>,
    home: PathBuf,
    _slot: Slot,
}

impl Drop for Warm {
    /// Kills what is left (G dies with C, the namespace with G) and waits
    /// for C; then the groups (killing any straggler) and directories go.
    /// Blocking: runs on the reaper thread, not on the async path.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether C has exited (without reaping it).
fn exited(child: &std::process::Child) -> bool {
    let pid: libc::id_t = child.id();
    // SAFETY: waitid with WNOWAIT only reads C's state into `info`.
    #[allow(unsafe_code)]
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

/// How long after its call a sandbox is torn down and the pool refilled:
/// both cost milliseconds of CPU, which the call's own end (judging its
/// changes, filtering, the audit entry) should not share.
const AFTER_CALL: Duration = Duration::from_millis(10);

/// What the reaper thread is asked.
enum ReapJob {
    /// Tear down, not before the instant given.
    Dispose(Box<Warm>, Instant),
    /// Answered once every sandbox sent before is gone.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What the filler thread is asked.
enum FillJob {
    /// Build a sandbox for the pool, not before the instant given.
    Fill(Profile, Slot, Instant),
    /// Answered once every build asked before is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What the backend's threads share.
struct Shared {
    /// Set by `shutdown`: the pool takes no more sandboxes.
    closed: std::sync::atomic::AtomicBool,
    features: Features,
    seccomp: Result<Arc<Vec<seccompiler::BpfProgram>>, String>,
    user: Option<(u32, u32)>,
    /// toolgate's argv and environment areas, read once (they do not move).
    areas: Vec<(usize, usize)>,
    pool: WarmPool<Profile, Box<Warm>>,
}

pub struct NativeBackend {
    shared: Arc<Shared>,
    /// Builds warm sandboxes (present when the pool keeps any). Sandboxes
    /// it spawns die with it (`PDEATHSIG`), so it lives as long as the
    /// backend.
    filler: Option<std::sync::mpsc::Sender<FillJob>>,
    /// Tears sandboxes down after their call, off the call's path.
    reaper: std::sync::mpsc::Sender<ReapJob>,
}

impl NativeBackend {
    pub fn new(cfg: NativeConfig) -> NativeBackend {
        let root = nix::unistd::geteuid().is_root();
        let features = Features::probe();
        if let Ok(h) = &features.cgroups {
            h.reap_orphans();
        }
        let shared = Arc::new(Shared {
            closed: Default::default(),
            features,
            seccomp: seccomp::compile().map(Arc::new),
            user: root.then(|| cfg.sandbox_user.unwrap_or((SANDBOX_ID, SANDBOX_ID))),
            areas: own_areas(),
            pool: WarmPool::new(cfg.max_sandboxes.max(1), cfg.pool_size, MAX_POOL_PROFILES),
        });
        let (reaper, jobs) = std::sync::mpsc::channel::<ReapJob>();
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("toolgate-native-reaper".into())
            .spawn(move || {
                for job in jobs {
                    match job {
                        ReapJob::Dispose(w, at) => {
                            // After shutdown nothing is left to make room for.
                            if !s.closed.load(std::sync::atomic::Ordering::SeqCst) {
                                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                            }
                            drop(w)
                        }
                        ReapJob::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        let filler = (cfg.pool_size > 0).then(|| {
            let (tx, rx) = std::sync::mpsc::channel::<FillJob>();
            let s = shared.clone();
            let _ = std::thread::Builder::new()
                .name("toolgate-native-filler".into())
                .spawn(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    for job in rx {
                        let (p, slot, at) = match job {
                            FillJob::Fill(p, slot, at) => (p, slot, at),
                            FillJob::Flush(done) => {
                                let _ = done.send(());
                                continue;
                            }
                        };
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        let w = (!s.closed.load(SeqCst))
                            .then(|| s.build(&p, slot).ok())
                            .flatten()
                            .filter(|w| wait_ready_blocking(w).is_ok());
                        // Built after shutdown: torn down here, not kept.
                        s.pool.filled(&p, w.filter(|_| !s.closed.load(SeqCst)));
                    }
                    // The backend is gone: its warm sandboxes go with the
                    // pool, here, where their processes' parent thread is.
                    drop(s.pool.drain());
                });
            tx
        });
        NativeBackend {
            shared,
            filler,
            reaper,
        }
    }

    pub fn features(&self) -> &Features {
        &self.shared.features
    }

    /// Hands a sandbox to the reaper, to go `after` from now (inline if
    /// the reaper is gone).
    fn dispose(&self, w: Box<Warm>, after: Duration) {
        if let Err(std::sync::mpsc::SendError(ReapJob::Dispose(w, _))) = self
            .reaper
            .send(ReapJob::Dispose(w, Instant::now() + after))
        {
            drop(w);
        }
    }

    /// Tops the pool for `p` up, `after` from now (nothing when it keeps
    /// no sandboxes).
    fn refill(&self, p: &Profile, after: Duration) {
        let Some(filler) = &self.filler else {
            return;
        };
        if self.shared.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let reserve = self.shared.pool.reserve(p);
        for w in reserve.evicted {
            self.dispose(w, Duration::ZERO);
        }
        let at = Instant::now() + after;
        for slot in reserve.slots {
            if filler.send(FillJob::Fill(p.clone(), slot, at)).is_err() {
                self.shared.pool.filled(p, None);
            }
        }
    }

    fn argv(job: &Job) -> Result<Vec<String>, SandboxError> {
        Ok(match &job.program {
            Program::Command(c) => super::command_argv(c)?,
            Program::Code { language, code } => {
                let interp = match language {
                    Language::Sh => "/bin/sh",
                    Language::Python => "python3",
                    Language::Javascript => "node",
                };
                let flag = if *language == Language::Javascript {
                    "-e"
                } else {
                    "-c"
                };
                vec![interp.into(), flag.into(), code.clone()]
            }
        })
    }

    /// The environment: the plan's allowlisted names with toolgate's
    /// values, and the sandbox's own `HOME` and `TMPDIR`.
    fn env(plan: &Plan, home: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = plan
            .pass_env
            .iter()
            .filter_map(|n| Some((n.clone(), std::env::var(n).ok()?)))
            .collect();
        env.push(("HOME".into(), home.display().to_string()));
        env.push(("TMPDIR".into(), "/tmp".into()));
        if plan.network.proxied() {
            // The one way out: the egress proxy's listener on this
            // namespace's `lo`. Tools read these.
            env.retain(|(n, _)| !super::egress::replaced_by_proxy_env(n));
            env.extend(super::egress::proxy_env());
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        env
    }

    /// Where T looks for `prog`, in order: itself if it names a path, else
    /// each directory of the sandbox's `PATH` (the view shows host paths
    /// where they are, so the list is made here).
    fn candidates(prog: &str, env: &[(String, String)]) -> Vec<String> {
        if prog.contains('/') {
            return vec![prog.to_string()];
        }
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .take(64)
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .collect()
    }

    /// The message that starts the call in a waiting sandbox.
    fn call_message(
        plan: &Plan,
        job: &Job,
        argv: &[String],
        home: &Path,
    ) -> Result<Vec<u8>, SandboxError> {
        let ws = plan.mounts.first().ok_or_else(|| SandboxError::Internal {
            op: "native plan",
            detail: "no workspace mount".into(),
        })?;
        let guest_ws = PathBuf::from(&ws.guest);
        let cwd = match &job.cwd {
            None => guest_ws,
            Some(c) => super::working_dir(&ws.host, c)?
                .iter()
                .fold(guest_ws, |p, c| p.join(c)),
        };
        let env = Self::env(plan, home);
        let envp: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let not_found = format!(
            "toolgate: {}: not found (or not executable) in the sandbox\n",
            argv[0]
        );
        child::encode_call(
            cwd.as_os_str().as_bytes(),
            &Self::candidates(&argv[0], &env),
            argv,
            &envp,
            not_found.as_bytes(),
        )
        .ok_or_else(|| {
            SandboxError::Unsupported(format!(
                "a NUL byte in the command or environment, or more than {} MiB of them",
                child::MAX_CALL >> 20
            ))
        })
    }

    /// Runs the call in the sandbox `w` (its stage lent to the sandbox's
    /// own directory when the profile lends one). When this returns,
    /// nothing of the call runs any more.
    async fn run(
        &self,
        w: &mut Warm,
        plan: &Plan,
        job: &Job,
        argv: &[String],
        started: Instant,
    ) -> Result<RawOutput, SandboxError> {
        let msg = Self::call_message(plan, job, argv, &w.home)?;
        let lent =
            w.ws.as_ref()
                .map(|d| d.path().to_path_buf())
                .zip(plan.mounts.first().filter(|m| m.stage).map(|m| &m.host));
        if let Some((d, stage)) = &lent {
            super::stage::lend(stage, d)?;
        }
        let result = Self::call(w, plan, job, msg, started).await;
        if let Some((d, stage)) = &lent {
            super::stage::lend(d, stage)?;
        }
        result
    }

    /// Sends the call, waits for its end or a limit, and leaves nothing of
    /// it running.
    async fn call(
        w: &mut Warm,
        plan: &Plan,
        job: &Job,
        msg: Vec<u8>,
        started: Instant,
    ) -> Result<RawOutput, SandboxError> {
        let internal = |op: &'static str| {
            move |e: std::io::Error| SandboxError::Internal {
                op,
                detail: e.to_string(),
            }
        };
        let limits = &plan.limits;
        let Warm {
            child,
            ctl,
            report,
            err,
            group,
            views,
            ..
        } = w;
        let group = group.clone();
        // The sandbox's own building counts in its group's clock.
        let cpu_base = group.cpu_used().unwrap_or_default();
        let cpu_used = || group.cpu_used().map(|c| c.saturating_sub(cpu_base));
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SandboxError::Internal {
                op: "run in the native sandbox",
                detail: "no stdio pipes".into(),
            });
        };
        let cap = limits.output_bytes as usize;
        let stdout = tokio::process::ChildStdout::from_std(stdout).map_err(internal("stdout"))?;
        let stderr = tokio::process::ChildStderr::from_std(stderr).map_err(internal("stderr"))?;
        let out_task = tokio::spawn(drain(stdout, cap));
        let err_task = tokio::spawn(drain(stderr, cap));
        match job.stdin.clone() {
            Some(s) => {
                let mut stdin =
                    tokio::process::ChildStdin::from_std(stdin).map_err(internal("stdin"))?;
                tokio::spawn(async move {
                    let _ = stdin.write_all(s.as_bytes()).await;
                    let _ = stdin.shutdown().await;
                });
            }
            // Without input, the tool reads end of file at once.
            None => drop(stdin),
        }

        let deadline = tokio::time::Instant::now() + limits.wall_time;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut hit: Option<LimitHit> = None;
        let talk = async {
            write_all_async(ctl, &msg).await?;
            read_status(report).await
        };
        tokio::pin!(talk);
        let status = loop {
            tokio::select! {
                s = &mut talk => break s.ok().flatten(),
                _ = tokio::time::sleep_until(deadline) => {
                    hit = Some(LimitHit::TimeoutWall);
                    break None;
                }
                _ = tick.tick() => {
                    // RLIMIT_CPU binds each process; the group's clock binds
                    // them together.
                    if cpu_used().is_some_and(|c| c >= limits.cpu_time) {
                        hit = Some(LimitHit::TimeoutCpu);
                        break None;
                    }
                }
            }
        };
        // G reports only once nothing else of the call is left (C and G
        // remain); anything else, and every other ending, is killed here.
        if status.is_none() || group.processes().is_none_or(|n| n > 2) {
            let _ = child.kill();
            let g = group.clone();
            tokio::task::spawn_blocking(move || g.kill_all()).await.ok();
        }
        let mut out = RawOutput {
            duration: started.elapsed(),
            cpu_time: cpu_used(),
            ..RawOutput::default()
        };
        if status.is_none()
            && hit.is_none()
            && let Some((step, errno, sub)) = setup_error(err)
        {
            return Err(setup_failure(step, errno, sub, views));
        }
        // Every writer is gone; the bound only guards against a surprise.
        let bound = Duration::from_secs(5);
        let take = |r: Result<Result<Capped, _>, _>| match r {
            Ok(Ok(c)) => c,
            _ => Capped::new(0),
        };
        (out.stdout, out.stdout_truncated) =
            take(tokio::time::timeout(bound, out_task).await).take();
        (out.stderr, out.stderr_truncated) =
            take(tokio::time::timeout(bound, err_task).await).take();
        let code = status;
        out.exit_code = code;
        let cpu_over = out.cpu_time.is_some_and(|c| c >= limits.cpu_time);
        match (hit, code) {
            (Some(h), _) => out.limits_hit.push(h),
            _ if group.oom_killed() => out.limits_hit.push(LimitHit::Memory),
            // SIGXCPU, or the SIGKILL at the hard limit after it.
            (None, Some(152)) => out.limits_hit.push(LimitHit::TimeoutCpu),
            (None, Some(137)) if cpu_over => out.limits_hit.push(LimitHit::TimeoutCpu),
            (None, None) => {
                return Err(SandboxError::Internal {
                    op: "run in the native sandbox",
                    detail: "the sandbox's init ended without a status".into(),
                });
            }
            _ => {}
        }
        if matches!(
            out.limits_hit.last(),
            Some(LimitHit::Memory | LimitHit::TimeoutCpu | LimitHit::TimeoutWall)
        ) {
            out.exit_code = None;
        }
        if group.pids_refused() {
            out.limits_hit.push(LimitHit::Pids);
        }
        if out.stdout_truncated || out.stderr_truncated {
            out.limits_hit.push(LimitHit::OutputTruncated);
        }
        Ok(out)
    }
}

impl Shared {
    /// Why a call cannot run here, if it cannot: never run with less.
    fn usable(&self) -> Result<&Hierarchy, SandboxError> {
        let unavailable = |detail: String| SandboxError::Unavailable {
            backend: "native",
            detail,
        };
        self.features.base.clone().map_err(unavailable)?;
        self.seccomp.as_ref().map_err(|e| unavailable(e.clone()))?;
        self.features
            .cgroups
            .as_ref()
            .map_err(|e| {
                unavailable(format!(
                    "memory and pids limits cannot be enforced: {e}; route run_command and sh to docker in the policy to run them in a container"
                ))
            })
    }

    /// Spawns a sandbox for `p`: its groups, its directories, C (which
    /// builds the rest and waits for the call; see `child.rs`).
    fn build(&self, p: &Profile, slot: Slot) -> Result<Box<Warm>, SandboxError> {
        let hierarchy = self.usable()?;
        let internal = |op: &'static str| {
            move |e: std::io::Error| SandboxError::Internal {
                op,
                detail: e.to_string(),
            }
        };
        let name = format!(
            "toolgate-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        // Our two waiting processes (C and G) are in the group too.
        let group = cgroup::CallGroup::create(hierarchy, &name, p.memory, u64::from(p.pids) + 2)
            .map_err(internal("make the sandbox's cgroup"))?;
        let group = Arc::new(group);
        let dir = super::stage::sandbox_dir(BackendKind::Native, self.user)?;
        let ws = match p.workspace {
            None => Some(super::stage::sandbox_dir(BackendKind::Native, self.user)?),
            Some(_) => None,
        };
        let ws_host = ws
            .as_ref()
            .map(|d| d.path())
            .or(p.workspace.as_deref())
            .unwrap_or(Path::new("/"));
        let (err_read, err_write) = pipe()?;
        let (ctl_read, ctl_write) = pipe()?;
        let (report_read, report_write) = pipe()?;
        for fd in [&err_read, &ctl_write, &report_read] {
            set_nonblocking(fd).map_err(internal("pipe"))?;
        }
        let (spec, home) = self.spec(
            p,
            ws_host,
            dir.path(),
            &group,
            [err_write, ctl_read, report_write],
        )?;
        let views: Vec<String> = spec.steps.iter().map(|s| format!("{s:?}")).collect();
        // std forks C and sets up its stdio; C never returns to std (G
        // starts the tool), so the program named here is never run.
        #[allow(clippy::disallowed_methods)] // the sandbox itself
        let mut cmd = std::process::Command::new("/bin/false");
        cmd.env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        use std::os::unix::process::CommandExt;
        #[allow(unsafe_code)]
        // SAFETY: `child::run` makes only syscalls on memory prepared
        // before the fork, but for Landlock's ruleset and the call's
        // buffer (see child.rs).
        unsafe {
            cmd.pre_exec(move || child::run(&spec));
        }
        let child = cmd.spawn().map_err(internal("spawn the native sandbox"))?;
        // The parent's copies of the spec's descriptors go with `cmd`.
        drop(cmd);
        Ok(Box::new(Warm {
            child,
            ctl: ctl_write,
            report: report_read,
            err: err_read,
            group,
            ws,
            _dir: dir,
            views,
            home,
            _slot: slot,
        }))
    }

    /// Builds the child's spec in the private directory `dir` (the view's
    /// root and the relays): the view's steps, Landlock's paths, rlimits.
    /// `fds`: the setup-error pipe's write end, the call pipe's read end,
    /// the report pipe's write end. Returns the sandbox's `$HOME` too.
    fn spec(
        &self,
        p: &Profile,
        ws_host: &Path,
        dir: &Path,
        group: &cgroup::CallGroup,
        fds: [OwnedFd; 3],
    ) -> Result<(Spec, PathBuf), SandboxError> {
        let internal = |op: &'static str| {
            move |e: std::io::Error| SandboxError::Internal {
                op,
                detail: e.to_string(),
            }
        };
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                SandboxError::Unsupported(format!("path with a NUL byte: {}", p.display()))
            })
        };
        let guest_ws = p.guest.clone();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute() && h != Path::new("/"))
            .unwrap_or_else(|| PathBuf::from("/home/sandbox"));
        // The view is built in `root/root`; relays sit beside it.
        let new_root = dir.join("root");
        std::fs::create_dir(&new_root).map_err(internal("make the view's root"))?;
        if let Some((u, g)) = self.user {
            std::os::unix::fs::chown(&new_root, Some(u), Some(g))
                .map_err(internal("make the view's root"))?;
        }
        let under = |p: &Path| new_root.join(p.strip_prefix("/").unwrap_or(p));
        let real_dir = |p: &str| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
        };
        let mut steps = Vec::new();
        let mut masked: Vec<PathBuf> = Vec::new();
        let tmp_opts =
            |mode: &str| CString::new(format!("mode={mode},size={}", p.memory)).unwrap_or_default();
        for m in MASKED {
            if real_dir(m) {
                let mode = if m.ends_with("tmp") { "1777" } else { "0755" };
                steps.push(Step::Tmpfs {
                    target: cstr(&under(Path::new(m)))?,
                    options: tmp_opts(mode),
                });
                masked.push(PathBuf::from(m));
            }
        }
        // Creates the directories leading to `p` inside a masked tmpfs
        // (never on the read-only host root, where they exist already).
        let dirs_to = |p: &Path, steps: &mut Vec<Step>| -> Result<(), SandboxError> {
            let Some(base) = masked.iter().find(|m| p.starts_with(m)) else {
                return Ok(());
            };
            let mut cur = base.clone();
            for c in p.strip_prefix(base).unwrap_or(Path::new("")).components() {
                cur.push(c);
                steps.push(Step::Dir {
                    path: cstr(&under(&cur))?,
                    mode: 0o755,
                });
            }
            Ok(())
        };
        // A $HOME that is neither under a masked directory nor an existing
        // one (unset, or a path that does not exist) becomes /tmp/home.
        let under_mask = |p: &Path| masked.iter().any(|m| p.starts_with(m));
        let home = if under_mask(&home) || real_dir(&home.display().to_string()) {
            home
        } else {
            PathBuf::from("/tmp/home")
        };
        let home_masked = under_mask(&home);
        if home_masked {
            dirs_to(&home, &mut steps)?;
        } else if real_dir(&home.display().to_string()) {
            steps.push(Step::Tmpfs {
                target: cstr(&under(&home))?,
                options: tmp_opts("0755"),
            });
        }
        let mut relays: Vec<(CString, CString)> = Vec::new();
        let mut read = vec![];
        let mut write = vec![];
        let user = self.user;
        let mut bind = |host: &Path,
                        guest: &Path,
                        ro: bool,
                        steps: &mut Vec<Step>|
         -> Result<bool, SandboxError> {
            if !std::fs::metadata(host).map(|m| m.is_dir()).unwrap_or(false) {
                return Ok(false);
            }
            dirs_to(guest, steps)?;
            let source = if user.is_some() {
                let relay = dir.join(format!("m{}", relays.len()));
                std::fs::create_dir(&relay).map_err(internal("make a relay"))?;
                relays.push((cstr(host)?, cstr(&relay)?));
                relay
            } else {
                host.to_path_buf()
            };
            let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
            if ro {
                attrs |= MOUNT_ATTR_RDONLY;
            }
            steps.push(Step::Bind {
                source: cstr(&source)?,
                target: cstr(&under(guest))?,
                attrs,
            });
            Ok(true)
        };
        for (host, guest) in &p.exposed {
            if bind(host, guest, true, &mut steps)? {
                read.push(guest.clone());
            }
        }
        let ro = p.access == MountAccess::ReadOnly;
        if !bind(ws_host, &guest_ws, ro, &mut steps)? {
            return Err(SandboxError::Workspace {
                path: ws_host.display().to_string(),
                detail: "not a directory".into(),
            });
        }
        // /dev: a few host nodes on a small tmpfs, /dev/shm for POSIX shm.
        let dev = under(Path::new("/dev"));
        steps.push(Step::Tmpfs {
            target: cstr(&dev)?,
            options: tmp_opts("0755"),
        });
        for d in DEVICES {
            if Path::new("/dev").join(d).exists() {
                steps.push(Step::Device {
                    source: cstr(&Path::new("/dev").join(d))?,
                    target: cstr(&dev.join(d))?,
                });
            }
        }
        for (target, link) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ] {
            steps.push(Step::Symlink {
                target: cstr(Path::new(target))?,
                link: cstr(&dev.join(link))?,
            });
        }
        steps.push(Step::Dir {
            path: cstr(&dev.join("shm"))?,
            mode: 0o1777,
        });
        steps.push(Step::Proc {
            target: cstr(&under(Path::new("/proc")))?,
        });

        read.extend(
            SYSTEM_READ
                .iter()
                .filter(|p| Path::new(p).exists())
                .map(PathBuf::from),
        );
        read.extend(["/dev", "/tmp"].map(PathBuf::from));
        write.extend(["/dev", "/tmp"].map(PathBuf::from));
        if real_dir("/var/tmp") {
            write.push("/var/tmp".into());
        }
        read.push(home.clone());
        write.push(home.clone());
        read.push(guest_ws.clone());
        if !ro {
            write.push(guest_ws.clone());
        }

        let (uid, gid) = self.user.unwrap_or_else(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        let cpu = p.cpu_secs;
        let [err_fd, ctl, report] = fds;
        let spec = Spec {
            cgroup_procs: group
                .procs_files()
                .map_err(internal("open the sandbox's cgroups"))?,
            ctl,
            report,
            relays,
            drop_to: self.user,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            root: cstr(&new_root)?,
            steps,
            landlock_read: read,
            landlock_write: write,
            seccomp: self.seccomp.clone().map_err(|e| SandboxError::Internal {
                op: "seccomp",
                detail: e,
            })?,
            rlimits: vec![
                (libc::RLIMIT_CPU, cpu, cpu + 1),
                (libc::RLIMIT_FSIZE, p.file_size, p.file_size),
                (libc::RLIMIT_NOFILE, 1024, 1024),
                (libc::RLIMIT_CORE, 0, 0),
            ],
            wipe: self.areas.clone(),
            err_fd,
        };
        Ok((spec, home))
    }
}

/// The error a failed setup step reports, naming the view step if one.
fn setup_failure(step: usize, errno: i32, sub: usize, views: &[String]) -> SandboxError {
    let what = child::STEPS.get(step).copied().unwrap_or("setup");
    let at = views
        .get(sub)
        .filter(|_| step == usize::from(child::S_VIEW))
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    let detail = format!("{what}{at}: {}", std::io::Error::from_raw_os_error(errno));
    if step == usize::from(child::S_UNSHARE) {
        SandboxError::Unavailable {
            backend: "native",
            detail,
        }
    } else {
        SandboxError::Internal {
            op: "native sandbox setup",
            detail,
        }
    }
}

/// This process's argv and environment areas (`/proc/self/stat` fields
/// 48–51), blanked in the sandbox's init (see `child::Spec::wipe`).
fn own_areas() -> Vec<(usize, usize)> {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return vec![];
    };
    // Fields after the command name (which may hold spaces) start at 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return vec![];
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| f.get(i).and_then(|x| x.parse::<usize>().ok());
    match (at(45), at(46), at(47), at(48)) {
        (Some(a), Some(b), Some(c), Some(d)) => vec![(a, b), (c, d)],
        _ => vec![],
    }
}

/// A pipe: (read end, write end), close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Internal {
        op: "pipe",
        detail: e.to_string(),
    })
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads the setup-error record, if a step failed (non-blocking: the
/// writer is gone or never wrote).
fn setup_error(fd: &OwnedFd) -> Option<(usize, i32, usize)> {
    let mut rec = [0u8; 6];
    let n = nix::unistd::read(fd, &mut rec).ok()?;
    (n == 6).then(|| {
        (
            rec[0] as usize,
            i32::from_le_bytes([rec[1], rec[2], rec[3], rec[4]]),
            rec[5] as usize,
        )
    })
}

/// Registers the non-blocking `fd` with the runtime while it is borrowed.
fn watch(
    fd: &OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::BorrowedFd<'_>>> {
    use std::os::fd::AsFd;
    #[allow(unsafe_code)]
    // SAFETY: the registration lives no longer than the borrow of `fd`,
    // which stays open and the same description all that time.
    let r = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd.as_fd(), interest) };
    r.map_err(std::io::Error::from)
}

/// Reads what is there from the non-blocking `fd` once it is readable
/// (0 at end of file).
async fn read_async(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    let afd = watch(fd, tokio::io::Interest::READABLE)?;
    loop {
        let mut guard = afd.readable().await?;
        match guard.try_io(|f| nix::unistd::read(f.get_ref(), buf).map_err(std::io::Error::from)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all_async(fd: &OwnedFd, mut data: &[u8]) -> std::io::Result<()> {
    let afd = watch(fd, tokio::io::Interest::WRITABLE)?;
    while !data.is_empty() {
        let mut guard = afd.writable().await?;
        match guard.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// The tool's exit code from G's report, `None` if G ended without one.
async fn read_status(fd: &OwnedFd) -> std::io::Result<Option<i32>> {
    let mut code = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match read_async(fd, &mut code[got..]).await? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    Ok(Some(i32::from_le_bytes(code)))
}

/// Waits until G reports the sandbox ready; a setup failure's record
/// becomes the error.
async fn wait_ready(w: &Warm) -> Result<(), SandboxError> {
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(BUILD_TIMEOUT, read_async(&w.report, &mut b)).await;
    ready_result(w, matches!(r, Ok(Ok(1))) && b[0] == child::READY)
}

/// [`wait_ready`] for the filler thread.
fn wait_ready_blocking(w: &Warm) -> Result<(), SandboxError> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: w.report.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = BUILD_TIMEOUT.as_millis() as libc::c_int;
    #[allow(unsafe_code)]
    // SAFETY: one pollfd, on the stack, for the duration of the call.
    let polled = unsafe { libc::poll(&mut pfd, 1, ms) };
    let mut b = [0u8; 1];
    let ok = polled == 1
        && matches!(nix::unistd::read(&w.report, &mut b), Ok(1))
        && b[0] == child::READY;
    ready_result(w, ok)
}

fn ready_result(w: &Warm, ready: bool) -> Result<(), SandboxError> {
    if ready {
        return Ok(());
    }
    Err(match setup_error(&w.err) {
        Some((step, errno, sub)) => setup_failure(step, errno, sub, &w.views),
        None => SandboxError::Internal {
            op: "native sandbox setup",
            detail: format!(
                "the sandbox was not ready within {} s",
                BUILD_TIMEOUT.as_secs()
            ),
        },
    })
}

async fn drain<R: tokio::io::AsyncRead + Unpin>(mut r: R, cap: usize) -> Capped {
    let mut c = Capped::new(cap);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return c,
            Ok(n) => c.push(&buf[..n]),
        }
    }
}

#[async_trait::async_trait]
impl Backend for NativeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn sandbox_user(&self) -> Option<(u32, u32)> {
        self.shared.user
    }

    async fn execute(&self, plan: &Plan, job: &Job) -> Result<RawOutput, SandboxError> {
        let started = Instant::now();
        self.shared.usable()?;
        let argv = Self::argv(job)?;
        if let (Some(c), Some(m)) = (&job.cwd, plan.mounts.first()) {
            super::working_dir(&m.host, c)?;
        }
        let profile = Profile::of(plan)?;
        let mut w = match self
            .shared
            .pool
            .lease(&profile, |w| !exited(&w.child))
            .await?
        {
            Lease::Warm(w) => w,
            Lease::Fresh(slot) => {
                let w = self.shared.build(&profile, slot)?;
                if let Err(e) = wait_ready(&w).await {
                    self.dispose(w, Duration::ZERO);
                    return Err(e);
                }
                w
            }
        };
        // Under `allowlist` and `open` the call's egress proxy listens on
        // the sandbox's `lo` and dials from toolgate's own network.
        let serving = match super::egress::serve_in(w.child.id(), &plan.network, "native") {
            Ok(s) => s,
            Err(e) => {
                self.dispose(w, Duration::ZERO);
                return Err(e);
            }
        };
        let mut result = self.run(&mut w, plan, job, &argv, started).await;
        if let (Some(s), Ok(out)) = (serving, &mut result) {
            out.egress = s.finish();
        }
        // Never reused: torn down after this one call, whatever happened.
        self.dispose(w, AFTER_CALL);
        self.refill(&profile, AFTER_CALL);
        result
    }

    async fn shutdown(&self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(filler) = &self.filler {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if filler.send(FillJob::Flush(tx)).is_ok() {
                let _ = rx.await;
            }
        }
        for w in self.shared.pool.drain() {
            self.dispose(w, Duration::ZERO);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.reaper.send(ReapJob::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn warm(&self) -> usize {
        self.shared.pool.warm(|w| !exited(&w.child))
    }
}
