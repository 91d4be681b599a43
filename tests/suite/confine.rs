//! What the policy denies, no tool can do: for every shipped policy and
//! every backend, code inside the sandbox tries to read each path the
//! policy hides and to change each path it protects — existing and new
//! names, through appends, `os.open` flags, renames, deletion, chmod,
//! symlinks, hard links, a parent renamed away and back, and the
//! workspace's own links — and the host is checked afterwards
//! (`toolgate::doctor::confine` is the corpus; `toolgate doctor` runs it
//! as the `path_rules` row).

use super::common::rt;
use std::sync::Arc;
use toolgate::call::Language;
use toolgate::doctor::confine::{self, CallsOnly, Scene};
use toolgate::plan::{BackendKind, MountAccess};
use toolgate::sandbox::Backend;
use toolgate::sandbox::docker::DockerBackend;
use toolgate::{Executor, Outcome, Policy, ToolCall};

const POLICIES: &[&str] = &["default", "strict", "permissive-dev"];

fn docker(rt: &tokio::runtime::Runtime) -> Option<Arc<dyn Backend>> {
    match rt.block_on(DockerBackend::connect(Default::default())) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            if std::env::var_os("TOOLGATE_REQUIRE_DOCKER").is_some_and(|v| v == "1") {
                panic!("TOOLGATE_REQUIRE_DOCKER=1 but no Docker engine is reachable: {e}");
            }
            eprintln!("SKIPPED: docker probes need a reachable Docker engine ({e})");
            None
        }
    }
}

/// Runs the probe under the shipped policy `name`, python routed to `kind`.
fn probe(
    rt: &tokio::runtime::Runtime,
    name: &str,
    kind: BackendKind,
    language: Language,
    backend: Option<Arc<dyn Backend>>,
) -> (Scene, Outcome, bool) {
    let shipped = Policy::load(name).unwrap();
    let writable = match kind {
        BackendKind::Docker => shipped.settings().docker.workspace,
        BackendKind::Native => shipped.settings().native.workspace,
        _ => shipped.settings().wasm_workspace,
    } == MountAccess::ReadWrite;
    let policy = shipped
        .with(|s| match language {
            Language::Javascript => s.backends.javascript = kind,
            _ => s.backends.python = kind,
        })
        .unwrap();
    let scene = Scene::new(&policy).unwrap();
    let mut b = Executor::builder(policy)
        .workspace(scene.dir.path())
        .approver(Arc::new(CallsOnly));
    if let Some(d) = backend {
        b = b.wasm(None).docker(d);
    }
    let exec = b.build().unwrap();
    let o = rt.block_on(confine::run(&exec, &scene, language)).unwrap();
    rt.block_on(exec.close());
    (scene, o, writable)
}

fn assert_confined(name: &str, backend: &str, scene: &Scene, o: &Outcome, writable: bool) {
    let what = format!("{name} on {backend}");
    assert!(
        !scene.hidden().is_empty() && !scene.protected().is_empty(),
        "{what}: the policy protects nothing in the scene, the probe proves nothing"
    );
    scene
        .ran(o, writable)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let v = scene.violations(o);
    eprintln!(
        "{what}: {:?}, {} ms, {} changes ({} applied); hidden {:?}",
        o.status,
        o.duration_ms,
        o.changes.len(),
        o.changes.iter().filter(|c| c.applied).count(),
        scene.hidden()
    );
    assert!(v.is_empty(), "{what}: {v:#?}\nchanges: {:#?}", o.changes);
    // Hidden names are not even listed.
    for line in o.stdout.lines().filter(|l| l.starts_with("LIST . ")) {
        for h in scene.hidden().iter().filter(|h| !h.contains('/')) {
            assert!(
                !line.contains(&format!("'{h}'")) && !line.contains(&format!("\"{h}\"")),
                "{what}: {h} is listed: {line}"
            );
        }
    }
    if writable {
        // The attempts reached the stage and were judged there.
        let discarded: Vec<&str> = o
            .changes
            .iter()
            .filter(|c| !c.applied)
            .map(|c| c.path.as_str())
            .collect();
        for p in scene.protected().iter().filter(|p| **p == ".git/config") {
            assert!(
                discarded.iter().any(|d| d == p),
                "{what}: no discarded change for {p}: {discarded:?}"
            );
        }
    }
}

#[test]
fn path_rules_bind_inside_wasm_for_every_shipped_policy() {
    let rt = rt();
    for name in POLICIES {
        for language in [Language::Python, Language::Javascript] {
            let (scene, o, writable) = probe(&rt, name, BackendKind::Wasm, language, None);
            assert_confined(
                name,
                &format!("wasm/{}", language.as_str()),
                &scene,
                &o,
                writable,
            );
        }
    }
}

#[test]
fn path_rules_bind_inside_a_python_session_for_every_shipped_policy() {
    // A session keeps its interpreter, not its files: each turn gets a
    // stage of the workspace like any call, judged the same way.
    let rt = rt();
    for name in POLICIES {
        let shipped = Policy::load(name).unwrap();
        let writable = shipped.settings().wasm_workspace == MountAccess::ReadWrite;
        let scene = Scene::new(&shipped).unwrap();
        let exec = Executor::builder(shipped)
            .workspace(scene.dir.path())
            .approver(Arc::new(CallsOnly))
            .build()
            .unwrap();
        let warm = ToolCall::parse(
            r#"{"tool": "run_code", "args": {"language": "python", "code": "kept = 1", "session": "probe"}}"#,
        )
        .unwrap();
        let first = rt.block_on(exec.run(&warm)).unwrap();
        assert_eq!(first.exit_code, Some(0), "{name}: {first:?}");
        let o = rt
            .block_on(confine::run_in(
                &exec,
                &scene,
                Language::Python,
                Some("probe"),
            ))
            .unwrap();
        assert_eq!(
            exec.sessions("local")[0].turns,
            2,
            "{name}: the probe was a turn"
        );
        rt.block_on(exec.close());
        assert_confined(name, "wasm/python session", &scene, &o, writable);
    }
}

