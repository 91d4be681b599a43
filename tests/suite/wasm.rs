//! The wasm backend, for real: correct results, every limit binding for the
//! right reason, escapes failing, isolation under concurrency. These need
//! no daemon and always run (the runtime installs itself on first use).

use super::common::rt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate::{Executor, LimitHit, Outcome, Policy, Status, ToolCall, WasmConfig};

fn executor(ws: &std::path::Path, policy: Policy, pool: usize) -> Executor {
    Executor::builder(policy)
        .workspace(ws)
        .wasm(Some(WasmConfig {
            pool_size: pool,
            ..WasmConfig::default()
        }))
        .build()
        .unwrap()
}

fn policy_with(limits: &str, workspace: &str) -> Policy {
    Policy::builtin_default()
        .with(|p| edit_settings(p, limits, workspace))
        .unwrap()
}

fn edit_settings(p: &mut toolgate::policy::Settings, limits: &str, workspace: &str) {
    for kv in limits.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        let v = v.trim().trim_matches('"');
        match k.trim() {
            "memory" => p.limits.memory_bytes = toolgate::policy::units::parse_size(v).unwrap(),
            "cpu_time" => p.limits.cpu_time = toolgate::policy::units::parse_duration(v).unwrap(),
            "wall_time" => p.limits.wall_time = toolgate::policy::units::parse_duration(v).unwrap(),
            "output_bytes" => {
                p.limits.output_bytes = toolgate::policy::units::parse_size(v).unwrap()
            }
            other => panic!("unknown limit {other}"),
        }
    }
    p.wasm_workspace = if workspace == "ro" {
        toolgate::plan::MountAccess::ReadOnly
    } else {
        toolgate::plan::MountAccess::ReadWrite
    };
}

fn call(lang: &str, code: &str) -> ToolCall {
    ToolCall::parse(
        &serde_json::json!({"tool": "run_code", "args": {"language": lang, "code": code}})
            .to_string(),
    )
    .unwrap()
}

fn run(exec: &Executor, lang: &str, code: &str) -> Outcome {
    rt().block_on(exec.run(&call(lang, code))).unwrap()
}

#[test]
fn python_and_javascript_stdout_stderr_exit_codes() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let o = run(
        &e,
        "python",
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)",
    );
    assert_eq!(
        (o.status, o.exit_code, o.stdout.as_str(), o.stderr.as_str()),
        (Status::Completed, Some(3), "out\n", "err\n")
    );
    let o = run(&e, "python", "1/0");
    assert_eq!(o.exit_code, Some(1));
    assert_eq!(
        o.stderr,
        "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nZeroDivisionError: division by zero\n"
    );
    let o = run(
        &e,
        "python",
        "print(__name__, sorted(k for k in globals() if not k.startswith('__')))",
    );
    assert_eq!(o.stdout, "__main__ []\n", "the program sees clean globals");
    let o = run(&e, "javascript", "console.log(6*7); std.err.puts('e\\n');");
    assert_eq!(
        (o.exit_code, o.stdout.as_str(), o.stderr.as_str()),
        (Some(0), "42\n", "e\n")
    );
    let o = run(&e, "javascript", "throw new Error('boom')");
    assert_eq!(o.exit_code, Some(1));
    assert!(o.stderr.contains("boom"), "{}", o.stderr);
    let o = run(&e, "javascript", "std.exit(5)");
    assert_eq!(o.exit_code, Some(5));
}

#[test]
fn stdin_and_files_reach_the_program() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let c = ToolCall::parse(r#"{"tool":"run_code","args":{"language":"python","code":"import sys; print(sys.stdin.read().upper()); print(open('data.txt').read())","stdin":"hello","files":[{"path":"data.txt","content":"from a file"}]}}"#).unwrap();
    let o = rt().block_on(e.run(&c)).unwrap();
    assert_eq!(o.stdout, "HELLO\nfrom a file\n", "{o:?}");
    let c = ToolCall::parse(r#"{"tool":"run_code","args":{"language":"javascript","code":"console.log(std.in.readAsString().trim())","stdin":"from stdin"}}"#).unwrap();
    assert_eq!(rt().block_on(e.run(&c)).unwrap().stdout, "from stdin\n");
}

#[test]
fn busy_loop_is_stopped_by_the_cpu_limit() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(
        ws.path(),
        policy_with("cpu_time = \"1s\"\nwall_time = \"20s\"", "rw"),
        0,
    );
    for (lang, code) in [
        ("python", "while True: pass"),
        ("javascript", "while (true) {}"),
    ] {
        let t = Instant::now();
        let o = run(&e, lang, code);
        let took = t.elapsed();
        assert_eq!(o.status, Status::Killed, "{lang}");
        assert_eq!(o.limits_hit, vec![LimitHit::TimeoutCpu], "{lang}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(8),
            "{lang}: {took:?}"
        );
    }
}

