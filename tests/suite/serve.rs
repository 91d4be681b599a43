//! The HTTP service: every route in-process (router without a socket),
//! auth, rate, concurrency, body and budget limits, the confirmation flow;
//! then over a real loopback socket, graceful shutdown, and a bounded load
//! test (1000 calls at 50 concurrent, every one audited, chain verified).

use super::common::rt;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate::budget::Budgets;
use toolgate::server::auth::Tokens;
use toolgate::server::http::{self, App, Config};
use toolgate::{Executor, Policy};
use tower::ServiceExt;

const OPERATOR: &str = "operator-token-0123456789";
const AGENT: &str = "agent-token-0123456789abc";

fn tokens() -> Tokens {
    Tokens::from_toml(
        &format!(
            r#"
[[tokens]]
principal = "operator"
token = "{OPERATOR}"
approve = true

[[tokens]]
principal = "agent"
token = "{AGENT}"
tools = ["run_code", "read_file", "list_dir"]
"#
        ),
        "test",
    )
    .unwrap()
}

struct Svc {
    app: Arc<App>,
    audit: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn svc(cfg: Config, budgets: Budgets) -> Svc {
    let dir = super::common::workspace();
    // The audit log lives outside the workspace the agent can write.
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let log = Arc::new(toolgate::audit::AuditLog::open(&audit, None).unwrap());
    let exec = Executor::builder(Policy::builtin_default())
        .workspace(dir.path())
        .approver(Arc::new(toolgate::gate::External))
        .confirmation_ttl(Duration::from_secs(30))
        .budgets(budgets)
        .audit(log.clone())
        .wasm(Some(toolgate::WasmConfig {
            pool_size: 2,
            ..Default::default()
        }))
        .build()
        .unwrap();
    Svc {
        app: App::new(Arc::new(exec), tokens(), cfg),
        audit,
        _dirs: (dir, adir),
    }
}

/// How long a test waits for a call to finish: a bound so that a broken
/// service fails the test instead of hanging it, far above what any call
/// here takes on a loaded machine (no figure here is a timing claim).
const SETTLE: Duration = Duration::from_secs(60);

/// The call's state once it is neither pending nor running (or the last
/// state seen at the [`SETTLE`] bound).
async fn settled(app: &Arc<App>, id: &str) -> Value {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let v = send(app, "GET", &format!("/v1/calls/{id}"), Some(AGENT), None)
            .await
            .2;
        let busy = v["status"] == "pending" || v["status"] == "running";
        if !busy || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn send(
    app: &Arc<App>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = b
        .body(match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let res = http::router(app.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

fn py(code: &str) -> Value {
    json!({"tool": "run_code", "args": {"language": "python", "code": code}})
}

#[test]
fn every_documented_route_exists_and_security_headers_are_set() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        for r in toolgate::server::openapi::ROUTES {
            let path = r.path.replace("{id}", "nope").replace("{name}", "nope");
            let body = (r.method == "post").then(|| json!({}));
            let (status, headers, _) = send(
                &s.app,
                &r.method.to_uppercase(),
                &path,
                Some(OPERATOR),
                body,
            )
            .await;
            assert!(
                status != StatusCode::NOT_FOUND || path.ends_with("nope"),
                "{} {path}: {status}",
                r.method
            );
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{} {path}",
                r.method
            );
            assert_ne!(status, StatusCode::NOT_IMPLEMENTED, "{} {path}", r.method);
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(headers["cache-control"], "no-store");
        }
        let doc = send(&s.app, "GET", "/openapi.json", Some(OPERATOR), None)
            .await
            .2;
        assert_eq!(doc["openapi"], "3.1.0");
        for r in toolgate::server::openapi::ROUTES {
            assert!(
                doc["paths"][r.path][r.method].is_object(),
                "{} {}",
                r.method,
                r.path
            );
        }
        // An undocumented route does not exist.
        let (st, _, _) = send(&s.app, "GET", "/v1/secret-admin", Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    });
}

#[test]
fn auth_failures_say_only_unauthorized_or_forbidden() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        let (st, _, v) = send(&s.app, "GET", "/healthz", None, None).await;
        assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let (st, h, v) = send(&s.app, "POST", "/v1/calls", token, Some(py("print(1)"))).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            assert_eq!(h["www-authenticate"], "Bearer");
            assert_eq!(v["error"]["message"], "unauthorized");
        }
        // The agent may not run commands, list or answer confirmations, or read the audit log.
        let cmd = json!({"tool": "run_command", "args": {"command": "ls"}});
        for (m, p, b) in [
            ("POST", "/v1/calls", Some(cmd)),
            ("GET", "/v1/confirmations", None),
            (
                "POST",
                "/v1/confirmations/x",
                Some(json!({"approve": true})),
            ),
            ("GET", "/v1/audit", None),
        ] {
            let (st, _, v) = send(&s.app, m, p, Some(AGENT), b).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{m} {p}");
            assert_eq!(v["error"]["message"], "forbidden");
        }
        // Tools listed are the agent's own.
        let (_, _, v) = send(&s.app, "GET", "/v1/tools", Some(AGENT), None).await;
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!names.contains(&"run_command"));
    });
}

