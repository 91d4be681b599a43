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
//! `$HOME` inside is an empty private directory at the host's `$HOME`
//! path (caches written there are dropped with the call); toolchains that
//! live under a home directory are shown read-only through the policy's
//! `native.expose`.

mod cgroup;
pub mod child;
pub mod seccomp;

use super::pool::Capped;
use super::{Backend, Job, Program, RawOutput, SandboxError};
use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, MountAccess, NetworkMode, Plan};
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
#[derive(Debug, Clone, Default)]
pub struct NativeConfig {
    /// Run as this uid/gid when toolgate is root (default `nobody`).
    pub sandbox_user: Option<(u32, u32)>,
}

pub struct NativeBackend {
    features: Features,
    seccomp: Result<Arc<Vec<seccompiler::BpfProgram>>, String>,
    user: Option<(u32, u32)>,
    /// toolgate's argv and environment areas, read once (they do not move).
    areas: Vec<(usize, usize)>,
}

impl NativeBackend {
    pub fn new(cfg: NativeConfig) -> NativeBackend {
        let root = nix::unistd::geteuid().is_root();
        let features = Features::probe();
        if let Ok(h) = &features.cgroups {
            h.reap_orphans();
        }
        NativeBackend {
            features,
            seccomp: seccomp::compile().map(Arc::new),
            user: root.then(|| cfg.sandbox_user.unwrap_or((SANDBOX_ID, SANDBOX_ID))),
            areas: own_areas(),
        }
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

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

    /// Builds the child's spec in the private directory `dir` (the view's
    /// root and the relays): the view's steps, Landlock's paths, rlimits.
    fn spec(
        &self,
        plan: &Plan,
        job: &Job,
        dir: &Path,
        group: &cgroup::CallGroup,
        err_fd: OwnedFd,
        argv: &[String],
    ) -> Result<Spec, SandboxError> {
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
        let ws = plan.mounts.first().ok_or_else(|| SandboxError::Internal {
            op: "native plan",
            detail: "no workspace mount".into(),
        })?;
        let guest_ws = PathBuf::from(&ws.guest);
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
        let tmp_opts = |mode: &str| {
            CString::new(format!("mode={mode},size={}", plan.limits.memory_bytes))
                .unwrap_or_default()
        };
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
        for m in plan.mounts.iter().skip(1) {
            let g = PathBuf::from(&m.guest);
            if bind(&m.host, &g, true, &mut steps)? {
                read.push(g);
            }
        }
        let ro = ws.access == MountAccess::ReadOnly;
        if !bind(&ws.host, &guest_ws, ro, &mut steps)? {
            return Err(SandboxError::Workspace {
                path: ws.host.display().to_string(),
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

        let cwd = match &job.cwd {
            None => guest_ws.clone(),
            Some(c) => {
                let parts = crate::workpath::resolve(&ws.host, c)
                    .map_err(|e| SandboxError::Unsupported(format!("cwd {c}: {e}")))?;
                parts.iter().fold(guest_ws.clone(), |p, c| p.join(c))
            }
        };
        let (uid, gid) = self.user.unwrap_or_else(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        let cpu = plan.limits.cpu_time.as_secs_f64().ceil().max(1.0) as u64;
        let mut spec = Spec {
            cgroup_procs: group
                .procs_files()
                .map_err(internal("open the call's cgroups"))?,
            relays,
            drop_to: self.user,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            root: cstr(&new_root)?,
            steps,
            cwd: cstr(&cwd)?,
            landlock_read: read,
            landlock_write: write,
            seccomp: self.seccomp.clone().map_err(|e| SandboxError::Internal {
                op: "seccomp",
                detail: e,
            })?,
            rlimits: vec![
                (libc::RLIMIT_CPU, cpu, cpu + 1),
                (
                    libc::RLIMIT_FSIZE,
                    plan.limits.file_size,
                    plan.limits.file_size,
                ),
                (libc::RLIMIT_NOFILE, 1024, 1024),
                (libc::RLIMIT_CORE, 0, 0),
            ],
            wipe: self.areas.clone(),
            err_fd,
            candidates: vec![],
            argv: vec![],
            envp: vec![],
            not_found: format!(
                "toolgate: {}: not found (or not executable) in the sandbox\n",
                argv[0]
            )
            .into_bytes(),
        };
        let env = Self::env(plan, &home);
        let nul = |s: &str| {
            CString::new(s).map_err(|_| {
                SandboxError::Unsupported("a NUL byte in the command or environment".into())
            })
        };
        spec.argv = argv.iter().map(|a| nul(a)).collect::<Result<_, _>>()?;
        spec.envp = env
            .iter()
            .map(|(k, v)| nul(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        spec.candidates = Self::candidates(&argv[0], &env)
            .iter()
            .map(|c| nul(c))
            .collect::<Result<_, _>>()?;
        Ok(spec)
    }
}

/// Removes a call's cgroups off the async path when the call ends,
/// however it ends (killing what is left first).
struct Reap(Option<Arc<cgroup::CallGroup>>);

impl Reap {
    #[allow(clippy::unwrap_used)] // Some until drop
    fn get(&self) -> &cgroup::CallGroup {
        self.0.as_ref().unwrap()
    }

    fn arc(&self) -> Arc<cgroup::CallGroup> {
        self.0.clone().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            tokio::task::spawn_blocking(move || drop(g));
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

/// The pipe a failed setup step reports on: (read end, write end).
fn error_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Internal {
        op: "pipe",
        detail: e.to_string(),
    })
}

/// Reads the setup-error record, if a step failed.
fn setup_error(fd: OwnedFd) -> Option<(usize, i32, usize)> {
    let mut f = std::fs::File::from(fd);
    let mut rec = [0u8; 6];
    use std::io::Read;
    let n = f.read(&mut rec).ok()?;
    (n == 6).then(|| {
        (
            rec[0] as usize,
            i32::from_le_bytes([rec[1], rec[2], rec[3], rec[4]]),
            rec[5] as usize,
        )
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
        self.user
    }

    async fn execute(&self, plan: &Plan, job: &Job) -> Result<RawOutput, SandboxError> {
        let started = Instant::now();
        let hierarchy = self.usable()?;
        if plan.network != NetworkMode::None {
            return Err(SandboxError::Unsupported(
                "the native backend offers no network but lo".into(),
            ));
        }
        let argv = Self::argv(job)?;
        let name = format!(
            "toolgate-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let limits = &plan.limits;
        // Our two waiting processes (C and G) are in the group too.
        let group = cgroup::CallGroup::create(
            hierarchy,
            &name,
            limits.memory_bytes,
            u64::from(limits.pids) + 2,
        )
        .map_err(|e| SandboxError::Internal {
            op: "make the call's cgroup",
            detail: e.to_string(),
        })?;
        let group = Reap(Some(Arc::new(group)));
        let root = super::stage::sandbox_dir(BackendKind::Native, self.user)?;
        let (err_read, err_write) = error_pipe()?;
        let spec = self.spec(plan, job, root.path(), group.get(), err_write, &argv)?;
        let views: Vec<String> = spec.steps.iter().map(|s| format!("{s:?}")).collect();

        // std forks C and sets up its stdio; C never returns to std (T
        // execs the tool from the spec), so the program named here is
        // never run.
        let mut cmd = tokio::process::Command::new("/bin/false");
        cmd.env_clear()
            .stdin(if job.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        #[allow(unsafe_code)]
        // SAFETY: `child::run` makes only syscalls on memory prepared
        // before the fork, but for Landlock's ruleset (see child.rs).
        unsafe {
            cmd.pre_exec(move || child::run(&spec));
        }
        let mut proc = cmd.spawn().map_err(|e| SandboxError::Internal {
            op: "spawn the native sandbox",
            detail: e.to_string(),
        })?;
        // The parent's copies of the spec's descriptors went with `cmd`.
        drop(cmd);
        if let (Some(s), Some(mut stdin)) = (job.stdin.clone(), proc.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(s.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let cap = limits.output_bytes as usize;
        let (Some(stdout), Some(stderr)) = (proc.stdout.take(), proc.stderr.take()) else {
            return Err(SandboxError::Internal {
                op: "spawn the native sandbox",
                detail: "no output pipes".into(),
            });
        };
        let out_task = tokio::spawn(drain(stdout, cap));
        let err_task = tokio::spawn(drain(stderr, cap));

        let deadline = tokio::time::Instant::now() + limits.wall_time;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut hit: Option<LimitHit> = None;
        let status = loop {
            tokio::select! {
                s = proc.wait() => break s.ok(),
                _ = tokio::time::sleep_until(deadline) => {
                    hit = Some(LimitHit::TimeoutWall);
                    break None;
                }
                _ = tick.tick() => {
                    // RLIMIT_CPU binds each process; the group's clock binds
                    // them together.
                    if group.get().cpu_used().is_some_and(|c| c >= limits.cpu_time) {
                        hit = Some(LimitHit::TimeoutCpu);
                        break None;
                    }
                }
            }
        };
        if status.is_none() {
            let _ = proc.start_kill();
            let _ = proc.wait().await;
        }
        // The namespace died with its init; anything left is killed here.
        let g = group.arc();
        tokio::task::spawn_blocking(move || g.kill_all()).await.ok();
        let mut out = RawOutput {
            duration: started.elapsed(),
            cpu_time: group.get().cpu_used(),
            ..RawOutput::default()
        };
        let code = status.and_then(|s| s.code());
        if let Some((step, errno, sub)) = setup_error(err_read) {
            let what = child::STEPS.get(step).copied().unwrap_or("setup");
            let at = views
                .get(sub)
                .filter(|_| step == usize::from(child::S_VIEW))
                .map(|v| format!(" ({v})"))
                .unwrap_or_default();
            let detail = format!("{what}{at}: {}", std::io::Error::from_raw_os_error(errno));
            return Err(if step == usize::from(child::S_UNSHARE) {
                SandboxError::Unavailable {
                    backend: "native",
                    detail,
                }
            } else {
                SandboxError::Internal {
                    op: "native sandbox setup",
                    detail,
                }
            });
        }
        (out.stdout, out.stdout_truncated) = out_task.await.unwrap_or_default().take();
        (out.stderr, out.stderr_truncated) = err_task.await.unwrap_or_default().take();
        out.exit_code = code;
        let cpu_over = out.cpu_time.is_some_and(|c| c >= limits.cpu_time);
        match (hit, code) {
            (Some(h), _) => out.limits_hit.push(h),
            _ if group.get().oom_killed() => out.limits_hit.push(LimitHit::Memory),
            // SIGXCPU, or the SIGKILL at the hard limit after it.
            (None, Some(152)) => out.limits_hit.push(LimitHit::TimeoutCpu),
            (None, Some(137)) if cpu_over => out.limits_hit.push(LimitHit::TimeoutCpu),
            _ => {}
        }
        if matches!(
            out.limits_hit.last(),
            Some(LimitHit::Memory | LimitHit::TimeoutCpu | LimitHit::TimeoutWall)
        ) {
            out.exit_code = None;
        }
        if group.get().pids_refused() {
            out.limits_hit.push(LimitHit::Pids);
        }
        if out.stdout_truncated || out.stderr_truncated {
            out.limits_hit.push(LimitHit::OutputTruncated);
        }
        drop(root);
        Ok(out)
    }
}