#[test]
fn sleep_past_the_wall_limit_is_stopped_even_blocked_in_the_host() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(
        ws.path(),
        policy_with("cpu_time = \"5s\"\nwall_time = \"1s\"", "rw"),
        0,
    );
    let t = Instant::now();
    let o = run(
        &e,
        "python",
        "import time\nprint('before', flush=True)\ntime.sleep(30)\nprint('after')",
    );
    let took = t.elapsed();
    assert_eq!(o.status, Status::Killed);
    assert_eq!(o.limits_hit, vec![LimitHit::TimeoutWall]);
    assert_eq!(o.stdout, "before\n");
    // Proves the 30 s sleep was cut short (under load the kill may lag a little).
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let o = run(&e, "python", "while True: pass");
    assert_eq!(
        o.limits_hit,
        vec![LimitHit::TimeoutWall],
        "wall binds before a longer cpu limit"
    );
}

#[test]
fn a_1gb_allocation_is_a_memory_error_not_a_crash() {
    let ws = tempfile::tempdir().unwrap();
    // Python's image starts at ~99 MiB (numpy, pandas, matplotlib imported).
    let e = executor(ws.path(), policy_with("memory = \"192MiB\"", "rw"), 0);
    let o = run(&e, "python", "b = bytearray(10**9)");
    assert_eq!((o.status, o.exit_code), (Status::Completed, Some(1)));
    assert!(o.stderr.ends_with("MemoryError\n"), "{}", o.stderr);
    assert_eq!(o.limits_hit, vec![LimitHit::Memory]);
    let o = run(
        &e,
        "python",
        "try:\n    b = bytearray(10**9)\nexcept MemoryError:\n    print('caught')\nb = bytearray(50 * 2**20)\nprint(len(b))",
    );
    assert_eq!(
        o.stdout, "caught\n52428800\n",
        "under the cap works; the error is catchable"
    );
    // A cap below what the interpreter needs to start is that limit, named.
    let small = executor(ws.path(), policy_with("memory = \"64MiB\"", "rw"), 0);
    let o = run(&small, "python", "print(1)");
    assert_eq!(
        (o.status, o.exit_code, o.limits_hit.as_slice()),
        (Status::Killed, None, &[LimitHit::Memory][..]),
        "{o:?}"
    );
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .contains("needs more memory to start"),
        "{o:?}"
    );
    let o = run(
        &e,
        "javascript",
        "const a = new ArrayBuffer(1e9); console.log(a.byteLength)",
    );
    assert_eq!(o.exit_code, Some(1));
    assert!(o.stderr.contains("out of memory"), "{}", o.stderr);
    assert!(o.limits_hit.contains(&LimitHit::Memory));
}

#[test]
fn ten_megabytes_of_output_is_truncated_and_the_guest_keeps_running() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), policy_with("output_bytes = \"64KiB\"", "rw"), 0);
    let o = run(
        &e,
        "python",
        "import sys\nfor i in range(10 * 1024):\n    sys.stdout.write('x' * 1023 + '\\n')\nsys.stderr.write('done\\n')",
    );
    assert_eq!((o.status, o.exit_code), (Status::Completed, Some(0)));
    assert_eq!(o.stdout.len(), 64 << 10);
    assert!(o.truncated.stdout && !o.truncated.stderr);
    assert_eq!(o.stderr, "done\n", "the guest ran to the end");
    assert_eq!(o.limits_hit, vec![LimitHit::OutputTruncated]);
}

