//! The audit log: append-only JSON lines, hash-chained, optionally keyed.
//!
//! Each line is `{…body…,"hash":H}` or `{…body…,"hash":H,"hmac":M}` where
//! the body holds `seq` and `prev` (the previous line's hash; the first
//! line's is [`genesis()`]), `H = sha256(body text as written)` and
//! `M = HMAC-SHA256(key, H)`. Verification is textual, so it never depends
//! on JSON key order. Appends take an exclusive `flock` (other processes)
//! and a mutex (other threads), and are fsynced before they return, so
//! concurrent writers never interleave or fork the chain. Rotation renames
//! the file and starts a new one whose first entry chains to the old
//! file's last hash.
//!
//! Without a key the chain proves order and integrity against edits,
//! deletions, insertions and reordering, but someone who can rewrite the
//! whole file can recompute it; a key (`TOOLGATE_AUDIT_KEY`) closes that.

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The `prev` of a chain's first entry: sha256("toolgate-audit-v1").
pub fn genesis() -> String {
    hex::encode(Sha256::digest(b"toolgate-audit-v1"))
}

/// Environment variable holding the HMAC key.
pub const KEY_ENV: &str = "TOOLGATE_AUDIT_KEY";
/// Environment variable naming a file that holds the HMAC key.
pub const KEY_FILE_ENV: &str = "TOOLGATE_AUDIT_KEY_FILE";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Reported by the tail reader; `open` repairs it.
    #[error("audit log {path}: last line is torn (a crash during a write?)")]
    Torn { path: String },
    #[error("audit log {path}: last line is not a toolgate entry: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("audit entry must be a JSON object")]
    NotObject,
}

struct State {
    file: File,
    len: u64,
    last_hash: String,
    seq: u64,
}

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    key: Option<Vec<u8>>,
    max_bytes: Option<u64>,
    state: Mutex<State>,
}

/// A parsed line: its body text, hash and optional HMAC.
struct Line<'a> {
    body: String,
    hash: &'a str,
    hmac: Option<&'a str>,
}

fn split_line(line: &str) -> Option<Line<'_>> {
    let line = line.strip_suffix('}')?;
    // Slices only at ASCII delimiters: a tampered line may hold any UTF-8.
    let (rest, hmac) = match line.rfind(",\"hmac\":\"") {
        Some(i) => match line[i + 9..].strip_suffix('"') {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (&line[..i], Some(h))
            }
            _ => (line, None),
        },
        None => (line, None),
    };
    let i = rest.rfind(",\"hash\":\"")?;
    let hash = rest.get(i + 9..rest.len().checked_sub(1)?)?;
    if hash.len() != 64 || !rest.ends_with('"') {
        return None;
    }
    Some(Line {
        body: format!("{}}}", &rest[..i]),
        hash,
        hmac,
    })
}

fn sha(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

fn mac(key: &[u8], hash: &str) -> String {
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    m.update(hash.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// One entry's line (without its newline) and hash: `fields` after
/// `seq`, `ts_ms` and `prev`, hashed, and keyed when `key` is given. The
/// one way an entry is made, whether it goes to a file or a database.
pub fn compose(
    seq: u64,
    prev: &str,
    fields: Map<String, Value>,
    key: Option<&[u8]>,
) -> Result<(String, String), serde_json::Error> {
    let mut body = Map::new();
    body.insert("seq".into(), Value::from(seq));
    body.insert("ts_ms".into(), Value::from(crate::units::now_ms() as u64));
    body.insert("prev".into(), Value::from(prev.to_string()));
    for (k, v) in fields {
        if !matches!(k.as_str(), "seq" | "ts_ms" | "prev" | "hash" | "hmac") {
            body.insert(k, v);
        }
    }
    let body = serde_json::to_string(&Value::Object(body))?;
    let hash = sha(&body);
    let mut line = format!("{},\"hash\":\"{hash}\"", &body[..body.len() - 1]);
    if let Some(k) = key {
        line.push_str(&format!(",\"hmac\":\"{}\"", mac(k, &hash)));
    }
    line.push('}');
    Ok((line, hash))
}

/// The seq and hash of an entry's line, if it is one.
pub fn head_of(line: &str) -> Option<(u64, String)> {
    let l = split_line(line)?;
    let v: Value = serde_json::from_str(&l.body).ok()?;
    Some((v.get("seq")?.as_u64()?, l.hash.to_string()))
}

/// Reads the last complete entry: (hash, seq). Fails on a torn tail.
fn read_tail(file: &mut File, path: &Path) -> Result<(u64, String, u64), AuditError> {
    let io = |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Ok((0, genesis(), 0));
    }
    let start = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io)?;
    if buf.last() != Some(&b'\n') {
        return Err(AuditError::Torn {
            path: path.display().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&buf[..buf.len() - 1]);
    let last = text.rsplit('\n').next().unwrap_or("");
    let corrupt = |detail: &str| AuditError::Corrupt {
        path: path.display().to_string(),
        detail: detail.to_string(),
    };
    let l = split_line(last).ok_or_else(|| corrupt("no hash"))?;
    let v: Value = serde_json::from_str(&l.body).map_err(|e| corrupt(&e.to_string()))?;
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupt("no seq"))?;
    Ok((len, l.hash.to_string(), seq))
}

/// Cuts a torn last line (bytes after the last newline) off the file and
/// returns how many bytes went and their SHA-256 (the bytes themselves are
/// not kept: they may be any part of an entry).
fn cut_torn_tail(file: &mut File) -> std::io::Result<(u64, String)> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut keep = 0u64;
    let mut pos = len;
    let mut buf = vec![0u8; 64 << 10];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        pos = start;
    }
    file.seek(SeekFrom::Start(keep))?;
    let mut torn = Vec::new();
    file.read_to_end(&mut torn)?;
    file.set_len(keep)?;
    file.sync_all()?;
    Ok((len - keep, hex::encode(Sha256::digest(&torn))))
}

