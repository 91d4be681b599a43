//! Staging: a sandbox never sees the workspace itself.
//!
//! Before a run, the workspace is copied into a private directory outside
//! it, leaving out every path the caller hides (what `read_file` would deny
//! or ask about: a hidden file cannot be read or listed inside). The sandbox
//! works on the copy. After the run, [`Stage::changes`] lists every path the
//! sandbox created, changed, deleted, re-moded or replaced, whatever the
//! syscall (rename, link, `O_TRUNC`, a parent swapped by rename); the caller
//! judges each with the write rules and [`Stage::apply`] copies the allowed
//! ones back — content only: a link made inside becomes a plain file, a
//! symlink is recreated as a symlink — each atomically, and only where the
//! workspace still holds what was copied (a path changed on the host during
//! the run is a conflict, never overwritten).
//!
//! Fail closed: anything unreadable or unexpected in the copy is an error,
//! and an error means nothing is applied. A change the diff could miss (a
//! clock stepped back during the run) is a change not applied — lost,
//! never let through.
//!
//! Cost: one copy of the visible workspace per call (where: [`base_dir`])
//! and one `lstat` walk after; file contents are compared only
//! where the inode's change time moved (or may have moved unseen: entries
//! staged in the last clock tick).

use super::SandboxError;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors of staging a workspace or applying changes from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The visible workspace is larger than the stage may hold.
    #[error(
        "the workspace holds more than {limit} to copy for the sandbox; raise [limits] stage_bytes or make the workspace smaller"
    )]
    TooLarge { limit: String },
    #[error("the workspace holds more than {0} entries to copy for the sandbox")]
    TooMany(usize),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StageError {
    let path = path.display().to_string();
    move |source| StageError::Io { op, path, source }
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFOs, sockets, devices: never copied either way.
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }

    fn of(ft: std::fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// What the sandbox did to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Modify,
    Delete,
    /// Permission bits changed, content did not.
    Chmod,
    /// The path became something else (a file became a dir, a symlink, …).
    Replace,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Modify => "modify",
            Action::Delete => "delete",
            Action::Chmod => "chmod",
            Action::Replace => "replace",
        }
    }
}

/// One change found in the stage after a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Workspace-relative, `/`-separated.
    pub path: String,
    pub action: Action,
    /// What the path is now (what it was, for a deletion).
    pub kind: Kind,
    /// A symlink's target, for created or changed symlinks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Identity and state of an inode; a change of any field means "look closer".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
    mode: u32,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
        }
    }
}

struct Entry {
    kind: Kind,
    /// Staged in the clock tick the stage was finished in: a change in that
    /// same tick could leave its change time as it was, so it is always
    /// compared by content.
    recent: bool,
    /// The copy in the stage, as it was before the run.
    staged: Stamp,
    /// The original in the workspace, as it was when copied.
    original: Stamp,
}

/// Bounds on one stage.
#[derive(Debug, Clone, Copy)]
pub struct StageLimits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

/// The sandbox's private copy of the visible workspace.
pub struct Stage {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    manifest: BTreeMap<String, Entry>,
    /// Paths left out because the caller hid them.
    hidden: usize,
    /// Files left out, by inode: another name for one of them (a hard
    /// link) is left out too.
    hidden_inodes: BTreeSet<(u64, u64)>,
    bytes: u64,
}

/// The names in `dir`, sorted (so stages and diffs are deterministic).
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, StageError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io("list", dir))?;
    names.sort();
    Ok(names)
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

impl Stage {
    /// Copies `workspace` into a new private directory, leaving out every
    /// path for which `hide(relative_path)` is true (and, for a directory,
    /// everything below it). `owner` chowns the copies (a sandbox user
    /// other than toolgate's own).
    pub fn create(
        workspace: &Path,
        hide: &dyn Fn(&str) -> bool,
        owner: Option<(u32, u32)>,
        limits: StageLimits,
    ) -> Result<Stage, StageError> {
        Stage::create_in(&std::env::temp_dir(), workspace, hide, owner, limits)
    }