#[test]
fn escapes_fail_inside_the_guest() {
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "s3cret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), ws.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("dirlink")).unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let probe = r#"
import os, sys
def attempt(name, f):
    try:
        r = f()
        print(name, 'OK', repr(r)[:40])
    except BaseException as e:
        print(name, 'BLOCKED', type(e).__name__)
attempt('read_passwd', lambda: open('/etc/passwd').read())
attempt('write_tmp', lambda: open('/tmp/escape.txt', 'w').write('x'))
attempt('write_parent', lambda: open('/workspace/../escape.txt', 'w').write('x'))
attempt('write_rel_parent', lambda: open('../escape.txt', 'w').write('x'))
attempt('symlink_file', lambda: open('/workspace/link').read())
attempt('symlink_dir', lambda: open('/workspace/dirlink/secret.txt').read())
attempt('new_symlink', lambda: (os.symlink('/etc/passwd', '/workspace/new'), open('/workspace/new').read()))
import socket
attempt('socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('127.0.0.1', 9)))
import subprocess
attempt('subprocess', lambda: subprocess.run(['/bin/sh', '-c', 'id']))
attempt('fork', lambda: os.fork())
print('environ', dict(os.environ))
attempt('write_ok', lambda: open('/workspace/ok.txt', 'w').write('fine'))
"#;
    let o = run(&e, "python", probe);
    let lines: Vec<&str> = o.stdout.lines().collect();
    for name in [
        "read_passwd",
        "write_tmp",
        "write_parent",
        "write_rel_parent",
        "symlink_file",
        "symlink_dir",
        "new_symlink",
        "socket",
        "subprocess",
        "fork",
    ] {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {}\n{}", o.stdout, o.stderr));
        assert!(l.contains("BLOCKED"), "{l}");
    }
    assert!(
        lines.contains(&"environ {}"),
        "no environment reaches the guest: {}",
        o.stdout
    );
    assert!(lines.iter().any(|l| l.starts_with("write_ok OK")));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("ok.txt")).unwrap(),
        "fine"
    );
    assert!(!ws.path().parent().unwrap().join("escape.txt").exists());
    let o = run(
        &e,
        "javascript",
        "console.log(std.loadFile('/etc/passwd'), std.open('/tmp/x','w'), os.readdir('/')[1]);",
    );
    assert_eq!(o.stdout, "null null 44\n");
}

#[test]
fn read_only_workspace_refuses_writes() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("in.txt"), "data").unwrap();
    let e = executor(ws.path(), policy_with("", "ro"), 0);
    let o = run(
        &e,
        "python",
        "print(open('in.txt').read())\ntry:\n    open('out.txt','w').write('x')\nexcept OSError as e:\n    print('refused', e.errno)",
    );
    assert!(o.stdout.starts_with("data\nrefused"), "{}", o.stdout);
    assert!(!ws.path().join("out.txt").exists());
}

#[test]
fn unbounded_recursion_in_quickjs_is_reported_as_killed_and_untrusted() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let o = run(
        &e,
        "javascript",
        "function f(n) { return f(n + 1) + 1; } f(0);",
    );
    if o.status == Status::Killed {
        assert_eq!(o.limits_hit, vec![LimitHit::Trap]);
        assert!(o.output_untrusted);
        assert!(
            o.error.as_deref().unwrap_or("").contains("trapped"),
            "{o:?}"
        );
    } else {
        // QuickJS caught it as a RangeError: a clean, catchable failure.
        assert_eq!(o.exit_code, Some(1), "{o:?}");
        assert!(
            o.stderr.contains("RangeError") || o.stderr.contains("stack"),
            "{o:?}"
        );
    }
    let o = run(&e, "python", "def f(n): return f(n+1)\nf(0)");
    assert!(o.stderr.contains("RecursionError"), "{}", o.stderr);
}

