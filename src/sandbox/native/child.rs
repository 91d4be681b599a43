//! What runs between `fork` and `exec` in the native sandbox.
//!
//! Three processes: the spawned child *C* joins the sandbox's cgroups,
//! drops to the sandbox uid, unshares user/mount/pid/net/ipc/uts/cgroup
//! namespaces and maps its own uid; it forks *G*, pid 1 of the new pid
//! namespace, which builds the filesystem view, pivots into it, brings up
//! `lo`, applies rlimits, Landlock, capability drop and seccomp, reports
//! [`READY`] and waits for its one call (a warm sandbox waits in a pool).
//! The call ([`encode_call`]: working directory, program, environment)
//! arrives on a pipe; G starts *T*, which execs the tool (vfork-style: no
//! copy of toolgate's memory), reaps it, kills whatever of the call is
//! left in the namespace, reports T's exit code and exits; C exits with
//! G's status. When G dies the kernel kills the whole namespace, so
//! killing C (G has `PDEATHSIG`) kills every process of the sandbox.
//!
//! Everything is prepared in the parent (paths as C strings, the seccomp
//! programs); the child only makes syscalls, except Landlock's ruleset,
//! built with the `landlock` crate after the view exists (its rules need
//! the new mounts' inodes). That allocates, which glibc's `fork` makes
//! safe (it resets the allocator's locks in the child); toolgate targets
//! linux-gnu for this backend.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// One step of building the view under the new root (paths absolute on
/// the host, already prefixed with the new root).
#[derive(Debug)]
pub enum Step {
    /// `mkdir`, tolerating an existing directory (parents come first).
    Dir {
        path: CString,
        mode: u32,
    },
    /// A size-capped tmpfs.
    Tmpfs {
        target: CString,
        options: CString,
    },
    /// A bind mount of `source` (a host path, or a relay) with the flags
    /// in `attrs` set recursively.
    Bind {
        source: CString,
        target: CString,
        attrs: u64,
    },
    /// A device node of the host bound onto an empty file.
    Device {
        source: CString,
        target: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// A fresh procfs for the new pid namespace.
    Proc {
        target: CString,
    },
}

/// Everything the child needs, made before `fork`.
pub struct Spec {
    pub cgroup_procs: Vec<OwnedFd>,
    /// Read end of the pipe the call arrives on ([`encode_call`]); closed
    /// without a call, G exits.
    pub ctl: OwnedFd,
    /// Write end of the pipe G reports on: [`READY`] once the sandbox
    /// waits for its call, then the tool's exit code (4 bytes LE) once no
    /// process of the call is left.
    pub report: OwnedFd,
    /// `(host directory, relay)`: when toolgate is root, C binds each
    /// directory the sandbox user could not walk to (a stage in a private
    /// directory, a toolchain under /root) onto a relay it can reach,
    /// before it drops to that user; G binds the relays into the view.
    pub relays: Vec<(CString, CString)>,
    pub drop_to: Option<(u32, u32)>,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub root: CString,
    pub steps: Vec<Step>,
    pub landlock_read: Vec<PathBuf>,
    pub landlock_write: Vec<PathBuf>,
    pub seccomp: std::sync::Arc<Vec<seccompiler::BpfProgram>>,
    /// `(resource, soft, hard)`.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    /// toolgate's own argv and environment areas `(start, end)`: G is a
    /// copy of toolgate and the tool can read `/proc/1/cmdline`, so G
    /// blanks them (its environment holds the host's secrets).
    pub wipe: Vec<(usize, usize)>,
    /// Write end of the setup-error pipe: a failed step writes
    /// `[step, errno(4 bytes LE), view step]` here before exiting.
    pub err_fd: OwnedFd,
}

/// The byte G reports when its sandbox is built and waits for the call.
pub const READY: u8 = b'R';

/// The largest call message (the kernel refuses a bigger argv +
/// environment at exec anyway).
pub const MAX_CALL: usize = 8 << 20;

/// The call for a waiting sandbox: `[len u32][ncand u32][nargv u32][nenv
/// u32]` then NUL-terminated strings: the working directory, the paths
/// to try in order (the PATH search, done by the parent since the view
/// shows the host's paths), argv, the environment, and the message for
/// when no path can be executed. `None` when a string holds a NUL or the
/// whole exceeds [`MAX_CALL`].
pub fn encode_call(
    cwd: &[u8],
    candidates: &[String],
    argv: &[String],
    envp: &[String],
    not_found: &[u8],
) -> Option<Vec<u8>> {
    let strings = std::iter::once(cwd)
        .chain(candidates.iter().map(|s| s.as_bytes()))
        .chain(argv.iter().map(|s| s.as_bytes()))
        .chain(envp.iter().map(|s| s.as_bytes()))
        .chain(std::iter::once(not_found));
    let mut body = Vec::new();
    for part in [candidates.len(), argv.len(), envp.len()] {
        body.extend_from_slice(&u32::try_from(part).ok()?.to_le_bytes());
    }
    for s in strings {
        if s.contains(&0) {
            return None;
        }
        body.extend_from_slice(s);
        body.push(0);
    }
    if body.len() > MAX_CALL {
        return None;
    }
    let mut msg = u32::try_from(body.len()).ok()?.to_le_bytes().to_vec();
    msg.extend_from_slice(&body);
    Some(msg)
}

/// The strings of a call's body (after its length), as offsets of
/// NUL-terminated strings: `(cwd, candidates, argv, envp, not_found)`.
/// `None` when the body does not hold what its counts say.
#[allow(clippy::type_complexity)]
pub fn decode_call(body: &[u8]) -> Option<(usize, Vec<usize>, Vec<usize>, Vec<usize>, usize)> {
    let count = |i: usize| -> Option<usize> {
        let b = body.get(i * 4..i * 4 + 4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    };
    let (nc, na, ne) = (count(0)?, count(1)?, count(2)?);
    let mut at = 12;
    let mut next = || -> Option<usize> {
        let start = at;
        let len = body.get(start..)?.iter().position(|&b| b == 0)?;
        at = start + len + 1;
        Some(start)
    };
    let cwd = next()?;
    // Counts come from toolgate itself; still, never trust one to size a
    // vector before the strings are there.
    let mut take = |n: usize| -> Option<Vec<usize>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(next()?);
        }
        Some(v)
    };
    let cand = take(nc)?;
    let argv = take(na)?;
    let envp = take(ne)?;
    let not_found = next()?;
    (!argv.is_empty() && at == body.len()).then_some((cwd, cand, argv, envp, not_found))
}

