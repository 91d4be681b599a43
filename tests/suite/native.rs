//! The native backend: the host's toolchains work through the whole
//! pipeline, only the workspace changes, and every limit binds and is
//! named. Escape attempts are in `native_escape.rs`.
//!
//! Skips with a printed reason where the kernel or cgroups do not allow
//! the backend, unless `TOOLGATE_REQUIRE_NATIVE=1` (set by `.ci/run`).

use super::common::rt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toolgate::gate::AllowAll;
use toolgate::plan::MountAccess;
use toolgate::sandbox::native::{NativeBackend, NativeConfig};
use toolgate::sandbox::{Backend, Job, Program, RawOutput};
use toolgate::{BackendKind, Executor, LimitHit, Outcome, Plan, Policy, Status, ToolCall};

/// The backend, or `None` (skip) where this host cannot run it.
pub fn native() -> Option<NativeBackend> {
    let b = NativeBackend::new(NativeConfig::default());
    let f = b.features();
    let why = match (&f.base, &f.cgroups) {
        (Err(e), _) | (_, Err(e)) => e.clone(),
        _ => return Some(b),
    };
    if std::env::var_os("TOOLGATE_REQUIRE_NATIVE").is_some_and(|v| v == "1") {
        panic!("TOOLGATE_REQUIRE_NATIVE=1 but the native backend cannot run here: {why}");
    }
    eprintln!("SKIPPED: the native backend cannot run here ({why})");
    None
}

/// A workspace the sandbox's unprivileged uid may use when the backend
/// is given it directly (the executor stages it instead).
pub fn open_workspace() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

pub fn policy(f: impl FnOnce(&mut toolgate::policy::Settings)) -> Policy {
    Policy::builtin_default()
        .with(|s| {
            s.backends.run_command = BackendKind::Native;
            s.backends.sh = BackendKind::Native;
            s.limits.wall_time = Duration::from_secs(20);
            s.limits.cpu_time = Duration::from_secs(10);
            f(s);
        })
        .unwrap()
}

