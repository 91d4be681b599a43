//! Docker sessions: one container per session, and one Python process in
//! it (the kernel, `KERNEL`) kept across turns, like a notebook kernel.
//!
//! The container is made like a call's (same hardening, memory, pids,
//! network), but lives as long as the session; its `/workspace` is the
//! session's own folder, to which each turn's stage is lent. The kernel is
//! a `docker exec` whose stdin carries turns (`NONCE N LEN\n` + code) and
//! whose stdout and stderr carry output, each ended by a marker with the
//! turn's fresh nonce. Code runs in the kernel's `__main__`, so variables
//! and imports carry over and a last expression's value is printed.
//!
//! Limits are toolgate's, not the kernel's: wall time by our timer, CPU per
//! turn from the container's cgroup (polled; the cgroup must be readable,
//! else no session opens), memory and pids for the whole session by the
//! container's cgroup. A limit, or the kernel dying, ends the session: the
//! container is removed before the turn's stage comes back. Between turns
//! the container is paused (cgroup freezer), so nothing of a turn — a
//! thread, a child process — runs while its stage is judged, and nothing
//! runs while the session is idle.
//!
//! The turn's code shares the kernel's process and can read a turn's nonce
//! or its pipes: it can end its own turn early or garble its own output,
//! never reach another session or outrun a limit, which is enforced from
//! outside the container.