impl AuditLog {
    /// Opens (creating) a log. `key` enables HMACs. A torn last line (a
    /// crash during a write) is cut off and the cut recorded as a `repair`
    /// entry, so one crash does not stop every later call.
    pub fn open(path: impl Into<PathBuf>, key: Option<Vec<u8>>) -> Result<AuditLog, AuditError> {
        let path = path.into();
        let io = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let ((len, last_hash, seq), repaired) = {
            // Under the writers' lock: a torn tail is a crash's, not a
            // write in progress.
            let _lock = nix::fcntl::Flock::lock(
                file.try_clone().map_err(io)?,
                nix::fcntl::FlockArg::LockExclusive,
            )
            .map_err(|(_, e)| io(std::io::Error::from(e)))?;
            match read_tail(&mut file, &path) {
                Err(AuditError::Torn { .. }) => {
                    let removed = cut_torn_tail(&mut file).map_err(io)?;
                    (read_tail(&mut file, &path)?, Some(removed))
                }
                other => (other?, None),
            }
        };
        let log = AuditLog {
            key: key.filter(|k| !k.is_empty()),
            max_bytes: None,
            state: Mutex::new(State {
                file,
                len,
                last_hash,
                seq,
            }),
            path,
        };
        if let Some((bytes, digest)) = repaired {
            // The chain goes on from the last whole entry; the cut is on record.
            log.append(&serde_json::json!({
                "kind": "repair",
                "detail": "a torn last line (a crash during a write) was removed",
                "removed_bytes": bytes,
                "removed_sha256": digest,
            }))?;
        }
        Ok(log)
    }

    /// The key from [`KEY_ENV`], else from the file named by [`KEY_FILE_ENV`]
    /// (trailing newline ignored), if either is set.
    pub fn key_from_env() -> Option<Vec<u8>> {
        if let Some(k) = std::env::var_os(KEY_ENV)
            .map(|v| v.into_encoded_bytes())
            .filter(|k| !k.is_empty())
        {
            return Some(k);
        }
        let path = std::env::var_os(KEY_FILE_ENV)?;
        let mut k = std::fs::read(path).ok()?;
        while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            k.pop();
        }
        (!k.is_empty()).then_some(k)
    }

    /// Rotate automatically once the file reaches `bytes`.
    pub fn rotate_at(mut self, bytes: u64) -> AuditLog {
        self.max_bytes = Some(bytes);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry (a JSON object; `seq`, `ts_ms`, `prev` are added)
    /// and fsyncs it. Returns the entry's hash.
    pub fn append(&self, record: &impl Serialize) -> Result<String, AuditError> {
        let Value::Object(fields) =
            serde_json::to_value(record).map_err(|_| AuditError::NotObject)?
        else {
            return Err(AuditError::NotObject);
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.max_bytes.is_some_and(|m| st.len >= m) {
            self.rotate_locked(&mut st)?;
        }
        self.write_locked(&mut st, fields)
    }

    fn write_locked(
        &self,
        st: &mut State,
        fields: Map<String, Value>,
    ) -> Result<String, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let lock = nix::fcntl::Flock::lock(
            st.file.try_clone().map_err(io)?,
            nix::fcntl::FlockArg::LockExclusive,
        )
        .map_err(|(_, e)| io(std::io::Error::from(e)))?;
        // Another process may have appended since our last write.
        let now_len = st.file.metadata().map_err(io)?.len();
        if now_len != st.len {
            let (len, h, s) = read_tail(&mut st.file, &self.path)?;
            st.len = len;
            st.last_hash = h;
            st.seq = s;
        }
        // Only a forged tail can hold the largest seq; never wrap past it.
        let seq = st.seq.checked_add(1).ok_or_else(|| AuditError::Corrupt {
            path: self.path.display().to_string(),
            detail: "seq at its maximum".into(),
        })?;
        let (mut line, hash) = compose(seq, &st.last_hash, fields, self.key.as_deref())
            .map_err(|e| io(std::io::Error::other(e)))?;
        line.push('\n');
        // One write of the whole line (O_APPEND), then fsync.
        st.file.write_all(line.as_bytes()).map_err(io)?;
        st.file.sync_data().map_err(io)?;
        drop(lock);
        st.len += line.len() as u64;
        st.seq = seq;
        st.last_hash = hash.clone();
        Ok(hash)
    }

    /// Renames the current file to `FILE.<seq>` and continues the chain in a
    /// fresh FILE whose first entry records the rotation.
    pub fn rotate(&self) -> Result<PathBuf, AuditError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.rotate_locked(&mut st)
    }

    fn rotate_locked(&self, st: &mut State) -> Result<PathBuf, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let old = PathBuf::from(format!("{}.{:08}", self.path.display(), st.seq));
        std::fs::rename(&self.path, &old).map_err(io)?;
        st.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        st.len = 0;
        let mut m = Map::new();
        m.insert("kind".into(), Value::from("rotate"));
        m.insert(
            "previous_file".into(),
            Value::from(
                old.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        );
        self.write_locked(st, m)?;
        Ok(old)
    }
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    pub problem: &'static str,
    pub detail: String,
}

