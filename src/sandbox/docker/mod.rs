//! The docker backend: each call runs in a fresh, hardened container,
//! through the Docker Engine API (bollard; `DOCKER_HOST` is honoured, with
//! TLS via `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`).
//!
//! Every container: non-root user, all capabilities dropped,
//! `no-new-privileges`, read-only root, a size-capped `noexec` tmpfs at
//! `/tmp`, memory with swap equal to it, one CPU, a pids limit, ulimits
//! (`nofile`, `fsize`, `nproc`, `cpu`), network `none` unless the plan says
//! `open` (then a dedicated bridge, never the host network), the workspace
//! bind-mounted at `/workspace` read-only or read-write and nothing else
//! from the host, an init process that reaps zombies, and labels that
//! mark it as toolgate's. A container serves exactly one call and is then
//! removed (a session's serves its turns: [`session`]); a warm pool keeps started, idle containers per profile so a
//! call only pays for an `exec`. Leftovers of a crashed toolgate are
//! reaped when a backend starts (`toolgate gc` on demand).
//!
//! Limits reported: `timeout_wall` (our timer; the container is killed),
//! `timeout_cpu` (RLIMIT_CPU: SIGXCPU, then SIGKILL), `memory` (the
//! cgroup's OOM-kill counter), `pids` (the cgroup's pids `max` events),
//! `output_truncated`.

pub mod session;

use super::pool::{Capped, Lease, Slot, WarmPool};
use super::{Backend, Job, Program, RawOutput, SandboxError};
use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, MountAccess, Plan};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// An attached exec's output stream and stdin.
type Output = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;
type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Label on everything toolgate creates.
pub const LABEL: &str = "toolgate";
const LABEL_INSTANCE: &str = "toolgate.instance";
const LABEL_PID: &str = "toolgate.pid";
const LABEL_HOST: &str = "toolgate.host";
/// The owning process, in a form that survives pid reuse: see [`Owner`].
pub const LABEL_OWNER: &str = "toolgate.owner";
const LABEL_CALL: &str = "toolgate.call";
/// The image recipe (no registry needed), embedded for `toolgate images build`.
pub const BUILD_SCRIPT: &str = include_str!("../../../sandboxes/docker/build-image.sh");

/// Settings of the docker backend. Defaults grant nothing extra.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Warm containers kept per profile; 0 disables the pool.
    pub pool_size: usize,
    /// Size of the `/tmp` tmpfs.
    pub tmpfs_bytes: u64,
    /// Open files per process.
    pub nofile: i64,
    /// Containers alive at once (running or pooled); callers wait beyond it.
    pub max_containers: usize,
    /// A session with no turn for this long ends (its container is removed).
    pub session_idle: Duration,
    /// A session ends this long after it opened (between turns).
    pub session_lifetime: Duration,
    /// Open sessions one principal may hold on this backend.
    pub sessions_per_principal: usize,
}

impl Default for DockerConfig {
    fn default() -> DockerConfig {
        DockerConfig {
            pool_size: 0,
            tmpfs_bytes: 64 << 20,
            nofile: 1024,
            max_containers: 32,
            session_idle: Duration::from_secs(600),
            session_lifetime: Duration::from_secs(3600),
            sessions_per_principal: 4,
        }
    }
}

/// What must be fixed when a container is created; pooled containers are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Profile {
    image: String,
    memory: u64,
    pids: u32,
    file_size: u64,
    cpu_secs: u64,
    /// The host directory to bind, or `None` for a directory of the
    /// container's own to which a stage is lent per call.
    workspace: Option<(Option<PathBuf>, MountAccess)>,
}

