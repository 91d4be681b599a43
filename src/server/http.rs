//! `toolgate serve`: an HTTP JSON API over an [`Executor`].
//!
//! Every route but `/healthz` needs a bearer token; 401 and 403 say only
//! "unauthorized" / "forbidden". Requests are rate limited per principal and
//! calls by a global concurrency cap (429 + `Retry-After`); bodies are size
//! limited; every request is audited with its principal. A call that needs
//! confirmation answers at once with `pending` and the confirmation id; a
//! human (a principal allowed to approve) answers it by id.

use super::auth::{Principal, Tokens};
use super::request::{self, RequestError};
use crate::budget::Budgets;
use crate::gate::Scope;
use crate::state::{CallRecord, REQUESTS};
use crate::{Decision, Error, Executor, ToolCall};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Errors of starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0}: not a loopback address. toolgate serves plain HTTP; put it behind a TLS-terminating proxy and pass --allow-non-loopback"
    )]
    NonLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {detail}")]
    Bind { addr: SocketAddr, detail: String },
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body accepted.
    pub max_body: usize,
    /// Calls running at once, across principals.
    pub max_concurrent: usize,
    /// Requests per principal (all routes but `/healthz`).
    pub requests: Budgets,
    /// How long shutdown waits for calls in flight before closing the
    /// sandboxes under them.
    pub drain: Duration,
    /// Longest `?wait` a call request may ask for (a request holds a
    /// connection that long).
    pub max_wait: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_body: 1 << 20,
            max_concurrent: 64,
            requests: Budgets {
                per_minute: Some(600),
                per_hour: Some(10_000),
                ..Budgets::default()
            },
            drain: Duration::from_secs(30),
            max_wait: request::MAX_WAIT,
        }
    }
}

/// The service's settings as given on a command line, before they are
/// checked: [`Settings::resolve`] turns them into the tokens and [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub allow_non_loopback: bool,
    /// TOML file of `[[tokens]]`; without it `TOOLGATE_TOKEN` is the one
    /// operator token.
    pub tokens_file: Option<std::path::PathBuf>,
    pub max_concurrent: usize,
    /// Largest request body, e.g. `1MiB`.
    pub max_body: String,
    pub requests_per_minute: u32,
    pub requests_per_hour: u32,
    pub drain: Duration,
    /// Longest `?wait`, at most [`request::MAX_WAIT`].
    pub max_wait: Duration,
}

impl Settings {
    /// Checks the settings and loads the tokens. Every problem is a usage
    /// error (exit 2): a non-loopback address without consent, no tokens,
    /// an unreadable or invalid tokens file, a bad size.
    pub fn resolve(&self) -> Result<(Tokens, Config), Error> {
        let usage = Error::Usage;
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(usage(ServeError::NonLoopback(self.listen).to_string()));
        }
        let tokens = match &self.tokens_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| usage(format!("tokens file {}: {e}", p.display())))?;
                Tokens::from_toml(&text, &p.display().to_string())
                    .map_err(|e| usage(e.to_string()))?
            }
            None => {
                let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let Some(agent) = var("TOOLGATE_TOKEN") else {
                    return Err(usage(
                        "no tokens: set TOOLGATE_TOKEN or pass --tokens FILE".into(),
                    ));
                };
                Tokens::from_env(&agent, var("TOOLGATE_APPROVER_TOKEN").as_deref())
                    .map_err(|e| usage(e.to_string()))?
            }
        };
        let max_body = crate::units::parse_size(&self.max_body).map_err(usage)?;
        if self.max_wait > request::MAX_WAIT {
            return Err(usage(format!(
                "--max-wait is at most {} seconds",
                request::MAX_WAIT.as_secs()
            )));
        }
        let cfg = Config {
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            max_concurrent: self.max_concurrent.max(1),
            requests: Budgets {
                per_minute: Some(self.requests_per_minute),
                per_hour: Some(self.requests_per_hour),
                ..Default::default()
            },
            drain: self.drain,
            max_wait: self.max_wait,
        };
        Ok((tokens, cfg))
    }
}

