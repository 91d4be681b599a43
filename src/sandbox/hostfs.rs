//! The file tools, run on the host but confined by a capability handle on
//! the workspace (cap-std): `..`, absolute paths and symlinks cannot leave
//! the directory even if the policy check were fooled or raced.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename)
//! and size-capped; a refused or failed write leaves the old file intact.

use crate::workpath;
use cap_std::fs::{Dir, OpenOptions};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest number of entries `list_dir` returns (bounds output to the model).
pub const MAX_DIR_ENTRIES: usize = 2000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The workspace itself cannot be opened (gone, not a directory, no access).
    #[error("workspace {path}: {source}")]
    Workspace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: content is {size} bytes, over the {max}-byte limit")]
    TooLarge { path: String, size: u64, max: u64 },
}

/// A workspace opened as a capability.
pub struct Workspace {
    dir: Dir,
}

#[derive(Debug, Serialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
}

pub struct ReadResult {
    pub content: String,
    pub truncated: bool,
    pub size: u64,
    pub binary: bool,
}

fn rel(input: &str, ws: &Path) -> Result<String, FsError> {
    // The kernel's reading, the one the policy judged.
    let parts = workpath::resolve(ws, input).map_err(|reason| FsError::Refused {
        path: crate::call::truncate_for_msg(input),
        reason,
    })?;
    Ok(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

/// What [`Workspace::digest`] read.
pub struct Digested {
    pub bytes: Vec<u8>,
    pub size: u64,
    pub sha256: String,
}

impl Workspace {
    pub fn open(root: &Path) -> Result<Workspace, FsError> {
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).map_err(|source| {
            FsError::Workspace {
                path: root.display().to_string(),
                source,
            }
        })?;
        Ok(Workspace { dir })
    }

    fn io(path: &str) -> impl FnOnce(std::io::Error) -> FsError + '_ {
        move |source| FsError::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Reads up to `max` bytes from `offset`.
    pub fn read(
        &self,
        root: &Path,
        input: &str,
        offset: u64,
        max: u64,
    ) -> Result<ReadResult, FsError> {
        let p = rel(input, root)?;
        let mut f = self.dir.open(&p).map_err(Self::io(&p))?;
        let meta = f.metadata().map_err(Self::io(&p))?;
        if !meta.is_file() {
            return Err(FsError::Refused {
                path: p,
                reason: "not a regular file".into(),
            });
        }
        f.seek(SeekFrom::Start(offset)).map_err(Self::io(&p))?;
        let mut buf = Vec::new();
        f.take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(Self::io(&p))?;
        let truncated = buf.len() as u64 > max;
        buf.truncate(max as usize);
        let binary =
            buf.contains(&0) || std::str::from_utf8(&buf).is_err() && !truncated_utf8_ok(&buf);
        Ok(ReadResult {
            content: String::from_utf8_lossy(&buf).into_owned(),
            truncated,
            size: meta.len(),
            binary,
        })
    }

    /// A regular file's size, SHA-256, and its first `keep` bytes (whether
    /// that is all of it is `bytes.len() as u64 == size`).
    pub fn digest(&self, root: &Path, input: &str, keep: u64) -> Result<Digested, FsError> {
        use sha2::Digest;
        let p = rel(input, root)?;
        let mut f = self.dir.open(&p).map_err(Self::io(&p))?;
        if !f.metadata().map_err(Self::io(&p))?.is_file() {
            return Err(FsError::Refused {
                path: p,
                reason: "not a regular file".into(),
            });
        }
        let (mut h, mut bytes, mut size) = (sha2::Sha256::new(), Vec::new(), 0u64);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf).map_err(Self::io(&p))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            let room = keep.saturating_sub(size) as usize;
            bytes.extend_from_slice(&buf[..n.min(room)]);
            size += n as u64;
        }
        Ok(Digested {
            bytes,
            size,
            sha256: hex::encode(h.finalize()),
        })
    }

    /// Replaces (or appends to) a file atomically. Parent directories are created.
    pub fn write(
        &self,
        root: &Path,
        input: &str,
        content: &[u8],
        append: bool,
        max: u64,
    ) -> Result<u64, FsError> {
        let p = rel(input, root)?;
        if p == "." {
            return Err(FsError::Refused {
                path: p,
                reason: "cannot write the workspace root".into(),
            });
        }
        let mut data = Vec::new();
        if append {
            match self.dir.open(&p) {
                Ok(f) => {
                    f.take(max.saturating_add(1))
                        .read_to_end(&mut data)
                        .map_err(Self::io(&p))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io(&p)(e)),
            }
        }
        data.extend_from_slice(content);
        if data.len() as u64 > max {
            return Err(FsError::TooLarge {
                path: p,
                size: data.len() as u64,
                max,
            });
        }
        let (parent, _name) = match p.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (".".to_string(), p.clone()),
        };
        if parent != "." {
            self.dir
                .create_dir_all(&parent)
                .map_err(Self::io(&parent))?;
        }
        let tmp = format!("{parent}/.toolgate-{}.tmp", uuid::Uuid::new_v4().simple());
        let result = (|| {
            let mut f = self
                .dir
                .open_with(&tmp, OpenOptions::new().write(true).create_new(true))
                .map_err(Self::io(&p))?;
            f.write_all(&data).map_err(Self::io(&p))?;
            f.sync_all().map_err(Self::io(&p))?;
            drop(f);
            self.dir.rename(&tmp, &self.dir, &p).map_err(Self::io(&p))
        })();
        if result.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        result.map(|_| data.len() as u64)
    }

    pub fn list(&self, root: &Path, input: &str) -> Result<(Vec<DirEntry>, bool), FsError> {
        let p = rel(input, root)?;
        let rd = self.dir.read_dir(&p).map_err(Self::io(&p))?;
        let mut out = Vec::new();
        let mut truncated = false;
        for e in rd {
            let e = e.map_err(Self::io(&p))?;
            if out.len() >= MAX_DIR_ENTRIES {
                truncated = true;
                break;
            }
            let ft = e.file_type().map_err(Self::io(&p))?;
            let size = if ft.is_file() {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            };
            out.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                kind: if ft.is_dir() {
                    "dir"
                } else if ft.is_symlink() {
                    "symlink"
                } else if ft.is_file() {
                    "file"
                } else {
                    "other"
                },
                size,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((out, truncated))
    }
}