impl Profile {
    fn of(plan: &Plan) -> Result<Profile, SandboxError> {
        Ok(Profile {
            image: plan
                .image
                .clone()
                .unwrap_or_else(|| "toolgate-python:bookworm".into()),
            memory: plan.limits.memory_bytes,
            pids: plan.limits.pids,
            file_size: plan.limits.file_size,
            cpu_secs: plan.limits.cpu_time.as_secs_f64().ceil().max(1.0) as u64,
            workspace: plan
                .mounts
                .first()
                .map(|m| ((!m.stage).then(|| m.host.clone()), m.access)),
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable {
        backend: "docker",
        detail: e.to_string(),
    }
}

fn internal(op: &'static str) -> impl Fn(bollard::errors::Error) -> SandboxError {
    move |e| SandboxError::Internal {
        op,
        detail: e.to_string(),
    }
}

/// The docker backend. Cheap to clone.
#[derive(Clone)]
pub struct DockerBackend {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    cfg: DockerConfig,
    instance: String,
    /// [`Owner`] label of this process (empty if unreadable: never judged).
    owner: String,
    uid: String,
    /// Containers alive at once, and warm ones per profile.
    pool: WarmPool<Profile, Warm>,
    cleanup: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    sessions: session::Sessions,
    /// The runtime the backend was connected on: work started from
    /// synchronous calls (closing a session) runs there.
    rt: tokio::runtime::Handle,
}

/// A started, idle container and the slot it holds until it is removed.
struct Warm {
    id: String,
    slot: Slot,
    /// The container's own workspace directory, when its profile lends one.
    dir: Option<tempfile::TempDir>,
}

/// Processes of an idle container: docker's init and `sleep infinity`.
const IDLE_PIDS: u64 = 2;

/// Distinct warm-pool profiles kept at once; older ones' containers are removed.
const MAX_POOL_PROFILES: usize = 4;

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The process that owns a container, as `gc` can judge it: the boot it
/// runs in, its pid namespace, its pid and its start time (clock ticks
/// after boot). A pid reused by another process has another start time;
/// a process in another pid namespace (toolgate in a container beside
/// this one) or on another machine (a shared remote engine) cannot be
/// seen from here, so its containers are never judged orphans: only the
/// operator's `gc --all` removes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub boot: String,
    pub pidns: String,
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()?
                .trim()
                .to_string(),
            pidns: std::fs::read_link("/proc/self/ns/pid")
                .ok()?
                .display()
                .to_string(),
            pid,
            start: start_time(pid)?,
        })
    }

    pub fn label(&self) -> String {
        format!("{} {} {} {}", self.boot, self.pidns, self.pid, self.start)
    }

    pub fn parse(label: &str) -> Option<Owner> {
        let mut f = label.split(' ');
        let o = Owner {
            boot: f.next()?.to_string(),
            pidns: f.next()?.to_string(),
            pid: f.next()?.parse().ok()?,
            start: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(o)
    }

    /// Whether a container labelled `label` is an orphan as seen by
    /// `here`, given how to read a pid's start time: its owner ran in this
    /// boot and pid namespace and is gone (no such pid, or a pid now
    /// another process's). Anything else — unreadable label, another
    /// boot, another namespace, the owner alive — is not.
    pub fn orphaned(label: &str, here: &Owner, start_of: impl Fn(u32) -> Option<u64>) -> bool {
        let Some(o) = Owner::parse(label) else {
            return false;
        };
        o.boot == here.boot && o.pidns == here.pidns && start_of(o.pid) != Some(o.start)
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl DockerBackend {
    /// Connects (honouring `DOCKER_HOST`), negotiates the API version and
    /// reaps containers left by toolgate processes that are gone.
    pub async fn connect(cfg: DockerConfig) -> Result<DockerBackend, SandboxError> {
        let docker = Docker::connect_with_defaults().map_err(unavailable)?;
        let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
            .await
            .map_err(|_| unavailable("the engine did not answer within 5 s"))?
            .map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        // A non-root host user keeps its uid (so workspace files stay its
        // own); root maps to an unprivileged uid.
        let uid = match nix::unistd::getuid().as_raw() {
            0 => "10001:10001".to_string(),
            u => format!("{u}:{}", nix::unistd::getgid().as_raw()),
        };
        let b = DockerBackend {
            inner: Arc::new(Inner {
                docker,
                pool: WarmPool::new(cfg.max_containers, cfg.pool_size, MAX_POOL_PROFILES),
                cfg,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                owner: Owner::current().map(|o| o.label()).unwrap_or_default(),
                uid,
                cleanup: Mutex::new(Vec::new()),
                sessions: session::Sessions::default(),
                rt: tokio::runtime::Handle::current(),
            }),
        };
        b.gc(false).await?;
        Ok(b)
    }

    /// This backend's instance id (label `toolgate.instance`).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Removes toolgate containers: with `all`, every one; otherwise those
    /// whose owning process is provably gone ([`Owner::orphaned`]): never
    /// a live instance's, wherever it runs. Returns how many.
    pub async fn gc(&self, all: bool) -> Result<usize, SandboxError> {
        let list = self.labelled(LABEL).await?;
        let here = Owner::current();
        let mut n = 0;
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let orphan = match (&here, labels.get(LABEL_OWNER)) {
                (Some(here), Some(owner)) => Owner::orphaned(owner, here, start_time),
                _ => false,
            };
            if (all || orphan)
                && let Some(id) = c.id
            {
                self.remove_now(&id).await;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn remove_now(&self, id: &str) {
        let _ = self
            .inner
            .docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
    }

    /// Removes a used container in the background (tracked for `shutdown`);
    /// its slot is free again once it is gone.
    fn remove_later(&self, id: String, slot: Slot) {
        let b = self.clone();
        self.track(tokio::spawn(async move {
            b.remove_now(&id).await;
            drop(slot);
        }));
    }

    /// Keeps a background task for `shutdown` to wait on.
    fn track(&self, h: tokio::task::JoinHandle<()>) {
        let mut c = self.inner.cleanup.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|h| !h.is_finished());
        c.push(h);
    }

    /// Ids of this backend's containers that exist now (for tests and gc).
    pub async fn containers(&self) -> Result<Vec<String>, SandboxError> {
        let label = format!("{LABEL_INSTANCE}={}", self.inner.instance);
        Ok(self
            .labelled(&label)
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect())
    }

    /// All containers (running or not) carrying `label` (`key` or `key=value`).
    async fn labelled(
        &self,
        label: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, SandboxError> {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec![label])]);
        self.inner
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(internal("list containers"))
    }

    async fn ensure_image(&self, image: &str) -> Result<(), SandboxError> {
        match self.inner.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(SandboxError::Unavailable {
                backend: "docker",
                detail: format!(
                    "image {image} is not present: build it with `toolgate images build {image}` (from Debian packages, no registry needed) or `docker pull` an image with python3 and a non-root-friendly /workspace"
                ),
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Creates and starts an idle container for `profile`.
    async fn create(&self, p: &Profile, call: &str, slot: Slot) -> Result<Warm, SandboxError> {
        self.ensure_image(&p.image).await?;
        let dir = match &p.workspace {
            Some((None, _)) => Some(super::stage::sandbox_dir(
                BackendKind::Docker,
                self.owner(),
            )?),
            _ => None,
        };
        let limit = |name: &str, v: i64| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(v),
            hard: Some(v),
        };
        let mut binds = Vec::new();
        if let Some((host, access)) = &p.workspace {
            let host = dir
                .as_ref()
                .map(|d| d.path())
                .or(host.as_deref())
                .ok_or_else(|| SandboxError::Internal {
                    op: "bind the workspace",
                    detail: "no directory to bind".into(),
                })?;
            let mode = if *access == MountAccess::ReadOnly {
                "ro"
            } else {
                "rw"
            };
            binds.push(format!(
                "{}:{}:{mode}",
                host.display(),
                crate::plan::GUEST_WORKSPACE
            ));
        }
        let host_config = HostConfig {
            binds: Some(binds),
            // Only `lo`, under every network mode: where there is a way
            // out, it is the call's egress proxy listening there.
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,noexec,nosuid,nodev,size={}", self.inner.cfg.tmpfs_bytes),
            )])),
            memory: Some(p.memory as i64),
            memory_swap: Some(p.memory as i64),
            nano_cpus: Some(1_000_000_000),
            pids_limit: Some(p.pids as i64),
            ulimits: Some(vec![
                limit("nofile", self.inner.cfg.nofile),
                limit("fsize", p.file_size as i64),
                // RLIMIT_NPROC counts the uid's processes host-wide (all
                // containers share the uid), so it is only a backstop; the
                // per-container bound is the cgroup pids limit above.
                limit(
                    "nproc",
                    (p.pids as i64).saturating_mul(self.inner.cfg.max_containers as i64 + 1),
                ),
                // SIGXCPU at the limit, SIGKILL a second later.
                ResourcesUlimits {
                    name: Some("cpu".into()),
                    soft: Some(p.cpu_secs as i64),
                    hard: Some(p.cpu_secs as i64 + 1),
                },
            ]),
            init: Some(true),
            privileged: Some(false),
            ipc_mode: Some("private".into()),
            ..Default::default()
        };
        let labels = HashMap::from([
            (LABEL.to_string(), "1".to_string()),
            (LABEL_INSTANCE.to_string(), self.inner.instance.clone()),
            (LABEL_PID.to_string(), std::process::id().to_string()),
            (LABEL_HOST.to_string(), hostname()),
            (LABEL_OWNER.to_string(), self.inner.owner.clone()),
            (LABEL_CALL.to_string(), call.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(p.image.clone()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            user: Some(self.inner.uid.clone()),
            working_dir: Some(crate::plan::GUEST_WORKSPACE.into()),
            env: Some(vec![
                "PATH=/usr/local/bin:/usr/bin:/bin".into(),
                "HOME=/tmp".into(),
                "LANG=C.UTF-8".into(),
            ]),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!("toolgate-{}", uuid::Uuid::new_v4().simple());
        let created = self
            .inner
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(internal("create container"))?;
        if let Err(e) = self
            .inner
            .docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            self.remove_now(&created.id).await;
            return Err(internal("start container")(e));
        }
        Ok(Warm {
            id: created.id,
            slot,
            dir,
        })
    }

    /// The container user's uid and gid, when it is not toolgate's own
    /// (toolgate as root runs containers unprivileged).
    fn owner(&self) -> Option<(u32, u32)> {
        let (u, g) = self.inner.uid.split_once(':')?;
        let own = nix::unistd::getuid().as_raw();
        let u: u32 = u.parse().ok()?;
        (u != own).then_some((u, g.parse().ok()?))
    }

    /// Tops the pool for `p` up in the background.
    fn refill(&self, p: &Profile) {
        let reserve = self.inner.pool.reserve(p);
        for w in reserve.evicted {
            self.remove_later(w.id, w.slot);
        }
        for slot in reserve.slots {
            let (b, p) = (self.clone(), p.clone());
            self.track(tokio::spawn(async move {
                let warm = b.create(&p, "pool", slot).await.ok();
                b.inner.pool.filled(&p, warm);
            }));
        }
    }

    fn argv(job: &Job) -> Result<Vec<String>, SandboxError> {
        Ok(match &job.program {
            Program::Command(c) => super::command_argv(c)?,
            Program::Code {
                language: Language::Sh,
                code,
            } => vec!["/bin/sh".into(), "-c".into(), code.clone()],
            Program::Code {
                language: Language::Python,
                code,
            } => vec!["python3".into(), "-c".into(), code.clone()],
            Program::Code {
                language: Language::Javascript,
                ..
            } => {
                return Err(SandboxError::Unsupported(
                    "javascript runs on the wasm backend".into(),
                ));
            }
        })
    }

    /// A program's environment in the container, `extra` added; under an
    /// allowlist the proxy variables name the egress proxy.
    fn env(plan: &Plan, extra: &[&str]) -> Vec<String> {
        let mut env: Vec<String> = [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "HOME=/tmp",
            "LANG=C.UTF-8",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        if plan.network.proxied() {
            env.extend(
                super::egress::proxy_env()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}")),
            );
        }
        env
    }

    /// Under an allowlist, the call's egress proxy, serving on the `lo` of
    /// container `id` until the returned guard is dropped. The container
    /// must run on this host: its process is found by the id in its
    /// cgroup, and its namespace must not be toolgate's own.
    async fn egress(
        &self,
        id: &str,
        plan: &Plan,
    ) -> Result<Option<super::egress::Serving>, SandboxError> {
        if !plan.network.proxied() {
            return Ok(None);
        }
        let pid = self
            .inner
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(internal("inspect container"))?
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| SandboxError::Internal {
                op: "egress proxy",
                detail: "the container has no process".into(),
            })? as u32;
        let local = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains(id))
            && std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
                != std::fs::read_link("/proc/self/ns/net").ok();
        if !local {
            return Err(SandboxError::Unavailable {
                backend: "docker",
                detail: "the egress proxy needs the docker engine on this host (a network allowlist is enforced from inside the container's network namespace)".into(),
            });
        }
        super::egress::serve_in(pid, &plan.network, "docker")
    }

    /// Reads a cgroup v1/v2 counter of a local container (`key value` lines).
    fn cgroup_counter(id: &str, v1: (&str, &str), v2: &str, key: &str) -> Option<u64> {
        let paths = [
            format!("/sys/fs/cgroup/{}/docker/{id}/{}", v1.0, v1.1),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/{v2}"),
            format!("/sys/fs/cgroup/docker/{id}/{v2}"),
        ];
        paths
            .iter()
            .find_map(|p| super::cgroup_counter(std::path::Path::new(p), key))
    }

    async fn run_in(&self, id: &str, job: &Job, plan: &Plan) -> Result<RawOutput, SandboxError> {
        let started = Instant::now();
        let workdir = Self::workdir(job, plan)?;
        let exec = self
            .inner
            .docker
            .create_exec(
                id,
                ExecConfig {
                    attach_stdin: Some(job.stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(Self::argv(job)?),
                    user: Some(self.inner.uid.clone()),
                    working_dir: Some(workdir),
                    env: Some(Self::env(plan, &[])),
                    ..Default::default()
                },
            )
            .await
            .map_err(internal("create exec"))?;
        let cap = plan.limits.output_bytes as usize;
        let mut out = RawOutput::default();
        let (mut output, mut input) = self.attach(&exec.id).await?;
        if let Some(s) = job.stdin.clone() {
            tokio::spawn(async move {
                let _ = input.write_all(s.as_bytes()).await;
                let _ = input.shutdown().await;
            });
        } else {
            drop(input);
        }
        let (mut stdout, mut stderr) = (Capped::new(cap), Capped::new(cap));
        let collect = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        stdout.push(&message)
                    }
                    Ok(LogOutput::StdErr { message }) => stderr.push(&message),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(_) => break,
                }
            }
        };
        let timed_out = tokio::time::timeout(plan.limits.wall_time, collect)
            .await
            .is_err();
        (out.stdout, out.stdout_truncated) = stdout.take();
        (out.stderr, out.stderr_truncated) = stderr.take();
        if timed_out {
            out.limits_hit.push(LimitHit::TimeoutWall);
        } else {
            self.classify_exit(id, &exec.id, plan, &mut out).await?;
        }
        if Self::cgroup_counter(id, ("pids", "pids.events"), "pids.events", "max ").unwrap_or(0) > 0
        {
            out.limits_hit.push(LimitHit::Pids);
        }
        if out.stdout_truncated || out.stderr_truncated {
            out.limits_hit.push(LimitHit::OutputTruncated);
        }
        out.duration = started.elapsed();
        out.cpu_time = Self::cpu_used(id);
        Ok(out)
    }

    /// Starts exec `id` attached: its output stream and its stdin.
    async fn attach(&self, id: &str) -> Result<(Output, Input), SandboxError> {
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        match self
            .inner
            .docker
            .start_exec(id, Some(options))
            .await
            .map_err(internal("start exec"))?
        {
            StartExecResults::Attached { output, input } => Ok((output, input)),
            StartExecResults::Detached => Err(SandboxError::Internal {
                op: "start exec",
                detail: "detached".into(),
            }),
        }
    }

    /// The guest's working directory: the call's `cwd`, resolved in the
    /// workspace the way the kernel reads it.
    fn workdir(job: &Job, plan: &Plan) -> Result<String, SandboxError> {
        let Some(cwd) = &job.cwd else {
            return Ok(crate::plan::GUEST_WORKSPACE.into());
        };
        let ws = plan
            .mounts
            .first()
            .map(|m| m.host.clone())
            .unwrap_or_default();
        // Checked against the stage before it was lent (`execute`).
        let parts = crate::workpath::resolve(&ws, cwd)
            .map_err(|e| SandboxError::Unsupported(format!("cwd {cwd}: {e}")))?;
        Ok(format!(
            "{}/{}",
            crate::plan::GUEST_WORKSPACE,
            parts.join("/")
        ))
    }

    /// The exit code of a finished exec and the limit, if any, that ended
    /// it: an OOM kill is `memory`, SIGXCPU (or the SIGKILL after it) with
    /// the CPU used up is `timeout_cpu`; a killed program has no exit code.
    async fn classify_exit(
        &self,
        id: &str,
        exec_id: &str,
        plan: &Plan,
        out: &mut RawOutput,
    ) -> Result<(), SandboxError> {
        let code = self
            .inner
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(internal("inspect exec"))?
            .exit_code;
        out.exit_code = code.map(|c| c as i32);
        let oom_counted = Self::cgroup_counter(
            id,
            ("memory", "memory.oom_control"),
            "memory.events",
            "oom_kill ",
        )
        .unwrap_or(0)
            > 0;
        let oom = oom_counted
            || self
                .inner
                .docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .ok()
                .and_then(|c| c.state?.oom_killed)
                .unwrap_or(false);
        match out.exit_code {
            Some(137) if oom => out.limits_hit.push(LimitHit::Memory),
            // SIGXCPU (or the SIGKILL after it): RLIMIT_CPU.
            Some(152) => out.limits_hit.push(LimitHit::TimeoutCpu),
            Some(137) if Self::cpu_used(id).unwrap_or_default() >= plan.limits.cpu_time => {
                out.limits_hit.push(LimitHit::TimeoutCpu)
            }
            _ if oom => out.limits_hit.push(LimitHit::Memory),
            _ => {}
        }
        if matches!(
            out.limits_hit.last(),
            Some(LimitHit::Memory | LimitHit::TimeoutCpu)
        ) {
            out.exit_code = None;
        }
        Ok(())
    }

    /// Processes in the container (cgroup pids controller), if readable.
    fn pids_current(id: &str) -> Option<u64> {
        [
            format!("/sys/fs/cgroup/pids/docker/{id}/pids.current"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/pids.current"),
            format!("/sys/fs/cgroup/docker/{id}/pids.current"),
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
    }

    /// CPU time the container has used (cgroup), if readable.
    fn cpu_used(id: &str) -> Option<Duration> {
        let v1 =
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
        let v2 = || {
            Self::cgroup_counter(id, ("cpu", "none"), "cpu.stat", "usage_usec ").map(|u| u * 1000)
        };
        v1.or_else(v2).map(Duration::from_nanos)
    }
}

#[async_trait::async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    async fn execute(&self, plan: &Plan, job: &Job) -> Result<RawOutput, SandboxError> {
        if let (Some(r), Program::Code { language, code }) = (&job.session, &job.program) {
            return self
                .session_turn(r, *language, code, job.stdin.as_deref(), plan)
                .await;
        }
        let profile = Profile::of(plan)?;
        Self::argv(job)?;
        if let (Some(c), Some(m)) = (&job.cwd, plan.mounts.first()) {
            super::working_dir(&m.host, c)?;
        }
        let w = match self.inner.pool.lease(&profile, |_| true).await? {
            Lease::Warm(w) => w,
            Lease::Fresh(slot) => self.create(&profile, "call", slot).await?,
        };
        let lent = w.dir.as_ref().zip(plan.mounts.first());
        if let Some((d, m)) = lent {
            super::stage::lend(&m.host, d.path())?;
        }
        let result = match self.egress(&w.id, plan).await {
            Ok(serving) => {
                let mut r = self.run_in(&w.id, job, plan).await;
                if let (Some(s), Ok(out)) = (serving, &mut r) {
                    out.egress = s.finish();
                }
                r
            }
            Err(e) => Err(e),
        };
        let mut removed = false;
        if let Some((d, m)) = lent {
            // Nothing of the call may still run when its stage comes back to
            // be judged. When the cgroup shows only the container's init and
            // its idle `sleep`, nothing does (neither forks); otherwise, or
            // when it cannot be read, the container goes first.
            if Self::pids_current(&w.id) != Some(IDLE_PIDS) {
                self.remove_now(&w.id).await;
                removed = true;
            }
            super::stage::lend(d.path(), &m.host)?;
        }
        if !removed {
            // Never reused: removed after this one call, whatever happened.
            self.remove_later(w.id, w.slot);
        }
        self.refill(&profile);
        result
    }

    fn warm(&self) -> usize {
        self.inner.pool.warm(|_| true)
    }

    fn sandbox_user(&self) -> Option<(u32, u32)> {
        self.owner()
    }

    fn sessions(&self, principal: &str) -> Vec<crate::sandbox::SessionInfo> {
        self.inner.sessions.list(principal)
    }

    fn close_session(&self, principal: &str, name: &str) -> Option<crate::sandbox::SessionInfo> {
        self.close_docker_session(principal, name)
    }

    async fn shutdown(&self) {
        // Sessions end with the backend (their containers go below).
        for e in self.inner.sessions.close_all() {
            e.close();
        }
        // Wait for refills and removals in flight, then empty the pool; repeat
        // until nothing is left (a refill may finish while we remove).
        loop {
            let pending: Vec<_> = self
                .inner
                .cleanup
                .lock()
                .map(|mut c| c.drain(..).collect())
                .unwrap_or_default();
            for h in pending {
                let _ = h.await;
            }
            let warm = self.inner.pool.drain();
            if warm.is_empty() {
                break;
            }
            for w in warm {
                self.remove_now(&w.id).await;
            }
        }
        // Whatever still runs (a call outliving a service's drain) is
        // killed now: nothing of this instance outlives it.
        if let Ok(left) = self.containers().await {
            for id in left {
                self.remove_now(&id).await;
            }
        }
    }
}
