//! Shared helpers for the integration tests.

use std::path::Path;
use std::process::{Command, Output};

pub fn bin() -> Command {
    #[allow(clippy::disallowed_methods)]
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
}

/// Runs the CLI in `dir` with `args` and optional stdin.
pub fn toolgate(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = bin();
    c.current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut si = child.stdin.take().unwrap();
    let input = stdin.unwrap_or("").to_string();
    // Feed stdin from a thread: a child that streams output would otherwise
    // block on a full stdout pipe while we block on its full stdin pipe.
    let feeder = std::thread::spawn(move || {
        let _ = si.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

pub fn stdout_json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A workspace with a few files, for file-tool and policy tests.
pub fn workspace() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("src")).unwrap();
    std::fs::create_dir_all(d.path().join(".git/hooks")).unwrap();
    std::fs::write(d.path().join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(d.path().join("README.md"), "# demo\n").unwrap();
    std::fs::write(d.path().join(".env"), "API_KEY=not-a-real-key\n").unwrap();
    d
}

/// Held by tests that load the whole machine or measure the process (the
/// load test, RSS and timing-sensitive probes), so they never overlap.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// For tests of process-wide state (RSS, tracing's callsite cache): the
/// first call re-runs this one test alone in a fresh process of the test
/// binary and returns false once it passed there (the caller returns); in
/// that child it returns true (the caller tests). Other tests' threads
/// share that state and made such tests flaky under parallel runs.
pub fn alone_in_own_process(test: &str) -> bool {
    const VAR: &str = "TOOLGATE_TEST_ALONE";
    if std::env::var(VAR).is_ok_and(|v| v == test) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    // The test binary itself, not a tool: no sandbox applies.
    #[allow(clippy::disallowed_methods)]
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, test)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{test} failed in its own process");
    // The filter matched (a renamed test would otherwise pass vacuously).
    assert!(text.contains("1 passed"), "{test} did not run: {text}");
    false
}

/// The runtime the tests drive async code with (two workers, like the machine).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A host on this machine's loopback that answers each request with the
/// request line it got (for the egress tests: listed by its address, as a
/// name resolving to loopback would be refused). Its port.
pub fn request_line_host() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for c in l.incoming().take(8) {
            let Ok(mut c) = c else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
                line.len()
            );
        }
    });
    port
}