#[test]
fn thirty_two_concurrent_calls_are_correct_and_isolated() {
    let ws = tempfile::tempdir().unwrap();
    let e = Arc::new(executor(ws.path(), Policy::builtin_default(), 0));
    let r = rt();
    let outs: Vec<Outcome> = r.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..32 {
            let e = e.clone();
            let (lang, code) = if i % 2 == 0 {
                ("python", format!("import builtins\nseen = hasattr(builtins, 'marker')\nbuiltins.marker = {i}\nopen('f{i}.txt','w').write('{i}')\nimport os\nprint({i}, seen, sorted(x for x in os.listdir('.') if x.startswith('f')) == ['f{i}.txt'] or 'other files visible: fine, shared workspace')"))
            } else {
                ("javascript", format!("globalThis.marker = (globalThis.marker || 0) + 1; console.log({i}, globalThis.marker);"))
            };
            tasks.push(tokio::spawn(async move { e.run(&call(lang, &code)).await.unwrap() }));
        }
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    });
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o.exit_code, Some(0), "call {i}: {o:?}");
        let first: Vec<&str> = o.stdout.split_whitespace().collect();
        assert_eq!(
            first[0],
            i.to_string(),
            "call {i} got another call's output: {}",
            o.stdout
        );
        if i % 2 == 0 {
            assert_eq!(first[1], "False", "interpreter state leaked between calls");
            assert_eq!(
                std::fs::read_to_string(ws.path().join(format!("f{i}.txt"))).unwrap(),
                i.to_string()
            );
        } else {
            assert_eq!(first[1], "1", "JS global state leaked between calls");
        }
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn no_memory_growth_over_1000_sequential_calls() {
    let _heavy = super::common::heavy();
    if !super::common::alone_in_own_process(
        "suite::wasm::no_memory_growth_over_1000_sequential_calls",
    ) {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let r = rt();
    for (lang, code) in [
        (
            "javascript",
            "console.log([1,2,3].map(x => x * 2).join(','))",
        ),
        ("python", "print(sum(range(100)))"),
    ] {
        let c = call(lang, code);
        for _ in 0..50 {
            r.block_on(e.run(&c)).unwrap();
        }
        let before = rss_kib();
        for i in 0..1000 {
            let o = r.block_on(e.run(&c)).unwrap();
            assert_eq!(o.exit_code, Some(0), "{lang} call {i}: {o:?}");
        }
        let after = rss_kib();
        let growth = after.saturating_sub(before);
        eprintln!("{lang}: RSS {before} KiB -> {after} KiB over 1000 calls");
        assert!(
            growth < 16 * 1024,
            "{lang}: RSS grew by {growth} KiB over 1000 calls"
        );
    }
}

#[test]
fn warm_pool_serves_each_interpreter_once() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 2);
    let r = rt();
    let c = call(
        "python",
        "import builtins\nprint(hasattr(builtins, 'used'))\nbuiltins.used = True",
    );
    for _ in 0..5 {
        let o = r.block_on(e.run(&c)).unwrap();
        assert_eq!(
            o.stdout, "False\n",
            "a pooled interpreter was reused: {o:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        e.wasm().unwrap().idle(),
        0,
        "python's pre-initialised instances are made per call, never pooled"
    );
    let js = call(
        "javascript",
        "console.log(globalThis.used === undefined); globalThis.used = 1;",
    );
    for _ in 0..5 {
        let o = r.block_on(e.run(&js)).unwrap();
        assert_eq!(o.stdout, "true\n", "a pooled interpreter was reused: {o:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        e.wasm().unwrap().idle(),
        2,
        "the pool refills to its bound and no further"
    );
    // Limits still bind on a pooled interpreter, from the moment the program arrives.
    let e2 = executor(ws.path(), policy_with("cpu_time = \"1s\"", "rw"), 1);
    r.block_on(e2.run(&call("javascript", "1"))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e2.wasm().unwrap().idle(), 1);
    let o = r
        .block_on(e2.run(&call("javascript", "while (true) {}")))
        .unwrap();
    assert_eq!(o.limits_hit, vec![LimitHit::TimeoutCpu]);
}

#[test]
fn a_runtime_with_the_wrong_digest_is_refused_and_nothing_installed() {
    use toolgate::sandbox::wasm::{WasmError, runtime};
    let home = tempfile::tempdir().unwrap();
    let fake = home.path().join("quickjs.wasm");
    std::fs::write(&fake, b"\0asm\x01\0\0\0 not the real interpreter").unwrap();
    let spec = runtime::spec("javascript").unwrap();
    let quiet = |_: &str| {};
    let err = runtime::install(home.path(), &spec, Some(&fake), None, &quiet).unwrap_err();
    assert!(matches!(err, WasmError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&spec.sha256));
    assert!(!runtime::wasm_path(home.path(), "javascript").exists());
    assert!(runtime::installed_digest(home.path(), "javascript").is_none());
    // With an explicit digest for a local build, the same file installs.
    let digest = runtime::sha256_file(&fake).unwrap();
    runtime::install(home.path(), &spec, Some(&fake), Some(&digest), &quiet).unwrap();
    assert_eq!(
        runtime::installed_digest(home.path(), "javascript").as_deref(),
        Some(digest.as_str())
    );
}

#[test]
fn a_tampered_compiled_artifact_is_refused() {
    // Copy the installed runtime into a private cache, compile it, then flip a byte.
    let home = tempfile::tempdir().unwrap();
    let real = toolgate::sandbox::wasm::runtime::cache_dir();
    let spec = toolgate::sandbox::wasm::runtime::spec("javascript").unwrap();
    let src = toolgate::sandbox::wasm::runtime::wasm_path(&real, "javascript");
    if !src.exists() {
        // Install into the shared cache first (first run on a fresh machine).
        toolgate::sandbox::wasm::runtime::install(&real, &spec, None, None, &|_: &str| {}).unwrap();
    }
    toolgate::sandbox::wasm::runtime::install(home.path(), &spec, Some(&src), None, &|_: &str| {})
        .unwrap();
    let cfg = WasmConfig {
        cache_dir: home.path().to_path_buf(),
        auto_install: false,
        ..WasmConfig::default()
    };
    let b = toolgate::WasmBackend::new(cfg.clone()).unwrap();
    assert!(b.ensure_compiled("javascript", &|_: &str| {}).unwrap());
    let art = std::fs::read_dir(home.path().join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&art, bytes).unwrap();
    let ws = tempfile::tempdir().unwrap();
    let e = Executor::builder(Policy::builtin_default())
        .workspace(ws.path())
        .wasm(Some(cfg))
        .build()
        .unwrap();
    let err = rt().block_on(e.run(&call("javascript", "1"))).unwrap_err();
    assert_eq!(err.exit_code(), toolgate::exit::UNAVAILABLE);
    assert!(err.to_string().contains("failed verification"), "{err}");
}

#[test]
fn python_has_numpy_and_pandas_and_each_call_draws_fresh_random_numbers() {
    // The image was made once at install: without the driver's reseed,
    // every call would replay the generators' state drawn then.
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let code = "import random, numpy as np, pandas as pd\nprint(random.random(), np.random.rand(), pd.Series([1, 2, 3]).sum())";
    let a = run(&e, "python", code);
    let b = run(&e, "python", code);
    assert_eq!(
        (a.exit_code, b.exit_code),
        (Some(0), Some(0)),
        "{a:?} {b:?}"
    );
    assert!(a.stdout.ends_with(" 6\n"), "{}", a.stdout);
    let (ra, rb): (Vec<&str>, Vec<&str>) = (
        a.stdout.split_whitespace().collect(),
        b.stdout.split_whitespace().collect(),
    );
    assert_ne!(ra[0], rb[0], "random repeated across calls");
    assert_ne!(ra[1], rb[1], "numpy.random repeated across calls");
    // The program's own exit handlers run, as under `python -c`.
    let o = run(
        &e,
        "python",
        "import atexit\natexit.register(print, 'bye')\nprint('hi')",
    );
    assert_eq!(o.stdout, "hi\nbye\n");
}

fn turn(session: &str, code: &str) -> ToolCall {
    ToolCall::parse(
        &serde_json::json!({"tool": "run_code", "args": {"language": "python", "code": code, "session": session}})
            .to_string(),
    )
    .unwrap()
}

fn session_executor(ws: &std::path::Path, policy: Policy, cfg: WasmConfig) -> Executor {
    Executor::builder(policy)
        .workspace(ws)
        .wasm(Some(cfg))
        .build()
        .unwrap()
}

#[test]
fn a_session_keeps_its_state_across_turns_and_belongs_to_one_principal() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    let r = rt();
    let o = r
        .block_on(e.run_as(&turn("s", "import numpy as np\nx = np.arange(5)"), "alice"))
        .unwrap();
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert!(
        o.reasons.iter().any(|m| m == "session \"s\" opened"),
        "{o:?}"
    );
    let o = r
        .block_on(e.run_as(&turn("s", "int(x.sum()) + 32"), "alice"))
        .unwrap();
    assert_eq!(
        (o.exit_code, o.stdout.as_str()),
        (Some(0), "42\n"),
        "the variable and the import carried over; the last value is shown: {o:?}"
    );
    assert!(o.reasons.is_empty(), "{o:?}");
    // Another principal naming the same session gets its own, empty one.
    let o = r.block_on(e.run_as(&turn("s", "x"), "bob")).unwrap();
    assert_eq!(o.exit_code, Some(1));
    assert!(o.stderr.contains("NameError"), "{o:?}");
    // A call without a session starts clean, as always.
    let o = run(&e, "python", "print('x' in globals())");
    assert_eq!(o.stdout, "False\n");
    let mine = e.sessions("alice");
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].name.as_str(), mine[0].state, mine[0].turns),
        ("s", "open", 2)
    );
    assert_eq!(e.sessions("bob")[0].turns, 1);
    assert!(e.sessions("carol").is_empty());
    // Closing is the owner's: bob's close of "s" closes bob's.
    assert_eq!(e.close_session("bob", "s").unwrap().state, "closed");
    assert!(e.close_session("bob", "s").is_none());
    assert_eq!(e.sessions("alice")[0].state, "open");
    let o = r
        .block_on(e.run_as(&turn("s", "print(x[-1])"), "alice"))
        .unwrap();
    assert_eq!(o.stdout, "4\n");
    // Only python has sessions; stdin has no place in a turn.
    let js = ToolCall::parse(
        r#"{"tool":"run_code","args":{"language":"javascript","code":"1","session":"s"}}"#,
    )
    .unwrap();
    assert!(r.block_on(e.run_as(&js, "alice")).is_err());
    let bad = ToolCall::parse(
        r#"{"tool":"run_code","args":{"language":"python","code":"1","session":"a b"}}"#,
    );
    assert!(bad.is_err(), "session names are checked");
}

