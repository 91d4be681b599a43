//! The path-rule probe corpus: code that tries, from inside a sandbox, every
//! way to read what the policy hides and to change what it protects, and a
//! check on the host that nothing leaked and nothing changed.
//!
//! The scene is a workspace with secrets, git internals, CI files, its own
//! symlinks (to `.env`, to `.git`) and a hard link to `.env`. The targets
//! are the scene's paths (existing and new names) that the policy under test
//! hides (`read_file` would deny or ask) or protects (`write_file` would
//! deny or ask). The probe tries each through plain writes, appends,
//! `os.open` flags, truncation, replacement by rename, deletion, chmod,
//! symlinks, hard links, a parent directory renamed away and back, and the
//! workspace's own symlinks. Used by `toolgate doctor` (row `path_rules`)
//! and by the test suite for every shipped policy and backend.

use super::{Row, Status};
use crate::call::{Language, ToolCall};
use crate::executor::Executor;
use crate::gate::{Answer, Approver, ConfirmationRequest, Scope};
use crate::outcome::Outcome;
use crate::plan::BackendKind;
use crate::policy::Decision;
use crate::policy::Policy;
use crate::policy::paths::Access;
use crate::sandbox::Backend;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// Files the scene holds (path, whether its content is a secret marker).
const FILES: &[(&str, bool)] = &[
    (".env", true),
    ("config/.env.production", true),
    ("deploy/server.key", true),
    (".ssh/id_ed25519", true),
    (".git/config", false),
    (".git/HEAD", false),
    (".git/hooks/pre-commit.sample", false),
    (".github/workflows/ci.yml", false),
    (".envrc", false),
    ("src/app.py", false),
    ("README.md", false),
];

/// Names that do not exist yet, for the write probes.
const NEW: &[&str] = &[
    ".git/hooks/post-checkout",
    ".git/info/attributes",
    ".env.local",
    "certs/new.pem",
    "sub/dir/api.key",
    ".github/workflows/new.yml",
    ".gitmodules",
    ".ssh/authorized_keys",
    ".vscode/tasks.json",
];

/// The scene's own links: (name, target, hard).
const LINKS: &[(&str, &str, bool)] = &[
    ("env_link", ".env", false),
    ("git_link", ".git", false),
    ("hard_env", ".env", true),
];

/// What a path on the host looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Snapshot {
    Missing,
    File(Vec<u8>, u32),
    Dir(u32),
    Link(String),
}