/// Where a call is (pending confirmations are looked up in the gate).
#[derive(Debug, Clone)]
enum CallState {
    Running,
    Done {
        status: StatusCode,
        body: Value,
        retry_after: Option<Duration>,
    },
}

impl CallState {
    fn response(&self) -> Response {
        match self {
            CallState::Done {
                status,
                body,
                retry_after,
            } => {
                let mut r = (*status, Json(body.clone())).into_response();
                if let Some(d) = retry_after
                    && let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string())
                {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            CallState::Running => Json(json!({"status": "running"})).into_response(),
        }
    }
}

/// Shared state of the service. Call records, confirmations, request
/// rates and the audit chain live in the executor's state store, so
/// services sharing one (PostgreSQL) answer for each other's calls.
pub struct App {
    exec: Arc<Executor>,
    tokens: Tokens,
    slots: Arc<Semaphore>,
    /// The calls running here, to wait on them without polling.
    running: Mutex<HashMap<String, watch::Receiver<CallState>>>,
    inflight: Arc<AtomicUsize>,
    cfg: Config,
}

impl App {
    pub fn new(exec: Arc<Executor>, tokens: Tokens, cfg: Config) -> Arc<App> {
        Arc::new(App {
            exec,
            tokens,
            slots: Arc::new(Semaphore::new(cfg.max_concurrent)),
            running: Mutex::new(HashMap::new()),
            inflight: Arc::new(AtomicUsize::new(0)),
            cfg,
        })
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.exec
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<CallState>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new call as running under `id`: `Ok(None)` when the id is
    /// taken (on any service sharing the store).
    async fn register(
        &self,
        id: &str,
        principal: &str,
    ) -> Result<Option<(watch::Sender<CallState>, watch::Receiver<CallState>)>, Error> {
        let fresh = self
            .exec
            .state()
            .start_call(id, principal)
            .await
            .map_err(state_down)?;
        if !fresh {
            return Ok(None);
        }
        let (tx, rx) = watch::channel(CallState::Running);
        self.running().insert(id.to_string(), rx.clone());
        Ok(Some((tx, rx)))
    }
}

fn state_down(e: crate::state::StateError) -> Error {
    Error::State(e)
}

/// The handler of a documented route. Routes exist only through
/// [`super::openapi::ROUTES`], so the document cannot drift from the router.
fn handler(r: &super::openapi::Route) -> MethodRouter<Arc<App>> {
    match (r.method, r.path) {
        ("post", "/v1/calls") => post(post_call),
        ("get", "/v1/calls/{id}") => get(get_call),
        ("get", "/v1/confirmations") => get(list_confirmations),
        ("post", "/v1/confirmations/{id}") => post(answer_confirmation),
        ("get", "/v1/sessions") => get(list_sessions),
        ("delete", "/v1/sessions/{name}") => delete(close_session),
        ("get", "/v1/tools") => get(tools),
        ("get", "/v1/audit") => get(audit_query),
        ("get", "/openapi.json") => get(openapi),
        ("get", "/metrics") => get(metrics),
        ("get", "/healthz") => get(|| async { Json(json!({"status": "ok"})) }),
        // A documented route without a handler fails loudly (and in tests).
        _ => any(|| async {
            error(
                StatusCode::NOT_IMPLEMENTED,
                "internal",
                "documented route without a handler",
            )
        }),
    }
}

/// The API router (no socket): what `serve` runs and the tests call.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.cfg.max_body;
    let (mut api, mut open) = (Router::new(), Router::new());
    for r in super::openapi::ROUTES {
        if r.auth {
            api = api.route(r.path, handler(r));
        } else {
            open = open.route(r.path, handler(r));
        }
    }
    let api = api.layer(middleware::from_fn_with_state(app.clone(), authenticate));
    open.merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(app.clone(), record))
        .with_state(app)
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response()
}