#[test]
fn a_limit_ends_the_session_and_says_so() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), policy_with("cpu_time = \"1s\"", "rw"), 0);
    let r = rt();
    let o = r.block_on(e.run(&turn("k", "x = 1"))).unwrap();
    assert_eq!(o.exit_code, Some(0));
    // CPU time is per turn: the busy turn is stopped at 1 s of its own.
    let o = r.block_on(e.run(&turn("k", "while True: pass"))).unwrap();
    assert_eq!(
        (o.status, o.limits_hit.as_slice()),
        (Status::Killed, &[LimitHit::TimeoutCpu][..])
    );
    assert!(
        o.reasons
            .iter()
            .any(|m| m == "the session ended: turn 2 hit a limit: timeout_cpu"),
        "{o:?}"
    );
    let listed = &e.sessions("local")[0];
    assert_eq!(
        (listed.state, listed.ended.as_deref()),
        ("ended", Some("turn 2 hit a limit: timeout_cpu"))
    );
    // The next turn of that name opens a new session, and says why.
    let o = r.block_on(e.run(&turn("k", "print(x)"))).unwrap();
    assert!(o.stderr.contains("NameError"), "{o:?}");
    assert!(
        o.reasons.iter().any(|m| m
            .contains("had ended (turn 2 hit a limit: timeout_cpu); this turn opened a new one")),
        "{o:?}"
    );
}

