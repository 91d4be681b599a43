//! Sandbox images for the docker backend: built from Debian packages with
//! the embedded recipe (`mmdebstrap … | docker import`), so no container
//! registry is needed, and listed by their toolgate label.

use super::SandboxError;
use super::docker::BUILD_SCRIPT;
use std::io::Write;
use std::process::{Command, Stdio};

fn spawn_failed(what: &'static str) -> impl Fn(std::io::Error) -> SandboxError {
    move |e| SandboxError::Unavailable {
        backend: "docker",
        detail: format!("cannot run {what}: {e}"),
    }
}

/// Builds `image` with the embedded recipe plus `packages`; progress goes to
/// the caller's stderr. `Ok(false)` when the recipe failed.
pub fn build(image: &str, packages: &[String]) -> Result<bool, SandboxError> {
    // The recipe is embedded; bash reads it from stdin.
    #[allow(clippy::disallowed_methods)] // building an image is not a tool call
    let mut child = Command::new("bash")
        .arg("-s")
        .arg("--")
        .arg(image)
        .args(packages)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(spawn_failed("bash"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(BUILD_SCRIPT.as_bytes())
            .map_err(spawn_failed("bash"))?;
    }
    Ok(child.wait().map_err(spawn_failed("bash"))?.success())
}

/// Prints toolgate's images (the engine's own table) to stdout.
pub fn list() -> Result<bool, SandboxError> {
    #[allow(clippy::disallowed_methods)] // a listing for a person
    let st = Command::new("docker")
        .args(["images", "--filter", "label=toolgate.image=1"])
        .status()
        .map_err(spawn_failed("docker"))?;
    Ok(st.success())
}