/// Setup steps, by number in the error record.
pub const STEPS: &[&str] = &[
    "join the call's cgroups",
    "drop to the sandbox user",
    "unshare namespaces (are unprivileged user namespaces enabled?)",
    "write the uid/gid maps",
    "fork the namespace's init",
    "make mounts private",
    "bind the host root",
    "make the host root read-only",
    "build the filesystem view",
    "pivot into the view",
    "enter the working directory",
    "set the hostname",
    "bring up lo",
    "set rlimits",
    "apply Landlock",
    "drop capabilities",
    "apply seccomp",
    "fork the tool",
    "bind the workspace and exposed directories to their relays",
    "report to toolgate",
    "read the call",
];

const S_CGROUP: u8 = 0;
const S_SETUID: u8 = 1;
pub const S_UNSHARE: u8 = 2;
const S_MAPS: u8 = 3;
const S_FORK_INIT: u8 = 4;
const S_PRIVATE: u8 = 5;
const S_RBIND: u8 = 6;
const S_READONLY: u8 = 7;
pub const S_VIEW: u8 = 8;
const S_PIVOT: u8 = 9;
const S_CWD: u8 = 10;
const S_HOSTNAME: u8 = 11;
const S_LO: u8 = 12;
const S_RLIMIT: u8 = 13;
const S_LANDLOCK: u8 = 14;
const S_CAPS: u8 = 15;
const S_SECCOMP: u8 = 16;
const S_FORK_TOOL: u8 = 17;
const S_RELAY: u8 = 18;
const S_REPORT: u8 = 19;
const S_CALL: u8 = 20;

/// Exit status of C or G when setup failed (the error pipe says why).
pub const SETUP_FAILED: i32 = 126;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Records a failed step and exits; never returns.
fn fail(fd: RawFd, step: u8, err: i32) -> ! {
    fail_at(fd, step, 0, err)
}

/// Like `fail`, naming which view step (`sub`) failed.
fn fail_at(fd: RawFd, step: u8, sub: u8, err: i32) -> ! {
    let e = err.to_le_bytes();
    let rec = [step, e[0], e[1], e[2], e[3], sub];
    unsafe {
        libc::write(fd, rec.as_ptr().cast(), rec.len());
        libc::_exit(SETUP_FAILED)
    }
}

