//! What `toolgate runtimes install|list|verify` does, as library calls that
//! return plain rows: install (pip, SHA-256 pin, compile once), list
//! (version, licence, installed, pinned) and verify (re-hash against pins).

use super::runtime::{self, Progress};
use super::{WasmBackend, WasmConfig, WasmError};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One installed runtime.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub name: String,
    pub path: PathBuf,
    /// Whether it was compiled now (false: a valid artifact was there).
    pub compiled_now: bool,
}

/// One row of `runtimes list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    pub version: String,
    pub abi: String,
    pub source: String,
    pub sha256: String,
    pub license: String,
    pub installed: bool,
    pub pinned: bool,
    pub path: PathBuf,
}

/// One row of `runtimes verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub name: String,
    /// `ok`, `missing`, `mismatch` or `error`.
    pub status: &'static str,
    pub detail: String,
}

/// Installs `names` (all in the manifest when empty) and compiles each
/// once. `from`/`sha256` install one local build instead of downloading.
pub fn install(
    names: &[String],
    from: Option<&Path>,
    sha256: Option<&str>,
    progress: &dyn Progress,
) -> Result<Vec<Installed>, WasmError> {
    let dir = runtime::cache_dir();
    let chosen = if names.is_empty() {
        runtime::manifest()?
    } else {
        names
            .iter()
            .map(|n| runtime::spec(n))
            .collect::<Result<_, _>>()?
    };
    if from.is_some() && chosen.len() != 1 {
        return Err(WasmError::Install(
            "--from installs one runtime: name it".into(),
        ));
    }
    let backend = WasmBackend::new(WasmConfig::default())?;
    let mut out = Vec::new();
    for spec in &chosen {
        let started = std::time::Instant::now();
        let path = runtime::install(&dir, spec, from, sha256, progress)?;
        let compiled_now = backend.ensure_compiled(&spec.name, progress)?;
        if compiled_now {
            record_install(&dir, &spec.name, started.elapsed());
        }
        progress.step(&format!("installed {} at {}", spec.name, path.display()));
        out.push(Installed {
            name: spec.name.clone(),
            path,
            compiled_now,
        });
    }
    Ok(out)
}

/// What the last install that compiled a runtime cost: `NAME.install.json`
/// beside it (seconds, and this process's peak resident memory so far),
/// read by `toolgate bench`. Losing it loses a figure, nothing else.
fn record_install(dir: &Path, name: &str, took: std::time::Duration) {
    let peak_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let v = serde_json::json!({"seconds": took.as_secs_f64(), "peak_rss_kib": peak_kib});
    let _ = std::fs::write(dir.join(format!("{name}.install.json")), v.to_string());
}

/// What the last compiling install of `name` cost, if recorded.
pub fn install_cost(name: &str) -> Option<(f64, u64)> {
    let text =
        std::fs::read_to_string(runtime::cache_dir().join(format!("{name}.install.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["seconds"].as_f64()?, v["peak_rss_kib"].as_u64()?))
}

/// Every runtime of the manifest, with where it stands here.
pub fn list() -> Result<Vec<Listed>, WasmError> {
    let dir = runtime::cache_dir();
    Ok(runtime::manifest()?
        .into_iter()
        .map(|s| {
            let installed = runtime::installed_digest(&dir, &s.name);
            Listed {
                source: format!("pip: {} ({})", s.pip_package, s.member),
                installed: installed.is_some(),
                pinned: installed.as_deref() == Some(s.sha256.as_str()),
                path: runtime::wasm_path(&dir, &s.name),
                name: s.name,
                version: s.version,
                abi: s.abi,
                sha256: s.sha256,
                license: s.license,
            }
        })
        .collect())
}

/// The first of a runtime's pinned files that is missing or differs.
fn files_differ(dir: &Path, s: &runtime::RuntimeSpec) -> Option<String> {
    s.files.iter().find_map(|f| {
        let path = runtime::files_dir(dir, &s.name).join(&f.dest);
        match runtime::sha256_file(&path) {
            Ok(got) if got == f.sha256 => None,
            Ok(got) => Some(format!(
                "{}: pinned {}, file hashes to {got}",
                f.dest, f.sha256
            )),
            Err(e) => Some(format!("{}: {e}", f.dest)),
        }
    })
}

/// Re-hashes every installed runtime (and its pinned files) against the
/// digests recorded at install.
pub fn verify() -> Result<Vec<Verified>, WasmError> {
    let dir = runtime::cache_dir();
    Ok(runtime::manifest()?
        .into_iter()
        .map(|s| {
            let path = runtime::wasm_path(&dir, &s.name);
            let (status, detail) = match (
                runtime::installed_digest(&dir, &s.name),
                runtime::sha256_file(&path),
            ) {
                (None, _) => ("missing", "not installed".to_string()),
                (Some(_), Err(e)) => ("error", e.to_string()),
                (Some(rec), Ok(got)) if got == rec => match files_differ(&dir, &s) {
                    Some(why) => ("mismatch", why),
                    None => (
                        "ok",
                        if got == s.sha256 {
                            "matches the manifest pin".into()
                        } else {
                            "matches the digest given at install (local build)".into()
                        },
                    ),
                },
                (Some(rec), Ok(got)) => {
                    ("mismatch", format!("recorded {rec}, file hashes to {got}"))
                }
            };
            Verified {
                name: s.name,
                status,
                detail,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_missing_pinned_file_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = runtime::spec("python").unwrap();
        let f = &spec.files[0];
        let path = runtime::files_dir(dir.path(), &spec.name).join(&f.dest);
        assert!(
            files_differ(dir.path(), &spec)
                .unwrap()
                .contains("lib/python315.zip")
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not the stdlib").unwrap();
        let why = files_differ(dir.path(), &spec).unwrap();
        assert!(
            why.contains(&f.sha256) && why.contains("file hashes to"),
            "{why}"
        );
        // Pinned to what is there, it verifies.
        spec.files[0].sha256 = runtime::sha256_file(&path).unwrap();
        assert_eq!(files_differ(dir.path(), &spec), None);
    }
}