/// A verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub entries: u64,
    pub last_hash: String,
    pub last_seq: u64,
    pub keyed: bool,
    /// Set when the first file continues a chain from a file not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continues_from: Option<String>,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OK: {} entries, last seq {}, last hash {}{}",
            self.entries,
            self.last_seq,
            self.last_hash,
            if self.keyed {
                ", HMACs verified"
            } else {
                ", no key: hash chain only"
            }
        )?;
        match &self.continues_from {
            Some(from) => write!(f, ", continues from {from}"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAILED: {}:{}: {}: {}",
            self.file, self.line, self.problem, self.detail
        )
    }
}

/// Verifies files in order as one chain.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<Verified, Failure> {
    let mut contents = Vec::with_capacity(files.len());
    for path in files {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => contents.push((name, bytes)),
            Err(e) => {
                return Err(Failure {
                    file: name,
                    line: 0,
                    problem: "unreadable",
                    detail: e.to_string(),
                });
            }
        }
    }
    verify_contents(&contents, key)
}

/// Verifies the contents of files (name, bytes), in order, as one chain:
/// [`verify`] without the reading (the fuzz target `audit_read` runs it).
pub fn verify_contents(
    files: &[(String, Vec<u8>)],
    key: Option<&[u8]>,
) -> Result<Verified, Failure> {
    let mut last_hash = genesis();
    let mut last_seq = 0u64;
    let mut entries = 0u64;
    let mut continues_from = None;
    for (fi, (name, bytes)) in files.iter().enumerate() {
        let fail = |line: usize, problem: &'static str, detail: String| Failure {
            file: name.clone(),
            line,
            problem,
            detail,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| fail(0, "edited", "not UTF-8".into()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            let n = text.split_terminator('\n').count();
            return Err(fail(
                n,
                "truncated",
                "the last line is torn (no newline): a crash during a write, or a cut file".into(),
            ));
        }
        // Seqs present later in the file tell a reordering from a deletion.
        let seqs: Vec<Option<u64>> = text
            .split_terminator('\n')
            .map(|raw| {
                let l = split_line(raw)?;
                serde_json::from_str::<Value>(&l.body)
                    .ok()?
                    .get("seq")?
                    .as_u64()
            })
            .collect();
        for (i, raw) in text.split_terminator('\n').enumerate() {
            let ln = i + 1;
            let l = split_line(raw)
                .ok_or_else(|| fail(ln, "edited", "not a toolgate audit line (no hash)".into()))?;
            if sha(&l.body) != l.hash {
                return Err(fail(ln, "edited", "content does not match its hash".into()));
            }
            if let Some(k) = key {
                match l.hmac {
                    Some(m) if m == mac(k, l.hash) => {}
                    Some(_) => {
                        return Err(fail(
                            ln,
                            "forged",
                            "HMAC does not match (rewritten without the key)".into(),
                        ));
                    }
                    None => {
                        return Err(fail(
                            ln,
                            "forged",
                            "entry has no HMAC but a key was given".into(),
                        ));
                    }
                }
            }
            let v: Value =
                serde_json::from_str(&l.body).map_err(|e| fail(ln, "edited", e.to_string()))?;
            let seq = v
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| fail(ln, "edited", "no seq".into()))?;
            let prev = v.get("prev").and_then(Value::as_str).unwrap_or("");
            if fi == 0 && i == 0 && prev != last_hash {
                // A rotated file's first entry continues an earlier file.
                if v.get("kind").and_then(Value::as_str) == Some("rotate") {
                    continues_from = v
                        .get("previous_file")
                        .and_then(Value::as_str)
                        .map(String::from);
                    last_hash = prev.to_string();
                    // seq 0 is never written: the first entry is 1.
                    last_seq = seq
                        .checked_sub(1)
                        .ok_or_else(|| fail(ln, "edited", "seq 0".into()))?;
                } else {
                    return Err(fail(
                        ln,
                        "deleted",
                        format!(
                            "the chain does not start at genesis (seq {seq}): earlier entries are missing"
                        ),
                    ));
                }
            }
            let expected = last_seq.saturating_add(1);
            if prev != last_hash || seq != expected {
                let (problem, detail) = if seq > expected && seqs[i + 1..].contains(&Some(expected))
                {
                    (
                        "reordered",
                        format!("seq {seq} comes before seq {expected}"),
                    )
                } else if seq > expected {
                    (
                        "deleted",
                        format!("entries {expected}..{} are missing", seq - 1),
                    )
                } else if seq == last_seq {
                    ("inserted", format!("a second entry claims seq {seq}"))
                } else if seq < expected {
                    ("reordered", format!("seq {seq} follows seq {last_seq}"))
                } else {
                    (
                        "inserted",
                        format!("seq {seq} does not chain to the previous entry"),
                    )
                };
                return Err(fail(ln, problem, detail));
            }
            last_hash = l.hash.to_string();
            last_seq = seq;
            entries += 1;
        }
    }
    Ok(Verified {
        entries,
        last_hash,
        last_seq,
        keyed: key.is_some(),
        continues_from,
    })
}

