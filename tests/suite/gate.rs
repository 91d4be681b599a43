//! The confirmation gate through the executor: answers by id, expiry,
//! once vs session approvals, independence of concurrent confirmations,
//! shutdown — all failing closed.

use super::common::workspace;
use std::sync::Arc;
use std::time::Duration;
use toolgate::gate::{External, GateError, Scope};
use toolgate::{Executor, Outcome, Policy, Status, ToolCall};

fn exec(ws: &std::path::Path, ttl: Duration) -> Arc<Executor> {
    Arc::new(
        Executor::builder(Policy::builtin_default())
            .workspace(ws)
            .wasm(None)
            .approver(Arc::new(External))
            .confirmation_ttl(ttl)
            .build()
            .unwrap(),
    )
}

fn read(path: &str) -> ToolCall {
    ToolCall::parse(&serde_json::json!({"tool": "read_file", "args": {"path": path}}).to_string())
        .unwrap()
}

async fn pending_ids(e: &Executor, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let p = e.gate().pending().await.unwrap();
        if p.len() >= n {
            return p.into_iter().map(|r| r.id).collect();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "expected {n} pending confirmations, have {}",
        e.gate().pending().await.unwrap().len()
    );
}

fn spawn(e: &Arc<Executor>, c: ToolCall) -> tokio::task::JoinHandle<Outcome> {
    let e = e.clone();
    tokio::spawn(async move { e.run(&c).await.unwrap() })
}

#[tokio::test]
async fn expiry_rejects_and_a_late_answer_is_an_error() {
    let ws = workspace();
    let e = exec(ws.path(), Duration::from_millis(150));
    let h = spawn(&e, read(".env"));
    let id = pending_ids(&e, 1).await.remove(0);
    let o = h.await.unwrap();
    assert_eq!(o.status, Status::Denied);
    assert_eq!(o.confirmation.as_ref().unwrap().by, "expired");
    assert!(o.stdout.is_empty());
    assert_eq!(
        e.gate().answer(&id, true, Scope::Once, "op", None).await,
        Err(GateError::Expired(id.clone()))
    );
    assert_eq!(
        e.gate()
            .answer("conf_nope", true, Scope::Once, "op", None)
            .await,
        Err(GateError::Unknown("conf_nope".into()))
    );
}

#[tokio::test]
async fn reject_and_approve_by_id_with_a_note() {
    let ws = workspace();
    let e = exec(ws.path(), Duration::from_secs(30));
    let h = spawn(&e, read(".env"));
    let id = pending_ids(&e, 1).await.remove(0);
    let req = &e.gate().pending().await.unwrap()[0];
    assert_eq!(req.tool, "read_file");
    assert!(
        req.reasons.iter().any(|r| r.contains("credential")),
        "{:?}",
        req.reasons
    );
    e.gate()
        .answer(&id, false, Scope::Once, "alice", Some("no".into()))
        .await
        .unwrap();
    let o = h.await.unwrap();
    assert_eq!(
        (o.status, o.confirmation.as_ref().unwrap().by.as_str()),
        (Status::Denied, "alice")
    );
    assert_eq!(
        e.gate().answer(&id, true, Scope::Once, "bob", None).await,
        Err(GateError::Answered(id))
    );

    let h = spawn(&e, read(".env"));
    let id = pending_ids(&e, 1).await.remove(0);
    e.gate()
        .answer(&id, true, Scope::Once, "alice", Some("ok for now".into()))
        .await
        .unwrap();
    let o = h.await.unwrap();
    assert_eq!(o.status, Status::Completed);
    // The fixture's value reads as a placeholder, so the filter leaves it.
    assert_eq!(o.stdout, "API_KEY=not-a-real-key\n");
    assert_eq!(o.confirmation.unwrap().note.as_deref(), Some("ok for now"));
}

#[tokio::test]
async fn approve_once_asks_again_but_session_covers_the_same_rule_only() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join("config")).unwrap();
    std::fs::write(ws.path().join("config/.env.local"), "X=1\n").unwrap();
    let e = exec(ws.path(), Duration::from_secs(30));
    // Once: the next call asks again.
    let h = spawn(&e, read(".env"));
    let id = pending_ids(&e, 1).await.remove(0);
    e.gate()
        .answer(&id, true, Scope::Once, "op", None)
        .await
        .unwrap();
    assert_eq!(h.await.unwrap().status, Status::Completed);
    let h = spawn(&e, read("config/.env.local"));
    let id = pending_ids(&e, 1).await.remove(0);
    // Session: this and later calls asked by the same rule pass.
    e.gate()
        .answer(&id, true, Scope::Session, "op", None)
        .await
        .unwrap();
    assert_eq!(h.await.unwrap().status, Status::Completed);
    let o = e.run(&read(".env")).await.unwrap();
    assert_eq!(o.status, Status::Completed);
    assert_eq!(o.confirmation.unwrap().by, "session-approval");
    // Another rule still asks.
    let w = ToolCall::parse(
        r#"{"tool":"write_file","args":{"path":".github/workflows/ci.yml","content":"x"}}"#,
    )
    .unwrap();
    let h = spawn(&e, w);
    let id = pending_ids(&e, 1).await.remove(0);
    e.gate()
        .answer(&id, false, Scope::Once, "op", None)
        .await
        .unwrap();
    assert_eq!(h.await.unwrap().status, Status::Denied);
    assert!(!ws.path().join(".github/workflows/ci.yml").exists());
}

