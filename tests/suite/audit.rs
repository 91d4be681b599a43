//! The audit log: every call leaves an entry; `verify` finds every kind
//! of tampering; concurrent writers keep one chain.

use super::common::{stderr, workspace};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toolgate::audit::{AuditLog, verify};

fn good_log(dir: &Path, n: usize, key: Option<&[u8]>) -> PathBuf {
    let p = dir.join("audit.log");
    let log = AuditLog::open(&p, key.map(|k| k.to_vec())).unwrap();
    for i in 0..n {
        log.append(&json!({"kind": "call", "tool": "read_file", "call_id": format!("c{i}"), "decision": "allow"})).unwrap();
    }
    p
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write(p: &Path, lines: &[String]) {
    std::fs::write(
        p,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn verify_names_every_kind_of_tampering() {
    let d = tempfile::tempdir().unwrap();
    let p = good_log(d.path(), 6, None);
    assert_eq!(verify(std::slice::from_ref(&p), None).unwrap().entries, 6);
    let orig = lines(&p);
    let case = |name: &str,
                mutate: &dyn Fn(&mut Vec<String>),
                raw: Option<&dyn Fn(&str) -> String>,
                problem: &str,
                line: usize| {
        let f = d.path().join(format!("{name}.log"));
        match raw {
            Some(r) => std::fs::write(&f, r(&std::fs::read_to_string(&p).unwrap())).unwrap(),
            None => {
                let mut l = orig.clone();
                mutate(&mut l);
                write(&f, &l);
            }
        }
        let fail = verify(&[f], None).unwrap_err();
        assert_eq!(
            (fail.problem, fail.line),
            (problem, line),
            "{name}: {fail:?}"
        );
    };
    case(
        "edited",
        &|l| l[2] = l[2].replace("\"decision\":\"allow\"", "\"decision\":\"deny\""),
        None,
        "edited",
        3,
    );
    case("deleted", &|l| drop(l.remove(3)), None, "deleted", 4);
    case("deleted-first", &|l| drop(l.remove(0)), None, "deleted", 1);
    case(
        "inserted",
        &|l| l.insert(2, l[1].clone()),
        None,
        "inserted",
        3,
    );
    case("reordered", &|l| l.swap(2, 4), None, "reordered", 3);
    case(
        "truncated",
        &|_| {},
        Some(&|t: &str| t[..t.len() - 20].to_string()),
        "truncated",
        6,
    );
    case(
        "garbage",
        &|l| l.insert(1, "{\"tool\":\"x\"}".into()),
        None,
        "edited",
        2,
    );
    // A forged entry: valid hash and chain, but seq fabricated between two real ones.
    let forged = {
        let mut l = orig.clone();
        let body = l[1].split(",\"hash\":").next().unwrap().to_string() + "}";
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let fake = json!({"seq": 2, "prev": v["prev"], "kind": "call", "tool": "run_command", "decision": "allow"});
        let fake_body = serde_json::to_string(&fake).unwrap();
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(fake_body.as_bytes()));
        l.insert(
            1,
            format!("{},\"hash\":\"{h}\"}}", &fake_body[..fake_body.len() - 1]),
        );
        l
    };
    let f = d.path().join("inserted-valid.log");
    write(&f, &forged);
    let fail = verify(&[f], None).unwrap_err();
    assert_eq!((fail.problem, fail.line), ("inserted", 3), "{fail:?}");
}

#[test]
fn hmac_detects_a_recomputed_chain() {
    let d = tempfile::tempdir().unwrap();
    let key = b"k3y-for-tests-only";
    let p = good_log(d.path(), 3, Some(key));
    assert!(verify(std::slice::from_ref(&p), Some(key)).unwrap().keyed);
    // Rewrite the whole log without the key: the chain is valid, the HMACs are not.
    let q = d.path().join("rewritten.log");
    let log = AuditLog::open(&q, Some(b"another-key".to_vec())).unwrap();
    for i in 0..3 {
        log.append(&json!({"kind": "call", "tool": "read_file", "call_id": format!("c{i}"), "decision": "allow"})).unwrap();
    }
    assert!(
        verify(std::slice::from_ref(&q), None).is_ok(),
        "without a key only the chain is checked"
    );
    let fail = verify(&[q], Some(key)).unwrap_err();
    assert_eq!((fail.problem, fail.line), ("forged", 1));
}

/// Issue 12: a torn last line (a crash mid-write) is reported by `verify`,
/// then repaired when the log is next opened — cut off, with the cut on
/// record — instead of refusing every later call.
#[test]
fn a_torn_tail_is_reported_then_repaired_and_recorded() {
    let d = tempfile::tempdir().unwrap();
    let p = good_log(d.path(), 2, None);
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    use std::io::Write;
    let torn = b"{\"seq\":3,\"ts_ms\":1,\"prev\":\"abc";
    f.write_all(torn).unwrap();
    drop(f);
    assert_eq!(
        verify(std::slice::from_ref(&p), None).unwrap_err().problem,
        "truncated"
    );
    let log = AuditLog::open(&p, None).unwrap();
    log.append(&json!({"kind": "call", "after": "repair"}))
        .unwrap();
    let v = verify(std::slice::from_ref(&p), None).unwrap();
    assert_eq!(v.entries, 4);
    let e = toolgate::audit::read_entries(&p).unwrap();
    assert_eq!(e[2]["kind"], "repair");
    assert_eq!(e[2]["removed_bytes"], torn.len());
    assert_eq!(e[3]["after"], "repair");
    assert!(!std::fs::read_to_string(&p).unwrap().contains("\"abc"));
}

/// Issue 12: no tampering makes the reader panic — multibyte characters
/// spliced into any byte position of an entry, or replacing its end.
#[test]
fn tampered_lines_never_panic_the_reader() {
    let d = tempfile::tempdir().unwrap();
    let key = b"k3y".as_slice();
    let p = good_log(d.path(), 2, Some(key));
    let text = std::fs::read_to_string(&p).unwrap();
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let q = d.path().join("tampered.log");
    let mut cases = 0;
    for at in last_start..text.len() {
        for insert in ["é", "🦀", "\u{0301}", "\"}"] {
            let mut t = text.as_bytes().to_vec();
            t.splice(at..at, insert.bytes());
            let mut cut = text.as_bytes()[..at].to_vec();
            cut.extend_from_slice(insert.as_bytes());
            cut.push(b'\n');
            // Same length: the character overwrites bytes (e.g. the end of
            // the HMAC and its quote), so offsets land inside it.
            let mut over = text.as_bytes().to_vec();
            let end = (at + insert.len()).min(over.len());
            over.splice(at..end, insert.bytes());
            for bytes in [t, cut, over] {
                std::fs::write(&q, &bytes).unwrap();
                let r = std::panic::catch_unwind(|| {
                    let _ = verify(std::slice::from_ref(&q), Some(key));
                    let _ = toolgate::audit::read_entries(&q);
                    let _ = AuditLog::open(&q, Some(key.to_vec()));
                });
                assert!(
                    r.is_ok(),
                    "panicked on {:?}",
                    String::from_utf8_lossy(&bytes)
                );
                cases += 1;
            }
        }
    }
    assert!(cases > 500, "{cases}");
}

#[test]
fn concurrent_writers_never_fork_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("shared.log");
    // Threads sharing one handle, and a second handle on the same file.
    let a = Arc::new(AuditLog::open(&p, None).unwrap());
    let b = Arc::new(AuditLog::open(&p, None).unwrap());
    let mut hs = Vec::new();
    for t in 0..8 {
        let log = if t % 2 == 0 { a.clone() } else { b.clone() };
        hs.push(std::thread::spawn(move || {
            for i in 0..50 {
                log.append(&json!({"t": t, "i": i})).unwrap();
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    // And separate processes.
    let ws = workspace();
    let procs: Vec<_> = (0..4)
        .map(|_| {
            let mut c = super::common::bin();
            c.current_dir(ws.path())
                .args([
                    "run",
                    "--audit",
                    p.to_str().unwrap(),
                    "--call",
                    r#"{"tool":"list_dir"}"#,
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for c in procs {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // 400 from the threads; each CLI run writes its intent and its result.
    let v = verify(&[p], None).unwrap();
    assert_eq!((v.entries, v.last_seq), (408, 408));
}

#[test]
fn rotation_continues_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rot.log");
    let log = AuditLog::open(&p, None).unwrap().rotate_at(2_000);
    for i in 0..40 {
        log.append(&json!({"i": i, "pad": "x".repeat(100)}))
            .unwrap();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f != &p)
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files.push(p);
    let v = verify(&files, None).unwrap();
    assert_eq!(
        v.entries as usize,
        40 + files.len() - 1,
        "every append plus one rotation entry per rotated file"
    );
    files.remove(1);
    assert_eq!(
        verify(&files, None).unwrap_err().problem,
        "deleted",
        "a missing middle file is a deletion"
    );
}

#[test]
fn every_call_kind_is_audited_with_principal_and_outcome() {
    let ws = workspace();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("calls.log");
    let exec = toolgate::Executor::builder(toolgate::Policy::builtin_default())
        .workspace(ws.path())
        .wasm(None)
        .principal("agent-7")
        .audit(Arc::new(AuditLog::open(&p, None).unwrap()))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let calls = [
        r#"{"id":"ok","tool":"read_file","args":{"path":"README.md"}}"#,
        r#"{"id":"deny","tool":"run_command","args":{"command":"sudo rm -rf /"}}"#,
        r#"{"id":"ask","tool":"read_file","args":{"path":".env"}}"#,
        r#"{"id":"fail","tool":"read_file","args":{"path":"missing.txt"}}"#,
        r#"{"id":"err","tool":"run_code","args":{"language":"python","code":"print(1)"}}"#,
    ];
    for c in calls {
        let _ = rt.block_on(exec.run(&toolgate::ToolCall::parse(c).unwrap()));
    }
    let all = toolgate::audit::read_entries(&p).unwrap();
    // Calls that run write an intent entry first, fsynced before any effect.
    let order: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["call_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("intent", "ok"),
            ("call", "ok"),
            ("call", "deny"),
            ("call", "ask"),
            ("intent", "fail"),
            ("call", "fail"),
            ("intent", "err"),
            ("call", "err"),
        ]
    );
    assert!(all[0].get("outcome").is_none());
    assert_eq!(all[0]["backend"], "host");
    let entries: Vec<&serde_json::Value> = all.iter().filter(|e| e["kind"] == "call").collect();
    let got: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["call_id"].as_str().unwrap().into(),
                e["decision"].as_str().unwrap().into(),
                e["outcome"]["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("ok", "allow", "completed"),
        ("deny", "deny", "denied"),
        ("ask", "ask", "denied"),
        ("fail", "allow", "failed"),
        ("err", "allow", "error"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert!(all.iter().all(|e| e["principal"] == "agent-7"));
    assert_eq!(entries[2]["confirmation"]["by"], "auto-deny");
    assert_eq!(verify(&[p], None).unwrap().entries, 8);
}

#[test]
fn audit_cli_verify_tail_query() {
    let d = tempfile::tempdir().unwrap();
    let p = good_log(d.path(), 5, None);
    let ps = p.to_str().unwrap();
    let o = super::common::toolgate(d.path(), &["audit", "verify", ps], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("OK: 5 entries"));
    let o = super::common::toolgate(d.path(), &["audit", "tail", ps, "-n", "2"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let o = super::common::toolgate(
        d.path(),
        &["audit", "query", ps, "--since", "1h", "--tool", "read_file"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 5);
    let mut l = lines(&p);
    l.remove(2);
    write(&p, &l);
    let o = super::common::toolgate(d.path(), &["audit", "verify", "--json", ps], None);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["failure"]["problem"].as_str(),
            v["failure"]["line"].as_u64()
        ),
        (Some("deleted"), Some(3))
    );
}

/// Issue 12: the intent entry is fsynced before the call has any effect —
/// a toolgate killed while the call runs leaves it on record, and the
/// chain still verifies.
#[test]
fn the_intent_of_a_call_survives_a_killed_toolgate() {
    let ws = workspace();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.jsonl");
    let mut child = super::common::bin()
        .current_dir(ws.path())
        .args(["run", "--audit", p.to_str().unwrap(), "--call"])
        .arg(r#"{"id":"long-1","tool":"run_code","args":{"language":"python","code":"import time\ntime.sleep(8)\nprint('done')"}}"#)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let intent = loop {
        let e = std::fs::read_to_string(&p)
            .ok()
            .and_then(|_| toolgate::audit::read_entries(&p).ok());
        if let Some(i) = e.and_then(|e| e.into_iter().find(|e| e["kind"] == "intent")) {
            break i;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no intent entry"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(intent["call_id"], "long-1");
    assert_eq!(intent["decision"], "allow");
    assert_eq!(intent["backend"], "wasm");
    let e = toolgate::audit::read_entries(&p).unwrap();
    assert!(
        !e.iter().any(|e| e["kind"] == "call"),
        "killed before its result"
    );
    assert_eq!(verify(&[p], None).unwrap().entries, 1);
}

/// The fuzz seeds of `audit_read` (written by a script, not by toolgate)
/// are what they claim: whole chains verify (a rotated file's too), a torn
/// tail is "truncated", and CRLF line ends are refused — `open` would refuse
/// such a file, so `verify` must not call it good.
#[test]
fn the_audit_fuzz_seeds_verify_as_their_names_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/audit_read");
    let seed = |n: &str| {
        let b = std::fs::read(dir.join(n)).unwrap();
        toolgate::audit::verify_contents(&[(n.to_string(), b[1..].to_vec())], None)
    };
    assert_eq!(seed("00").unwrap().entries, 3);
    let rotated = seed("02").unwrap();
    assert_eq!((rotated.entries, rotated.last_seq), (4, 11));
    assert_eq!(seed("01").unwrap_err().problem, "truncated");
    assert_eq!(seed("04").unwrap_err().problem, "edited");
}

/// Found by the `audit_read` fuzz target: a float read back from the log
/// was one unit in the last place off the value appended (serde_json's
/// default float parser is not exact).
#[test]
fn numbers_read_back_exactly_as_appended() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.jsonl");
    let log = AuditLog::open(&p, None).unwrap();
    let xs: [f64; 6] = [
        2.2222222222222222e64,
        0.1,
        1e-300,
        5e-324,
        1.7976931348623157e308,
        -0.0,
    ];
    for x in xs {
        log.append(&serde_json::json!({"x": x})).unwrap();
    }
    let back = toolgate::audit::read_entries(&p).unwrap();
    for (x, e) in xs.iter().zip(&back) {
        assert_eq!(e["x"].as_f64().unwrap().to_bits(), x.to_bits(), "{x:e}");
    }
}