fn too_many(retry_after: Duration, kind: &str, message: &str) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, kind, message);
    let secs = retry_after.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Bearer auth and the per-principal request rate.
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(p) = app.tokens.authenticate(h) else {
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    match app
        .exec
        .state()
        .admit(REQUESTS, &p.name, &app.cfg.requests)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => {
            return too_many(
                refusal.retry_after().unwrap_or(Duration::from_secs(60)),
                "rate_limited",
                &refusal.to_string(),
            );
        }
        // Fail closed: no rate can be judged without the store.
        Err(e) => return error_response(&app.exec, &state_down(e)),
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

/// Security headers on every response, and one audit entry per request.
async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if path != "/healthz" && app.exec.state().audits() {
        let principal = res
            .extensions()
            .get::<Principal>()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "-".into());
        let entry = json!({
            "kind": "request",
            "principal": principal,
            "method": method,
            "path": crate::call::shorten(&path, 200),
            "status": res.status().as_u16(),
        });
        let entry = match entry {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        if app.exec.state().audit(entry).await.is_err() {
            // No unrecorded request is answered as if it were fine.
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "audit log unavailable",
            );
        }
    }
    res
}

/// Marks a response with its principal (for the request audit entry).
fn tag(mut r: Response, p: &Principal) -> Response {
    r.extensions_mut().insert(p.clone());
    r
}

/// Status, body and `Retry-After` of an error.
fn error_state(exec: &Executor, e: &Error) -> CallState {
    // Error text may quote input; it is redacted like every output.
    let mut msg = e.to_string();
    exec.redactor()
        .redact_secrets_into(&mut msg, &mut Default::default());
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    CallState::Done {
        status,
        body: json!({"error": {"kind": e.kind(), "message": msg}}),
        retry_after: match e {
            // A spent budget does not come back within this process.
            Error::Refused(r) => Some(r.retry_after().unwrap_or(Duration::from_secs(3600))),
            _ => None,
        },
    }
}

fn error_response(exec: &Executor, e: &Error) -> Response {
    error_state(exec, e).response()
}

async fn post_call(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    tag(post_call_inner(app, &p, query, body).await, &p)
}

/// A request that cannot be read: 400 with the JSON error shape; the
/// message is redacted (it may quote input).
fn bad_request(exec: &Executor, e: RequestError) -> Response {
    let kind = match e {
        RequestError::Query(_) => "invalid_query",
        RequestError::NotUtf8 => "invalid_call",
        RequestError::Call(e) => return error_response(exec, &Error::from(e)),
    };
    let mut msg = e.to_string();
    exec.redactor()
        .redact_secrets_into(&mut msg, &mut Default::default());
    error(StatusCode::BAD_REQUEST, kind, &msg)
}

async fn post_call_inner(
    app: Arc<App>,
    p: &Principal,
    query: Option<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            return error(r.status(), "bad_body", &r.body_text());
        }
    };
    let q = match request::call_request(query.as_deref(), &body, app.cfg.max_wait) {
        Ok(q) => q,
        Err(e) => return bad_request(&app.exec, e),
    };
    let call = q.call;
    if !p.may_call(call.tool.name()) {
        return error(StatusCode::FORBIDDEN, "forbidden", "forbidden");
    }
    let dry = match app.exec.check(&call) {
        Ok(d) => d,
        Err(e) => return error_response(&app.exec, &e),
    };
    if q.dry_run {
        return Json(dry).into_response();
    }
    let ask = dry.verdict.decision == Decision::Ask;
    // A call waiting for a human holds no slot (the executor bounds what
    // runs after approval), so pending confirmations cannot lock others out.
    let permit = if ask {
        None
    } else {
        match app.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return too_many(
                    Duration::from_secs(1),
                    "busy",
                    "too many calls in flight; retry shortly",
                );
            }
        }
    };
    let (tx, rx) = match app.register(&call.id, &p.name).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                "duplicate_id",
                "a call with this id exists",
            );
        }
        Err(e) => return error_response(&app.exec, &e),
    };
    let id = call.id.clone();
    let permit = Arc::new(Mutex::new(permit));
    spawn_call(&app, call, p.name.clone(), permit.clone(), tx, None);
    let mut rx = rx;
    if ask && let Some(pending) = still_pending(&app, &id, &mut rx, q.wait).await {
        return pending;
    }
    if !ask && let Some(conf) = confirmation_or_done(&app, &id, &mut rx).await {
        // An allowed call whose changes to the workspace wait for a human:
        // from now on it holds no slot, like a call that asks.
        drop(permit.lock().ok().and_then(|mut p| p.take()));
        if let Some(pending) = pending_after(&id, &mut rx, q.wait, Some(conf)).await {
            return pending;
        }
    }
    let state = rx
        .wait_for(|s| matches!(s, CallState::Done { .. }))
        .await
        .map(|s| s.clone());
    match state {
        Ok(s) => s.response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the call ended without a result",
        ),
    }
}