#[test]
fn path_rules_bind_inside_a_docker_session_for_every_shipped_policy() {
    // A docker session keeps its container; each turn still gets its own
    // stage, judged like any call's.
    let rt = rt();
    let Some(d) = docker(&rt) else { return };
    for name in POLICIES {
        let shipped = Policy::load(name).unwrap();
        let writable = shipped.settings().docker.workspace == MountAccess::ReadWrite;
        let policy = shipped
            .with(|s| s.backends.python = BackendKind::Docker)
            .unwrap();
        let scene = Scene::new(&policy).unwrap();
        let exec = Executor::builder(policy)
            .workspace(scene.dir.path())
            .approver(Arc::new(CallsOnly))
            .wasm(None)
            .docker(d.clone())
            .build()
            .unwrap();
        let warm = ToolCall::parse(
            r#"{"tool": "run_code", "args": {"language": "python", "code": "kept = 1", "session": "probe"}}"#,
        )
        .unwrap();
        let first = rt.block_on(exec.run(&warm)).unwrap();
        assert_eq!(first.exit_code, Some(0), "{name}: {first:?}");
        let o = rt
            .block_on(confine::run_in(
                &exec,
                &scene,
                Language::Python,
                Some("probe"),
            ))
            .unwrap();
        let listed = exec.sessions("local");
        assert_eq!(
            (listed[0].backend, listed[0].turns),
            ("docker", 2),
            "{name}: the probe was a turn of the docker session"
        );
        exec.close_session("local", "probe");
        assert_confined(name, "docker/python session", &scene, &o, writable);
    }
    rt.block_on(d.shutdown());
}

#[test]
fn path_rules_bind_inside_docker_for_every_shipped_policy() {
    let rt = rt();
    let Some(d) = docker(&rt) else { return };
    for name in POLICIES {
        let (scene, o, writable) = probe(
            &rt,
            name,
            BackendKind::Docker,
            Language::Python,
            Some(d.clone()),
        );
        assert_confined(name, "docker/python", &scene, &o, writable);
    }
    rt.block_on(d.shutdown());
}

#[test]
fn path_rules_bind_inside_native_for_every_shipped_policy() {
    if super::native::native().is_none() {
        return;
    }
    let rt = rt();
    for name in POLICIES {
        let (scene, o, writable) = probe(&rt, name, BackendKind::Native, Language::Python, None);
        assert_confined(name, "native/python", &scene, &o, writable);
    }
}

fn call(json: serde_json::Value) -> toolgate::ToolCall {
    toolgate::ToolCall::parse(&json.to_string()).unwrap()
}

#[test]
fn asked_changes_go_through_the_gate_and_apply_only_when_approved() {
    let rt = rt();
    let code = "open('.env.local', 'w').write('X=1\\n'); open('ok.txt', 'w').write('ok')";
    for (approve, applied) in [(false, false), (true, true)] {
        let ws = super::common::workspace();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let approver =
            toolgate::gate::FnApprover(move |req: &toolgate::gate::ConfirmationRequest| {
                log.lock()
                    .unwrap()
                    .push((req.tool.clone(), req.args.to_string()));
                approve
            });
        let exec = Executor::builder(Policy::builtin_default())
            .workspace(ws.path())
            .approver(Arc::new(approver))
            .build()
            .unwrap();
        let o = rt
            .block_on(exec.run(&call(serde_json::json!({
                "tool": "run_code", "args": {"language": "python", "code": code}}))))
            .unwrap();
        let asked = seen.lock().unwrap().clone();
        assert_eq!(
            asked.len(),
            1,
            "one confirmation for the call's changes: {asked:?}"
        );
        assert_eq!(asked[0].0, "run_code (workspace changes)");
        assert!(asked[0].1.contains(".env.local") && !asked[0].1.contains("ok.txt"));
        assert_eq!(
            ws.path().join(".env.local").exists(),
            applied,
            "{:?}",
            o.changes
        );
        assert!(
            ws.path().join("ok.txt").exists(),
            "an allowed change needs no answer"
        );
        let c = o.changes.iter().find(|c| c.path == ".env.local").unwrap();
        assert_eq!((c.applied, c.action), (applied, "create"));
    }
}

#[test]
fn check_prints_the_view_and_list_dir_leaves_hidden_entries_out() {
    let rt = rt();
    let ws = super::common::workspace();
    let exec = Executor::builder(Policy::builtin_default())
        .workspace(ws.path())
        .build()
        .unwrap();
    let dry = exec
        .check(&call(serde_json::json!({
            "tool": "run_code", "args": {"language": "python", "code": "print(1)"}})))
        .unwrap();
    let view = serde_json::to_value(&dry.plan.view).unwrap();
    assert_eq!(view["hidden"][0]["rule"], "secrets-read", "{view}");
    assert!(
        view["protected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "git-internals")
    );
    let o = rt
        .block_on(exec.run(&call(
            serde_json::json!({"tool": "list_dir", "args": {"path": "."}}),
        )))
        .unwrap();
    assert!(
        o.stdout.contains("README.md") && !o.stdout.contains(".env"),
        "{}",
        o.stdout
    );
    assert!(
        o.reasons.iter().any(|r| r.contains("1 entries hidden")),
        "{:?}",
        o.reasons
    );
}
