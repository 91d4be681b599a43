//! The audit reader (`verify`, the entry parser, opening a log with its
//! torn-tail repair) never panics on any file content; what verifies stays
//! verified after an append; and whatever records are appended read back
//! as a chain that verifies, with their fields intact.
//! Input: first byte even — the rest is a log file's content; odd — the
//! rest is JSON objects, one per line, to append.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run audit_read` (stable toolchain).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::path::PathBuf;
use toolgate::audit::{self, AuditLog};

fn scratch() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("toolgate-fuzz-audit-{}.jsonl", std::process::id()))
}

fn verify(path: &PathBuf) -> Result<audit::Verified, audit::Failure> {
    audit::verify(std::slice::from_ref(path), None)
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let path = scratch();
    let _ = std::fs::remove_file(&path);
    if mode % 2 == 0 {
        let verified = audit::verify_contents(&[("log".into(), rest.to_vec())], None);
        let parsed = std::str::from_utf8(rest).map(audit::parse_entries);
        if let Ok(v) = &verified {
            let lines = std::str::from_utf8(rest).map_or(0, |t| t.split_terminator('\n').count());
            assert_eq!(v.entries as usize, lines, "verified entries != lines");
            let parsed = parsed.as_ref().expect("verified text is UTF-8");
            assert_eq!(parsed.len(), lines, "a verified line did not parse");
        }
        // Up to the last newline: what a crash mid-write leaves whole.
        let whole = rest.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let whole_ok =
            audit::verify_contents(&[("log".into(), rest[..whole].to_vec())], None).is_ok();
        std::fs::write(&path, rest).expect("scratch file");
        match AuditLog::open(&path, None) {
            Ok(log) => {
                let appended = log.append(&json!({"kind": "fuzz"}));
                if whole_ok {
                    // A chain that verifies (after cutting a torn tail, which
                    // is recorded) takes an append and still verifies.
                    appended.expect("append to a verified log");
                    let again = verify(&path).expect("verified log + append verifies");
                    if let Ok(v) = &verified {
                        assert_eq!(again.entries, v.entries + 1);
                    }
                }
            }
            Err(e) => assert!(!whole_ok, "a log that verifies does not open: {e}"),
        }
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let records: Vec<serde_json::Map<String, Value>> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let log = AuditLog::open(&path, None).expect("a new log opens");
        for r in &records {
            log.append(r).expect("append");
        }
        let v = verify(&path).expect("what the writer wrote verifies");
        assert_eq!(v.entries as usize, records.len());
        let back = audit::parse_entries(&std::fs::read_to_string(&path).expect("read back"));
        assert_eq!(back.len(), records.len());
        for (r, b) in records.iter().zip(&back) {
            for (k, val) in r {
                if !["seq", "ts_ms", "prev", "hash", "hmac"].contains(&k.as_str()) {
                    assert_eq!(b.get(k), Some(val), "field {k} changed");
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