use super::{DockerBackend, Input, Output, Profile, internal};
use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::Plan;
use crate::sandbox::pool::{Capped, Slot};
use crate::sandbox::session::{self, SessionInfo};
use crate::sandbox::{RawOutput, SandboxError, SessionRef};
use bollard::container::LogOutput;
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The kernel: reads turns from a private copy of its stdin (fd 0 becomes
/// `/dev/null`, so a turn's `input()` reads nothing instead of the next
/// turn), runs each in `__main__` (`<turn N>` in tracebacks; `SystemExit`
/// is the turn's exit status, not the kernel's), then writes the end
/// markers through private copies of fds 1 and 2 after flushing.
pub(super) const KERNEL: &str = r#"import ast, os, sys, traceback
proto = os.fdopen(os.dup(0), 'rb', buffering=0)
out_fd, err_fd = os.dup(1), os.dup(2)
_nul = os.open('/dev/null', os.O_RDONLY)
os.dup2(_nul, 0)
os.close(_nul)
sys.argv = ['']
import __main__
g = __main__.__dict__
for k in [k for k in g if not k.startswith('__')]:
    del g[k]

def put(fd, b):
    while b:
        b = b[os.write(fd, b):]

put(out_fd, b'\0\0TG-READY\n')
while True:
    head = proto.readline()
    if not head:
        break
    nonce, n, size = head.split()
    src = b''
    while len(src) < int(size):
        more = proto.read(int(size) - len(src))
        if not more:
            os._exit(0)
        src += more
    src = src.decode('utf-8', 'surrogateescape')
    name = '<turn %d>' % int(n)
    status = 0
    try:
        tree = ast.parse(src, name)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Interactive(body=[tree.body.pop()])
        exec(compile(tree, name, 'exec'), g)
        if last is not None:
            exec(compile(last, name, 'single'), g)
    except SystemExit as e:
        c = e.code
        if c is None:
            status = 0
        elif isinstance(c, int):
            status = c & 0xFF
        else:
            print(c, file=sys.stderr)
            status = 1
    except SyntaxError as e:
        traceback.print_exception(type(e), e, None)
        status = 1
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ else None
        traceback.print_exception(type(e), e, tb)
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    put(err_fd, b'\0\0TG-END ' + nonce + b'\n')
    put(out_fd, b'\0\0TG-END ' + nonce + b' ' + str(status).encode() + b'\n')
"#;

/// `python3 -c` runs this; it runs the kernel in a namespace of its own so
/// `__main__` holds only the turns' names.
const BOOT: &str = "import sys; exec(sys.argv.pop(1), {'__name__': 'toolgate_kernel', '__builtins__': __builtins__})";

const READY: &[u8] = b"\0\0TG-READY\n";

/// How long a kernel may take to start (python's start-up in a fresh container).
const START: Duration = Duration::from_secs(30);

/// How often a turn's CPU time is read from the cgroup.
const CPU_POLL: Duration = Duration::from_millis(20);

/// A live session's container and kernel.
struct Kernel {
    id: String,
    exec_id: String,
    /// Held for the container's life.
    _slot: Slot,
    /// The session's workspace folder (bound at `/workspace`).
    dir: Option<tempfile::TempDir>,
    input: Input,
    output: Output,
    born: Instant,
    last: Instant,
    turns: u64,
    /// The cgroup's OOM kills and refused forks seen so far: a turn that
    /// adds to them hit that limit.
    oom_kills: u64,
    pids_refused: u64,
    /// Output that came after a turn's end marker (a thread of it still
    /// writing); it opens the next turn's output.
    carry: (Vec<u8>, Vec<u8>),
}

/// A session as the backend keeps it.
pub(super) struct Entry {
    info: Arc<Mutex<SessionInfo>>,
    /// `None` once the session ended. Held for the whole of a turn.
    kernel: tokio::sync::Mutex<Option<Kernel>>,
    /// Set when the session ends (read without waiting for a turn).
    gone: AtomicBool,
    /// The task that ends it when idle or old.
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    /// Stops taking turns; the caller removes the container.
    pub(super) fn close(&self) {
        self.gone.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.lock().ok().and_then(|mut w| w.take()) {
            w.abort();
        }
    }
}

impl session::Entry for Entry {
    fn info(&self) -> SessionInfo {
        crate::sandbox::session::snapshot(&self.info)
    }

    fn open(&self) -> bool {
        !self.gone.load(Ordering::SeqCst) && self.info().state == "open"
    }
}

pub(super) type Sessions = session::Registry<Entry>;

/// Finds a marker in one output stream: bytes before it are output, the
/// rest of its line is the marker's value.
struct Scan {
    marker: Vec<u8>,
    out: Capped,
    pending: Vec<u8>,
    /// The marker's value and what followed, once it was seen.
    after: Option<Vec<u8>>,
}

impl Scan {
    fn new(marker: String, cap: usize, carried: Vec<u8>) -> Scan {
        let mut out = Capped::new(cap);
        out.push(&carried);
        Scan {
            marker: marker.into_bytes(),
            out,
            pending: Vec::new(),
            after: None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if let Some(a) = &mut self.after {
            a.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        if let Some(at) = find(&self.pending, &self.marker) {
            self.out.push(&self.pending[..at]);
            self.after = Some(self.pending[at + self.marker.len()..].to_vec());
            self.pending.clear();
        } else {
            // Keep what could be the start of a marker split across chunks.
            let keep = self.pending.len().min(self.marker.len() - 1);
            let cut = self.pending.len() - keep;
            self.out.push(&self.pending[..cut]);
            self.pending.drain(..cut);
        }
    }

    /// The marker's value, once its line is complete, and what followed it.
    fn done(&self) -> Option<(&[u8], &[u8])> {
        let a = self.after.as_deref()?;
        let nl = a.iter().position(|b| *b == b'\n')?;
        Some((&a[..nl], &a[nl + 1..]))
    }

    /// Output so far, and what may still be a marker's start (a kernel that
    /// died mid-marker left it: it is output).
    fn finish(mut self) -> (Vec<u8>, bool) {
        let pending = std::mem::take(&mut self.pending);
        self.out.push(&pending);
        self.out.take()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How a turn ended, before classification.
enum Ended {
    /// Both markers came: the turn's exit status.
    Marked(i32),
    /// The kernel's output closed: it died.
    Died,
    Wall,
    Cpu,
}

impl DockerBackend {
    /// Runs `code` as the next turn of session `r`, opening it if needed.
    pub(super) async fn session_turn(
        &self,
        r: &SessionRef,
        language: Language,
        code: &str,
        stdin: Option<&str>,
        plan: &Plan,
    ) -> Result<RawOutput, SandboxError> {
        crate::sandbox::session::check_turn(language, stdin)?;
        let profile = Profile::of(plan)?;
        let mut notes = Vec::new();
        // A session may end (idle, lifetime) between being found and being
        // locked: a turn it never started goes to a new session, once.
        for _ in 0..2 {
            let entry = self.session_entry(r, plan, &profile, &mut notes).await?;
            let mut guard = entry.kernel.lock().await;
            let Some(k) = guard.as_mut() else {
                continue;
            };
            // Its bounds passed while this turn waited: it ends as its
            // watcher would have ended it, and the turn goes to a new one.
            if let Some(why) = self.overdue(k) {
                session::end(&entry.info, why);
                entry.close();
                if let Some(k) = guard.take() {
                    self.remove_now(&k.id).await;
                }
                continue;
            }
            let started = Instant::now();
            let stage = plan.mounts.first().map(|m| m.host.clone());
            if let (Some(d), Some(host)) = (&k.dir, &stage) {
                crate::sandbox::stage::lend(host, d.path())?;
            }
            // Under an allowlist the turn's own egress proxy serves the
            // container's `lo` while the turn runs.
            let ran = match self.egress(&k.id, plan).await {
                Ok(serving) => {
                    let mut r = self.turn(k, code, plan).await;
                    if let (Some(s), Ok((out, _))) = (serving, &mut r) {
                        out.egress = s.finish();
                    }
                    r
                }
                Err(e) => Err(e),
            };
            k.turns += 1;
            k.last = Instant::now();
            session::count_turn(&entry.info);
            let why = match &ran {
                Ok((_, why)) => why.clone(),
                Err(e) => Some(format!("the sandbox failed: {e}")),
            };
            // Nothing of the turn may run when its stage comes back: a
            // session that ends loses its container first.
            let ended = match &why {
                Some(why) => {
                    session::end(&entry.info, why.clone());
                    entry.gone.store(true, Ordering::SeqCst);
                    let k = guard.take();
                    if let Some(k) = &k {
                        self.remove_now(&k.id).await;
                    }
                    k
                }
                None => None,
            };
            let dir = ended
                .as_ref()
                .or(guard.as_ref())
                .and_then(|k| k.dir.as_ref());
            if let (Some(d), Some(host)) = (dir, &stage) {
                crate::sandbox::stage::lend(d.path(), host)?;
            }
            drop(ended);
            let (mut out, _) = ran?;
            if let Some(why) = why {
                out.notes.push(format!("the session ended: {why}"));
            }
            out.duration = started.elapsed();
            notes.append(&mut out.notes);
            out.notes = notes;
            return Ok(out);
        }
        Err(SandboxError::Unavailable {
            backend: "docker",
            detail: format!("session {:?} could not take the turn", r.name),
        })
    }

    /// `r`'s open session, or a new one (saying so in `notes`).
    async fn session_entry(
        &self,
        r: &SessionRef,
        plan: &Plan,
        profile: &Profile,
        notes: &mut Vec<String>,
    ) -> Result<Arc<Entry>, SandboxError> {
        let before = match self.inner.sessions.live(r) {
            (Some(e), _) => return Ok(e),
            (None, before) => before,
        };
        let cfg = &self.inner.cfg;
        self.inner
            .sessions
            .room_for(&r.principal, cfg.sessions_per_principal)?;
        let slot = self
            .inner
            .pool
            .try_slot()
            .ok_or_else(|| SandboxError::Unavailable {
                backend: "docker",
                detail: "every container slot is taken: no room for a new session".into(),
            })?;
        // The kernel lives for the session: RLIMIT_CPU (per process, and it
        // adds up over turns) only backs the per-turn limit up.
        let mut profile = profile.clone();
        profile.cpu_secs = cfg.session_lifetime.as_secs().max(1);
        let kernel = self.open_kernel(&profile, plan, slot).await?;
        let opened = session::now_ms();
        let entry = Arc::new(Entry {
            info: Arc::new(Mutex::new(SessionInfo {
                name: r.name.clone(),
                language: "python",
                backend: "docker",
                state: "open",
                ended: None,
                turns: 0,
                opened_at_ms: opened,
                last_turn_at_ms: opened,
                memory_limit_bytes: plan.limits.memory_bytes,
                idle_timeout_s: cfg.session_idle.as_secs(),
                lifetime_s: cfg.session_lifetime.as_secs(),
            })),
            kernel: tokio::sync::Mutex::new(Some(kernel)),
            gone: AtomicBool::new(false),
            watcher: Mutex::new(None),
        });
        let w = self.watch(Arc::downgrade(&entry));
        if let Ok(mut slot) = entry.watcher.lock() {
            *slot = Some(w);
        }
        notes.push(session::opened_note(&r.name, before));
        self.inner.sessions.insert(r.clone(), entry.clone());
        Ok(entry)
    }

    /// A container for a session, its kernel started and ready, paused.
    async fn open_kernel(
        &self,
        profile: &Profile,
        plan: &Plan,
        slot: Slot,
    ) -> Result<Kernel, SandboxError> {
        let w = self.create(profile, "session", slot).await?;
        let id = w.id.clone();
        match self.start_kernel(&w.id, plan).await {
            Ok((exec_id, input, output, carry)) => {
                let k = Kernel {
                    oom_kills: Self::oom_kills(&id),
                    pids_refused: Self::pids_refused(&id),
                    id: w.id,
                    exec_id,
                    _slot: w.slot,
                    dir: w.dir,
                    input,
                    output,
                    born: Instant::now(),
                    last: Instant::now(),
                    turns: 0,
                    carry: (carry, Vec::new()),
                };
                Ok(k)
            }
            Err(e) => {
                self.remove_now(&id).await;
                Err(e)
            }
        }
    }

    async fn start_kernel(
        &self,
        id: &str,
        plan: &Plan,
    ) -> Result<(String, Input, Output, Vec<u8>), SandboxError> {
        if Self::cpu_used(id).is_none() {
            return Err(SandboxError::Unavailable {
                backend: "docker",
                detail: "the container's CPU counter (cgroup) cannot be read here, so a session's per-turn CPU limit could not be enforced".into(),
            });
        }
        let exec = self
            .inner
            .docker
            .create_exec(
                id,
                ExecConfig {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec![
                        "python3".into(),
                        "-u".into(),
                        "-c".into(),
                        BOOT.into(),
                        KERNEL.into(),
                    ]),
                    user: Some(self.inner.uid.clone()),
                    working_dir: Some(crate::plan::GUEST_WORKSPACE.into()),
                    env: Some(Self::env(
                        plan,
                        // One CPU per container: BLAS threads would only
                        // contend (and count against the pids limit).
                        &[
                            "MPLBACKEND=Agg",
                            "OPENBLAS_NUM_THREADS=1",
                            "OMP_NUM_THREADS=1",
                        ],
                    )),
                    ..Default::default()
                },
            )
            .await
            .map_err(internal("create exec"))?;
        let (mut output, input) = self.attach(&exec.id).await?;
        let mut scan = Scan::new(
            String::from_utf8_lossy(READY).into_owned(),
            64 << 10,
            Vec::new(),
        );
        let ready = tokio::time::timeout(START, async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => {
                        scan.push(&message);
                        if scan.after.is_some() {
                            return true;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            return Err(SandboxError::Internal {
                op: "start the session's python",
                detail: format!(
                    "it did not start within {} s: {}",
                    START.as_secs(),
                    String::from_utf8_lossy(&scan.finish().0)
                ),
            });
        }
        let carry = scan.after.take().unwrap_or_default();
        self.inner
            .docker
            .pause_container(id)
            .await
            .map_err(internal("pause container"))?;
        Ok((exec.id, input, output, carry))
    }

    /// One turn in a live kernel: its output, and why the session must
    /// end, if it must.
    async fn turn(
        &self,
        k: &mut Kernel,
        code: &str,
        plan: &Plan,
    ) -> Result<(RawOutput, Option<String>), SandboxError> {
        let n = k.turns + 1;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let cap = plan.limits.output_bytes as usize;
        let (co, ce) = std::mem::take(&mut k.carry);
        let mut so = Scan::new(format!("\0\0TG-END {nonce} "), cap, co);
        let mut se = Scan::new(format!("\0\0TG-END {nonce}"), cap, ce);
        self.inner
            .docker
            .unpause_container(&k.id)
            .await
            .map_err(internal("unpause container"))?;
        let cpu0 = Self::cpu_used(&k.id).unwrap_or_default();
        let mut frame = format!("{nonce} {n} {}\n", code.len()).into_bytes();
        frame.extend_from_slice(code.as_bytes());
        let sent = async {
            k.input.write_all(&frame).await?;
            k.input.flush().await
        };
        let wall = tokio::time::sleep(plan.limits.wall_time);
        tokio::pin!(wall);
        let mut poll = tokio::time::interval(CPU_POLL);
        let ended = if sent.await.is_err() {
            Ended::Died
        } else {
            loop {
                tokio::select! {
                    item = k.output.next() => match item {
                        Some(Ok(LogOutput::StdOut { message })) => so.push(&message),
                        Some(Ok(LogOutput::StdErr { message })) => se.push(&message),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break Ended::Died,
                    },
                    _ = &mut wall => break Ended::Wall,
                    _ = poll.tick() => {
                        let used = Self::cpu_used(&k.id).unwrap_or_default().saturating_sub(cpu0);
                        if used >= plan.limits.cpu_time {
                            break Ended::Cpu;
                        }
                    }
                }
                if let (Some((status, rest_out)), Some((_, rest_err))) = (so.done(), se.done()) {
                    let status = std::str::from_utf8(status)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(1);
                    k.carry = (rest_out.to_vec(), rest_err.to_vec());
                    break Ended::Marked(status);
                }
            }
        };
        let mut out = RawOutput {
            cpu_time: Self::cpu_used(&k.id).map(|c| c.saturating_sub(cpu0)),
            ..RawOutput::default()
        };
        (out.stdout, out.stdout_truncated) = so.finish();
        (out.stderr, out.stderr_truncated) = se.finish();
        let (oom, refused) = (Self::oom_kills(&k.id), Self::pids_refused(&k.id));
        let (oom_now, refused_now) = (oom > k.oom_kills, refused > k.pids_refused);
        (k.oom_kills, k.pids_refused) = (oom, refused);
        match ended {
            Ended::Marked(status) => {
                out.exit_code = Some(status);
                // A child killed for memory; the kernel itself went on.
                if oom_now {
                    out.limits_hit.push(LimitHit::Memory);
                }
            }
            Ended::Wall => out.limits_hit.push(LimitHit::TimeoutWall),
            Ended::Cpu => out.limits_hit.push(LimitHit::TimeoutCpu),
            Ended::Died => {
                let code = self
                    .inner
                    .docker
                    .inspect_exec(&k.exec_id)
                    .await
                    .ok()
                    .and_then(|e| e.exit_code);
                match code {
                    _ if oom_now => out.limits_hit.push(LimitHit::Memory),
                    // SIGXCPU: the session's own RLIMIT_CPU backstop.
                    Some(152) => out.limits_hit.push(LimitHit::TimeoutCpu),
                    c => out.exit_code = c.map(|c| c as i32),
                }
                out.detail = Some("the session's python process ended".into());
            }
        }
        if refused_now {
            out.limits_hit.push(LimitHit::Pids);
        }
        if out.stdout_truncated || out.stderr_truncated {
            out.limits_hit.push(LimitHit::OutputTruncated);
        }
        let why = session::why_ended(&out, n, false, matches!(ended, Ended::Died));
        if why.is_none() {
            self.inner
                .docker
                .pause_container(&k.id)
                .await
                .map_err(internal("pause container"))?;
        }
        Ok((out, why))
    }

    /// Ends the session behind `entry` when it has been idle for
    /// `session_idle` or open for `session_lifetime`; a turn in progress
    /// finishes first (it holds the kernel).
    fn watch(&self, entry: Weak<Entry>) -> tokio::task::AbortHandle {
        let (b, idle, lifetime) = (
            self.clone(),
            self.inner.cfg.session_idle,
            self.inner.cfg.session_lifetime,
        );
        self.inner
            .rt
            .spawn(async move {
                loop {
                    let Some(e) = entry.upgrade() else { return };
                    let at = match &*e.kernel.lock().await {
                        Some(k) => (k.last + idle).min(k.born + lifetime),
                        None => return,
                    };
                    drop(e);
                    tokio::time::sleep_until(at.into()).await;
                    let Some(e) = entry.upgrade() else { return };
                    let mut g = e.kernel.lock().await;
                    let why = match &*g {
                        None => return,
                        Some(k) => match b.overdue(k) {
                            Some(why) => why,
                            None => continue,
                        },
                    };
                    session::end(&e.info, why);
                    e.gone.store(true, Ordering::SeqCst);
                    if let Some(k) = g.take() {
                        b.remove_now(&k.id).await;
                    }
                    return;
                }
            })
            .abort_handle()
    }

    /// Closes `principal`'s session `name`: its container is removed once
    /// a turn still running has finished.
    pub(super) fn close_docker_session(&self, principal: &str, name: &str) -> Option<SessionInfo> {
        let (info, e) = self.inner.sessions.close(&SessionRef {
            principal: principal.to_string(),
            name: name.to_string(),
        })?;
        e.close();
        let b = self.clone();
        self.track(self.inner.rt.spawn(async move {
            if let Some(k) = e.kernel.lock().await.take() {
                b.remove_now(&k.id).await;
            }
        }));
        Some(info)
    }

    /// Why a session must end now it is idle or old, if it must.
    fn overdue(&self, k: &Kernel) -> Option<String> {
        let (idle, lifetime) = (self.inner.cfg.session_idle, self.inner.cfg.session_lifetime);
        if k.born.elapsed() >= lifetime {
            Some(format!("its lifetime ({} s) ran out", lifetime.as_secs()))
        } else if k.last.elapsed() >= idle {
            Some(format!("idle for {} s", idle.as_secs()))
        } else {
            None
        }
    }

    fn oom_kills(id: &str) -> u64 {
        Self::cgroup_counter(
            id,
            ("memory", "memory.oom_control"),
            "memory.events",
            "oom_kill ",
        )
        .unwrap_or(0)
    }

    fn pids_refused(id: &str) -> u64 {
        Self::cgroup_counter(id, ("pids", "pids.events"), "pids.events", "max ").unwrap_or(0)
    }
}