#[test]
fn calls_dry_runs_and_bad_input() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(6*7)")),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            (v["status"].as_str(), v["stdout"].as_str()),
            (Some("completed"), Some("42\n"))
        );
        let id = v["id"].as_str().unwrap().to_string();
        let (st, _, v) = send(&s.app, "GET", &format!("/v1/calls/{id}"), Some(AGENT), None).await;
        assert_eq!((st, v["stdout"].as_str()), (StatusCode::OK, Some("42\n")));
        // Another principal (not an approver) cannot see it.
        let (st, _, _) = send(&s.app, "GET", "/v1/calls/nope", Some(AGENT), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // Dry run: the verdict and plan, nothing runs.
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls?dry_run=true",
            Some(OPERATOR),
            Some(json!({"tool": "run_command", "args": {"command": "rm -rf /"}})),
        )
        .await;
        assert_eq!(
            (st, v["decision"].as_str()),
            (StatusCode::OK, Some("deny")),
            "{v}"
        );
        assert!(v["plan"].is_object());
        // OpenAI shape.
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(
                json!({"id": "call_1", "type": "function", "function": {"name": "run_code",
                "arguments": "{\"language\":\"python\",\"code\":\"print(2)\"}"}}),
            ),
        )
        .await;
        assert_eq!(
            (st, v["stdout"].as_str()),
            (StatusCode::OK, Some("2\n")),
            "{v}"
        );
        // Denied by policy: 200 with a denied Outcome and its reasons.
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(OPERATOR),
            Some(json!({"tool": "run_command", "args": {"command": "sudo rm -rf /"}})),
        )
        .await;
        assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("denied")));
        assert!(!v["reasons"].as_array().unwrap().is_empty());
        // Bad input: 400 with a kind.
        for (body, kind) in [
            (json!({"tool": "format_disk", "args": {}}), "unknown_tool"),
            (
                json!({"tool": "run_code", "args": {"language": "cobol", "code": "x"}}),
                "invalid_arguments",
            ),
        ] {
            let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(OPERATOR), Some(body)).await;
            assert_eq!(
                (st, v["error"]["kind"].as_str()),
                (StatusCode::BAD_REQUEST, Some(kind)),
                "{v}"
            );
        }
        let req = Request::builder()
            .method("POST")
            .uri("/v1/calls")
            .header("authorization", format!("Bearer {OPERATOR}"))
            .body(Body::from("{not json"))
            .unwrap();
        let res = http::router(s.app.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        // A reused id is refused.
        let body = json!({"id": "dup", "tool": "list_dir", "args": {"path": "."}});
        assert_eq!(
            send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(body.clone()))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(body))
                .await
                .0,
            StatusCode::CONFLICT
        );
    });
}

#[test]
fn confirmation_flow_over_http() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        let ask = |id: &str| json!({"id": id, "tool": "read_file", "args": {"path": ".env"}});
        let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(ask("a1"))).await;
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::ACCEPTED, Some("pending")),
            "{v}"
        );
        let conf = v["confirmation_id"].as_str().unwrap().to_string();
        let (_, _, v) = send(&s.app, "GET", "/v1/calls/a1", Some(AGENT), None).await;
        assert_eq!(v["confirmation_id"].as_str(), Some(conf.as_str()));
        let (_, _, list) = send(&s.app, "GET", "/v1/confirmations", Some(OPERATOR), None).await;
        assert_eq!(list[0]["id"].as_str(), Some(conf.as_str()));
        assert_eq!(list[0]["call_id"], "a1");
        let path = format!("/v1/confirmations/{conf}");
        let (st, _, _) = send(
            &s.app,
            "POST",
            &path,
            Some(OPERATOR),
            Some(json!({"approve": true, "note": "checked"})),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let (st, _, _) = send(
            &s.app,
            "POST",
            &path,
            Some(OPERATOR),
            Some(json!({"approve": false})),
        )
        .await;
        assert_eq!(st, StatusCode::CONFLICT, "answered twice");
        let (st, _, _) = send(
            &s.app,
            "POST",
            "/v1/confirmations/conf_unknown",
            Some(OPERATOR),
            Some(json!({"approve": true})),
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // Unknown and answered ids are judged before the body: an empty
        // body does not turn them into a 400.
        for (path, want) in [
            (
                "/v1/confirmations/conf_unknown".to_string(),
                StatusCode::NOT_FOUND,
            ),
            (path.clone(), StatusCode::CONFLICT),
        ] {
            let (st, _, v) = send(&s.app, "POST", &path, Some(OPERATOR), None).await;
            assert_eq!(st, want, "{path}: {v}");
            assert!(v["error"]["kind"].is_string(), "JSON error shape: {v}");
        }
        // The call ran once approved; the answer is on the Outcome.
        let v = settled(&s.app, "a1").await;
        assert_eq!(v["status"], "completed", "{v}");
        assert!(v["stdout"].as_str().unwrap().contains("API_KEY"));
        assert_eq!(v["confirmation"]["by"], "operator");
        // Rejected, and waiting for the answer with ?wait.
        let (_, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(ask("a2"))).await;
        let conf = v["confirmation_id"].as_str().unwrap().to_string();
        let app = s.app.clone();
        let waiter = tokio::spawn(async move {
            send(
                &app,
                "POST",
                "/v1/calls?wait=5",
                Some(AGENT),
                Some(json!({"id": "a3", "tool": "read_file", "args": {"path": ".env"}})),
            )
            .await
        });
        send(
            &s.app,
            "POST",
            &format!("/v1/confirmations/{conf}"),
            Some(OPERATOR),
            Some(json!({"approve": false})),
        )
        .await;
        // a3 waits; reject it too once it shows up.
        let mut answered = false;
        let deadline = std::time::Instant::now() + SETTLE;
        while std::time::Instant::now() < deadline {
            let (_, _, list) = send(&s.app, "GET", "/v1/confirmations", Some(OPERATOR), None).await;
            if let Some(c) = list
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["call_id"] == "a3")
            {
                let id = c["id"].as_str().unwrap();
                send(
                    &s.app,
                    "POST",
                    &format!("/v1/confirmations/{id}"),
                    Some(OPERATOR),
                    Some(json!({"approve": false, "note": "no"})),
                )
                .await;
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(answered);
        let (st, _, v) = waiter.await.unwrap();
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::OK, Some("denied")),
            "{v}"
        );
        // The rejected call's task publishes its result when it next runs
        // (under load, after this answer came back).
        let v = settled(&s.app, "a2").await;
        assert_eq!(v["status"], "denied", "{v}");
    });
}