fn check(fd: RawFd, step: u8, rc: libc::c_long) {
    if rc < 0 {
        fail(fd, step, errno());
    }
}

fn write_file(path: &[u8], data: &[u8]) -> libc::c_long {
    unsafe {
        let f = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if f < 0 {
            return -1;
        }
        let n = libc::write(f, data.as_ptr().cast(), data.len());
        libc::close(f);
        if n < 0 { -1 } else { 0 }
    }
}

fn mount(
    src: *const libc::c_char,
    target: *const libc::c_char,
    fstype: *const libc::c_char,
    flags: libc::c_ulong,
    data: *const libc::c_char,
) -> libc::c_long {
    unsafe { libc::mount(src, target, fstype, flags, data.cast()) as libc::c_long }
}

fn setattr(target: &CString, set: u64, recursive: bool) -> libc::c_long {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// Waits for `pid`, reaping any other child meanwhile, and returns an
/// exit code that carries a signal death as `128 + signal`.
fn reap_until(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return SETUP_FAILED;
        }
        if r == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        }
    }
}

/// Forks. The parent (C or G) holds nothing open — std's exec-status
/// pipe must close when the tool execs, not when the call ends — waits
/// for the child and exits with its status; only the child returns.
fn fork_or_wait(efd: RawFd, step: u8) {
    let pid = unsafe { libc::fork() };
    check(efd, step, pid as libc::c_long);
    if pid > 0 {
        close_all_from(0);
        let code = reap_until(pid);
        unsafe { libc::_exit(code) }
    }
}

/// Stops mount events propagating between this namespace and the one it
/// was copied from (the host's, or the relay namespace).
fn make_private(efd: RawFd, step: u8) {
    let none = std::ptr::null::<libc::c_char>();
    check(
        efd,
        step,
        mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            none,
        ),
    );
}

fn close_all_from(first: u32) {
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0);
    }
}

/// Runs in C; never returns (T execs the tool itself, so `std`'s own
/// exec after this closure is never reached).
pub fn run(spec: &Spec) -> io::Result<()> {
    let efd = spec.err_fd.as_raw_fd();
    // If toolgate dies (its spawning thread, strictly: a tokio worker that
    // lives as long as the runtime), the sandbox dies with it.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    // Join the call's groups first: every process made later is counted.
    for f in &spec.cgroup_procs {
        check(
            efd,
            S_CGROUP,
            unsafe { libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) } as libc::c_long,
        );
    }
    if !spec.relays.is_empty() {
        let none = std::ptr::null::<libc::c_char>();
        check(efd, S_RELAY, unsafe { libc::unshare(libc::CLONE_NEWNS) }
            as libc::c_long);
        make_private(efd, S_RELAY);
        for (host, relay) in &spec.relays {
            check(
                efd,
                S_RELAY,
                mount(
                    host.as_ptr(),
                    relay.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    none,
                ),
            );
        }
    }
    if let Some((uid, gid)) = spec.drop_to {
        unsafe {
            check(
                efd,
                S_SETUID,
                libc::setgroups(0, std::ptr::null()) as libc::c_long,
            );
            check(
                efd,
                S_SETUID,
                libc::setresgid(gid, gid, gid) as libc::c_long,
            );
            check(
                efd,
                S_SETUID,
                libc::setresuid(uid, uid, uid) as libc::c_long,
            );
            // A changed uid makes the process undumpable, which makes its
            // /proc files root's: the uid map below could not be written.
            check(
                efd,
                S_SETUID,
                libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) as libc::c_long,
            );
        }
    }
    let ns = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    check(efd, S_UNSHARE, unsafe { libc::unshare(ns) } as libc::c_long);
    check(efd, S_MAPS, write_file(b"/proc/self/setgroups\0", b"deny"));
    check(
        efd,
        S_MAPS,
        write_file(b"/proc/self/uid_map\0", &spec.uid_map),
    );
    check(
        efd,
        S_MAPS,
        write_file(b"/proc/self/gid_map\0", &spec.gid_map),
    );

    fork_or_wait(efd, S_FORK_INIT);
    // G, pid 1 of the new namespace. It dies with C.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    build_view(spec, efd);
    confine(spec, efd);
    // G keeps a copy of toolgate's memory: make /proc/1/{environ,mem,…}
    // unreadable to the tool, and blank what /proc/1/cmdline still shows.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        for &(start, end) in &spec.wipe {
            if end > start {
                std::ptr::write_bytes(start as *mut u8, 0, end - start);
            }
        }
    }
    // A warm sandbox may wait long: it holds none of toolgate's
    // descriptors (a client's socket would not close while it waits).
    let (ctl, report) = (spec.ctl.as_raw_fd(), spec.report.as_raw_fd());
    close_all_but(&[0, 1, 2, efd, ctl, report]);
    check(
        efd,
        S_REPORT,
        unsafe { libc::write(report, [READY].as_ptr().cast(), 1) } as libc::c_long,
    );
    let Some(body) = read_call(ctl, efd) else {
        // Closed without a call: the pool let this sandbox go.
        unsafe { libc::_exit(0) }
    };
    let Some((cwd, cand, argv, envp, not_found)) = decode_call(&body) else {
        fail(efd, S_CALL, libc::EINVAL);
    };
    let at = |i: usize| body[i..].as_ptr().cast::<libc::c_char>();
    let ptrs = |v: &[usize]| -> Vec<*const libc::c_char> {
        v.iter().map(|&i| at(i)).chain([std::ptr::null()]).collect()
    };
    let x = Exec {
        candidates: cand.iter().map(|&i| at(i)).collect(),
        argv: ptrs(&argv),
        envp: ptrs(&envp),
        not_found: at(not_found).cast(),
        not_found_len: body[not_found..].iter().position(|&b| b == 0).unwrap_or(0),
    };
    check(efd, S_CWD, unsafe { libc::chdir(at(cwd)) } as libc::c_long);
    spawn_tool(&x, efd, ctl, report)
}

