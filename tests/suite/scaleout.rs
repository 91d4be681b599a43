//! Issue 17: several services act as one on PostgreSQL. The stores are
//! tested alike (embedded and PostgreSQL), then real `toolgate serve`
//! processes on loopback share one database: a call asked on A is
//! approved on B and read on C; a budget holds across three under
//! concurrency; 600 calls at 30 in flight leave one chain that verifies;
//! a service killed mid-call leaves the others serving and its intent
//! entry in the chain.
//!
//! The server is the one `.ci/run` starts (`TOOLGATE_TEST_PG`, an admin
//! URL); each test makes a database of its own and drops it after.

use super::common::bin;
use serde_json::{Value, json};
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate::budget::Budgets;
use toolgate::gate::{Answer, ConfirmationRequest, GateError, Scope};
use toolgate::state::{Memory, Store};

const AGENT: &str = "agent-token-scaleout-0123456789";
const APPROVER: &str = "approver-token-scaleout-0123456789";

/// The admin URL of the test server, or `None` (skipped) where there is
/// none — a failure when `TOOLGATE_REQUIRE_PG=1`, as in CI.
fn server() -> Option<String> {
    match std::env::var("TOOLGATE_TEST_PG") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var_os("TOOLGATE_REQUIRE_PG").is_some_and(|v| v == "1") {
                panic!("TOOLGATE_REQUIRE_PG=1 but TOOLGATE_TEST_PG names no server");
            }
            eprintln!("SKIPPED: no PostgreSQL server (TOOLGATE_TEST_PG)");
            None
        }
    }
}