#[test]
fn rate_concurrency_body_and_budget_limits() {
    rt().block_on(async {
        // Requests per principal per minute.
        let s = svc(
            Config {
                requests: Budgets {
                    per_minute: Some(3),
                    ..Budgets::default()
                },
                ..Config::default()
            },
            Budgets::default(),
        );
        for _ in 0..3 {
            assert_eq!(
                send(&s.app, "GET", "/v1/tools", Some(AGENT), None).await.0,
                StatusCode::OK
            );
        }
        let (st, h, v) = send(&s.app, "GET", "/v1/tools", Some(AGENT), None).await;
        assert_eq!(
            (st, v["error"]["kind"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
        );
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        // Another principal is not affected.
        assert_eq!(
            send(&s.app, "GET", "/v1/tools", Some(OPERATOR), None)
                .await
                .0,
            StatusCode::OK
        );

        // Global concurrency: one slot, held by a sleeping call.
        let s = svc(
            Config {
                max_concurrent: 1,
                max_body: 1024,
                ..Config::default()
            },
            Budgets::default(),
        );
        let app = s.app.clone();
        let slow = tokio::spawn(async move {
            send(
                &app,
                "POST",
                "/v1/calls",
                Some(AGENT),
                Some(py("import time\ntime.sleep(1.5)\nprint('slept')")),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (st, h, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(1)")),
        )
        .await;
        assert_eq!(
            (st, v["error"]["kind"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("busy")),
            "{v}"
        );
        assert_eq!(h["retry-after"], "1");
        assert_eq!(slow.await.unwrap().2["stdout"], "slept\n");
        assert_eq!(
            send(
                &s.app,
                "POST",
                "/v1/calls",
                Some(AGENT),
                Some(py("print(1)"))
            )
            .await
            .0,
            StatusCode::OK
        );
        // Body size.
        let big = py(&format!("print('{}')", "x".repeat(2000)));
        let (st, _, _) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(big)).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);

        // The executor's budget: two calls per principal.
        let s = svc(
            Config::default(),
            Budgets {
                calls: Some(2),
                ..Budgets::default()
            },
        );
        for _ in 0..2 {
            assert_eq!(
                send(
                    &s.app,
                    "POST",
                    "/v1/calls",
                    Some(AGENT),
                    Some(py("print(1)"))
                )
                .await
                .0,
                StatusCode::OK
            );
        }
        let (st, h, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(1)")),
        )
        .await;
        assert_eq!(
            (st, v["error"]["kind"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("budget_exhausted")),
            "{v}"
        );
        assert!(h.contains_key("retry-after"));
        // The refusal is audited like any call.
        let entries = toolgate::audit::read_entries(&s.audit).unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["kind"] == "call" && e["outcome"]["error_kind"] == "budget_exhausted")
        );
    });
}

#[test]
fn every_request_is_audited_with_its_principal() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(1)")),
        )
        .await;
        send(&s.app, "GET", "/v1/tools", Some(OPERATOR), None).await;
        send(
            &s.app,
            "GET",
            "/v1/tools",
            Some("bad-token-0123456789"),
            None,
        )
        .await;
        let e = toolgate::audit::read_entries(&s.audit).unwrap();
        let req: Vec<(&str, &str, u64)> = e
            .iter()
            .filter(|e| e["kind"] == "request")
            .map(|e| {
                (
                    e["principal"].as_str().unwrap(),
                    e["path"].as_str().unwrap(),
                    e["status"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            req,
            vec![
                ("agent", "/v1/calls", 200),
                ("operator", "/v1/tools", 200),
                ("-", "/v1/tools", 401)
            ]
        );
        assert!(
            e.iter()
                .any(|e| e["kind"] == "call" && e["principal"] == "agent")
        );
        toolgate::audit::verify(std::slice::from_ref(&s.audit), None).unwrap();
        // The audit endpoint reads it back.
        let (_, _, v) = send(
            &s.app,
            "GET",
            "/v1/audit?kind=call&principal=agent",
            Some(OPERATOR),
            None,
        )
        .await;
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        // `since_ms` filters by time (it was a 400 for every value).
        let (st, _, v) = send(
            &s.app,
            "GET",
            "/v1/audit?kind=call&since_ms=1",
            Some(OPERATOR),
            None,
        )
        .await;
        assert_eq!(
            (st.as_u16(), v.as_array().map(Vec::len)),
            (200, Some(1)),
            "{v}"
        );
        let future = toolgate::units::now_ms() + 3_600_000;
        let (st, _, v) = send(
            &s.app,
            "GET",
            &format!("/v1/audit?kind=call&since_ms={future}"),
            Some(OPERATOR),
            None,
        )
        .await;
        assert_eq!(
            (st.as_u16(), v.as_array().map(Vec::len)),
            (200, Some(0)),
            "{v}"
        );
        // An unreadable query is a 400 with the JSON error shape.
        for path in ["/v1/audit?limit=many", "/v1/audit?since_ms=-1"] {
            let (st, _, v) = send(&s.app, "GET", path, Some(OPERATOR), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(v["error"]["kind"], "invalid_query", "{path}: {v}");
        }
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls?dry_run=maybe",
            Some(AGENT),
            Some(json!({"tool": "list_dir", "args": {"path": "."}})),
        )
        .await;
        assert_eq!(
            (st, &v["error"]["kind"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_query"))
        );
    });
}

/// A minimal HTTP/1.1 client over a loopback socket.
pub(super) async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn start(
    s: &Svc,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (atx, arx) = tokio::sync::oneshot::channel();
    let app = s.app.clone();
    let h = tokio::spawn(async move {
        http::serve(
            app,
            "127.0.0.1:0".parse().unwrap(),
            false,
            async {
                let _ = rx.await;
            },
            move |a| {
                let _ = atx.send(a);
            },
        )
        .await
        .unwrap();
    });
    (arx.await.unwrap(), tx, h)
}

#[test]
fn loopback_socket_and_graceful_shutdown() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        // Only loopback unless explicitly allowed (nothing is sent anywhere).
        let err = http::serve(
            s.app.clone(),
            "0.0.0.0:0".parse().unwrap(),
            false,
            async {},
            |_| {},
        )
        .await;
        assert!(
            matches!(err, Err(http::ServeError::NonLoopback(_))),
            "{err:?}"
        );
        let (addr, stop, handle) = start(&s).await;
        assert!(addr.ip().is_loopback());
        let (st, v) = raw(
            addr,
            "POST",
            "/v1/calls",
            AGENT,
            &py("print('over tcp')").to_string(),
        )
        .await;
        assert_eq!((st, v["stdout"].as_str()), (200, Some("over tcp\n")));
        // A call in flight when the shutdown comes: it finishes.
        let inflight = tokio::spawn(async move {
            let body = json!({"id": "f1", "tool": "run_code", "args": {"language": "python",
                "code": "import time\ntime.sleep(1)\nprint('finished')"}})
            .to_string();
            raw(addr, "POST", "/v1/calls", AGENT, &body).await
        });
        let (st, v) = raw(
            addr,
            "POST",
            "/v1/calls",
            AGENT,
            &json!({"id": "p1", "tool": "read_file", "args": {"path": ".env"}}).to_string(),
        )
        .await;
        assert_eq!((st, v["status"].as_str()), (202, Some("pending")));
        // Shut down: the pending confirmation is rejected and audited.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .unwrap()
            .unwrap();
        let e = toolgate::audit::read_entries(&s.audit).unwrap();
        let result = |id: &str| e.iter().find(|e| e["call_id"] == id && e["kind"] == "call");
        let p1 = result("p1").expect("p1 audited");
        assert_eq!(p1["confirmation"]["by"], "shutdown");
        assert_eq!(p1["outcome"]["status"], "denied");
        let (st, v) = inflight.await.unwrap();
        assert_eq!((st, v["stdout"].as_str()), (200, Some("finished\n")), "{v}");
        let f1 = result("f1").expect("f1 audited");
        // It ran: its intent was on record before it started.
        assert!(
            e.iter()
                .any(|e| e["call_id"] == "f1" && e["kind"] == "intent")
        );
        assert!(
            !e.iter()
                .any(|e| e["call_id"] == "p1" && e["kind"] == "intent")
        );
        assert_eq!(f1["outcome"]["status"], "completed");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening"
        );
    });
}