/// Closes every descriptor but `keep`.
fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&f| u32::try_from(f).ok()).collect();
    keep.sort_unstable();
    let mut from = 0u32;
    for k in keep {
        if k > from {
            unsafe {
                libc::syscall(libc::SYS_close_range, from, k - 1, 0);
            }
        }
        from = from.max(k + 1);
    }
    close_all_from(from);
}

/// Reads the call's length and body from `fd` (blocking). `None` when the
/// pipe closes before a length arrives.
fn read_call(fd: RawFd, efd: RawFd) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    if !read_exact(fd, &mut len, efd) {
        return None;
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_CALL {
        fail(efd, S_CALL, libc::E2BIG);
    }
    let mut body = vec![0u8; n];
    if !read_exact(fd, &mut body, efd) {
        fail(efd, S_CALL, libc::EPIPE);
    }
    Some(body)
}

/// Fills `buf` from `fd`; false at end of file before the first byte.
fn read_exact(fd: RawFd, buf: &mut [u8], efd: RawFd) -> bool {
    let mut got = 0;
    while got < buf.len() {
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            fail(efd, S_CALL, errno());
        }
        if r == 0 {
            if got == 0 {
                return false;
            }
            fail(efd, S_CALL, libc::EPIPE);
        }
        got += r as usize;
    }
    true
}

/// What T needs to exec, as pointers into the call's body (in G).
struct Exec {
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    not_found: *const u8,
    not_found_len: usize,
}

/// T: tries each candidate path, then reports and exits like a shell
/// (127 not found, 126 found but not executable). Runs on its own stack
/// in G's memory (`CLONE_VM | CLONE_VFORK`): only syscalls.
extern "C" fn exec_tool(arg: *mut libc::c_void) -> libc::c_int {
    let x = unsafe { &*(arg as *const Exec) };
    let mut code = 127;
    for &path in &x.candidates {
        unsafe { libc::execve(path, x.argv.as_ptr(), x.envp.as_ptr()) };
        if errno() != libc::ENOENT && errno() != libc::ENOTDIR {
            code = 126;
        }
    }
    unsafe {
        libc::write(2, x.not_found.cast(), x.not_found_len);
        libc::_exit(code)
    }
}