/// Runs a registered call in the background, publishing its result on `tx`.
fn spawn_call(
    app: &Arc<App>,
    call: ToolCall,
    principal: String,
    permit: Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
    tx: watch::Sender<CallState>,
    answered: Option<crate::gate::Answer>,
) {
    let app = app.clone();
    let inflight = app.inflight.clone();
    inflight.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let exec = &app.exec;
        let ran = match answered {
            Some(a) => exec.run_answered(&call, &principal, a).await,
            None => exec.run_as(&call, &principal).await,
        };
        let done = match ran {
            Ok(o) => CallState::Done {
                status: StatusCode::OK,
                body: serde_json::to_value(&o).unwrap_or(Value::Null),
                retry_after: None,
            },
            Err(e) => error_state(exec, &e),
        };
        // The record first: once this service forgets the call, any
        // service sharing the store answers for it.
        if let CallState::Done {
            status,
            body,
            retry_after,
        } = &done
            && let Err(e) = exec
                .state()
                .finish_call(
                    &call.id,
                    status.as_u16(),
                    body,
                    retry_after.map(|d| d.as_secs()),
                )
                .await
        {
            tracing::warn!(error = %e, "a call's result was not recorded in the state store");
        }
        let _ = tx.send(done);
        app.running().remove(&call.id);
        drop(permit.lock().ok().and_then(|mut p| p.take()));
        inflight.fetch_sub(1, Ordering::SeqCst);
    });
}