    /// [`Stage::create`] under `base` (see [`base_dir`]).
    pub fn create_in(
        base: &Path,
        workspace: &Path,
        hide: &dyn Fn(&str) -> bool,
        owner: Option<(u32, u32)>,
        limits: StageLimits,
    ) -> Result<Stage, StageError> {
        let base = base.to_path_buf();
        let tmp = private_dir(&base, "stage").map_err(io("create", &base))?;
        let root = tmp.path().join("ws");
        std::fs::create_dir(&root).map_err(io("create", &root))?;
        let mut stage = Stage {
            _tmp: tmp,
            root,
            manifest: BTreeMap::new(),
            hidden: 0,
            hidden_inodes: BTreeSet::new(),
            bytes: 0,
        };
        stage.copy_dir(workspace, "", hide, owner, limits)?;
        stage.drop_hidden_links()?;
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(&stage.root, Some(u), Some(g))
                .map_err(io("chown", &stage.root))?;
        }
        // Stamps are read last, after every chown; then the coarse clock,
        // which no later change time can precede.
        for (rel, e) in stage.manifest.iter_mut() {
            let m = std::fs::symlink_metadata(stage.root.join(rel))
                .map_err(io("stat", Path::new(rel)))?;
            e.staged = Stamp::of(&m);
        }
        let now = coarse_now();
        for e in stage.manifest.values_mut() {
            e.recent = now.is_none_or(|t| e.staged.ctime >= t);
        }
        Ok(stage)
    }

    fn copy_dir(
        &mut self,
        workspace: &Path,
        rel: &str,
        hide: &dyn Fn(&str) -> bool,
        owner: Option<(u32, u32)>,
        limits: StageLimits,
    ) -> Result<(), StageError> {
        for name in sorted_names(&workspace.join(rel))? {
            let Some(name) = name.to_str() else {
                // Not UTF-8: the policy cannot judge it, so the sandbox never sees it.
                self.hidden += 1;
                continue;
            };
            let r = join(rel, name);
            if hide(&r) {
                self.hidden += 1;
                self.note_hidden(&workspace.join(&r), limits.max_entries)?;
                continue;
            }
            let src = workspace.join(&r);
            let dst = self.root.join(&r);
            let m = std::fs::symlink_metadata(&src).map_err(io("stat", &src))?;
            let kind = Kind::of(m.file_type());
            match kind {
                Kind::Other => {
                    self.hidden += 1;
                    continue;
                }
                Kind::Dir => std::fs::create_dir(&dst).map_err(io("create", &dst))?,
                Kind::File => {
                    self.bytes += m.len();
                    if self.bytes > limits.max_bytes {
                        return Err(StageError::TooLarge {
                            limit: crate::units::fmt_size(limits.max_bytes),
                        });
                    }
                    std::fs::copy(&src, &dst).map_err(io("copy", &src))?;
                    // No set-id bits in a copy a sandbox may run.
                    let mode = m.mode() & 0o777;
                    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
                        .map_err(io("chmod", &dst))?;
                }
                Kind::Symlink => {
                    let t = std::fs::read_link(&src).map_err(io("readlink", &src))?;
                    std::os::unix::fs::symlink(&t, &dst).map_err(io("symlink", &dst))?;
                }
            }
            if self.manifest.len() >= limits.max_entries {
                return Err(StageError::TooMany(limits.max_entries));
            }
            if let Some((u, g)) = owner {
                std::os::unix::fs::lchown(&dst, Some(u), Some(g)).map_err(io("chown", &dst))?;
            }
            let original = Stamp::of(&m);
            self.manifest.insert(
                r.clone(),
                Entry {
                    kind,
                    recent: true,
                    staged: original,
                    original,
                },
            );
            if kind == Kind::Dir {
                self.copy_dir(workspace, &r, hide, owner, limits)?;
            }
        }
        Ok(())
    }

    /// Records the inodes of hidden files at `p` (a file, or every file below a directory).
    fn note_hidden(&mut self, p: &Path, budget: usize) -> Result<(), StageError> {
        let m = std::fs::symlink_metadata(p).map_err(io("stat", p))?;
        if m.file_type().is_file() {
            self.hidden_inodes.insert((m.dev(), m.ino()));
        } else if m.file_type().is_dir() {
            for e in std::fs::read_dir(p).map_err(io("list", p))? {
                if self.hidden_inodes.len() >= budget {
                    return Err(StageError::TooMany(budget));
                }
                let e = e.map_err(io("list", p))?;
                self.note_hidden(&e.path(), budget)?;
            }
        }
        Ok(())
    }

    /// Removes from the copy every file that is a hard link to a hidden one.
    fn drop_hidden_links(&mut self) -> Result<(), StageError> {
        let linked: Vec<String> = self
            .manifest
            .iter()
            .filter(|(_, e)| {
                e.kind == Kind::File
                    && self
                        .hidden_inodes
                        .contains(&(e.original.dev, e.original.ino))
            })
            .map(|(r, _)| r.clone())
            .collect();
        for r in linked {
            let p = self.root.join(&r);
            std::fs::remove_file(&p).map_err(io("remove", &p))?;
            self.manifest.remove(&r);
            self.hidden += 1;
        }
        Ok(())
    }

    /// The copy the sandbox works on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Paths left out of the copy.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Bytes of file content copied.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every change the sandbox made, parents before children.
    pub fn changes(&self, workspace: &Path) -> Result<Vec<Change>, StageError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        self.diff_dir(workspace, "", &mut seen, &mut out)?;
        for (rel, e) in &self.manifest {
            if !seen.contains(rel.as_str()) {
                out.push(Change {
                    path: rel.clone(),
                    action: Action::Delete,
                    kind: e.kind,
                    target: None,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn diff_dir(
        &self,
        workspace: &Path,
        rel: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<Change>,
    ) -> Result<(), StageError> {
        for name in sorted_names(&self.root.join(rel))? {
            let name = name.to_string_lossy().into_owned();
            let r = join(rel, &name);
            let p = self.root.join(&r);
            let m = std::fs::symlink_metadata(&p).map_err(io("stat", &p))?;
            let kind = Kind::of(m.file_type());
            let target = (kind == Kind::Symlink)
                .then(|| std::fs::read_link(&p).map(|t| t.to_string_lossy().into_owned()))
                .transpose()
                .map_err(io("readlink", &p))?;
            let change = |action| Change {
                path: r.clone(),
                action,
                kind,
                target: target.clone(),
            };
            match self.manifest.get(&r) {
                None => out.push(change(Action::Create)),
                Some(e) => {
                    seen.insert(r.clone());
                    if e.kind != kind {
                        out.push(change(Action::Replace));
                    } else if let Some(a) = self.modified(workspace, &r, e, &m, &target)? {
                        out.push(change(a));
                    }
                }
            }
            if kind == Kind::Dir {
                self.diff_dir(workspace, &r, seen, out)?;
            }
        }
        Ok(())
    }

    /// How a path that kept its kind changed, if it did.
    fn modified(
        &self,
        workspace: &Path,
        rel: &str,
        e: &Entry,
        now: &std::fs::Metadata,
        target: &Option<String>,
    ) -> Result<Option<Action>, StageError> {
        if !e.recent && Stamp::of(now) == e.staged {
            return Ok(None);
        }
        match e.kind {
            Kind::Symlink => {
                let was = std::fs::read_link(workspace.join(rel))
                    .map(|t| t.to_string_lossy().into_owned())
                    .ok();
                Ok((was != *target).then_some(Action::Modify))
            }
            Kind::File => {
                if now.size() != e.original.size
                    || !same_content(&workspace.join(rel), &self.root.join(rel))?
                {
                    Ok(Some(Action::Modify))
                } else if now.mode() & 0o777 != e.original.mode & 0o777 {
                    Ok(Some(Action::Chmod))
                } else {
                    Ok(None)
                }
            }
            Kind::Dir => {
                Ok((now.mode() & 0o777 != e.original.mode & 0o777).then_some(Action::Chmod))
            }
            Kind::Other => Ok(None),
        }
    }

    /// Applies `changes` (a subset of [`Stage::changes`]) to `workspace`.
    /// Returns, per change, `Ok` or why it was not applied.
    pub fn apply(&self, workspace: &Path, changes: &[&Change]) -> Vec<Result<(), String>> {
        let mut results: Vec<Result<(), String>> = vec![Ok(()); changes.len()];
        // Removals deepest first, then creations parents first.
        let mut order: Vec<usize> = (0..changes.len()).collect();
        order.sort_by(|&a, &b| changes[b].path.cmp(&changes[a].path));
        for &i in &order {
            let c = changes[i];
            if matches!(c.action, Action::Delete | Action::Replace) {
                results[i] = self.remove(workspace, c);
            }
        }
        order.reverse();
        for &i in &order {
            let c = changes[i];
            if results[i].is_ok() && c.action != Action::Delete {
                results[i] = self.put(workspace, c);
            }
        }
        results
    }

    /// Whether the workspace still holds what was copied at `rel`.
    fn unchanged_on_host(&self, workspace: &Path, rel: &str) -> Result<(), String> {
        let e = self.manifest.get(rel).ok_or("not in the workspace copy")?;
        match std::fs::symlink_metadata(workspace.join(rel)) {
            Ok(m) if Stamp::of(&m) == e.original => Ok(()),
            Ok(_) => {
                Err("changed in the workspace during the run; kept the workspace's version".into())
            }
            Err(_) => Err("removed from the workspace during the run".into()),
        }
    }

    fn remove(&self, workspace: &Path, c: &Change) -> Result<(), String> {
        self.unchanged_on_host(workspace, &c.path)?;
        let p = safe_path(workspace, &c.path)?;
        let r = match self.manifest[&c.path].kind {
            Kind::Dir => std::fs::remove_dir(&p),
            _ => std::fs::remove_file(&p),
        };
        r.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => {
                "the directory holds files the sandbox could not see; kept".to_string()
            }
            _ => format!("remove: {e}"),
        })
    }

    fn put(&self, workspace: &Path, c: &Change) -> Result<(), String> {
        match c.action {
            Action::Create => {
                if std::fs::symlink_metadata(workspace.join(&c.path)).is_ok() {
                    return Err(
                        "exists in the workspace (hidden from the sandbox or made during the run); kept".into(),
                    );
                }
            }
            Action::Modify | Action::Chmod => self.unchanged_on_host(workspace, &c.path)?,
            Action::Replace | Action::Delete => {}
        }
        let dst = safe_path(workspace, &c.path)?;
        let src = self.root.join(&c.path);
        let m = std::fs::symlink_metadata(&src).map_err(|e| format!("stage: {e}"))?;
        // Never set-id or world-writable, whatever the sandbox set (what a
        // chmod command may not do, no sandbox does either).
        let mode = m.mode() & APPLIED_MODE;
        let r = match (c.kind, c.action) {
            (_, Action::Chmod) => {
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
            }
            (Kind::Dir, _) => std::fs::create_dir(&dst).and_then(|_| {
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode | 0o700))
            }),
            (Kind::File, _) => copy_in(&src, &dst, mode),
            (Kind::Symlink, _) => {
                let t = std::fs::read_link(&src).map_err(|e| format!("stage: {e}"))?;
                let tmp =
                    dst.with_file_name(format!(".toolgate-{}", uuid::Uuid::new_v4().simple()));
                std::os::unix::fs::symlink(&t, &tmp).and_then(|_| {
                    std::fs::rename(&tmp, &dst).inspect_err(|_| {
                        let _ = std::fs::remove_file(&tmp);
                    })
                })
            }
            (Kind::Other, _) => return Err("special files are not copied out of a sandbox".into()),
        };
        r.map_err(|e| e.to_string())?;
        give_to_parent_owner(&dst);
        Ok(())
    }
}

