//! Sessions: one Python instance kept across calls, like a notebook kernel.
//!
//! A `run_code` call naming a `session` is a *turn*: the policy decides it
//! like any call, it runs on a stage of the workspace lent to the
//! session's own folder, and it is audited. Its code runs through the
//! reactor's `turn` export in the session's `__main__`, so variables and
//! imports carry over (and a last expression's value is printed).
//!
//! Sessions are keyed by owner and name ([`SessionRef`]): a principal never
//! reaches another's. Each holds a sandbox slot and lives on its own
//! thread until it is closed, idle for `session_idle`, older than
//! `session_lifetime`, or a turn hits a limit, exits or traps — a limit
//! ends the session, since a guest stopped mid-turn is in no known state.
//! CPU, wall time and output are per turn; the memory cap is the whole
//! session's. An ended session is listed with why; the next turn of its
//! name opens a new one and says so.

use super::io::Sink;
use super::{
    Loaded, Profile, RawOutput, SandboxError, Shared, TICK, classify, instantiate_failure,
    new_store, reactor, thread_cpu_ns,
};
use crate::outcome::LimitHit;
use crate::sandbox::SessionRef;
use crate::sandbox::pool::Slot;
pub(super) use crate::sandbox::session::{SessionInfo, end, now_ms};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use wasmtime::Engine;

/// Run once when a session opens: fresh seeds (the image holds those of
/// install) and an empty `__main__` (pre-init imported into it).
const OPEN: &str = "import random as _r, sys as _s\n_r.seed()\n_n = _s.modules.get('numpy.random')\nif _n is not None:\n    _n.seed()\nfor _k in [k for k in globals() if not k.startswith('__')]:\n    del globals()[_k]\ndel _k\n";

/// One turn handed to a session's thread.
pub(super) struct Turn {
    pub code: String,
    pub cpu: Duration,
    pub wall: Duration,
    pub output_cap: usize,
    /// Set when the session's thread takes the turn (a turn it never took
    /// may go to another session).
    pub started: Arc<std::sync::atomic::AtomicBool>,
    pub reply: oneshot::Sender<Result<RawOutput, SandboxError>>,
}

/// A live or ended session.
pub(super) struct Entry {
    pub info: Arc<Mutex<SessionInfo>>,
    pub tx: mpsc::Sender<Turn>,
    /// The session's own workspace folder, to which each turn's stage is lent.
    pub dir: tempfile::TempDir,
    /// One turn at a time.
    pub turn: tokio::sync::Mutex<()>,
}

impl crate::sandbox::session::Entry for Entry {
    fn info(&self) -> SessionInfo {
        crate::sandbox::session::snapshot(&self.info)
    }

    fn open(&self) -> bool {
        self.info().state == "open" && !self.tx.is_closed()
    }
}

/// Every session of this backend.
pub(super) type Sessions = crate::sandbox::session::Registry<Entry>;

/// What a session is opened with.
pub(super) struct Opening {
    pub engine: Engine,
    pub loaded: Arc<Loaded>,
    pub profile: Profile,
    pub idle: Duration,
    pub lifetime: Duration,
    pub slot: Slot,
}

/// Starts a session's thread; its first turn is the caller's to send.
pub(super) fn spawn(r: &SessionRef, o: Opening) -> Result<Arc<Entry>, SandboxError> {
    let dir = crate::sandbox::stage::sandbox_dir(crate::plan::BackendKind::Wasm, None)?;
    let opened = now_ms();
    let info = Arc::new(Mutex::new(SessionInfo {
        name: r.name.clone(),
        language: "python",
        backend: "wasm",
        state: "open",
        ended: None,
        turns: 0,
        opened_at_ms: opened,
        last_turn_at_ms: opened,
        memory_limit_bytes: o.profile.memory_cap,
        idle_timeout_s: o.idle.as_secs(),
        lifetime_s: o.lifetime.as_secs(),
    }));
    let (tx, rx) = mpsc::channel(1);
    let (thread_info, path) = (info.clone(), dir.path().to_path_buf());
    std::thread::Builder::new()
        .name("toolgate-session".into())
        .spawn(move || {
            let _slot = o.slot;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            else {
                end(&thread_info, "its runtime could not start".into());
                return;
            };
            let (why, last) = rt.block_on(life(
                o.engine, o.loaded, o.profile, path, o.idle, o.lifetime, rx,
            ));
            // Ended as soon as it is (a new turn of the name opens a new
            // session); blocking host calls of a stopped turn end with the
            // runtime, and only then may the caller take its stage back.
            end(&thread_info, why);
            rt.shutdown_timeout(Duration::from_secs(2));
            if let Some((reply, out)) = last {
                let _ = reply.send(Ok(out));
            }
        })
        .map_err(|e| SandboxError::Internal {
            op: "spawn session thread",
            detail: e.to_string(),
        })?;
    Ok(Arc::new(Entry {
        info,
        tx,
        dir,
        turn: tokio::sync::Mutex::new(()),
    }))
}