/// A database of the test's own, dropped (with its connections) at the end.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Db {
    fn new(admin: &str) -> Db {
        let name = format!("tg_{}", uuid::Uuid::new_v4().simple());
        Db::admin_sql(admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').unwrap().0;
        Db {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    fn admin_sql(admin: &str, sql: &str) {
        let (admin, sql) = (admin.to_string(), sql.to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                c.batch_execute(&sql).await.unwrap();
            });
        })
        .join()
        .unwrap();
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            Db::admin_sql(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn request(id: &str, principal: &str, ttl_ms: u128) -> ConfirmationRequest {
    let now = toolgate::units::now_ms();
    ConfirmationRequest {
        id: id.into(),
        call_id: format!("call-{id}"),
        principal: principal.into(),
        tool: "read_file".into(),
        args: json!({"path": ".env"}),
        reasons: vec!["a secret file".into()],
        matched_rules: vec![],
        created_unix_ms: now,
        expires_unix_ms: now + ttl_ms,
        session_scope_available: false,
        resume: None,
    }
}

fn answer(id: &str, approved: bool, by: &str) -> Answer {
    Answer {
        confirmation_id: id.into(),
        approved,
        by: by.into(),
        note: None,
        scope: Scope::Once,
    }
}

/// What every store must do alike: first answer wins, an agent never
/// answers its own call, a late answer is expired, a budget admits
/// exactly its count however many ask at once, the audit chain verifies.
async fn store_contract(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // Confirmations: opened on one, answered through the other.
    a.open(&request("c1", "agent", 60_000)).await.unwrap();
    assert_eq!(b.pending().await.unwrap().len(), 1);
    assert_eq!(
        b.settle("c1", &answer("c1", true, "agent"), Some("agent"))
            .await,
        Err(GateError::OwnCall("c1".into()))
    );
    b.settle("c1", &answer("c1", true, "lead"), Some("lead"))
        .await
        .unwrap();
    assert_eq!(
        a.settle("c1", &answer("c1", false, "expired"), None).await,
        Err(GateError::Answered("c1".into())),
        "the first answer recorded is the answer"
    );
    assert_eq!(a.get("c1").await.unwrap().unwrap().1.unwrap().by, "lead");
    assert!(b.pending().await.unwrap().is_empty());
    // Past its expiry, an answer from outside is refused as expired.
    a.open(&request("c2", "agent", 0)).await.unwrap();
    assert_eq!(
        b.settle("c2", &answer("c2", true, "lead"), Some("lead"))
            .await,
        Err(GateError::Expired("c2".into()))
    );
    assert_eq!(
        b.settle("nope", &answer("nope", true, "lead"), Some("lead"))
            .await,
        Err(GateError::Unknown("nope".into()))
    );
    // Session approvals.
    a.approve_rules("agent", &["secrets".into()]).await.unwrap();
    assert!(b.approved("agent", &["secrets"]).await.unwrap());
    assert!(!b.approved("agent", &["secrets", "other"]).await.unwrap());
    assert!(!b.approved("someone", &["secrets"]).await.unwrap());
    // A budget of 7 calls, 40 admissions at once through both stores.
    let budget = Budgets {
        calls: Some(7),
        ..Budgets::default()
    };
    let mut joins = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let budget = budget.clone();
        joins.push(tokio::spawn(async move {
            s.admit("calls", "agent", &budget).await.unwrap().is_ok()
        }));
    }
    let mut admitted = 0;
    for j in joins {
        admitted += usize::from(j.await.unwrap());
    }
    assert_eq!(admitted, 7, "a budget of 7 admitted {admitted}");
    // Usage charged through one is judged through the other.
    let wall = Budgets {
        wall_seconds: Some(1.0),
        ..Budgets::default()
    };
    a.admit("calls", "carol", &wall).await.unwrap().unwrap();
    a.charge("calls", "carol", Duration::from_millis(1500), None)
        .await
        .unwrap();
    let r = b.admit("calls", "carol", &wall).await.unwrap().unwrap_err();
    assert!(r.to_string().contains("wall seconds"), "{r}");
    // A rate: 3 per minute, the fourth refused with when to retry.
    let rate = Budgets {
        per_minute: Some(3),
        ..Budgets::default()
    };
    for _ in 0..3 {
        a.admit("requests", "bob", &rate).await.unwrap().unwrap();
    }
    let r = b
        .admit("requests", "bob", &rate)
        .await
        .unwrap()
        .unwrap_err();
    assert!(r.retry_after().unwrap() > Duration::from_secs(50), "{r}");
    // Call records: started on one, finished and read on the other.
    assert!(a.start_call("k1", "agent").await.unwrap());
    assert!(
        !b.start_call("k1", "agent").await.unwrap(),
        "an id is taken fleet-wide"
    );
    assert_eq!(b.call("k1").await.unwrap().unwrap().done, None);
    b.finish_call("k1", 200, &json!({"status": "completed"}), None)
        .await
        .unwrap();
    assert_eq!(
        a.call("k1").await.unwrap().unwrap().done,
        Some((200, json!({"status": "completed"}), None))
    );
    // The audit chain: 100 appends at once through both, one chain.
    let mut joins = Vec::new();
    for i in 0..100 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        joins.push(tokio::spawn(async move {
            let mut m = serde_json::Map::new();
            m.insert("kind".into(), json!("test"));
            m.insert("n".into(), json!(i));
            s.audit(m).await.unwrap()
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let lines = b.audit_lines().await.unwrap().unwrap();
    assert_eq!(lines.len(), 100);
    let text = lines.join("\n") + "\n";
    let v = toolgate::audit::verify_contents(&[("store".into(), text.into_bytes())], None)
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(v.entries, 100);
}

#[test]
fn the_embedded_and_postgres_stores_keep_the_same_promises() {
    let rt = rt();
    // Embedded: one process, so "both" are the same store.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(toolgate::audit::AuditLog::open(dir.path().join("a.jsonl"), None).unwrap());
    let m: Arc<dyn Store> = Arc::new(Memory::new(Some(log), 100));
    rt.block_on(store_contract(m.clone(), m));
    let Some(admin) = server() else { return };
    let db = Db::new(&admin);
    rt.block_on(async {
        // Two connections pools, as two services would have.
        let a: Arc<dyn Store> = Arc::new(
            toolgate::state::postgres::Postgres::connect(&db.url, None)
                .await
                .unwrap(),
        );
        let b: Arc<dyn Store> = Arc::new(
            toolgate::state::postgres::Postgres::connect(&db.url, None)
                .await
                .unwrap(),
        );
        store_contract(a, b).await;
    });
}

#[test]
fn a_bad_store_url_is_refused_without_its_password() {
    let rt = rt();
    let e = rt
        .block_on(toolgate::state::connect(
            "mysql://u:hunter2-secret@localhost/db",
        ))
        .err()
        .unwrap();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // A server that is not there: a clear error, no password.
    let e = rt
        .block_on(toolgate::state::connect(
            "postgres://u:hunter2-secret@127.0.0.1:1/db",
        ))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("postgres://u@127.0.0.1:1/db") && !msg.contains("hunter2"),
        "{msg}"
    );
}

/// Three services sharing a database of their own, over one workspace;
/// stopped, then the database dropped, when it goes out of scope.
struct Fleet {
    nodes: Vec<Node>,
    _ws: tempfile::TempDir,
    db: Db,
    /// One fleet at a time: three services with their pools are enough
    /// load for two cores and one server's connections.
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Fleet {
    /// `None` (skipped) without a test server.
    fn start(extra: &[&str]) -> Option<Fleet> {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let admin = server()?;
        let one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let db = Db::new(&admin);
        let ws = super::common::workspace();
        let nodes = (0..3)
            .map(|_| Node::start(&db.url, ws.path(), extra))
            .collect();
        Some(Fleet {
            nodes,
            _ws: ws,
            db,
            _one: one,
        })
    }

    fn addrs(&self) -> [SocketAddr; 3] {
        [0, 1, 2].map(|i| self.nodes[i].addr)
    }
}

/// One `toolgate serve` process sharing `state`.
struct Node {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Node {
    fn start(state: &str, ws: &std::path::Path, extra: &[&str]) -> Node {
        let mut child = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--workspace", ws.to_str().unwrap()])
            .args(["--rate-per-minute", "100000", "--rate-per-hour", "1000000"])
            .args(extra)
            .env("TOOLGATE_STATE", state)
            .env("TOOLGATE_TOKEN", AGENT)
            .env("TOOLGATE_APPROVER_TOKEN", APPROVER)
            .env_remove("RUST_LOG")
            .env_remove("TOOLGATE_AUDIT_KEY")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr: SocketAddr = loop {
            let line = lines.next().expect("serve ended before listening").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if let Some(a) = v["fields"]["addr"].as_str() {
                break a.parse().unwrap();
            }
        };
        // Keep reading so the pipe never fills.
        std::thread::spawn(move || for _ in lines {});
        Node { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    super::serve::raw(addr, method, path, token, &body).await
}

/// The call's response once it is neither pending nor running, asked of `addr`.
async fn settled(addr: SocketAddr, id: &str) -> (u16, Value) {
    let t = Instant::now();
    loop {
        let (st, v) = http(addr, "GET", &format!("/v1/calls/{id}"), AGENT, &Value::Null).await;
        let waiting = matches!(v["status"].as_str(), Some("pending" | "running"));
        if !waiting || t.elapsed() > Duration::from_secs(60) {
            return (st, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read(id: &str, path: &str) -> Value {
    json!({"id": id, "tool": "read_file", "args": {"path": path}})
}

#[test]
fn a_call_asked_on_one_service_is_approved_on_another_and_read_on_a_third() {
    let Some(fleet) = Fleet::start(&[]) else {
        return;
    };
    let [a, b, c] = fleet.addrs()[..] else {
        unreachable!()
    };
    rt().block_on(async {
        // Asked on A: `.env` is a secret file, so the default policy asks.
        let (st, v) = http(a, "POST", "/v1/calls", AGENT, &read("x1", ".env")).await;
        assert_eq!((st, v["status"].as_str()), (202, Some("pending")), "{v}");
        let conf = v["confirmation_id"].as_str().unwrap().to_string();
        // B lists it and knows the call is pending.
        let (st, list) = http(b, "GET", "/v1/confirmations", APPROVER, &Value::Null).await;
        assert_eq!(st, 200, "{list}");
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == conf.as_str()),
            "{list}"
        );
        let (_, v) = http(c, "GET", "/v1/calls/x1", AGENT, &Value::Null).await;
        assert_eq!(v["status"], "pending", "{v}");
        // The agent may not answer (on any service); the approver answers on B.
        let path = format!("/v1/confirmations/{conf}");
        let (st, _) = http(b, "POST", &path, AGENT, &json!({"approve": true})).await;
        assert_eq!(st, 403);
        let (st, v) = http(b, "POST", &path, APPROVER, &json!({"approve": true})).await;
        assert_eq!(st, 200, "{v}");
        // A second answer, on C: already answered.
        let (st, _) = http(c, "POST", &path, APPROVER, &json!({"approve": false})).await;
        assert_eq!(st, 409);
        // A runs it; C has the result.
        let (st, v) = settled(c, "x1").await;
        assert_eq!((st, v["status"].as_str()), (200, Some("completed")), "{v}");
        assert_eq!(v["confirmation"]["approved"], true, "{v}");
        // Rejected on C, the next one is denied on A.
        let (_, v) = http(a, "POST", "/v1/calls", AGENT, &read("x2", ".env")).await;
        let conf = v["confirmation_id"].as_str().unwrap().to_string();
        let path = format!("/v1/confirmations/{conf}");
        let (st, _) = http(c, "POST", &path, APPROVER, &json!({"approve": false})).await;
        assert_eq!(st, 200);
        let (_, v) = settled(b, "x2").await;
        assert_eq!(v["status"], "denied", "{v}");
    });
}

#[test]
fn a_budget_holds_across_three_services_under_concurrency() {
    let Some(fleet) = Fleet::start(&["--budget-calls", "6"]) else {
        return;
    };
    let addrs = fleet.addrs();
    let (ok, refused) = rt().block_on(async {
        let mut joins = Vec::new();
        for i in 0..24 {
            let addr = addrs[i % 3];
            joins.push(tokio::spawn(async move {
                http(
                    addr,
                    "POST",
                    "/v1/calls",
                    AGENT,
                    &read(&format!("b{i}"), "README.md"),
                )
                .await
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for j in joins {
            let (st, v) = j.await.unwrap();
            match st {
                200 => ok += 1,
                429 => {
                    assert_eq!(v["error"]["kind"], "budget_exhausted", "{v}");
                    refused += 1;
                }
                _ => panic!("{st} {v}"),
            }
        }
        (ok, refused)
    });
    assert_eq!((ok, refused), (6, 18), "a budget of 6 calls for the fleet");
}

/// The chain's entries, read from the database through the CLI's export.
fn exported(url: &str) -> Vec<Value> {
    let out = bin()
        .args(["audit", "export"])
        .env("TOOLGATE_STATE", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toolgate::audit::parse_entries(&String::from_utf8_lossy(&out.stdout))
}

fn verified(url: &str) -> Value {
    let out = bin()
        .args(["audit", "verify", "--json"])
        .env("TOOLGATE_STATE", url)
        .env_remove("TOOLGATE_AUDIT_KEY")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    v
}

#[test]
fn six_hundred_calls_at_thirty_in_flight_over_three_services_leave_one_chain() {
    let Some(fleet) = Fleet::start(&[]) else {
        return;
    };
    let addrs = fleet.addrs();
    rt().block_on(async {
        let slots = Arc::new(tokio::sync::Semaphore::new(30));
        let mut joins = Vec::new();
        for i in 0..600 {
            let addr = addrs[i % 3];
            let permit = slots.clone().acquire_owned().await.unwrap();
            joins.push(tokio::spawn(async move {
                let r = http(
                    addr,
                    "POST",
                    "/v1/calls",
                    AGENT,
                    &read(&format!("n{i}"), "README.md"),
                )
                .await;
                drop(permit);
                r
            }));
        }
        for j in joins {
            let (st, v) = j.await.unwrap();
            assert_eq!((st, v["status"].as_str()), (200, Some("completed")), "{v}");
        }
    });
    let v = verified(&fleet.db.url);
    let entries = exported(&fleet.db.url);
    assert_eq!(
        v["verified"]["entries"].as_u64(),
        Some(entries.len() as u64)
    );
    for kind in ["intent", "call"] {
        let mut ids: Vec<&str> = entries
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["call_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 600, "{kind} entries");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 600, "one {kind} entry per call, none twice");
    }
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no seq lost");
}

#[test]
fn a_service_killed_mid_call_leaves_the_others_serving_and_its_intent_on_record() {
    let Some(mut fleet) = Fleet::start(&[]) else {
        return;
    };
    let addrs = fleet.addrs();
    let rt = rt();
    // A call that runs for seconds on A.
    let slow = json!({"id": "slow-1", "tool": "run_code", "args": {"language": "python",
        "code": "import time\nt = time.time()\nwhile time.time() - t < 20:\n    pass\n"}});
    let a = addrs[0];
    let pending = rt.spawn(async move {
        // Not `http`: this connection ends with the process, mid-response.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = slow.to_string();
        let mut s = tokio::net::TcpStream::connect(a).await?;
        s.write_all(
            format!(
                "POST /v1/calls HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {AGENT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.map(|_| got)
    });
    // Its intent entry is written before it runs.
    let t = Instant::now();
    while !exported(&fleet.db.url)
        .iter()
        .any(|e| e["kind"] == "intent" && e["call_id"] == "slow-1")
    {
        assert!(t.elapsed() < Duration::from_secs(30), "no intent entry");
        std::thread::sleep(Duration::from_millis(100));
    }
    fleet.nodes[0].kill();
    // The client of the killed call got no result: the connection ended
    // (closed or reset) without a response.
    let got = rt.block_on(pending).unwrap();
    assert!(
        got.as_ref().map_or(true, |b| b.is_empty()),
        "{:?}",
        got.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    rt.block_on(async {
        for (i, addr) in addrs[1..].iter().enumerate() {
            let (st, v) = http(
                *addr,
                "POST",
                "/v1/calls",
                AGENT,
                &read(&format!("after{i}"), "README.md"),
            )
            .await;
            assert_eq!((st, v["status"].as_str()), (200, Some("completed")), "{v}");
        }
    });
    verified(&fleet.db.url);
    let entries = exported(&fleet.db.url);
    let of = |kind: &str| {
        entries
            .iter()
            .filter(|e| e["kind"] == kind && e["call_id"] == "slow-1")
            .count()
    };
    assert_eq!(
        (of("intent"), of("call")),
        (1, 0),
        "the killed call's intent, and no result"
    );
}

#[test]
fn a_call_whose_service_stopped_while_it_waited_is_taken_over_once_answered() {
    let Some(mut fleet) = Fleet::start(&[]) else {
        return;
    };
    let [a, b, c] = fleet.addrs()[..] else {
        unreachable!()
    };
    let rt = rt();
    let confs: Vec<String> = rt.block_on(async {
        let mut confs = Vec::new();
        for id in ["t1", "t2"] {
            let (st, v) = http(a, "POST", "/v1/calls", AGENT, &read(id, ".env")).await;
            assert_eq!((st, v["status"].as_str()), (202, Some("pending")), "{v}");
            confs.push(v["confirmation_id"].as_str().unwrap().to_string());
        }
        confs
    });
    // A stops while both wait for a human.
    fleet.nodes[0].kill();
    rt.block_on(async {
        let answer = |conf: &str, approve: bool| {
            let path = format!("/v1/confirmations/{conf}");
            async move { http(b, "POST", &path, APPROVER, &json!({"approve": approve})).await }
        };
        assert_eq!(answer(&confs[0], true).await.0, 200);
        assert_eq!(answer(&confs[1], false).await.0, 200);
        // Once A is silent long enough, B or C runs the approved one and
        // denies the rejected one; C has both results.
        let (st, v) = settled(c, "t1").await;
        assert_eq!((st, v["status"].as_str()), (200, Some("completed")), "{v}");
        assert!(v["stdout"].as_str().unwrap().starts_with("API_KEY="), "{v}");
        let (_, v) = settled(c, "t2").await;
        assert_eq!(v["status"], "denied", "{v}");
    });
    let entries = exported(&fleet.db.url);
    let of = |kind: &str, id: &str| {
        entries
            .iter()
            .filter(|e| e["kind"] == kind && e["call_id"] == id)
            .count()
    };
    // Run once, by one service: one intent (approved only) and one result each.
    assert_eq!((of("intent", "t1"), of("call", "t1")), (1, 1));
    assert_eq!((of("intent", "t2"), of("call", "t2")), (0, 1));
    verified(&fleet.db.url);
}

#[test]
fn a_store_that_is_bad_or_unreachable_stops_the_service_with_a_clear_line() {
    let ws = super::common::workspace();
    for (url, code, kind) in [
        ("mysql://u:hunter2-secret@localhost/db", 2, "usage"),
        (
            "postgres://u:hunter2-secret@127.0.0.1:1/db",
            4,
            "state_unavailable",
        ),
    ] {
        let out = bin()
            .args(["serve", "--json", "--listen", "127.0.0.1:0"])
            .args(["--workspace", ws.path().to_str().unwrap()])
            .env("TOOLGATE_STATE", url)
            .env("TOOLGATE_TOKEN", AGENT)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{url}: {all}");
        assert!(!all.contains("hunter2"), "{all}");
        // One JSON line on stdout (`--json`).
        let v = super::common::stdout_json(&out);
        assert_eq!(v["error"]["kind"], kind, "{v}");
        // The chain of a store that cannot be reached cannot be verified.
        let out = bin()
            .args(["audit", "verify", "--state", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{url}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    }
}