#[test]
fn load_1000_calls_at_50_concurrent() {
    let _heavy = super::common::heavy();
    rt().block_on(async {
        let s = svc(
            Config {
                requests: Budgets::default(),
                ..Config::default()
            },
            Budgets::default(),
        );
        let (addr, stop, handle) = start(&s).await;
        // Python is what the issue asks for; JavaScript shows the service's
        // own overhead (its interpreter starts in about a millisecond).
        for (lang, code, want) in [
            ("python", "print(sum(range(100)))", "4950\n"),
            ("javascript", "console.log(4950)", "4950\n"),
        ] {
            let body = Arc::new(
                json!({"tool": "run_code", "args": {"language": lang, "code": code}}).to_string(),
            );
            let sem = Arc::new(tokio::sync::Semaphore::new(50));
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..1000 {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let r = raw(addr, "POST", "/v1/calls", AGENT, &body).await;
                    drop(permit);
                    (r, t.elapsed())
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                let ((st, v), d) = tokio::time::timeout(Duration::from_secs(300), t)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!((st, v["stdout"].as_str()), (200, Some(want)), "{v}");
                lat.push(d);
            }
            let total = t0.elapsed();
            lat.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            eprintln!(
                "LOAD {lang}: 1000 calls, 50 concurrent: {:.0} req/s, p50 {:.1} ms, p95 {:.1} ms (total {:.1} s)",
                1000.0 / total.as_secs_f64(),
                ms(lat[500]),
                ms(lat[950]),
                total.as_secs_f64()
            );
        }
        stop.send(()).unwrap();
        handle.await.unwrap();
        // Every call and every request audited; the chain verifies with the CLI.
        let e = toolgate::audit::read_entries(&s.audit).unwrap();
        assert_eq!(e.iter().filter(|e| e["kind"] == "call").count(), 2000);
        assert_eq!(e.iter().filter(|e| e["kind"] == "intent").count(), 2000);
        assert_eq!(e.iter().filter(|e| e["kind"] == "request").count(), 2000);
        let out = super::common::bin()
            .args(["audit", "verify", s.audit.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", super::common::stderr(&out));
    });
}

#[test]
fn serve_refuses_bad_settings_with_one_line() {
    use super::common::{bin, stderr};
    let out = bin()
        .arg("serve")
        .env_remove("TOOLGATE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "toolgate: error: no tokens: set TOOLGATE_TOKEN or pass --tokens FILE"
    );
    let out = bin()
        .args(["serve", "--json", "--listen", "0.0.0.0:7999"])
        .env("TOOLGATE_TOKEN", "0123456789abcdef0123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v = super::common::stdout_json(&out);
    assert_eq!(v["error"]["kind"], "usage");
    let out = bin()
        .arg("serve")
        .env("TOOLGATE_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tokens.toml");
    std::fs::write(&f, "[[tokens]]\nprincipal = 'a'\ntoken = 'x'\nextra = 1\n").unwrap();
    let out = bin()
        .args(["serve", "--tokens", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

/// CPU seconds are measured by the sandbox and charged to the principal:
/// a busy call spends the budget, the next call is refused.
#[test]
fn cpu_budget_binds_on_measured_cpu() {
    rt().block_on(async {
        let s = svc(
            Config::default(),
            Budgets {
                cpu_seconds: Some(0.05),
                ..Budgets::default()
            },
        );
        // A fixed amount of work, not a wall-clock loop: on a loaded machine
        // half a second of wall time may be little CPU. A million squares
        // take about 550 ms of CPU in this CPython build here; the budget is
        // a tenth of that.
        let busy = py("print(sum(i * i for i in range(10**6)) > 0 and 'spun')");
        let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(busy)).await;
        assert_eq!(
            (st, v["stdout"].as_str()),
            (StatusCode::OK, Some("spun\n")),
            "{v}"
        );
        let cpu = v["cpu_ms"].as_f64().expect("wasm reports CPU time");
        assert!(cpu >= 50.0, "a million squares used {cpu} ms CPU");
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(1)")),
        )
        .await;
        assert_eq!(
            (st, v["error"]["kind"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("budget_exhausted")),
            "{v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("CPU seconds")
        );
        // Another principal has its own budget.
        let (st, _, _) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(OPERATOR),
            Some(py("print(1)")),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    });
}

/// A route's status and body as text (for `/metrics`).
async fn send_text(
    app: &Arc<App>,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut b = Request::builder().method("GET").uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let res = http::router(app.clone())
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

/// Issue 11: `GET /metrics` counts calls by tool, decision, status and
/// backend, times each stage, and needs a token like every other route.
#[test]
fn metrics_count_calls_by_outcome_and_need_a_token() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        let (st, _, _) = send_text(&s.app, "/metrics", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _, _) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(py("print(1)"))).await;
        assert_eq!(st, StatusCode::OK);
        let hook = json!({"tool": "write_file", "args": {"path": ".git/config", "content": "x"}});
        let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(OPERATOR), Some(hook)).await;
        assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("denied")));
        let spin = py("while True: pass");
        let (_, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(spin)).await;
        assert_eq!(v["status"], "killed", "{v}");
        // CPU or, on a loaded machine, wall time: whichever stopped it is counted.
        let hit = v["limits_hit"][0].as_str().unwrap().to_string();
        let (st, ctype, text) = send_text(&s.app, "/metrics", Some(AGENT)).await;
        assert_eq!(st, StatusCode::OK);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        for line in [
            r#"toolgate_calls_total{tool="run_code",decision="allow",status="completed",backend="wasm"} 1"#,
            r#"toolgate_calls_total{tool="run_code",decision="allow",status="killed",backend="wasm"} 1"#,
            r#"toolgate_calls_total{tool="write_file",decision="deny",status="denied",backend="host"} 1"#,
            format!(r#"toolgate_limits_hit_total{{limit="{hit}"}} 1"#).as_str(),
            "toolgate_pending_confirmations 0",
            r#"toolgate_stage_seconds_count{stage="execute"} 2"#,
            // Intent and result for the two that ran; a result for the denial.
            r#"toolgate_stage_seconds_count{stage="audit"} 5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains(r#"toolgate_pool_warm{backend="wasm"}"#), "{text}");
        // Labels are closed vocabularies: no code or argument leaks in.
        assert!(!text.contains("while True") && !text.contains(".git/config"));
    });
}

/// Issue 11: a workspace that vanished under a running service is the
/// caller's problem (400 bad_workspace) on every tool, never a 500.
#[test]
fn a_vanished_workspace_is_bad_workspace_not_internal() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        std::fs::remove_dir_all(s._dirs.0.path()).unwrap();
        for body in [
            json!({"tool": "read_file", "args": {"path": "README.md"}}),
            json!({"tool": "list_dir", "args": {"path": "."}}),
            py("print(1)"),
        ] {
            let (st, _, v) =
                send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(body.clone())).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
            assert_eq!(v["error"]["kind"], "bad_workspace", "{body}: {v}");
        }
    });
}

