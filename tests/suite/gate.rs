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
        let p = e.gate().pending();
        if p.len() >= n {
            return p.into_iter().map(|r| r.id).collect();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "expected {n} pending confirmations, have {}",
        e.gate().pending().len()
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
        e.gate().answer(&id, true, Scope::Once, "op", None),
        Err(GateError::Expired(id.clone()))
    );
    assert_eq!(
        e.gate().answer("conf_nope", true, Scope::Once, "op", None),
        Err(GateError::Unknown("conf_nope".into()))
    );
}

#[tokio::test]
async fn reject_and_approve_by_id_with_a_note() {
    let ws = workspace();
    let e = exec(ws.path(), Duration::from_secs(30));
    let h = spawn(&e, read(".env"));
    let id = pending_ids(&e, 1).await.remove(0);
    let req = &e.gate().pending()[0];
    assert_eq!(req.tool, "read_file");
    assert!(
        req.reasons.iter().any(|r| r.contains("credential")),
        "{:?}",
        req.reasons
    );
    e.gate()
        .answer(&id, false, Scope::Once, "alice", Some("no".into()))
        .unwrap();
    let o = h.await.unwrap();
    assert_eq!(
        (o.status, o.confirmation.as_ref().unwrap().by.as_str()),
        (Status::Denied, "alice")
    );
    assert_eq!(
        e.gate().answer(&id, true, Scope::Once, "bob", None),
        Err(GateError::Answered(id))
    );

    let h = spawn(&e, read(".env"));
    let id = pending_ids(&e, 1).await.remove(0);
    e.gate()
        .answer(&id, true, Scope::Once, "alice", Some("ok for now".into()))
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
    e.gate().answer(&id, true, Scope::Once, "op", None).unwrap();
    assert_eq!(h.await.unwrap().status, Status::Completed);
    let h = spawn(&e, read("config/.env.local"));
    let id = pending_ids(&e, 1).await.remove(0);
    // Session: this and later calls asked by the same rule pass.
    e.gate()
        .answer(&id, true, Scope::Session, "op", None)
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
        .into_iter()
        .map(|r| (r.id, r.args["path"].as_str().unwrap().to_string()))
        .collect();
    let key_id = &by_call.iter().find(|(_, p)| p == "k/server.key").unwrap().0;
    let env_id = &by_call.iter().find(|(_, p)| p == ".env").unwrap().0;
    assert_eq!(ids.len(), 2);
    e.gate()
        .answer(key_id, true, Scope::Once, "op", None)
        .unwrap();
    assert_eq!(b.await.unwrap().status, Status::Completed);
    assert_eq!(
        e.gate().pending().len(),
        1,
        "the other confirmation is still pending"
    );
    e.gate()
        .answer(env_id, false, Scope::Once, "op", None)
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
    assert!(e.gate().pending().is_empty());
}