#[test]
fn the_memory_cap_is_the_whole_sessions_and_idle_sessions_end() {
    let ws = tempfile::tempdir().unwrap();
    // ~99 MiB of image, so ~93 MiB for the session's own data.
    let e = session_executor(
        ws.path(),
        policy_with("memory = \"192MiB\"", "rw"),
        WasmConfig {
            session_idle: Duration::from_secs(2),
            sessions_per_principal: 2,
            ..WasmConfig::default()
        },
    );
    let r = rt();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let o = r
            .block_on(e.run(&turn(
                "m",
                &format!("{name} = bytearray(40 * 2**20)\nprint(len({name}))"),
            )))
            .unwrap();
        if i < 2 {
            assert_eq!(
                (o.exit_code, o.stdout.as_str()),
                (Some(0), "41943040\n"),
                "turn {i}: {o:?}"
            );
        } else {
            // Each allocation alone fits; the third does not fit beside the first two.
            assert!(o.stderr.contains("MemoryError"), "{o:?}");
            assert!(o.limits_hit.contains(&LimitHit::Memory), "{o:?}");
        }
    }
    // Two open sessions per principal at most.
    r.block_on(e.run(&turn("one", "1"))).unwrap();
    r.block_on(e.run(&turn("two", "1"))).unwrap();
    assert!(r.block_on(e.run(&turn("three", "1"))).is_err());
    std::thread::sleep(Duration::from_millis(2600));
    let listed = e.sessions("local");
    let one = listed.iter().find(|s| s.name == "one").unwrap();
    assert_eq!(
        (one.state, one.ended.as_deref()),
        ("ended", Some("idle for 2 s"))
    );
    // Ended sessions free their place.
    let o = r.block_on(e.run(&turn("three", "print(3)"))).unwrap();
    assert_eq!(o.stdout, "3\n");
}

