//! Escape attempts against the native sandbox, run straight on the backend
//! (no policy in front): each must be refused, and for the right reason —
//! the error the layer that stops it gives.

use super::native::{native, open_workspace, policy, sh_on, text};
use toolgate::plan::MountAccess;

/// Runs a python probe that prints one `name: result` line per attempt.
fn probe(code: &str) -> Option<String> {
    let b = native()?;
    let ws = open_workspace();
    std::fs::write(ws.path().join("probe.py"), code).unwrap();
    let p = policy(|_| {});
    let o = sh_on(
        &b,
        ws.path(),
        &p,
        MountAccess::ReadWrite,
        "python3 probe.py 2>&1",
    );
    assert_eq!(o.exit_code, Some(0), "probe failed: {}", text(&o.stdout));
    Some(text(&o.stdout))
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

const ATTEMPT: &str = r#"
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, f):
    try:
        r = f()
        print(f"{name}: DONE {r!r}")
    except OSError as e:
        print(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")
def c(name, rc):
    print(f"{name}: " + ("DONE" if rc >= 0 else errno.errorcode[ctypes.get_errno()]))
"#;

#[test]
fn writes_outside_the_workspace_are_refused() {
    let marker = format!("toolgate-escape-{}", uuid::Uuid::new_v4().simple());
    let host_tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let code = format!(
        "{ATTEMPT}
for d in ['/etc', '/usr', '/usr/local/bin', '/var/lib', '/', {ht:?}]:
    attempt('write ' + d, lambda: open(os.path.join(d, {marker:?}), 'w').write('x'))
",
        ht = host_tmp.path().display().to_string()
    );
    let Some(out) = probe(&code) else { return };
    for d in ["/etc", "/usr", "/usr/local/bin", "/var/lib", "/"] {
        // The host root is mounted read-only.
        assert_eq!(line(&out, &format!("write {d}")), "EROFS", "{out}");
        assert!(!std::path::Path::new(d).join(&marker).exists());
    }
    // The host's /var/tmp is replaced by the sandbox's own: the host
    // directory does not exist inside.
    let l = line(&out, &format!("write {}", host_tmp.path().display()));
    assert_eq!(l, "ENOENT", "{out}");
    assert_eq!(std::fs::read_dir(host_tmp.path()).unwrap().count(), 0);
}

#[test]
fn secrets_and_other_users_files_are_unreadable() {
    // Another user's home with a readable file in it, made by the test.
    let other = std::path::PathBuf::from(format!(
        "/home/toolgate-other-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let made = std::fs::create_dir_all(&other).is_ok()
        && std::fs::write(other.join("notes.txt"), "other user's notes").is_ok();
    let code = format!(
        "{ATTEMPT}
attempt('shadow', lambda: open('/etc/shadow').read())
attempt('other home', lambda: open({f:?}).read())
attempt('list home', lambda: os.listdir('/home'))
attempt('root home', lambda: os.listdir('/root/..'))
attempt('docker socket', lambda: socket.socket(socket.AF_UNIX).connect('/run/docker.sock'))
",
        f = other.join("notes.txt").display().to_string()
    );
    let out = probe(&code);
    if made {
        let _ = std::fs::remove_dir_all(&other);
    }
    let Some(out) = out else { return };
    // Unreadable by file mode to the unprivileged uid (or Landlock).
    assert!(
        ["EACCES", "ENOENT"].contains(&line(&out, "shadow")),
        "{out}"
    );
    assert!(!out.contains("other user's notes"), "{out}");
    // /home is an empty tmpfs outside Landlock's read set.
    assert_eq!(line(&out, "list home"), "EACCES", "{out}");
    assert!(line(&out, "other home").starts_with('E'), "{out}");
    // /run is masked: no host socket is reachable.
    assert!(
        ["EACCES", "ENOENT"].contains(&line(&out, "docker socket")),
        "{out}"
    );
}

#[test]
fn namespaces_mounts_and_tracing_are_refused_by_seccomp() {
    let code = format!(
        "{ATTEMPT}
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
c('unshare user', libc.unshare(CLONE_NEWUSER))
c('unshare mount', libc.unshare(CLONE_NEWNS))
c('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
c('umount', libc.umount2(b'/proc', 2))
c('ptrace parent', libc.ptrace(16, os.getppid(), None, None))
c('ptrace init', libc.ptrace(16, 1, None, None))
c('chroot', libc.chroot(b'/tmp'))
c('setns', libc.setns(0, 0))
attempt('netlink', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))
"
    );
    let Some(out) = probe(&code) else { return };
    for name in [
        "unshare user",
        "unshare mount",
        "mount",
        "umount",
        "ptrace parent",
        "ptrace init",
        "chroot",
        "setns",
        "netlink",
        "raw",
    ] {
        assert_eq!(line(&out, name), "EPERM", "{name}: {out}");
    }
}

#[test]
fn the_namespace_init_shows_nothing_of_toolgate() {
    let code = format!(
        "{ATTEMPT}
attempt('root', lambda: os.listdir('/proc/1/root'))
attempt('environ', lambda: open('/proc/1/environ').read())
attempt('mem', lambda: open('/proc/1/mem', 'rb').read(1))
cmd = open('/proc/1/cmdline', 'rb').read()
print('cmdline: ' + ('BLANK' if cmd.strip(b'\\0') == b'' else repr(cmd)))
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print('pids: ' + ('own' if max(pids) < 100 else repr(pids)))
attempt('kill host', lambda: os.kill({host}, 0))
",
        host = std::process::id()
    );
    let Some(out) = probe(&code) else { return };
    assert_eq!(line(&out, "root"), "EACCES", "{out}");
    assert_eq!(line(&out, "environ"), "EACCES", "{out}");
    assert_eq!(line(&out, "mem"), "EACCES", "{out}");
    assert_eq!(line(&out, "cmdline"), "BLANK", "{out}");
    assert_eq!(line(&out, "pids"), "own", "{out}");
    // The test process is in another pid namespace: no such process.
    assert_eq!(line(&out, "kill host"), "ESRCH", "{out}");
}

#[test]
fn a_listener_on_the_hosts_loopback_is_unreachable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let code = format!(
        "{ATTEMPT}
s = socket.socket(); s.settimeout(3)
attempt('connect', lambda: s.connect(('127.0.0.1', {port})))
"
    );
    let Some(out) = probe(&code) else { return };
    // The sandbox's own `lo` has nothing on that port.
    assert_eq!(line(&out, "connect"), "ECONNREFUSED", "{out}");
    assert!(
        l.accept().is_err(),
        "a connection reached the host's listener"
    );
}

#[test]
fn only_stdio_reaches_the_tool_not_inherited_descriptors() {
    let Some(b) = native() else { return };
    // A descriptor toolgate's process holds without O_CLOEXEC, as an
    // embedding program might (duplicated well above stdio).
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "inherited-secret").unwrap();
    let file = std::fs::File::open(secret.path()).unwrap();
    let fd = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_DUPFD(100)).unwrap();
    let ws = open_workspace();
    let p = policy(|_| {});
    let o = sh_on(
        &b,
        ws.path(),
        &p,
        MountAccess::ReadOnly,
        &format!("ls /proc/self/fd; cat /proc/self/fd/{fd} 2>&1; true"),
    );
    nix::unistd::close(fd).unwrap();
    let t = text(&o.stdout);
    assert!(!t.contains("inherited-secret"), "{t}");
    // 0, 1, 2 and the directory `ls` reads.
    let fds: Vec<&str> = t
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{t}");
}