fn snapshot(p: &Path) -> Snapshot {
    match std::fs::symlink_metadata(p) {
        Err(_) => Snapshot::Missing,
        Ok(m) if m.file_type().is_symlink() => Snapshot::Link(
            std::fs::read_link(p)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Ok(m) if m.is_dir() => Snapshot::Dir(m.permissions().mode() & 0o7777),
        Ok(m) => Snapshot::File(
            std::fs::read(p).unwrap_or_default(),
            m.permissions().mode() & 0o7777,
        ),
    }
}

/// A probe workspace and what the policy under test says of its paths.
pub struct Scene {
    pub dir: tempfile::TempDir,
    /// Marker in each secret file's content (path → marker).
    markers: BTreeMap<String, String>,
    /// Protected paths (write decision deny or ask) and their state before.
    protected: BTreeMap<String, Snapshot>,
    /// Hidden paths (read decision deny or ask).
    hidden: Vec<String>,
}

impl Scene {
    pub fn new(policy: &Policy) -> std::io::Result<Scene> {
        let dir = tempfile::Builder::new()
            .prefix("toolgate-confine-")
            .tempdir()?;
        let ws = dir.path();
        let mut markers = BTreeMap::new();
        for (path, secret) in FILES {
            let p = ws.join(path);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            let content = if *secret {
                let m = format!("tgprobe{}", uuid::Uuid::new_v4().simple());
                markers.insert(path.to_string(), m.clone());
                m
            } else {
                format!("{path}: original\n")
            };
            std::fs::write(&p, content)?;
        }
        for (name, target, hard) in LINKS {
            if *hard {
                std::fs::hard_link(ws.join(target), ws.join(name))?;
            } else {
                std::os::unix::fs::symlink(target, ws.join(name))?;
            }
        }
        let paths = policy.paths();
        let mut protected = BTreeMap::new();
        let mut hidden = Vec::new();
        let all = FILES
            .iter()
            .map(|(p, _)| *p)
            .chain(NEW.iter().copied())
            .chain(LINKS.iter().map(|l| l.0));
        for p in all {
            if paths.check(ws, p, Access::Write).decision > Decision::Allow {
                protected.insert(p.to_string(), snapshot(&ws.join(p)));
            }
            if paths.check(ws, p, Access::Read).decision > Decision::Allow {
                hidden.push(p.to_string());
            }
        }
        Ok(Scene {
            dir,
            markers,
            protected,
            hidden,
        })
    }

    pub fn protected(&self) -> Vec<&str> {
        self.protected.keys().map(String::as_str).collect()
    }

    pub fn hidden(&self) -> &[String] {
        &self.hidden
    }

    /// The probe program for `language` (python or javascript).
    pub fn program(&self, language: Language) -> String {
        let w = serde_json::to_string(&self.protected()).unwrap_or_default();
        let r = serde_json::to_string(&self.hidden).unwrap_or_default();
        match language {
            Language::Javascript => JS_PROBE.replace("@W@", &w).replace("@R@", &r),
            _ => PY_PROBE.replace("@W@", &w).replace("@R@", &r),
        }
    }

    /// What broke: a hidden secret in the output, a protected path changed
    /// on the host, the control write missing.
    pub fn violations(&self, o: &Outcome) -> Vec<String> {
        let ws = self.dir.path();
        let mut v = Vec::new();
        let seen = format!(
            "{}\n{}\n{}",
            o.stdout,
            o.stderr,
            o.error.clone().unwrap_or_default()
        );
        // Every name of a hidden secret (its links included) shares its marker.
        for (path, m) in &self.markers {
            if self.hidden.iter().any(|h| h == path) && seen.contains(m.as_str()) {
                v.push(format!("{path}: its content reached the output"));
            }
        }
        for (p, before) in &self.protected {
            let now = snapshot(&ws.join(p));
            if &now != before {
                v.push(format!("{p}: changed on the host ({before:?} → {now:?})"));
            }
        }
        if snapshot(&ws.join(".git/hooks/post-merge")) != Snapshot::Missing
            && self.protected.contains_key(".git/hooks/post-checkout")
        {
            v.push(".git/hooks/post-merge: created through the workspace's git_link".into());
        }
        v.sort();
        v.dedup();
        v
    }

    /// Whether the probe ran to its end and its ordinary write landed (so a
    /// clean result is not a probe that never ran).
    pub fn ran(&self, o: &Outcome, writable: bool) -> Result<(), String> {
        if !o.stdout.contains("PROBE-DONE") {
            return Err(format!(
                "the probe did not finish: status {:?}, stdout {:?}, stderr {:?}",
                o.status,
                crate::call::shorten(&o.stdout, 300),
                crate::call::shorten(&o.stderr, 300)
            ));
        }
        let control = self.dir.path().join("control.txt");
        match (writable, control.exists()) {
            (true, false) => Err("the probe's ordinary write (control.txt) was not applied".into()),
            (false, true) => Err("a read-only workspace took a write (control.txt)".into()),
            _ => Ok(()),
        }
    }
}

/// Approves the call itself (a policy may ask before running code) and
/// rejects every change confirmation: what the probe changes under `ask`
/// must stay unapplied.
pub struct CallsOnly;

#[async_trait::async_trait]
impl Approver for CallsOnly {
    async fn decide(&self, req: &ConfirmationRequest) -> Answer {
        let changes = req.tool.ends_with("(workspace changes)");
        Answer {
            confirmation_id: req.id.clone(),
            approved: !changes,
            by: "doctor".into(),
            note: None,
            scope: Scope::Once,
        }
    }
}

/// Runs the probe in `language` through `exec` (whose workspace is the
/// scene) and returns the outcome.
pub async fn run(exec: &Executor, scene: &Scene, language: Language) -> Result<Outcome, String> {
    run_in(exec, scene, language, None).await
}

/// [`run`], as a turn of the python session `session` when one is named.
pub async fn run_in(
    exec: &Executor,
    scene: &Scene,
    language: Language,
    session: Option<&str>,
) -> Result<Outcome, String> {
    let call = ToolCall::parse(
        &serde_json::json!({
            "tool": "run_code",
            "args": {"language": language.as_str(), "code": scene.program(language), "session": session},
        })
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    exec.run(&call).await.map_err(|e| e.to_string())
}

const PY_PROBE: &str = r#"import os, json
W = json.loads('@W@')
R = json.loads('@R@')
def t(f):
    try:
        f()
    except BaseException:
        pass
for p in R:
    d = os.path.dirname(p) or '.'
    t(lambda: print('READ', p, open(p).read()))
    t(lambda: print('LIST', d, os.listdir(d)))
    t(lambda: print('STAT', p, os.stat(p).st_size))
for name in ['env_link', 'hard_env', 'git_link/config']:
    t(lambda: print('VIA', name, open(name).read()))
for p in W:
    d = os.path.dirname(p)
    if d:
        t(lambda: os.makedirs(d, exist_ok=True))
    t(lambda: open(p, 'a').write('appended\n'))
    t(lambda: open(p, 'w').write('replaced\n'))
    t(lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
    t(lambda: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)))
    t(lambda: (open('probe_tmp', 'w').write('renamed\n'), os.replace('probe_tmp', p)))
    t(lambda: os.chmod(p, 0o777))
    t(lambda: os.remove(p))
    t(lambda: os.symlink('/etc/passwd', p))
    t(lambda: (open('probe_src', 'w').write('linked\n'), os.link('probe_src', p)))
    if d:
        top = d.split('/')[0]
        rest = p[len(top) + 1:]
        def swap():
            os.rename(top, top + '_moved')
            try:
                os.makedirs(os.path.dirname(os.path.join(top + '_moved', rest)), exist_ok=True)
                open(os.path.join(top + '_moved', rest), 'w').write('swapped\n')
            finally:
                os.rename(top + '_moved', top)
        t(swap)
t(lambda: open('git_link/config', 'a').write('via link\n'))
t(lambda: (os.makedirs('git_link/hooks', exist_ok=True), open('git_link/hooks/post-merge', 'w').write('via link\n')))
t(lambda: os.rename('.git', '.git_gone'))
t(lambda: os.rename('.github', '.github_gone'))
t(lambda: open('control.txt', 'w').write('ordinary write\n'))
print('PROBE-DONE')
"#;

const JS_PROBE: &str = r#"const W = JSON.parse('@W@');
const R = JSON.parse('@R@');
function t(f) { try { f(); } catch (e) {} }
for (const p of R) {
  t(() => { const f = std.open(p, "r"); if (f) { print("READ", p, f.readAsString()); f.close(); } });
  const d = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : ".";
  t(() => { const [l] = os.readdir(d); print("LIST", d, JSON.stringify(l)); });
}
for (const p of W) {
  t(() => { const f = std.open(p, "a"); if (f) { f.puts("appended\n"); f.close(); } });
  t(() => { const f = std.open(p, "w"); if (f) { f.puts("replaced\n"); f.close(); } });
  t(() => { const fd = os.open(p, os.O_WRONLY | os.O_TRUNC); if (fd >= 0) os.close(fd); });
  t(() => { const f = std.open("probe_tmp", "w"); f.puts("renamed\n"); f.close(); os.rename("probe_tmp", p); });
  t(() => os.remove(p));
  t(() => os.symlink("/etc/passwd", p));
}
t(() => { const f = std.open("control.txt", "w"); f.puts("ordinary write\n"); f.close(); });
print("PROBE-DONE");
"#;

/// The doctor's `path_rules` row for one backend: the probe in python
/// through a full executor (staging, judging, applying) on `backend`.
pub(super) async fn row(policy: &Policy, kind: BackendKind, backend: Arc<dyn Backend>) -> Row {
    let name = kind.as_str();
    let row = |status, promised: String, evidence: String| Row {
        backend: name,
        limit: LIMIT,
        promised,
        status,
        evidence,
    };
    let routed = match policy.with(|s| s.backends.python = kind) {
        Ok(p) => p,
        Err(e) => {
            return row(
                Status::Unavailable,
                "-".into(),
                format!("python cannot run on {name} under this policy: {e}"),
            );
        }
    };
    let scene = match Scene::new(&routed) {
        Ok(s) => s,
        Err(e) => return row(Status::Failed, "-".into(), format!("probe workspace: {e}")),
    };
    let promised = format!(
        "{} paths hidden, {} protected inside",
        scene.hidden().len(),
        scene.protected().len()
    );
    let mut b = Executor::builder(routed)
        .workspace(scene.dir.path())
        .approver(Arc::new(CallsOnly));
    b = match kind {
        BackendKind::Docker => b.wasm(None).docker(backend),
        _ => b,
    };
    let exec = match b.build() {
        Ok(e) => e,
        Err(e) => return row(Status::Failed, promised, format!("executor: {e}")),
    };
    let writable = match kind {
        BackendKind::Docker => policy.settings().docker.workspace,
        BackendKind::Native => policy.settings().native.workspace,
        _ => policy.settings().wasm_workspace,
    } == crate::plan::MountAccess::ReadWrite;
    let outcome = run(&exec, &scene, Language::Python).await;
    exec.close().await;
    let o = match outcome {
        Ok(o) => o,
        Err(e) => return row(Status::Failed, promised, format!("probe: {e}")),
    };
    if let Err(e) = scene.ran(&o, writable) {
        return row(Status::Failed, promised, e);
    }
    let v = scene.violations(&o);
    if v.is_empty() {
        let kept = o.changes.iter().filter(|c| !c.applied).count();
        row(
            Status::Enforced,
            promised,
            format!(
                "nothing read or changed; {kept} of {} changes discarded",
                o.changes.len()
            ),
        )
    } else {
        row(Status::Failed, promised, v.join("; "))
    }
}

/// The row's limit name.
pub(super) const LIMIT: &str = "path_rules";