/// Permission bits a change may carry into the workspace.
const APPLIED_MODE: u32 = 0o775;

/// `workspace/rel`, refusing a path whose parents are not plain directories
/// now (a symlink swapped in on the host would redirect the write).
fn safe_path(workspace: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut p = workspace.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", p.display())),
            Err(_) => return Err("its directory was not created".into()),
        }
    }
    p.push(parts[parts.len() - 1]);
    Ok(p)
}

/// Copies `src` to `dst` atomically: a temporary beside it, fsync, rename.
fn copy_in(src: &Path, dst: &Path, mode: u32) -> std::io::Result<()> {
    let tmp = dst.with_file_name(format!(".toolgate-{}", uuid::Uuid::new_v4().simple()));
    let r = (|| {
        // The stage is the sandbox's: never follow a link planted in it.
        let mut from = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.set_permissions(std::fs::Permissions::from_mode(mode))?;
        to.flush()?;
        to.sync_all()?;
        std::fs::rename(&tmp, dst)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Root writes files for other users: give a new path its directory's owner.
fn give_to_parent_owner(p: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Some(m) = p.parent().and_then(|d| std::fs::metadata(d).ok()) {
        let _ = std::os::unix::fs::lchown(p, Some(m.uid()), Some(m.gid()));
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool, StageError> {
    let mut fa = std::fs::File::open(a).map_err(io("read", a))?;
    let mut fb = std::fs::File::open(b).map_err(io("read", b))?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io("read", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io("read", b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The kernel's coarse real-time clock, the one change times are taken
/// from (a fine-grained change time is never earlier than it).
fn coarse_now() -> Option<(i64, i64)> {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .ok()
        .map(|t| (t.tv_sec(), t.tv_nsec()))
}

/// Where stages and sandbox directories are made for `backend`:
/// `TOOLGATE_STAGE_DIR` when set; else, for docker, `/dev/shm` — copies
/// there cost a fraction of a journaled disk's, and what a container writes
/// into memory is charged to its own memory limit; else the temporary
/// directory. Wasm guests run in toolgate's process, so their writes into a
/// memory-backed stage would be bounded by no limit: they stage on disk.
pub fn base_dir(backend: crate::plan::BackendKind) -> PathBuf {
    if let Some(d) = std::env::var_os("TOOLGATE_STAGE_DIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    let usable = || {
        use nix::unistd::{AccessFlags, access};
        shm.is_dir() && access(shm, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
    };
    // Docker and native: a tmpfs, whose pages a sandbox writes are charged
    // to that sandbox's memory cgroup (its writes are bounded by
    // `limits.memory`); wasm guests have no cgroup, so theirs stay on disk.
    use crate::plan::BackendKind::{Docker, Native};
    if matches!(backend, Docker | Native) && usable() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Every place [`base_dir`] may choose.
fn base_dirs() -> Vec<PathBuf> {
    let mut v = vec![
        base_dir(crate::plan::BackendKind::Wasm),
        base_dir(crate::plan::BackendKind::Docker),
        base_dir(crate::plan::BackendKind::Native),
    ];
    v.dedup();
    v
}

/// A new directory only toolgate's user can enter, named with this
/// process's id so [`reap_orphans`] can tell whose it is.
fn private_dir(base: &Path, kind: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("toolgate-{kind}-{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

/// Removes stages and sandbox directories left by toolgate processes that
/// are gone (killed mid-call). Returns how many were removed.
pub fn reap_orphans() -> usize {
    base_dirs().iter().map(|b| reap_orphans_in(b)).sum()
}

fn reap_orphans_in(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("toolgate-stage-")
            .or_else(|| name.strip_prefix("toolgate-sandbox-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone && std::fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Moves every entry of `from` into `to` (same filesystem: renames only).
/// A backend whose sandbox was made with its own directory uses it to lend
/// that directory a stage for one run, and to take it back.
pub fn move_entries(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let name = e?.file_name();
        std::fs::rename(from.join(&name), to.join(&name))?;
    }
    Ok(())
}

/// A directory of a sandbox's own, made when the sandbox is made (a pooled
/// guest preopens it, a pooled container binds it), to which a stage is
/// lent for one run. `owner`: the sandbox's user, when not toolgate's.
pub fn sandbox_dir(
    backend: crate::plan::BackendKind,
    owner: Option<(u32, u32)>,
) -> Result<tempfile::TempDir, SandboxError> {
    let fail = |e: std::io::Error| SandboxError::Internal {
        op: "make the sandbox's directory",
        detail: e.to_string(),
    };
    let d = private_dir(&base_dir(backend), "sandbox").map_err(fail)?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(d.path(), Some(u), Some(g)).map_err(fail)?;
    }
    Ok(d)
}

/// Lends the stage at `stage` to the sandbox directory `dir` (or takes it
/// back, with the arguments swapped).
pub fn lend(stage: &Path, dir: &Path) -> Result<(), SandboxError> {
    move_entries(stage, dir).map_err(|e| SandboxError::Internal {
        op: "move the stage",
        detail: format!("{} → {}: {e}", stage.display(), dir.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StageLimits = StageLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };

    fn ws() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("d")).unwrap();
        std::fs::write(d.path().join("a.txt"), "aaaa").unwrap();
        std::fs::write(d.path().join("d/b.txt"), "bbbb").unwrap();
        std::fs::write(d.path().join("secret"), "s3cret").unwrap();
        std::fs::hard_link(d.path().join("secret"), d.path().join("alias")).unwrap();
        std::os::unix::fs::symlink("a.txt", d.path().join("link")).unwrap();
        d
    }

    fn actions(c: &[Change]) -> Vec<(String, &'static str)> {
        c.iter()
            .map(|c| (c.path.clone(), c.action.as_str()))
            .collect()
    }

    #[test]
    fn hidden_paths_and_hard_links_to_them_are_not_copied() {
        let w = ws();
        let s = Stage::create(w.path(), &|p| p == "secret", None, LIMITS).unwrap();
        assert!(!s.root().join("secret").exists());
        assert!(
            !s.root().join("alias").exists(),
            "a hard link to a hidden file"
        );
        assert_eq!(s.hidden(), 2);
        assert_eq!(
            std::fs::read_to_string(s.root().join("d/b.txt")).unwrap(),
            "bbbb"
        );
        assert!(s.changes(w.path()).unwrap().is_empty());
    }

    #[test]
    fn every_kind_of_change_is_found_even_with_forged_times() {
        let w = ws();
        let s = Stage::create(w.path(), &|_| false, None, LIMITS).unwrap();
        let r = s.root();
        // Same size, new content, modification time put back.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(r.join("a.txt"))
            .unwrap();
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"AAAA", 0).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        std::fs::rename(r.join("d"), r.join("d2")).unwrap();
        std::fs::write(r.join("new.txt"), "n").unwrap();
        std::fs::remove_file(r.join("link")).unwrap();
        std::fs::create_dir(r.join("link")).unwrap();
        std::fs::set_permissions(r.join("secret"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = s.changes(w.path()).unwrap();
        assert_eq!(
            actions(&c),
            [
                ("a.txt".to_string(), "modify"),
                ("d".into(), "delete"),
                ("d/b.txt".into(), "delete"),
                ("d2".into(), "create"),
                ("d2/b.txt".into(), "create"),
                ("link".into(), "replace"),
                ("new.txt".into(), "create"),
                ("secret".into(), "chmod"),
            ]
        );
    }

    #[test]
    fn only_given_changes_are_applied_and_never_over_a_host_change() {
        let w = ws();
        let s = Stage::create(w.path(), &|_| false, None, LIMITS).unwrap();
        std::fs::write(s.root().join("a.txt"), "from the sandbox").unwrap();
        std::fs::write(s.root().join("d/b.txt"), "from the sandbox").unwrap();
        std::fs::write(s.root().join("d/c.txt"), "new").unwrap();
        std::fs::remove_file(s.root().join("secret")).unwrap();
        let c = s.changes(w.path()).unwrap();
        // Meanwhile the host changes d/b.txt.
        std::fs::write(w.path().join("d/b.txt"), "host edit").unwrap();
        let pick: Vec<&Change> = c.iter().filter(|c| c.path != "secret").collect();
        let r = s.apply(w.path(), &pick);
        let read = |p: &str| std::fs::read_to_string(w.path().join(p)).unwrap();
        assert_eq!(read("a.txt"), "from the sandbox");
        assert_eq!(read("d/b.txt"), "host edit", "{r:?}");
        assert_eq!(read("d/c.txt"), "new");
        assert_eq!(
            read("secret"),
            "s3cret",
            "a change not given is not applied"
        );
        let b = pick.iter().position(|c| c.path == "d/b.txt").unwrap();
        assert!(
            r[b].as_ref()
                .unwrap_err()
                .contains("changed in the workspace")
        );
    }

    #[test]
    fn applied_modes_are_never_set_id_or_world_writable() {
        let w = ws();
        let s = Stage::create(w.path(), &|_| false, None, LIMITS).unwrap();
        let set = |p: &str, m: u32| {
            std::fs::set_permissions(s.root().join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        std::fs::write(s.root().join("x.sh"), "#!/bin/sh\n").unwrap();
        set("x.sh", 0o4777);
        set("a.txt", 0o666);
        std::fs::create_dir(s.root().join("open")).unwrap();
        set("open", 0o777);
        let c = s.changes(w.path()).unwrap();
        let r = s.apply(w.path(), &c.iter().collect::<Vec<_>>());
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        let mode = |p: &str| {
            std::fs::metadata(w.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(
            (mode("x.sh"), mode("a.txt"), mode("open")),
            (0o775, 0o664, 0o775)
        );
    }

    #[test]
    fn a_link_planted_in_the_stage_after_judging_is_not_followed() {
        let w = ws();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host-file"), "host only").unwrap();
        let s = Stage::create(w.path(), &|_| false, None, LIMITS).unwrap();
        std::fs::write(s.root().join("x.txt"), "judged").unwrap();
        let c = s.changes(w.path()).unwrap();
        std::fs::remove_file(s.root().join("x.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("host-file"), s.root().join("x.txt"))
            .unwrap();
        let r = s.apply(w.path(), &c.iter().collect::<Vec<_>>());
        assert!(r[0].is_err(), "{r:?}");
        assert!(!w.path().join("x.txt").exists());
    }

    #[test]
    fn only_stages_of_dead_processes_are_reaped() {
        let base = tempfile::tempdir().unwrap();
        let dead = base.path().join("toolgate-stage-2147483646-abc");
        let alive = base
            .path()
            .join(format!("toolgate-sandbox-{}-abc", std::process::id()));
        let other = base.path().join("toolgate-notes-1-x");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d.join("ws")).unwrap();
        }
        assert_eq!(reap_orphans_in(base.path()), 1);
        assert!(!dead.exists() && alive.exists() && other.exists());
        let own = private_dir(base.path(), "stage").unwrap();
        let mode = std::fs::metadata(own.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_workspace_over_the_limit_is_refused_not_half_copied() {
        let w = ws();
        let small = StageLimits {
            max_bytes: 10,
            max_entries: 1000,
        };
        let e = Stage::create(w.path(), &|_| false, None, small)
            .err()
            .unwrap();
        assert!(matches!(e, StageError::TooLarge { .. }), "{e}");
        let few = StageLimits {
            max_bytes: 1 << 20,
            max_entries: 2,
        };
        let e = Stage::create(w.path(), &|_| false, None, few)
            .err()
            .unwrap();
        assert!(matches!(e, StageError::TooMany(2)), "{e}");
    }
}