/// For a call that asks: waits until its confirmation is registered (or a
/// session approval let it run), then up to `wait` seconds for the result.
/// `Some(202 pending)` when it is still waiting for a human.
async fn still_pending(
    app: &App,
    id: &str,
    rx: &mut watch::Receiver<CallState>,
    wait: Option<Duration>,
) -> Option<Response> {
    let gate_id = async {
        // The call runs here, so its confirmation is this gate's: no store
        // is asked while polling.
        loop {
            if let Some(c) = app.exec.gate().waiting_for(id) {
                return Some(c);
            }
            if matches!(*rx.borrow(), CallState::Done { .. }) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let conf = tokio::time::timeout(Duration::from_secs(5), gate_id)
        .await
        .ok()
        .flatten();
    pending_after(id, rx, wait, conf).await
}

/// For an allowed call: waits until it is done (`None`) or waits for a
/// human on its changes (`Some(confirmation id)`). Polls with backoff.
async fn confirmation_or_done(
    app: &App,
    id: &str,
    rx: &mut watch::Receiver<CallState>,
) -> Option<String> {
    let mut pause = Duration::from_millis(2);
    loop {
        if matches!(*rx.borrow(), CallState::Done { .. }) {
            return None;
        }
        if let Some(c) = app.exec.gate().waiting_for(id) {
            return Some(c);
        }
        // Woken at once when the call finishes; else look again. A call
        // that ended without a result is left to the caller's wait.
        if let Ok(Err(_)) = tokio::time::timeout(pause, rx.changed()).await {
            return None;
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Up to `wait` seconds for the result; `Some(202 pending)` if it is not there.
async fn pending_after(
    id: &str,
    rx: &mut watch::Receiver<CallState>,
    wait: Option<Duration>,
    conf: Option<String>,
) -> Option<Response> {
    let finished = tokio::time::timeout(
        wait.unwrap_or_default(),
        rx.wait_for(|s| matches!(s, CallState::Done { .. })),
    )
    .await;
    finished.is_err().then(|| {
        (
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "pending", "confirmation_id": conf})),
        )
            .into_response()
    })
}

async fn get_call(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let local = app.running().get(&id).map(|rx| rx.borrow().clone());
    let rec = match app.exec.state().call(&id).await {
        Ok(r) => r,
        Err(e) => return tag(error_response(&app.exec, &state_down(e)), &p),
    };
    let r = match (rec, local) {
        (None, _) => error(StatusCode::NOT_FOUND, "not_found", "no such call"),
        (Some(CallRecord { principal, .. }), _) if principal != p.name && !p.approve => {
            error(StatusCode::NOT_FOUND, "not_found", "no such call")
        }
        (_, Some(s @ CallState::Done { .. })) => s.response(),
        (
            Some(CallRecord {
                done: Some((status, body, retry_after)),
                ..
            }),
            _,
        ) => CallState::Done {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
            retry_after: retry_after.map(Duration::from_secs),
        }
        .response(),
        // Running here or on another service: waiting for a human, or not.
        (Some(_), _) => match app.exec.gate().pending_for(&id).await {
            Some(c) => {
                Json(json!({"id": id, "status": "pending", "confirmation_id": c})).into_response()
            }
            None => Json(json!({"id": id, "status": "running"})).into_response(),
        },
    };
    tag(r, &p)
}

async fn list_confirmations(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> Response {
    if !p.approve {
        return tag(error(StatusCode::FORBIDDEN, "forbidden", "forbidden"), &p);
    }
    let r = match app.exec.gate().pending().await {
        Ok(list) => Json(list).into_response(),
        Err(e) => gate_error(e),
    };
    tag(r, &p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    approve: bool,
    note: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

async fn answer_confirmation(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !p.approve {
        return tag(error(StatusCode::FORBIDDEN, "forbidden", "forbidden"), &p);
    }
    // An id that is not pending is answered for what it is (404, 410, 409)
    // before the body is judged.
    if let Err(e) = app.exec.gate().answerable(&id).await {
        return tag(gate_error(e), &p);
    }
    // Any content type: curl's default form type must not be a trap.
    let parsed = body.map_err(|e| (e.status(), e.body_text())).and_then(|b| {
        serde_json::from_slice::<AnswerBody>(&b).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"approve\": true|false, \"note\": \"…\"}}: {e}"),
            )
        })
    });
    let body = match parsed {
        Ok(b) => b,
        Err((status, msg)) => return tag(error(status, "invalid_body", &msg), &p),
    };
    let scope = match body.scope.as_deref() {
        None | Some("once") => Scope::Once,
        Some("session") => Scope::Session,
        Some(_) => {
            return tag(
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "scope is once or session",
                ),
                &p,
            );
        }
    };
    let note = body.note.map(|n| crate::call::shorten(&n, 500));
    let r = match app
        .exec
        .gate()
        .answer(&id, body.approve, scope, &p.name, note)
        .await
    {
        Ok(()) => Json(json!({"confirmation_id": id, "approved": body.approve, "by": p.name}))
            .into_response(),
        Err(e) => gate_error(e),
    };
    tag(r, &p)
}