/// A filter over audit entries (`audit query`, `GET /v1/audit`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Query {
    /// Entries at or after this time (Unix ms).
    pub since_ms: Option<u128>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub principal: Option<String>,
    /// `call` or `request`.
    pub kind: Option<String>,
}

impl Query {
    pub fn matches(&self, e: &Value) -> bool {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str());
        let eq = |want: &Option<String>, k: &str| want.as_deref().is_none_or(|w| s(k) == Some(w));
        self.since_ms.is_none_or(|m| {
            e.get("ts_ms")
                .and_then(|v| v.as_u64())
                .is_some_and(|t| t as u128 >= m)
        }) && eq(&self.tool, "tool")
            && eq(&self.decision, "decision")
            && eq(&self.principal, "principal")
            && eq(&self.kind, "kind")
    }
}

/// A `--since` value as Unix milliseconds: given as such, or as a duration
/// ago (`1h`, `30m`).
pub fn since_ms(spec: &str) -> Result<u128, String> {
    if let Ok(ms) = spec.parse::<u128>() {
        return Ok(ms);
    }
    let ago = crate::units::parse_duration(spec)?;
    Ok(crate::units::now_ms().saturating_sub(ago.as_millis()))
}

/// Reads entries (bodies with their hash) from a log, oldest first.
pub fn read_entries(path: &Path) -> Result<Vec<Value>, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_entries(&text))
}

/// The entries of a log's text: each line that is an audit line (body and
/// hash) and JSON, with its hash; other lines are skipped (`verify` is what
/// judges them).
pub fn parse_entries(text: &str) -> Vec<Value> {
    text.split_terminator('\n')
        .filter_map(|l| {
            let p = split_line(l)?;
            let mut v: Value = serde_json::from_str(&p.body).ok()?;
            if let Some(m) = v.as_object_mut() {
                m.insert("hash".into(), Value::from(p.hash));
            }
            Some(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_appends_and_verifies_across_reopen_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let log = AuditLog::open(&p, None).unwrap();
        log.append(&json!({"tool": "x", "n": 1})).unwrap();
        log.append(&json!({"tool": "y", "n": 2})).unwrap();
        drop(log);
        let log = AuditLog::open(&p, None).unwrap();
        log.append(&json!({"tool": "z"})).unwrap();
        let v = verify(std::slice::from_ref(&p), None).unwrap();
        assert_eq!((v.entries, v.last_seq), (3, 3));
        let old = log.rotate().unwrap();
        log.append(&json!({"tool": "after"})).unwrap();
        let v = verify(&[old.clone(), p.clone()], None).unwrap();
        assert_eq!((v.entries, v.last_seq), (5, 5));
        let alone = verify(std::slice::from_ref(&p), None).unwrap();
        assert_eq!(
            alone.continues_from.as_deref(),
            old.file_name().and_then(|n| n.to_str())
        );
    }
}