#[tokio::test]
async fn concurrent_confirmations_are_independent() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join("k")).unwrap();
    std::fs::write(ws.path().join("k/server.key"), "k\n").unwrap();
    let e = exec(ws.path(), Duration::from_secs(30));
    let a = spawn(&e, read(".env"));
    let b = spawn(&e, read("k/server.key"));
    let ids = pending_ids(&e, 2).await;
    let by_call: Vec<(String, String)> = e
        .gate()
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.args["path"].as_str().unwrap().to_string()))
        .collect();
    let key_id = &by_call.iter().find(|(_, p)| p == "k/server.key").unwrap().0;
    let env_id = &by_call.iter().find(|(_, p)| p == ".env").unwrap().0;
    assert_eq!(ids.len(), 2);
    e.gate()
        .answer(key_id, true, Scope::Once, "op", None)
        .await
        .unwrap();
    assert_eq!(b.await.unwrap().status, Status::Completed);
    assert_eq!(
        e.gate().pending().await.unwrap().len(),
        1,
        "the other confirmation is still pending"
    );
    e.gate()
        .answer(env_id, false, Scope::Once, "op", None)
        .await
        .unwrap();
    assert_eq!(a.await.unwrap().status, Status::Denied);
}

#[tokio::test]
async fn shutdown_rejects_pending_and_later_confirmations() {
    let ws = workspace();
    let e = exec(ws.path(), Duration::from_secs(30));
    let h = spawn(&e, read(".env"));
    pending_ids(&e, 1).await;
    assert_eq!(e.shutdown(), 1);
    let o = h.await.unwrap();
    assert_eq!(
        (o.status, o.confirmation.unwrap().by.as_str()),
        (Status::Denied, "shutdown")
    );
    let o = e.run(&read(".env")).await.unwrap();
    assert_eq!(
        (o.status, o.confirmation.unwrap().by.as_str()),
        (Status::Denied, "shutdown")
    );
}

#[test]
fn dry_run_creates_no_confirmation() {
    let ws = workspace();
    let e = exec(ws.path(), Duration::from_secs(30));
    let d = e.check(&read(".env")).unwrap();
    assert!(d.plan.confirmation);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(e.gate().pending()).unwrap().is_empty());
}

fn cmd(c: &str) -> ToolCall {
    ToolCall::parse(&serde_json::json!({"tool": "run_command", "args": {"command": c}}).to_string())
        .unwrap()
}