/// Issue 11: `toolgate serve --log-format json` logs JSON lines on stderr —
/// where it listens, and a span per call with its id, tool and decision.
#[test]
fn serve_logs_json_lines_with_the_call_span() {
    use std::io::BufRead;
    let ws = super::common::workspace();
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let mut child = super::common::bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--workspace", ws.path().to_str().unwrap()])
        .args(["--audit", audit.to_str().unwrap()])
        .env("TOOLGATE_TOKEN", OPERATOR)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("serve ended before listening").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        seen.push(v.clone());
        if let Some(a) = v["fields"]["addr"].as_str() {
            break a.parse().unwrap();
        }
    };
    let body = json!({"id": "logged-1", "tool": "run_code", "args": {"language": "python", "code": "print(2)"}});
    let (st, v) = rt().block_on(raw(addr, "POST", "/v1/calls", OPERATOR, &body.to_string()));
    assert_eq!((st, v["stdout"].as_str()), (200, Some("2\n")), "{v}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    for line in lines {
        let line = line.unwrap();
        seen.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    assert!(child.wait().unwrap().success());
    let finished = seen
        .iter()
        .find(|v| v["fields"]["message"] == "call finished")
        .expect("a call finished event");
    assert_eq!(finished["span"]["call_id"], "logged-1");
    assert_eq!(finished["span"]["tool"], "run_code");
    assert_eq!(finished["span"]["principal"], "agent");
    assert_eq!(finished["span"]["decision"], "allow");
    assert_eq!(finished["fields"]["status"], "completed");
    assert!(seen.iter().any(|v| v["fields"]["message"] == "stopped"));
}