/// The reply to a session's last turn, held until its runtime is gone.
type LastReply = Option<(oneshot::Sender<Result<RawOutput, SandboxError>>, RawOutput)>;

/// A session's whole life on its thread; returns why it ended, and the
/// reply to the turn that ended it.
async fn life(
    engine: Engine,
    loaded: Arc<Loaded>,
    profile: Profile,
    dir: std::path::PathBuf,
    idle: Duration,
    lifetime: Duration,
    mut rx: mpsc::Receiver<Turn>,
) -> (String, LastReply) {
    let born = Instant::now();
    let shared = Arc::new(Shared::new());
    let (stdout, stderr) = (Sink::new(0), Sink::new(64 << 10));
    // No input: a turn that reads stdin reads its end.
    let (reader, _) = tokio::io::simplex(1);
    let opened = async {
        let mut store = new_store(
            &engine,
            &loaded,
            &profile,
            Some(&dir),
            &shared,
            (&stdout, &stderr),
            reader,
        )
        .map_err(Err)?;
        let instance = match loaded.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(instantiate_failure(&shared, &loaded, &profile, e)),
        };
        match reactor::turn(&mut store, &instance, OPEN).await {
            Ok(0) => Ok((store, instance)),
            other => Err(Err(SandboxError::Internal {
                op: "open session",
                detail: format!(
                    "{:?}; {}",
                    other.map_err(|e| format!("{e:#}")),
                    String::from_utf8_lossy(&stderr.take().0)
                ),
            })),
        }
    };
    let (mut store, instance) = match opened.await {
        Ok(s) => s,
        Err(failure) => {
            // The first turn learns why; the session never opened.
            if let Some(t) = rx.recv().await {
                let _ = t.reply.send(failure);
            }
            return ("it could not start".into(), None);
        }
    };
    let (_, _) = (stdout.take(), stderr.take());
    let mut n = 0u64;
    loop {
        let left = lifetime.saturating_sub(born.elapsed());
        let t = match tokio::time::timeout(idle.min(left), rx.recv()).await {
            Ok(Some(t)) => t,
            Ok(None) => return ("closed".into(), None),
            Err(_) if born.elapsed() >= lifetime => {
                let why = format!("its lifetime ({} s) ran out", lifetime.as_secs());
                return (why, None);
            }
            Err(_) => return (format!("idle for {} s", idle.as_secs()), None),
        };
        t.started.store(true, std::sync::atomic::Ordering::SeqCst);
        n += 1;
        shared.reset();
        stdout.set_cap(t.output_cap);
        stderr.set_cap(t.output_cap);
        shared.arm(t.cpu, t.wall);
        let finished = tokio::select! {
            r = reactor::turn(&mut store, &instance, &t.code) => Some(r),
            _ = tokio::time::sleep(t.wall + TICK) => None,
        };
        let quit = matches!(finished, Some(Ok(s)) if s >= 256);
        let mut out = RawOutput::default();
        classify(finished.map(|r| r.map(|s| s & 0xFF)), &shared, &mut out);
        out.cpu_time = Some(Duration::from_nanos(
            thread_cpu_ns().saturating_sub(
                shared
                    .cpu_start_ns
                    .load(std::sync::atomic::Ordering::SeqCst),
            ),
        ));
        let (o, ot) = stdout.take();
        let (e, et) = stderr.take();
        (
            out.stdout,
            out.stderr,
            out.stdout_truncated,
            out.stderr_truncated,
        ) = (o, e, ot, et);
        if ot || et {
            out.limits_hit.push(LimitHit::OutputTruncated);
        }
        // A limit, a trap, an exit or a quit leaves no interpreter to go on with.
        let why = crate::sandbox::session::why_ended(&out, n, quit, out.exit_code.is_none());
        match why {
            Some(why) => {
                out.notes.push(format!("the session ended: {why}"));
                return (why, Some((t.reply, out)));
            }
            None => {
                let _ = t.reply.send(Ok(out));
            }
        }
    }
}