/// G starts the tool with `CLONE_VM | CLONE_VFORK` (no copy of
/// toolgate's memory; G waits until T has exec'd), reaps it, ends what
/// is left of the call, reports T's status on `report`, and exits with
/// it once `ctl` closes. Never returns.
fn spawn_tool(x: &Exec, efd: RawFd, ctl: RawFd, report: RawFd) -> ! {
    // Only stdin, stdout and stderr reach the tool: G's other descriptors
    // (the pipes to toolgate) close at its exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    let mut stack = vec![0u8; 64 << 10];
    // The stack grows down; keep the top 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let pid = unsafe {
        libc::clone(
            exec_tool,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            x as *const Exec as *mut libc::c_void,
        )
    };
    check(efd, S_FORK_TOOL, pid as libc::c_long);
    // The tool's output ends when the tool and its children are done, not
    // when G is: G lets go of its copies.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, 2u32, 0);
    }
    let code = reap_until(pid);
    end_the_rest();
    let c = code.to_le_bytes();
    unsafe {
        libc::write(report, c.as_ptr().cast(), c.len());
        // Tearing the namespace down costs a few milliseconds of kernel
        // time: G lingers, idle, until toolgate lets it go (closes the
        // call pipe or kills C) after the call has returned.
        let mut b = [0u8; 1];
        loop {
            let r = libc::read(ctl, b.as_mut_ptr().cast(), 1);
            if r == 0 || (r < 0 && errno() != libc::EINTR) {
                break;
            }
        }
        libc::_exit(code)
    }
}

/// Kills and reaps every process left in the namespace (the tool's
/// children, daemonised or not: orphans are G's), so that when G reports,
/// nothing of the call runs any more. As the namespace's init, G reaches
/// every process in it with `kill(-1)`.
fn end_the_rest() {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r == 0 {
            unsafe { libc::kill(-1, libc::SIGKILL) };
            loop {
                let r = unsafe { libc::waitpid(-1, &mut status, 0) };
                if r < 0 && errno() != libc::EINTR {
                    return;
                }
            }
        }
        // ECHILD: no process but G is left.
        return;
    }
}

fn build_view(spec: &Spec, efd: RawFd) {
    let none = std::ptr::null::<libc::c_char>();
    let root = spec.root.as_ptr();
    unsafe {
        libc::umask(0o022);
    }
    make_private(efd, S_PRIVATE);
    check(
        efd,
        S_RBIND,
        mount(
            c"/".as_ptr(),
            root,
            none,
            libc::MS_BIND | libc::MS_REC,
            none,
        ),
    );
    check(
        efd,
        S_READONLY,
        setattr(
            &spec.root,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            true,
        ),
    );
    for (i, step) in spec.steps.iter().enumerate() {
        let rc = match step {
            Step::Dir { path, mode } => unsafe {
                let r = libc::mkdir(path.as_ptr(), *mode);
                if r < 0 && errno() != libc::EEXIST {
                    -1
                } else {
                    libc::chmod(path.as_ptr(), *mode);
                    0
                }
            },
            Step::Tmpfs { target, options } => mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr(),
            ),
            Step::Bind {
                source,
                target,
                attrs,
            } => {
                let r = mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    none,
                );
                if r < 0 {
                    r
                } else {
                    setattr(target, *attrs, true)
                }
            }
            Step::Device { source, target } => unsafe {
                let f = libc::open(
                    target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if f >= 0 {
                    libc::close(f);
                    mount(source.as_ptr(), target.as_ptr(), none, libc::MS_BIND, none)
                } else {
                    -1
                }
            },
            Step::Symlink { target, link } => unsafe {
                libc::symlink(target.as_ptr(), link.as_ptr()) as libc::c_long
            },
            Step::Proc { target } => mount(
                c"proc".as_ptr(),
                target.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                none,
            ),
        };
        if rc < 0 {
            fail_at(efd, S_VIEW, i.min(255) as u8, errno());
        }
    }
    // pivot_root(".", ".") stacks the old root under the new one; the
    // detach then drops it (pivot_root(2), "NOTES").
    unsafe {
        check(efd, S_PIVOT, libc::chdir(root) as libc::c_long);
        check(
            efd,
            S_PIVOT,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()),
        );
        check(
            efd,
            S_PIVOT,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH) as libc::c_long,
        );
        check(efd, S_PIVOT, libc::chdir(c"/".as_ptr()) as libc::c_long);
        let name = b"toolgate";
        check(
            efd,
            S_HOSTNAME,
            libc::sethostname(name.as_ptr().cast(), name.len()) as libc::c_long,
        );
    }
    lo_up(efd);
}

/// `struct ifreq` with the flags member (the only one used).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings up the namespace's loopback (its only interface; no route
/// leaves it).
fn lo_up(efd: RawFd) {
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(efd, S_LO, s as libc::c_long);
        let mut req = IfReqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        check(
            efd,
            S_LO,
            libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) as libc::c_long,
        );
        req.flags |= libc::IFF_UP as libc::c_short;
        check(
            efd,
            S_LO,
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req) as libc::c_long,
        );
        libc::close(s);
    }
}