/// Issue 12: an approver cannot answer a confirmation of its own call
/// (403 `own_call`), and calls waiting for a human hold no concurrency
/// slot: with two slots, three pending asks still let a call run.
#[test]
fn own_calls_cannot_be_approved_and_pending_asks_hold_no_slot() {
    rt().block_on(async {
        let s = svc(
            Config {
                max_concurrent: 2,
                ..Config::default()
            },
            Budgets::default(),
        );
        let ask = |id: &str| json!({"id": id, "tool": "read_file", "args": {"path": ".env"}});
        let mut confs = Vec::new();
        for id in ["own", "p2", "p3"] {
            let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(OPERATOR), Some(ask(id))).await;
            assert_eq!(st, StatusCode::ACCEPTED, "{v}");
            confs.push(v["confirmation_id"].as_str().unwrap().to_string());
        }
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(3)")),
        )
        .await;
        assert_eq!(
            (st, v["stdout"].as_str()),
            (StatusCode::OK, Some("3\n")),
            "{v}"
        );
        // The operator made these calls: it may not approve (or reject) them.
        for approve in [true, false] {
            let (st, _, v) = send(
                &s.app,
                "POST",
                &format!("/v1/confirmations/{}", confs[0]),
                Some(OPERATOR),
                Some(json!({"approve": approve})),
            )
            .await;
            assert_eq!(
                (st, v["error"]["kind"].as_str()),
                (StatusCode::FORBIDDEN, Some("own_call"))
            );
        }
        let (_, _, v) = send(&s.app, "GET", "/v1/calls/own", Some(OPERATOR), None).await;
        assert_eq!(v["status"], "pending", "{v}");
        let pending = send(&s.app, "GET", "/v1/confirmations", Some(OPERATOR), None)
            .await
            .2;
        assert!(
            pending
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["principal"] == "operator")
        );
    });
}