/// A read cut in the middle of a multi-byte character is still text.
fn truncated_utf8_ok(b: &[u8]) -> bool {
    match std::str::from_utf8(b) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && b.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_holds_below_the_policy() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("secret"), "s3cret").unwrap();
        std::os::unix::fs::symlink(out.path(), d.path().join("link")).unwrap();
        let ws = Workspace::open(d.path()).unwrap();
        // Even a path the lexical check lets through (a symlink) cannot escape.
        assert!(ws.read(d.path(), "link/secret", 0, 100).is_err());
        assert!(ws.write(d.path(), "link/new", b"x", false, 100).is_err());
        assert!(!out.path().join("new").exists());
        assert!(ws.read(d.path(), "../x", 0, 100).is_err());
    }

    #[test]
    fn atomic_write_append_and_caps() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::open(d.path()).unwrap();
        ws.write(d.path(), "a/b/c.txt", b"hello", false, 100)
            .unwrap();
        ws.write(d.path(), "a/b/c.txt", b" world", true, 100)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("a/b/c.txt")).unwrap(),
            "hello world"
        );
        let e = ws.write(d.path(), "a/b/c.txt", &[b'x'; 200], false, 100);
        assert!(matches!(e, Err(FsError::TooLarge { .. })));
        assert_eq!(
            std::fs::read_to_string(d.path().join("a/b/c.txt")).unwrap(),
            "hello world"
        );
        let names: Vec<String> = std::fs::read_dir(d.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["c.txt"], "no temporary left behind");
        let r = ws.read(d.path(), "a/b/c.txt", 6, 3).unwrap();
        assert_eq!((r.content.as_str(), r.truncated), ("wor", true));
        let (entries, _) = ws.list(d.path(), "a").unwrap();
        assert_eq!(entries[0].name, "b");
    }
}