fn confine(spec: &Spec, efd: RawFd) {
    for &(res, soft, hard) in &spec.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        check(efd, S_RLIMIT, unsafe { libc::setrlimit(res, &lim) }
            as libc::c_long);
    }
    if let Err(e) = landlock(spec) {
        fail(efd, S_LANDLOCK, e);
    }
    // No capability survives: clear the bounding and ambient sets (exec as
    // a non-zero uid clears the rest) and forbid regaining any.
    unsafe {
        for cap in 0..=63 {
            let r = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            if r < 0 && errno() == libc::EINVAL {
                break;
            }
            check(efd, S_CAPS, r as libc::c_long);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        check(
            efd,
            S_CAPS,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long,
        );
    }
    for prog in spec.seccomp.iter() {
        if seccompiler::apply_filter(prog).is_err() {
            fail(efd, S_SECCOMP, errno());
        }
    }
}

/// Landlock: read (and execute) only beneath `landlock_read`, write only
/// beneath `landlock_write`; signals and abstract sockets scoped to the
/// sandbox. Best effort on kernels with an older ABI (the doctor says
/// which); an error is an errno for the setup record.
fn landlock(spec: &Spec) -> Result<(), i32> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let e = |_| libc::EPERM;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let status = Ruleset::default()
        .handle_access(all)
        .map_err(e)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(e)?
        .create()
        .map_err(e)?
        .add_rules(path_beneath_rules(&spec.landlock_read, read))
        .map_err(e)?
        .add_rules(path_beneath_rules(&spec.landlock_write, all))
        .map_err(e)?
        .restrict_self()
        .map_err(e)?;
    let _ = status;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn at(body: &[u8], i: usize) -> &[u8] {
        let n = body[i..].iter().position(|&b| b == 0).unwrap();
        &body[i..i + n]
    }

    #[test]
    fn a_call_reads_back_as_it_was_written() {
        let msg = encode_call(
            b"/ws/sub",
            &s(&["/usr/bin/sh", "/bin/sh"]),
            &s(&["sh", "-c", "echo 'a b'", ""]),
            &s(&["PATH=/usr/bin", "HOME=/home/x"]),
            b"not found\n",
        )
        .unwrap();
        let len = u32::from_le_bytes(msg[..4].try_into().unwrap()) as usize;
        let body = &msg[4..];
        assert_eq!(len, body.len());
        let (cwd, cand, argv, envp, nf) = decode_call(body).unwrap();
        assert_eq!(at(body, cwd), b"/ws/sub");
        let all = |v: &[usize]| v.iter().map(|&i| at(body, i).to_vec()).collect::<Vec<_>>();
        assert_eq!(all(&cand), [b"/usr/bin/sh".to_vec(), b"/bin/sh".to_vec()]);
        assert_eq!(
            all(&argv),
            [
                b"sh".to_vec(),
                b"-c".to_vec(),
                b"echo 'a b'".to_vec(),
                vec![]
            ]
        );
        assert_eq!(all(&envp).len(), 2);
        assert_eq!(at(body, nf), b"not found\n");
    }

    #[test]
    fn a_nul_or_an_oversize_call_is_refused_and_a_short_body_does_not_decode() {
        assert!(encode_call(b"/", &[], &s(&["a\0b"]), &[], b"").is_none());
        assert!(encode_call(b"/w\0", &[], &s(&["a"]), &[], b"").is_none());
        let big = "x".repeat(MAX_CALL);
        assert!(encode_call(b"/", &[], &[big], &[], b"").is_none());
        let msg = encode_call(b"/", &[], &s(&["a"]), &[], b"nf").unwrap();
        let body = &msg[4..];
        for cut in 0..body.len() {
            assert!(decode_call(&body[..cut]).is_none(), "cut at {cut}");
        }
        // Counts larger than the strings present, and trailing bytes.
        let mut more = body.to_vec();
        more[4] = 9;
        assert!(decode_call(&more).is_none());
        let mut extra = body.to_vec();
        extra.extend_from_slice(b"z\0");
        assert!(decode_call(&extra).is_none());
        // No program at all.
        let none = encode_call(b"/", &[], &[], &[], b"").unwrap();
        assert!(decode_call(&none[4..]).is_none());
    }
}