/// Approves everything for the session and counts how often it was asked.
#[derive(Default)]
struct SessionApprover {
    asked: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl toolgate::Approver for SessionApprover {
    async fn decide(&self, req: &toolgate::ConfirmationRequest) -> toolgate::Answer {
        self.asked
            .lock()
            .unwrap()
            .push(format!("{}:{}", req.principal, req.call_id));
        toolgate::Answer {
            confirmation_id: req.id.clone(),
            approved: true,
            by: "human".into(),
            note: None,
            scope: Scope::Session,
        }
    }
}

/// Issue 12: a session approval covers only the same principal, and only
/// asks raised by a named rule; anything unnamed is asked again.
#[tokio::test]
async fn session_approvals_are_per_principal_and_only_for_named_rules() {
    let ws = workspace();
    let approver = Arc::new(SessionApprover::default());
    let e = Executor::builder(Policy::builtin_default())
        .workspace(ws.path())
        .wasm(None)
        .approver(approver.clone())
        // No docker here: an approved command fails to run, which is fine;
        // what matters is who was asked.
        .build()
        .unwrap();
    let run = |principal: &'static str, id: &'static str, c: &str| {
        let mut call = cmd(c);
        call.id = id.into();
        let e = &e;
        async move { e.run_as(&call, principal).await }
    };
    let _ = run("alice", "a1", "git push origin main").await;
    let _ = run("alice", "a2", "git push origin main").await;
    let _ = run("bob", "b1", "git push origin main").await;
    let _ = run("alice", "a3", "git push origin main; eval \"$X\"").await;
    let _ = run("alice", "a4", "git push origin main; frobnicate --all").await;
    let asked = approver.asked.lock().unwrap().clone();
    // a2 was covered by alice's session approval; bob is asked for his own;
    // an unresolved construct and an unknown program are asked every time.
    assert_eq!(asked, vec!["alice:a1", "bob:b1", "alice:a3", "alice:a4"]);
    // The request says whether a session approval is possible at all.
    let flagged = cmd("git push origin main; eval \"$X\"");
    let dry = e.check(&flagged).unwrap();
    assert_eq!(dry.verdict.decision, toolgate::Decision::Ask);
    assert!(!dry.verdict.session_approvable);
    assert!(
        e.check(&cmd("git push origin main"))
            .unwrap()
            .verdict
            .session_approvable
    );
}

/// Issue 12: an approver — any principal — may not answer a confirmation of
/// a call it made itself.
#[tokio::test]
async fn no_principal_answers_its_own_call() {
    let ws = workspace();
    let e = exec(ws.path(), Duration::from_secs(10));
    let e2 = e.clone();
    let h = tokio::spawn(async move { e2.run_as(&read(".env"), "lead").await.unwrap() });
    let id = pending_ids(&e, 1).await.remove(0);
    assert_eq!(e.gate().pending().await.unwrap()[0].principal, "lead");
    assert_eq!(
        e.gate().answer(&id, true, Scope::Once, "lead", None).await,
        Err(GateError::OwnCall(id.clone()))
    );
    // Still pending; another principal's answer counts.
    assert_eq!(e.gate().pending().await.unwrap().len(), 1);
    e.gate()
        .answer(&id, true, Scope::Once, "reviewer", None)
        .await
        .unwrap();
    let o = h.await.unwrap();
    assert_eq!(o.status, Status::Completed, "{o:?}");
    assert_eq!(o.confirmation.unwrap().by, "reviewer");
}

/// Swaps a symlink while the human reads the request, then approves.
struct SwapThenApprove {
    link: std::path::PathBuf,
    new_target: std::path::PathBuf,
}

#[async_trait::async_trait]
impl toolgate::Approver for SwapThenApprove {
    async fn decide(&self, req: &toolgate::ConfirmationRequest) -> toolgate::Answer {
        std::fs::remove_file(&self.link).unwrap();
        std::os::unix::fs::symlink(&self.new_target, &self.link).unwrap();
        toolgate::Answer {
            confirmation_id: req.id.clone(),
            approved: true,
            by: "human".into(),
            note: None,
            scope: Scope::Once,
        }
    }
}

/// Issue 12: after an approval the call is judged again against the
/// workspace as it is now; a swap during the wait cannot smuggle a write
/// into a denied place.
#[tokio::test]
async fn an_approved_call_is_judged_again_before_it_runs() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join(".git/objects")).unwrap();
    let link = ws.path().join("drop");
    std::os::unix::fs::symlink(".git/objects", &link).unwrap();
    let e = Executor::builder(Policy::builtin_default())
        .workspace(ws.path())
        .wasm(None)
        .approver(Arc::new(SwapThenApprove {
            link: link.clone(),
            new_target: ".git/hooks".into(),
        }))
        .build()
        .unwrap();
    let call = ToolCall::parse(
        r##"{"tool":"write_file","args":{"path":"drop/post-checkout","content":"#!/bin/sh\ntouch /tmp/pwned\n"}}"##,
    )
    .unwrap();
    // Writing into .git/objects asks; into .git/hooks is denied.
    assert_eq!(
        e.check(&call).unwrap().verdict.decision,
        toolgate::Decision::Ask
    );
    let o = e.run(&call).await.unwrap();
    assert_eq!(o.status, Status::Denied, "{o:?}");
    assert!(o.confirmation.as_ref().unwrap().approved);
    assert!(
        o.reasons
            .iter()
            .any(|r| r.contains("judged again before running: it is now denied")),
        "{:?}",
        o.reasons
    );
    assert!(!ws.path().join(".git/hooks/post-checkout").exists());
    assert!(!ws.path().join(".git/objects/post-checkout").exists());
}

/// Issue 12: `max_running` binds: with one running slot, two calls that
/// each sleep 1.5 s run one after the other (the lower bound cannot be met
/// by chance on a slow machine).
#[test]
fn max_running_serialises_calls_beyond_the_bound() {
    let rt = super::common::rt();
    let ws = workspace();
    let e = Arc::new(
        Executor::builder(Policy::builtin_default())
            .workspace(ws.path())
            .max_running(1)
            .build()
            .unwrap(),
    );
    let call = ToolCall::parse(
        &serde_json::json!({"tool": "run_code", "args": {"language": "python",
            "code": "import time\ntime.sleep(1.5)\nprint('slept')"}})
        .to_string(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let outcomes = rt.block_on(async {
        let (a, b) = (e.clone(), e.clone());
        let (c1, c2) = (call.clone(), call.clone());
        let h1 = tokio::spawn(async move { a.run(&c1).await.unwrap() });
        let h2 = tokio::spawn(async move { b.run(&c2).await.unwrap() });
        (h1.await.unwrap(), h2.await.unwrap())
    });
    assert_eq!(outcomes.0.stdout, "slept\n", "{:?}", outcomes.0);
    assert_eq!(outcomes.1.stdout, "slept\n", "{:?}", outcomes.1);
    assert!(
        t.elapsed() >= Duration::from_millis(3000),
        "ran concurrently: {:?}",
        t.elapsed()
    );
}