/// `?wait=NaN` (or inf, or negative) on a call that asks is a 400 before
/// anything is registered, not a panicked handler with a dangling
/// confirmation (reported in issue 18).
#[test]
fn a_non_finite_wait_is_refused_before_the_call_is_taken() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        for w in ["NaN", "inf", "-1", "3601", "1e300"] {
            let body = json!({"tool": "read_file", "args": {"path": ".env"}});
            let (st, _, v) = send(
                &s.app,
                "POST",
                &format!("/v1/calls?wait={w}"),
                Some(AGENT),
                Some(body),
            )
            .await;
            assert_eq!(
                (st, v["error"]["kind"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_query")),
                "{w}: {v}"
            );
        }
        let (_, _, pending) = send(&s.app, "GET", "/v1/confirmations", Some(OPERATOR), None).await;
        assert_eq!(pending, json!([]));
    });
}

/// A misspelt query parameter is refused, not ignored (`dryrun=true`
/// ignored would run the call for real), and the service's `max_wait` is
/// both enforced and declared in its OpenAPI document.
#[test]
fn unknown_parameters_are_refused_and_max_wait_is_what_the_document_says() {
    rt().block_on(async {
        let s = svc(
            Config {
                max_wait: Duration::from_secs(2),
                ..Config::default()
            },
            Budgets::default(),
        );
        let write = json!({"tool": "run_code", "args": {"language": "python",
            "code": "open('ran.txt', 'w').write('x')"}});
        for q in ["dryrun=true", "wait=3", "dry_run=true&timeout=1"] {
            let (st, _, v) = send(
                &s.app,
                "POST",
                &format!("/v1/calls?{q}"),
                Some(AGENT),
                Some(write.clone()),
            )
            .await;
            assert_eq!(
                (st, v["error"]["kind"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_query")),
                "{q}: {v}"
            );
        }
        assert!(
            !s._dirs.0.path().join("ran.txt").exists(),
            "a refused request ran"
        );
        let (st, _, doc) = send(&s.app, "GET", "/openapi.json", Some(AGENT), None).await;
        assert_eq!(st, StatusCode::OK);
        let wait = doc["paths"]["/v1/calls"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "wait")
            .unwrap()
            .clone();
        assert_eq!(wait["schema"]["maximum"], json!(2.0), "{wait}");
        let (st, _, _) = send(
            &s.app,
            "POST",
            "/v1/calls?wait=2&dry_run=true",
            Some(AGENT),
            Some(write),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    });
}

/// An allowed call whose changes to the workspace ask answers 202 with the
/// confirmation, holds no slot while it waits (one slot, and another call
/// runs meanwhile), and applies the change only once an approver says yes.
#[test]
fn changes_that_ask_wait_for_an_approver_without_holding_a_slot() {
    rt().block_on(async {
        let s = svc(
            Config {
                max_concurrent: 1,
                ..Config::default()
            },
            Budgets::default(),
        );
        let write = json!({"id": "w1", "tool": "run_code", "args": {"language": "python",
            "code": "open('.env.local', 'w').write('X=1\\n')"}});
        let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(write)).await;
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::ACCEPTED, Some("pending")),
            "{v}"
        );
        let conf = v["confirmation_id"].as_str().unwrap().to_string();
        let (_, _, list) = send(&s.app, "GET", "/v1/confirmations", Some(OPERATOR), None).await;
        assert_eq!(list[0]["tool"], "run_code (workspace changes)", "{list}");
        assert!(list[0]["args"].to_string().contains(".env.local"), "{list}");
        // The only slot is free: another call runs to its end.
        let (st, _, v) = send(
            &s.app,
            "POST",
            "/v1/calls",
            Some(AGENT),
            Some(py("print(2)")),
        )
        .await;
        assert_eq!(
            (st, v["stdout"].as_str()),
            (StatusCode::OK, Some("2\n")),
            "{v}"
        );
        // The agent cannot approve its own changes; the operator can.
        let path = format!("/v1/confirmations/{conf}");
        let (st, _, _) = send(
            &s.app,
            "POST",
            &path,
            Some(AGENT),
            Some(json!({"approve": true})),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, _, _) = send(
            &s.app,
            "POST",
            &path,
            Some(OPERATOR),
            Some(json!({"approve": true})),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let v = settled(&s.app, "w1").await;
        let c = &v["changes"][0];
        assert_eq!(
            (c["path"].as_str(), c["applied"].as_bool()),
            (Some(".env.local"), Some(true)),
            "{v}"
        );
    });
}

/// The OpenAPI document is valid 3.1 by a maintained validator
/// (`openapi-spec-validator`, installed by `.ci/run` into
/// `target/pytools`; `TOOLGATE_REQUIRE_VALIDATOR=1` makes its absence a
/// failure), and every response of every route says what its body is.
#[test]
fn the_openapi_document_is_valid_3_1() {
    let doc = toolgate::server::openapi::document();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (code, resp) in op["responses"].as_object().unwrap() {
                assert!(
                    resp["content"].is_object(),
                    "{method} {path} {code}: no content schema"
                );
            }
        }
    }
    let params = &doc["paths"]["/v1/audit"]["get"]["parameters"];
    assert!(
        params
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "since_ms")
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("openapi.json");
    std::fs::write(&f, doc.to_string()).unwrap();
    let tools = std::env::var_os("TOOLGATE_PYTOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pytools"));
    #[allow(clippy::disallowed_methods)]
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", &tools)
        .arg("-c")
        .arg("import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')")
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("ModuleNotFoundError") {
        assert!(
            std::env::var_os("TOOLGATE_REQUIRE_VALIDATOR").is_none_or(|v| v != "1"),
            "TOOLGATE_REQUIRE_VALIDATOR=1 but openapi-spec-validator is not in {tools:?}"
        );
        eprintln!(
            "SKIPPED: openapi-spec-validator is not installed in {tools:?} (.ci/run installs it)"
        );
        return;
    }
    assert!(out.status.success(), "invalid OpenAPI 3.1 document: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");
}