#[test]
fn figures_and_files_come_back_as_artifacts_under_the_write_rules() {
    use base64::Engine;
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir(ws.path().join(".git")).unwrap();
    std::fs::write(ws.path().join(".git/config"), "[core]\n").unwrap();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let e = Executor::builder(Policy::builtin_default())
        .workspace(ws.path())
        .audit(Arc::new(
            toolgate::audit::AuditLog::open(&audit, None).unwrap(),
        ))
        .build()
        .unwrap();
    let token = "ghp_R8xQ2mZ7vK4pL9sT1wY6nB3cD5fG0hJ8kM2a";
    let code = format!(
        "import matplotlib.pyplot as plt, os\nos.makedirs('out', exist_ok=True)\nplt.plot([1, 3, 2])\nplt.savefig('out/fig.png')\nopen('out/table.csv', 'w').write('k,v\\ntoken,{token}\\n')\nfrom PIL import Image, PngImagePlugin\nmeta = PngImagePlugin.PngInfo()\nmeta.add_text('note', '{token}')\nImage.new('RGB', (4, 4)).save('out/tagged.png', pnginfo=meta)\ntry:\n    open('.git/config', 'w').write('[core]\\n\\thooksPath = x\\n')\nexcept OSError:\n    pass"
    );
    let o = run(&e, "python", &code);
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    let paths: Vec<&str> = o.artifacts.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        paths.len(),
        3,
        "only what reached the workspace: {paths:?} {:?}",
        o.changes
    );
    // A token in a PNG text chunk keeps the image from being inlined.
    let tagged = o
        .artifacts
        .iter()
        .find(|a| a.path == "out/tagged.png")
        .unwrap();
    assert!(tagged.base64.is_none(), "{tagged:?}");
    assert!(
        o.reasons
            .iter()
            .any(|r| r.contains("out/tagged.png is not inlined")),
        "{:?}",
        o.reasons
    );
    let fig = o
        .artifacts
        .iter()
        .find(|a| a.path == "out/fig.png")
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            fig.base64
                .as_deref()
                .unwrap_or_else(|| panic!("{fig:?} {:?}", o.reasons)),
        )
        .unwrap();
    let on_disk = std::fs::read(ws.path().join("out/fig.png")).unwrap();
    assert_eq!(
        (fig.media_type, fig.size),
        ("image/png", on_disk.len() as u64)
    );
    assert_eq!(png, on_disk);
    use sha2::Digest;
    assert_eq!(fig.sha256, hex::encode(sha2::Sha256::digest(&on_disk)));
    let table = o
        .artifacts
        .iter()
        .find(|a| a.path == "out/table.csv")
        .unwrap();
    let text = table.text.as_deref().unwrap();
    assert_eq!(table.media_type, "text/csv");
    assert!(
        text.starts_with("k,v\ntoken,") && !text.contains(token),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join(".git/config")).unwrap(),
        "[core]\n"
    );
    // The audit entry records each artifact by digest, never its content.
    let entries = toolgate::audit::read_entries(&audit).unwrap();
    let call = entries.iter().find(|e| e["kind"] == "call").unwrap();
    let audited = call["outcome"]["artifacts"].as_array().unwrap();
    assert_eq!(audited.len(), 3);
    assert!(
        audited
            .iter()
            .any(|a| a["path"] == "out/fig.png" && a["sha256"] == fig.sha256.as_str())
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains(token) && !text.contains("iVBOR"),
        "no secret, no image bytes"
    );
}