/// Runs `sh` straight on the backend (no policy in front: the sandbox
/// alone must hold).
pub fn sh_on(b: &NativeBackend, ws: &Path, p: &Policy, access: MountAccess, sh: &str) -> RawOutput {
    let call = cmd(sh);
    let mut plan = Plan::prepare(p, &call, ws, false);
    plan.mounts[0].access = access;
    let job = Job {
        program: Program::Command(toolgate::call::Command::Shell(sh.into())),
        stdin: None,
        cwd: None,
        session: None,
    };
    rt().block_on(b.execute(&plan, &job)).unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cmd(c: &str) -> ToolCall {
    ToolCall::parse(&serde_json::json!({"tool": "run_command", "args": {"command": c}}).to_string())
        .unwrap()
}

fn executor(ws: &Path, p: Policy) -> Executor {
    Executor::builder(p)
        .workspace(ws)
        .wasm(None)
        .approver(Arc::new(AllowAll))
        .build()
        .unwrap()
}

fn run(e: &Executor, c: &str) -> Outcome {
    let o = rt().block_on(e.run(&cmd(c))).unwrap();
    assert_eq!(o.backend, Some(BackendKind::Native), "{c}: {o:?}");
    o
}

fn ok(e: &Executor, c: &str) -> Outcome {
    let o = run(e, c);
    assert_eq!(
        (o.status, o.exit_code),
        (Status::Completed, Some(0)),
        "{c}: stdout {} stderr {} error {:?}",
        o.stdout,
        o.stderr,
        o.error
    );
    o
}

/// Names and modification times of a directory's entries.
fn listing(d: &Path) -> Vec<(String, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(d)
        .map(|r| {
            r.flatten()
                .map(|e| {
                    let m = e.metadata().ok().and_then(|m| m.modified().ok());
                    (e.file_name().to_string_lossy().into_owned(), m)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn host(args: &[&str], dir: &Path) {
    #[allow(clippy::disallowed_methods)]
    let s = std::process::Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(s.status.success(), "{args:?}: {}", text(&s.stderr));
}

/// The interpreter with pytest, if the host has one.
fn pytest_python() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        #[allow(clippy::disallowed_methods)]
        std::process::Command::new(py)
            .args(["-c", "import pytest"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn host_toolchains_work_and_only_the_workspace_changes() {
    if native().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let ws = d.path();
    host(&["git", "init", "-q"], ws);
    host(&["git", "config", "user.email", "agent@example.com"], ws);
    host(&["git", "config", "user.name", "agent"], ws);
    std::fs::write(ws.join("notes.txt"), "first\n").unwrap();
    std::fs::write(ws.join("Makefile"), "all:\n\techo built > made.txt\n").unwrap();
    std::fs::create_dir_all(ws.join("crate1/src")).unwrap();
    std::fs::write(
        ws.join("crate1/Cargo.toml"),
        "[package]\nname = \"crate1\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("crate1/src/main.rs"),
        "fn main() { println!(\"hi from crate1\"); }\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("test_math.py"),
        "def test_add():\n    assert 1 + 1 == 2\n",
    )
    .unwrap();
    host(&["git", "add", "-A"], ws);
    host(&["git", "commit", "-qm", "init"], ws);

    let home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap());
    let home_before = listing(&home);
    let tmp_before = listing(Path::new("/var/tmp"));
    let e = executor(ws, policy(|_| {}));

    assert_eq!(ok(&e, "git status --short").stdout, "");
    std::fs::write(ws.join("notes.txt"), "first\nsecond\n").unwrap();
    assert!(ok(&e, "git diff").stdout.contains("+second"));
    let v = ok(&e, "cargo --version");
    assert!(v.stdout.starts_with("cargo "), "{}", v.stdout);
    let b = ok(
        &e,
        "cd crate1 && cargo build --offline --quiet && ./target/debug/crate1",
    );
    assert_eq!(b.stdout, "hi from crate1\n");
    assert!(
        ws.join("crate1/target/debug/crate1").exists(),
        "the build came back to the workspace"
    );
    ok(&e, "make");
    assert_eq!(
        std::fs::read_to_string(ws.join("made.txt")).unwrap(),
        "built\n"
    );
    match pytest_python() {
        Some(py) => {
            let t = ok(
                &e,
                &format!("{py} -m pytest -q -p no:cacheprovider test_math.py"),
            );
            assert!(t.stdout.contains("1 passed"), "{}", t.stdout);
        }
        None => eprintln!("SKIPPED (part): no python3 with pytest on this host"),
    }
    ok(&e, "git add -A && git commit -qm second");
    // The commit reached the host repository (through the stage, judged).
    #[allow(clippy::disallowed_methods)]
    let log = std::process::Command::new("git")
        .args(["log", "--format=%s"])
        .current_dir(ws)
        .output()
        .unwrap();
    assert_eq!(text(&log.stdout), "second\ninit\n");
    rt().block_on(e.close());
    // Nothing outside the workspace changed: the home directory the tools
    // wrote caches to inside was the sandbox's own.
    assert_eq!(listing(&home), home_before, "the host's home changed");
    assert_eq!(
        listing(Path::new("/var/tmp")),
        tmp_before,
        "/var/tmp changed"
    );
}

#[test]
fn a_denied_write_by_a_command_does_not_reach_the_workspace() {
    if native().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let ws = d.path();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    std::fs::write(ws.join(".env"), "API_KEY=host-only-value\n").unwrap();
    let e = executor(ws, policy(|_| {}));
    // `sh ./x.sh` is a workspace script: allowed; what it does is judged.
    std::fs::write(
        ws.join("x.sh"),
        "cat .env 2>&1; echo evil > .git/hooks/pre-commit; echo ok > fine.txt\n",
    )
    .unwrap();
    let o = run(&e, "sh ./x.sh");
    assert!(!o.stdout.contains("host-only-value"), "{}", o.stdout);
    assert!(!ws.join(".git/hooks/pre-commit").exists());
    assert_eq!(
        std::fs::read_to_string(ws.join("fine.txt")).unwrap(),
        "ok\n"
    );
    let hook = o
        .changes
        .iter()
        .find(|c| c.path == ".git/hooks/pre-commit")
        .unwrap();
    assert!(!hook.applied);
}

fn limited(f: impl FnOnce(&mut toolgate::policy::Settings)) -> Policy {
    policy(f)
}

#[test]
fn limits_bind_and_are_named() {
    let Some(b) = native() else { return };
    let _heavy = super::common::heavy();
    limits_bind_on(&b, sh_on);
}

/// The same limits in sandboxes built ahead of their call (the pool's):
/// each case runs once to fill the pool for its profile, then in a warm
/// sandbox.
#[test]
fn limits_bind_and_are_named_in_warm_sandboxes() {
    if native().is_none() {
        return;
    }
    let _heavy = super::common::heavy();
    let b = NativeBackend::new(NativeConfig {
        pool_size: 1,
        ..Default::default()
    });
    limits_bind_on(&b, |b, ws, p, access, sh| {
        sh_on(b, ws, p, access, "true");
        let t = std::time::Instant::now();
        while b.warm() == 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "no warm sandbox");
            std::thread::sleep(Duration::from_millis(10));
        }
        sh_on(b, ws, p, access, sh)
    });
    rt().block_on(b.shutdown());
    assert_eq!(b.warm(), 0);
}

fn limits_bind_on(
    b: &NativeBackend,
    sh_on: impl Fn(&NativeBackend, &Path, &Policy, MountAccess, &str) -> RawOutput,
) {
    let ws = open_workspace();
    let w = ws.path();

    let p = limited(|s| s.limits.wall_time = Duration::from_secs(1));
    let o = sh_on(b, w, &p, MountAccess::ReadOnly, "sleep 30");
    assert_eq!(o.limits_hit, vec![LimitHit::TimeoutWall]);
    assert!(o.exit_code.is_none() && o.duration < Duration::from_secs(5));

    let p = limited(|s| s.limits.cpu_time = Duration::from_secs(1));
    let o = sh_on(b, w, &p, MountAccess::ReadOnly, "while :; do :; done");
    assert_eq!(o.limits_hit, vec![LimitHit::TimeoutCpu], "{o:?}");
    // Two busy processes share one budget: the group's clock binds them.
    let o = sh_on(
        b,
        w,
        &p,
        MountAccess::ReadOnly,
        "(while :; do :; done) & (while :; do :; done) & wait",
    );
    assert_eq!(o.limits_hit, vec![LimitHit::TimeoutCpu], "{o:?}");
    assert!(
        o.cpu_time.unwrap() < Duration::from_millis(1800),
        "{:?}",
        o.cpu_time
    );

    let p = limited(|s| s.limits.memory_bytes = 64 << 20);
    let o = sh_on(
        b,
        w,
        &p,
        MountAccess::ReadOnly,
        "python3 -c 'x = bytearray(300 << 20); x[::4096] = b\"y\" * len(x[::4096]); print(\"allocated\")'",
    );
    assert_eq!(o.limits_hit, vec![LimitHit::Memory], "{o:?}");
    assert!(!text(&o.stdout).contains("allocated"));

    let p = limited(|s| s.limits.pids = 16);
    let o = sh_on(
        b,
        w,
        &p,
        MountAccess::ReadOnly,
        "n=0; for i in $(seq 60); do sleep 3 & n=$((n+1)); done 2>/dev/null; echo started",
    );
    assert!(o.limits_hit.contains(&LimitHit::Pids), "{o:?}");

    let p = limited(|s| s.limits.output_bytes = 4096);
    let o = sh_on(b, w, &p, MountAccess::ReadOnly, "yes | head -c 1000000");
    assert_eq!(o.stdout.len(), 4096);
    assert!(o.stdout_truncated && o.limits_hit == vec![LimitHit::OutputTruncated]);

    let p = limited(|s| s.limits.file_size = 1 << 20);
    let o = sh_on(
        b,
        w,
        &p,
        MountAccess::ReadWrite,
        "dd if=/dev/zero of=big bs=1M count=8 2>&1; echo rc=$?; wc -c < big",
    );
    let t = text(&o.stdout);
    // dd dies of SIGXFSZ (or sees EFBIG); the file stops at the limit.
    let stopped = t.contains("File too large") || t.contains("File size limit exceeded");
    assert!(stopped && t.trim_end().ends_with("\n1048576"), "{t}");

    // Open files are capped and no core file is written.
    let o = sh_on(b, w, &p, MountAccess::ReadOnly, "ulimit -n; ulimit -c");
    assert_eq!(text(&o.stdout), "1024\n0\n");
}

#[test]
fn only_lo_no_route_and_no_host_environment() {
    let Some(b) = native() else { return };
    let ws = open_workspace();
    let p = policy(|_| {});
    let o = sh_on(
        &b,
        ws.path(),
        &p,
        MountAccess::ReadOnly,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo routes=$(tail -n +2 /proc/net/route | wc -l); echo routes6=$(grep -vc ' lo$' /proc/net/ipv6_route); env",
    );
    let t = text(&o.stdout);
    let mut lines = t.lines();
    assert_eq!(lines.next(), Some("lo"), "{t}");
    assert_eq!(lines.next(), Some("routes=0"), "{t}");
    assert_eq!(lines.next(), Some("routes6=0"), "{t}");
    let inside: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once('=')).collect();
    let allowed = [
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TERM",
        "TZ",
        "RUSTUP_TOOLCHAIN",
        "HOME",
        "TMPDIR",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    for (k, _) in &inside {
        assert!(allowed.contains(k), "{k} reached the sandbox");
    }
    // No value of any other host variable is visible inside (but for
    // those an allowed one contains, such as a directory on PATH).
    let passed: Vec<String> = allowed
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .collect();
    for (k, v) in std::env::vars() {
        if v.len() >= 6 && !allowed.contains(&k.as_str()) && !passed.iter().any(|p| p.contains(&v))
        {
            assert!(!t.contains(&v), "the value of {k} reached the sandbox");
        }
    }
}

#[test]
fn a_missing_program_exits_127_like_a_shell() {
    if native().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let e = executor(d.path(), policy(|_| {}));
    let call =
        ToolCall::parse(r#"{"tool":"run_command","args":{"command":["./no-such-program","x"]}}"#)
            .unwrap();
    let o = rt().block_on(e.run(&call)).unwrap();
    assert_eq!(
        (o.status, o.exit_code),
        (Status::Completed, Some(127)),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("no-such-program: not found"),
        "{}",
        o.stderr
    );
    // A program found on PATH runs with its arguments.
    let call = ToolCall::parse(
        r#"{"tool":"run_command","args":{"command":["printf","%s-%s","a b","c"]}}"#,
    )
    .unwrap();
    let o = rt().block_on(e.run(&call)).unwrap();
    assert_eq!(o.stdout, "a b-c");
}

#[test]
fn where_it_cannot_run_calls_are_refused_not_degraded() {
    let d = tempfile::tempdir().unwrap();
    let e = Executor::builder(policy(|_| {}))
        .workspace(d.path())
        .wasm(None)
        .native(None)
        .approver(Arc::new(AllowAll))
        .build()
        .unwrap();
    let err = rt().block_on(e.run(&cmd("echo hi"))).unwrap_err();
    assert!(err.to_string().contains("native"), "{err}");
}

#[test]
fn a_home_that_does_not_exist_becomes_a_private_one() {
    if native().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = super::common::bin()
        .current_dir(d.path())
        .env("HOME", "/nonexistent-toolgate-home")
        .args([
            "exec",
            "--backend",
            "native",
            "--lang",
            "sh",
            "--approve",
            "allow",
        ])
        .arg("echo $HOME; echo cached > $HOME/x && cat $HOME/x")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "/tmp/home\ncached\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn writes_to_tmp_and_the_workspace_count_against_memory() {
    let Some(b) = native() else { return };
    let _heavy = super::common::heavy();
    let p = policy(|s| {
        s.limits.memory_bytes = 64 << 20;
        s.limits.file_size = 1 << 30;
        s.limits.wall_time = Duration::from_secs(30);
    });
    // The private /tmp is a tmpfs capped at the memory limit, its pages
    // charged to the call: the write stops at the cap or is OOM-killed.
    let ws = open_workspace();
    let o = sh_on(
        &b,
        ws.path(),
        &p,
        MountAccess::ReadOnly,
        "head -c 200M /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big",
    );
    let t = text(&o.stdout);
    let kept: u64 = t
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        o.limits_hit.contains(&LimitHit::Memory) || (t.contains("rc=1") && kept <= 64 << 20),
        "{t} {o:?}"
    );
    // Through the executor the workspace is a stage in /dev/shm, charged
    // to the call's cgroup: 200 MiB written there is an OOM kill.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("fill.sh"),
        "head -c 200M /dev/zero > big.bin\n",
    )
    .unwrap();
    let e = executor(d.path(), p);
    let o = run(&e, "sh ./fill.sh");
    assert!(o.limits_hit.contains(&LimitHit::Memory), "{o:?}");
}

/// An executor whose native backend keeps `n` sandboxes built and waiting.
fn pooled(ws: &Path, p: Policy, n: usize) -> Executor {
    Executor::builder(p)
        .workspace(ws)
        .wasm(None)
        .native(Some(NativeConfig {
            pool_size: n,
            ..Default::default()
        }))
        .approver(Arc::new(AllowAll))
        .build()
        .unwrap()
}

/// Waits (bounded) until the executor's native pool holds a sandbox.
fn wait_warm(e: &Executor) {
    let t = std::time::Instant::now();
    while !rt()
        .block_on(e.render_metrics())
        .contains("toolgate_pool_warm{backend=\"native\"} 1")
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no warm native sandbox: {}",
            rt().block_on(e.render_metrics())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_warm_sandbox_runs_one_call_and_the_next_call_sees_nothing_of_it() {
    if native().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let ws = d.path();
    std::fs::write(ws.join("in.txt"), "from the host\n").unwrap();
    let e = pooled(ws, policy(|_| {}), 1);
    // The first call builds its own sandbox; the pool fills after it.
    let script = "cat in.txt; cat /tmp/mark $HOME/mark 2>/dev/null; \
                  echo seen > /tmp/mark; echo seen > $HOME/mark; \
                  echo $$ >> out.txt; echo ok";
    std::fs::write(ws.join("s.sh"), script).unwrap();
    let first = ok(&e, "sh ./s.sh");
    assert_eq!(first.stdout, "from the host\nok\n");
    for _ in 0..3 {
        wait_warm(&e);
        // A warm sandbox: the stage of this call is lent to it, and what
        // the last call left in its /tmp or $HOME is not there.
        std::fs::write(ws.join("in.txt"), "changed on the host\n").unwrap();
        let o = ok(&e, "sh ./s.sh");
        assert_eq!(o.stdout, "changed on the host\nok\n", "{o:?}");
        std::fs::write(ws.join("in.txt"), "from the host\n").unwrap();
    }
    // Every call's write came back to the workspace (one line each; the
    // script's shell has the same small pid every time: a namespace of
    // its own per call).
    let lines = std::fs::read_to_string(ws.join("out.txt")).unwrap();
    let pids: Vec<u32> = lines.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(pids.len(), 4, "{lines}");
    assert!(pids.iter().all(|&p| p == pids[0] && p < 8), "{lines}");
    rt().block_on(e.close());
    assert!(
        rt().block_on(e.render_metrics())
            .contains("toolgate_pool_warm{backend=\"native\"} 0"),
        "close empties the pool"
    );
}

#[test]
fn nothing_of_a_call_runs_after_it_returns() {
    if native().is_none() {
        return;
    }
    for n in [0, 1] {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path();
        let e = pooled(ws, policy(|_| {}), n);
        if n == 1 {
            ok(&e, "true");
            wait_warm(&e);
        }
        // A child left behind (double-forked, so the shell does not wait)
        // that would write into the stage after the tool exits: killed
        // before the stage is judged, so its write never appears.
        std::fs::write(
            ws.join("bg.sh"),
            "(sh -c 'sleep 0.5; echo late > late.txt' &) ; sleep 30 > /dev/null 2>&1 & echo now\n",
        )
        .unwrap();
        let t = std::time::Instant::now();
        let o = ok(&e, "sh ./bg.sh");
        assert_eq!(o.stdout, "now\n");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the call waited for what it left behind: {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !ws.join("late.txt").exists(),
            "pool {n}: a late write landed"
        );
        rt().block_on(e.close());
    }
}

#[test]
fn the_tool_reads_the_calls_input_or_an_immediate_end_of_file() {
    let Some(cold) = native() else { return };
    let warm = NativeBackend::new(NativeConfig {
        pool_size: 1,
        ..Default::default()
    });
    let ws = open_workspace();
    let p = policy(|_| {});
    for b in [&cold, &warm, &warm] {
        for (stdin, want) in [(Some("piped in\n"), "piped in\nend\n"), (None, "end\n")] {
            let call = cmd("cat; echo end");
            let plan = Plan::prepare(&p, &call, ws.path(), false);
            let job = Job {
                program: Program::Command(toolgate::call::Command::Shell("cat; echo end".into())),
                stdin: stdin.map(String::from),
                cwd: None,
                session: None,
            };
            let t = std::time::Instant::now();
            let o = rt().block_on(b.execute(&plan, &job)).unwrap();
            assert_eq!(text(&o.stdout), want, "{o:?}");
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        }
        // The second round on `warm` takes sandboxes the first one left.
        let t = std::time::Instant::now();
        while b.warm() == 0 && std::ptr::eq(b, &warm) {
            assert!(t.elapsed() < Duration::from_secs(20), "no warm sandbox");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    rt().block_on(warm.shutdown());
}

#[test]
fn under_an_allowlist_the_egress_proxy_is_the_only_way_out() {
    if native().is_none() {
        return;
    }
    // A host on this machine's loopback, listed by its address (a name
    // resolving to loopback would be refused): it answers with the request
    // line it got.
    let port = super::common::request_line_host();
    let ws = tempfile::tempdir().unwrap();
    let listed = vec![format!("127.0.0.1:{port}")];
    let e = executor(
        ws.path(),
        policy(|s| {
            s.network.run_command = toolgate::NetworkMode::Allowlist(listed.clone());
            s.network.allow_hosts = listed.clone();
        }),
    );
    // Through the proxy (the sandbox's environment names it): the listed host.
    let o = ok(
        &e,
        &format!("curl -s --max-time 10 http://127.0.0.1:{port}/pkg"),
    );
    assert_eq!(o.stdout, "GET /pkg HTTP/1.1", "{o:?}");
    assert_eq!(o.egress.len(), 1, "{o:?}");
    assert!(o.egress[0].allowed);
    assert_eq!(o.egress[0].addr, Some(format!("127.0.0.1:{port}")));
    // Another address, or the listed one on another port: refused, with why.
    for target in [format!("127.0.0.2:{port}"), "127.0.0.1:9".to_string()] {
        let o = ok(&e, &format!("curl -s --max-time 10 http://{target}/"));
        assert!(
            o.stdout.starts_with("toolgate egress: refused:"),
            "{target}: {o:?}"
        );
        assert!(!o.egress[0].allowed, "{o:?}");
        assert!(o.egress[0].reason.is_some());
    }
    // Around the proxy: nothing. The namespace has only lo, where only the
    // proxy listens; curl's "could not connect" is exit 7.
    let o = run(
        &e,
        &format!("curl -s --max-time 5 --noproxy '*' http://127.0.0.1:{port}/"),
    );
    assert_eq!(o.exit_code, Some(7), "{o:?}");
    assert!(o.egress.is_empty());
    // The decisions are in the audit entry of their call.
    let audit = tempfile::tempdir().unwrap();
    let log = audit.path().join("a.jsonl");
    let e = Executor::builder(policy(|s| {
        s.network.run_command = toolgate::NetworkMode::Allowlist(listed.clone());
    }))
    .workspace(ws.path())
    .wasm(None)
    .approver(Arc::new(AllowAll))
    .audit(Arc::new(
        toolgate::audit::AuditLog::open(&log, None).unwrap(),
    ))
    .build()
    .unwrap();
    ok(
        &e,
        &format!("curl -s --max-time 10 http://127.0.0.2:{port}/x"),
    );
    let entries = toolgate::audit::read_entries(&log).unwrap();
    let call = entries.iter().find(|e| e["kind"] == "call").unwrap();
    let eg = &call["outcome"]["egress"][0];
    assert_eq!(
        (eg["host"].as_str(), eg["allowed"].as_bool()),
        (Some("127.0.0.2"), Some(false)),
        "{call}"
    );
}

#[test]
fn under_open_a_public_host_is_reached_but_not_the_host_another_sandbox_or_the_metadata_service() {
    if native().is_none() {
        return;
    }
    let Some(_net) = super::egress::Internet::new() else {
        return;
    };
    let there = super::egress::THERE;
    let home = super::common::request_line_host();
    let ws = tempfile::tempdir().unwrap();
    let open = |named: Vec<String>| {
        executor(
            ws.path(),
            policy(|s| {
                s.network.run_command = toolgate::NetworkMode::Open(named.clone());
                s.network.allow_hosts = named.clone();
            }),
        )
    };
    let e = open(vec![]);
    // A public host no entry names: reached, through the proxy.
    let o = ok(
        &e,
        &format!("curl -s --max-time 10 http://{there}:8080/hello.txt"),
    );
    assert_eq!(o.stdout, "hello from the little internet\n", "{o:?}");
    assert!(o.egress.len() == 1 && o.egress[0].allowed, "{o:?}");
    // This machine (a listener the test started on its loopback), a
    // container or another sandbox (private), the metadata service, IPv6
    // loopback: refused before anything is dialled, each with its reason.
    for (url, kind) in [
        (format!("http://127.0.0.1:{home}/"), "loopback"),
        (format!("http://[::1]:{home}/"), "loopback"),
        ("http://172.17.0.2/".to_string(), "private"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        ("https://169.254.169.254/".to_string(), "link-local"),
    ] {
        let o = run(&e, &format!("curl -s --max-time 10 {url}"));
        assert!(
            o.egress.len() == 1
                && !o.egress[0].allowed
                && o.egress[0]
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains(kind)),
            "{url}: {o:?}"
        );
    }
    // Around the proxy: nothing (only lo, where only the proxy listens).
    let o = run(
        &e,
        &format!("curl -s --max-time 5 --noproxy '*' http://{there}:8080/hello.txt"),
    );
    assert_eq!(o.exit_code, Some(7), "{o:?}");
    // Named by the policy, this machine's listener is reached.
    let e = open(vec![format!("127.0.0.1:{home}")]);
    let o = ok(
        &e,
        &format!("curl -s --max-time 10 http://127.0.0.1:{home}/x"),
    );
    assert_eq!(o.stdout, "GET /x HTTP/1.1", "{o:?}");
}

#[test]
fn a_sandbox_reaches_a_listed_host_of_the_little_internet_only_through_the_proxy() {
    let Some(b) = native() else {
        return;
    };
    let Some(_net) = super::egress::Internet::new() else {
        return;
    };
    let there = super::egress::THERE;
    let ws = tempfile::tempdir().unwrap();
    let listed = vec![format!("{there}:8080")];
    let p = policy(|s| {
        s.network.run_command = toolgate::NetworkMode::Allowlist(listed.clone());
        s.network.allow_hosts = listed.clone();
    });
    let e = executor(ws.path(), p.clone());
    let o = ok(
        &e,
        &format!("curl -s --max-time 10 http://{there}:8080/hello.txt"),
    );
    assert_eq!(o.stdout, "hello from the little internet\n", "{o:?}");
    assert_eq!(o.egress[0].addr, Some(format!("{there}:8080")));
    // The sandbox's own view: only lo, no route; so around the proxy a
    // connect fails in the sandbox (no packet leaves it), and UDP, DNS and
    // IPv6 have nowhere to go. (Straight on the backend: the policy keeps
    // /proc from commands.)
    let ows = open_workspace();
    let raw = sh_on(
        &b,
        ows.path(),
        &p,
        MountAccess::ReadWrite,
        "cat /proc/net/dev /proc/net/route",
    );
    let out = text(&raw.stdout);
    let ifaces: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(i, _)| i.trim()))
        .filter(|i| !i.contains('|'))
        .collect();
    assert_eq!(ifaces, ["lo"], "{out}");
    let routes = out
        .lines()
        .skip_while(|l| !l.starts_with("Iface"))
        .skip(1)
        .count();
    assert_eq!(routes, 0, "no route: {out}");
    let o = run(
        &e,
        &format!("curl -s --max-time 5 --noproxy '*' http://{there}:8080/hello.txt"),
    );
    assert_eq!(o.exit_code, Some(7), "{o:?}");
    assert!(o.egress.is_empty());
    // A DNS query (a UDP datagram to port 53 of the little internet's host)
    // fails in the sandbox itself: no route, so no packet leaves; and no
    // IPv6 route but lo's.
    let probe = format!(
        "python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n    s.sendto(b'q', ('{there}', 53)); print('sent')\nexcept OSError as e:\n    print('errno', e.errno)\"; grep -vc ' lo$' /proc/net/ipv6_route"
    );
    let raw = sh_on(&b, ows.path(), &p, MountAccess::ReadWrite, &probe);
    assert_eq!(
        text(&raw.stdout),
        format!("errno {}\n0\n", libc::ENETUNREACH),
        "{raw:?}"
    );
}