/// The status and JSON error of a confirmation that cannot be answered.
fn gate_error(e: crate::gate::GateError) -> Response {
    match e {
        crate::gate::GateError::Unknown(_) => {
            error(StatusCode::NOT_FOUND, "not_found", "no such confirmation")
        }
        crate::gate::GateError::Expired(_) => error(
            StatusCode::GONE,
            "expired",
            "the confirmation expired and the call was denied",
        ),
        e @ crate::gate::GateError::OwnCall(_) => {
            error(StatusCode::FORBIDDEN, "own_call", &e.to_string())
        }
        e @ crate::gate::GateError::Unavailable(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
        e => error(StatusCode::CONFLICT, "answered", &e.to_string()),
    }
}

async fn list_sessions(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> Response {
    tag(Json(app.exec.sessions(&p.name)).into_response(), &p)
}

async fn close_session(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    // Only the owner's sessions exist for it: another's is "no such session".
    let r = match app.exec.close_session(&p.name, &name) {
        Some(info) => Json(info).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such session"),
    };
    tag(r, &p)
}

async fn tools(Extension(p): Extension<Principal>) -> Response {
    let all = crate::tools::render(crate::tools::Format::JsonSchema);
    let mine: Vec<Value> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"].as_str().is_some_and(|n| p.may_call(n)))
        .cloned()
        .collect();
    tag(Json(mine).into_response(), &p)
}

async fn audit_query(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    if !p.approve {
        return tag(error(StatusCode::FORBIDDEN, "forbidden", "forbidden"), &p);
    }
    let q = match request::audit_request(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return tag(bad_request(&app.exec, e), &p),
    };
    let lines = match app.exec.state().audit_lines().await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return tag(
                error(
                    StatusCode::NOT_FOUND,
                    "no_audit_log",
                    "the service has no audit log",
                ),
                &p,
            );
        }
        Err(e) => return tag(error_response(&app.exec, &state_down(e)), &p),
    };
    let (query, limit) = (q.query, q.limit);
    let hits: Vec<Value> = crate::audit::parse_entries(&lines.join("\n"))
        .into_iter()
        .filter(|e| query.matches(e))
        .collect();
    let start = hits.len().saturating_sub(limit);
    tag(Json(&hits[start..]).into_response(), &p)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.exec.render_metrics().await,
    )
        .into_response()
}

async fn openapi(State(app): State<Arc<App>>, Extension(p): Extension<Principal>) -> Response {
    tag(
        Json(super::openapi::document_for(&app.cfg)).into_response(),
        &p,
    )
}

/// How often a service sharing its store says it is alive and looks for
/// calls to take over.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Silence after which a service counts as stopped.
const STALE: Duration = Duration::from_secs(10);

/// With a shared store: heartbeats, and calls whose service stopped while
/// they waited for a human, taken over once answered (run if approved,
/// denied if not) so their record and audit entry are written.
async fn sweep(app: Arc<App>) {
    let state = app.exec.state().clone();
    if !state.shared() {
        return;
    }
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        if let Err(e) = state.heartbeat().await {
            tracing::warn!(error = %e, "heartbeat not recorded");
        }
        let orphans = match state.orphans(STALE).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for calls to take over");
                continue;
            }
        };
        for o in orphans {
            // The first service to take it runs it; the others skip it.
            if !matches!(state.take(&o.confirmation).await, Ok(true)) {
                continue;
            }
            let Ok(call) = ToolCall::parse(&o.call) else {
                tracing::warn!(confirmation = %o.confirmation, "a call to take over does not parse");
                continue;
            };
            tracing::info!(call_id = %crate::call::shorten(&call.id, 128), "taking over a call whose service stopped");
            let (tx, rx) = watch::channel(CallState::Running);
            app.running().insert(call.id.clone(), rx);
            let permit = Arc::new(Mutex::new(None));
            spawn_call(&app, call, o.principal, permit, tx, Some(o.answer));
        }
    }
}

/// Listens on `addr` and serves until `shutdown` resolves; then rejects
/// pending confirmations, lets calls in flight finish within
/// `cfg.drain`, and closes the sandboxes.
pub async fn serve(
    app: Arc<App>,
    addr: SocketAddr,
    allow_non_loopback: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(ServeError::NonLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind {
            addr,
            detail: e.to_string(),
        })?;
    let local = listener.local_addr().map_err(|e| ServeError::Bind {
        addr,
        detail: e.to_string(),
    })?;
    on_listen(local);
    let sweeper = tokio::spawn(sweep(app.clone()));
    let exec = app.exec.clone();
    let stop = async move {
        shutdown.await;
        // Pending confirmations end now, as rejections (each audited).
        exec.shutdown();
    };
    let served = axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(stop)
        .await;
    // Every call is bounded by its wall limit, so waiting that long lets
    // each one finish or be killed by it; what outlives the drain is
    // killed with its sandbox by `close`.
    let drain = app
        .cfg
        .drain
        .max(app.exec.policy().limits().wall_time + Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + drain;
    while app.inflight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
    app.exec.close().await;
    // Let killed calls write their audit entries.
    let grace = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.inflight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.map_err(|e| ServeError::Bind {
        addr: local,
        detail: e.to_string(),
    })
}