#[test]
fn sessions_over_http_belong_to_their_principal() {
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        let turn = |code: &str| {
            json!({"tool": "run_code", "args": {"language": "python", "code": code, "session": "nb"}})
        };
        let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(turn("n = 20"))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let (_, _, v) = send(&s.app, "POST", "/v1/calls", Some(AGENT), Some(turn("n * 2 + 2"))).await;
        assert_eq!(v["stdout"], "42\n", "{v}");
        // The operator's session of the same name is its own.
        let (_, _, v) = send(&s.app, "POST", "/v1/calls", Some(OPERATOR), Some(turn("n"))).await;
        assert!(v["stderr"].as_str().unwrap_or("").contains("NameError"), "{v}");
        let (st, _, v) = send(&s.app, "GET", "/v1/sessions", Some(AGENT), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!((v[0]["name"].as_str(), v[0]["turns"].as_u64(), v.as_array().map(Vec::len)), (Some("nb"), Some(2), Some(1)), "{v}");
        let (st, _, _) = send(&s.app, "DELETE", "/v1/sessions/nb", Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK, "the operator closes its own");
        let (_, _, v) = send(&s.app, "GET", "/v1/sessions", Some(AGENT), None).await;
        assert_eq!(v[0]["state"], "open", "the agent's session is untouched: {v}");
        let (st, _, v) = send(&s.app, "DELETE", "/v1/sessions/nb", Some(AGENT), None).await;
        assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("closed")));
        let (st, _, _) = send(&s.app, "DELETE", "/v1/sessions/nb", Some(AGENT), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    });
}

#[test]
fn a_working_directory_that_is_not_in_the_workspace_fails_the_tool() {
    // Found by Schemathesis: a missing cwd reached the native sandbox's
    // setup and came back as a 500; a 400 would reject a schema-valid call.
    rt().block_on(async {
        let s = svc(Config::default(), Budgets::default());
        for cwd in ["no-such-dir", "\u{10fbc0}"] {
            let call = json!({"tool": "run_command", "args": {"command": "ls", "cwd": cwd}});
            let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(OPERATOR), Some(call)).await;
            // A valid call whose tool fails: an Outcome, like read_file of a missing file.
            assert_eq!(
                (st, v["status"].as_str()),
                (StatusCode::OK, Some("failed")),
                "{cwd:?}: {v}"
            );
            assert!(
                v["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not a folder in the workspace"),
                "{v}"
            );
        }
        let call = json!({"tool": "run_command", "args": {"command": "pwd", "cwd": "src"}});
        let (st, _, v) = send(&s.app, "POST", "/v1/calls", Some(OPERATOR), Some(call)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    });
}