#[test]
fn as_many_python_guests_as_slots_run_at_once() {
    // Python's instances carry a GC heap (exceptions) beside their linear
    // memory; both come from the pooling allocator's memory slots.
    let ws = tempfile::tempdir().unwrap();
    let e = Arc::new(session_executor(
        ws.path(),
        Policy::builtin_default(),
        WasmConfig {
            max_instances: 8,
            ..WasmConfig::default()
        },
    ));
    let outs: Vec<Outcome> = rt().block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let e = e.clone();
                tokio::spawn(async move {
                    let code = format!("import time\ntime.sleep(0.5)\nprint({i})");
                    e.run(&call("python", &code)).await.unwrap()
                })
            })
            .collect();
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    });
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            (o.exit_code, o.stdout.clone()),
            (Some(0), format!("{i}\n")),
            "{o:?}"
        );
    }
}

#[test]
fn artifacts_are_inlined_only_under_their_caps_and_at_most_sixteen_are_listed() {
    let ws = tempfile::tempdir().unwrap();
    let e = executor(ws.path(), Policy::builtin_default(), 0);
    // Just over each cap, and just under: sizes are reported either way.
    let code = "import os\nopen('big.png', 'wb').write(os.urandom(512 * 1024 + 1))\nopen('ok.png', 'wb').write(os.urandom(512 * 1024))\nopen('big.csv', 'w').write('x' * (64 * 1024 + 1))\nopen('ok.csv', 'w').write('x' * (64 * 1024))";
    let o = run(&e, "python", code);
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    let by = |p: &str| o.artifacts.iter().find(|a| a.path == p).unwrap();
    assert!(by("big.png").base64.is_none() && by("big.png").size == 512 * 1024 + 1);
    assert_eq!(
        by("ok.png").base64.as_ref().map(|b| b.len()),
        Some((512 * 1024usize).div_ceil(3) * 4)
    );
    assert!(by("big.csv").text.is_none() && by("big.csv").size == 64 * 1024 + 1);
    assert_eq!(by("ok.csv").text.as_ref().map(String::len), Some(64 * 1024));
    let o = run(
        &e,
        "python",
        "for i in range(20):\n    open(f'f{i:02}.txt', 'w').write(str(i))",
    );
    assert_eq!(o.changes.iter().filter(|c| c.applied).count(), 20);
    assert_eq!(o.artifacts.len(), toolgate::Artifact::MAX);
}

#[test]
fn a_sessions_turns_have_their_own_wall_and_output_limits_and_its_lifetime_ends_it() {
    let ws = tempfile::tempdir().unwrap();
    let e = session_executor(
        ws.path(),
        policy_with("wall_time = \"1s\"\noutput_bytes = \"1KiB\"", "rw"),
        WasmConfig {
            session_lifetime: Duration::from_secs(3),
            ..WasmConfig::default()
        },
    );
    let r = rt();
    // Output is cut per turn and does not end the session.
    let o = r.block_on(e.run(&turn("w", "print('x' * 5000)"))).unwrap();
    assert_eq!(
        (o.stdout.len(), o.limits_hit.as_slice()),
        (1024, &[LimitHit::OutputTruncated][..])
    );
    let o = r.block_on(e.run(&turn("w", "print('y' * 10)"))).unwrap();
    assert_eq!(
        o.stdout, "yyyyyyyyyy\n",
        "the next turn's output starts a new count"
    );
    // A turn blocked past the wall limit is stopped, and ends the session.
    let t = Instant::now();
    let o = r
        .block_on(e.run(&turn("w", "import time\ntime.sleep(30)")))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(o.limits_hit, vec![LimitHit::TimeoutWall], "{o:?}");
    assert_eq!(
        e.sessions("local")[0].ended.as_deref(),
        Some("turn 3 hit a limit: timeout_wall")
    );
    // The lifetime ends a session that keeps being used.
    for _ in 0..3 {
        r.block_on(e.run(&turn("l", "1"))).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
    }
    std::thread::sleep(Duration::from_millis(500));
    let l = e
        .sessions("local")
        .into_iter()
        .find(|s| s.name == "l")
        .unwrap();
    assert_eq!(
        (l.state, l.turns, l.ended.as_deref()),
        ("ended", 3, Some("its lifetime (3 s) ran out"))
    );
    let o = r.block_on(e.run(&turn("l", "1"))).unwrap();
    assert!(
        o.reasons
            .iter()
            .any(|m| m.contains("had ended (its lifetime (3 s) ran out)")),
        "{o:?}"
    );
}
