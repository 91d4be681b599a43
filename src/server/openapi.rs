//! The OpenAPI 3.1 document of the HTTP service, built from [`ROUTES`] — the
//! same table the router is built from, so a route cannot exist
//! undocumented (and a documented one without a handler answers 501, which
//! the tests catch) — and from the tool schemas.

use serde_json::{Value, json};

/// One route of the service.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// The operation's id (links name operations by it).
    pub id: &'static str,
    pub summary: &'static str,
    /// Needs a bearer token.
    pub auth: bool,
    /// Only for principals that may approve.
    pub approver: bool,
    /// Status codes and what they mean.
    pub responses: &'static [(u16, &'static str)],
    /// Query parameters: name, JSON Schema (JSON text), description.
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// The schema (in `components`) of the 200/202 body; `text` for plain text.
    pub ok: &'static str,
}

const COMMON: &[(u16, &str)] = &[
    (401, "unauthorized"),
    (429, "rate limited (see Retry-After)"),
];

pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/calls",
        id: "postCall",
        summary: "Run a tool call (toolgate, OpenAI or Anthropic shape). `?dry_run=true` only checks it. A call that needs confirmation answers 202 with its confirmation id at once, or after `?wait=SECONDS`.",
        auth: true,
        approver: false,
        responses: &[
            (200, "the Outcome (or, with dry_run, the verdict and plan)"),
            (202, "pending: {id, status: pending, confirmation_id}"),
            (
                400,
                "malformed call, unknown tool, bad or oversize arguments; a query parameter that is unknown or out of range",
            ),
            (403, "forbidden: this principal may not use the tool"),
            (409, "a call with this id exists"),
            (413, "body too large"),
            (503, "a backend, runtime or image is unavailable"),
        ],
        query: &[
            (
                "dry_run",
                r#"{"type": "boolean"}"#,
                "only check the call: verdict and plan, nothing runs",
            ),
            (
                "wait",
                r#"{"type": "number", "minimum": 0, "maximum": 3600}"#,
                "seconds to wait for a call that needs confirmation before answering 202",
            ),
        ],
        ok: "CallResult",
    },
    Route {
        method: "get",
        path: "/v1/calls/{id}",
        id: "getCall",
        summary: "A finished call's Outcome, or {status: running | pending, confirmation_id}.",
        auth: true,
        approver: false,
        responses: &[
            (200, "Outcome or status"),
            (404, "no such call"),
            (503, "the state store is unavailable"),
        ],
        query: &[],
        ok: "CallStatus",
    },
    Route {
        method: "get",
        path: "/v1/confirmations",
        id: "listConfirmations",
        summary: "Pending confirmations, oldest first, with redacted arguments, reasons and expiry.",
        auth: true,
        approver: true,
        responses: &[
            (200, "list of confirmation requests"),
            (403, "forbidden"),
            (503, "the state store is unavailable"),
        ],
        query: &[],
        ok: "Confirmations",
    },
    Route {
        method: "post",
        path: "/v1/confirmations/{id}",
        id: "answerConfirmation",
        summary: "Answer a confirmation: {\"approve\": true|false, \"note\": \"…\", \"scope\": \"once\"|\"session\"}.",
        auth: true,
        approver: true,
        responses: &[
            (200, "answered"),
            (400, "the body is not an answer"),
            (403, "forbidden"),
            (404, "no such confirmation"),
            (409, "already answered"),
            (410, "expired (the call was denied)"),
            (503, "the state store is unavailable (nothing was answered)"),
        ],
        query: &[],
        ok: "Answered",
    },
    Route {
        method: "get",
        path: "/v1/sessions",
        id: "listSessions",
        summary: "This principal's python sessions, open and ended (with why), oldest first. A session is opened by the first `run_code` call naming it in `args.session`; each later call naming it is a turn that keeps its variables.",
        auth: true,
        approver: false,
        responses: &[(200, "list of sessions")],
        query: &[],
        ok: "Sessions",
    },
    Route {
        method: "delete",
        path: "/v1/sessions/{name}",
        id: "closeSession",
        summary: "Close one of this principal's sessions: its interpreter and state are gone.",
        auth: true,
        approver: false,
        responses: &[
            (200, "the session as it was closed"),
            (404, "no such session"),
        ],
        query: &[],
        ok: "Session",
    },
    Route {
        method: "get",
        path: "/v1/tools",
        id: "listTools",
        summary: "Tool definitions with JSON Schemas (the tools this principal may call).",
        auth: true,
        approver: false,
        responses: &[(200, "tool definitions")],
        query: &[],
        ok: "Tools",
    },
    Route {
        method: "get",
        path: "/v1/audit",
        id: "queryAudit",
        summary: "Audit entries: ?since_ms, tool, decision, principal, kind (call|request), limit (≤ 1000, newest).",
        auth: true,
        approver: true,
        responses: &[
            (200, "audit entries"),
            (400, "a query parameter that is unknown or out of range"),
            (403, "forbidden"),
        ],
        query: &[
            (
                "since_ms",
                r#"{"type": "integer", "minimum": 0, "maximum": 18446744073709551615}"#,
                "entries at or after this Unix time in milliseconds",
            ),
            ("tool", r#"{"type": "string"}"#, "tool name"),
            (
                "decision",
                r#"{"type": "string", "enum": ["allow", "ask", "deny"]}"#,
                "decision",
            ),
            ("principal", r#"{"type": "string"}"#, "principal"),
            (
                "kind",
                r#"{"type": "string"}"#,
                "entry kind: call, intent, request, …",
            ),
            (
                "limit",
                r#"{"type": "integer", "minimum": 0, "maximum": 1000}"#,
                "at most this many entries, newest (default 100)",
            ),
        ],
        ok: "AuditEntries",
    },
    Route {
        method: "get",
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus text: calls by tool, decision, status and backend; limits hit; pending confirmations; warm sandboxes; latency histograms per pipeline stage.",
        auth: true,
        approver: false,
        responses: &[(200, "metrics (text/plain; version=0.0.4)")],
        query: &[],
        ok: "text",
    },
    Route {
        method: "get",
        path: "/openapi.json",
        id: "openapi",
        summary: "This document.",
        auth: true,
        approver: false,
        responses: &[(200, "OpenAPI 3 document")],
        query: &[],
        ok: "Document",
    },
    Route {
        method: "get",
        path: "/healthz",
        id: "health",
        summary: "Liveness; needs no token.",
        auth: false,
        approver: false,
        responses: &[(200, "{status: ok}")],
        query: &[],
        ok: "Health",
    },
];

/// The document of a service with the default settings.
pub fn document() -> Value {
    document_for(&super::http::Config::default())
}

/// The document of a service with these settings (the bounds it enforces
/// are the bounds it declares).
pub fn document_for(cfg: &super::http::Config) -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        paths.entry(r.path.to_string()).or_insert_with(|| json!({}))[r.method] = operation(r);
    }
    if let Some(params) = paths
        .get_mut("/v1/calls")
        .and_then(|p| p["post"]["parameters"].as_array_mut())
    {
        for p in params.iter_mut().filter(|p| p["name"] == "wait") {
            p["schema"]["maximum"] = json!(cfg.max_wait.as_secs_f64());
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "toolgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sandboxed tool execution for AI agents: policy, confirmation, sandboxes, redaction, audit. OpenAI `function` tool calls and Anthropic `tool_use` blocks are accepted as well as the form below."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        }
    })
}

/// One route as an operation: parameters, body, every response with its schema.
fn operation(r: &Route) -> Value {
    let mut responses = serde_json::Map::new();
    let common: &[(u16, &str)] = if r.auth { COMMON } else { &[] };
    for (code, what) in r.responses.iter().chain(common) {
        let schema = if *code >= 400 { "Error" } else { r.ok };
        let content = if schema == "text" {
            json!({"text/plain": {"schema": {"type": "string"}}})
        } else if *code == 202 {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Pending"}}})
        } else {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
        };
        let mut resp = json!({"description": what, "content": content});
        if *code == 202 {
            // Where a pending call goes next. (No link from 200: a dry run's
            // id names nothing that can be fetched.)
            resp["links"] = json!({
                "GetCall": {"operationId": "getCall",
                            "parameters": {"id": "$response.body#/id"}},
                "AnswerConfirmation": {"operationId": "answerConfirmation",
                                       "parameters": {"id": "$response.body#/confirmation_id"}},
            });
        }
        if *code == 429 {
            resp["headers"] =
                json!({"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}});
        }
        responses.insert(code.to_string(), resp);
    }
    let mut op = json!({
        "operationId": r.id,
        "summary": r.summary,
        "responses": responses,
        "security": if r.auth { json!([{"bearer": []}]) } else { json!([]) },
    });
    if r.approver {
        op["description"] = json!("Needs a principal with `approve = true`.");
    }
    let path_params = r
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}));
    let query = r.query.iter().map(|(name, schema, what)| {
        json!({"name": name, "in": "query", "required": false, "description": what,
               "schema": serde_json::from_str::<Value>(schema).unwrap_or(json!({}))})
    });
    let params: Vec<Value> = path_params.chain(query).collect();
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    match (r.method, r.path) {
        ("post", "/v1/calls") => {
            op["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ToolCall"}}}});
        }
        ("post", "/v1/confirmations/{id}") => {
            op["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}});
        }
        _ => {}
    }
    op
}

/// The bodies' schemas.
fn schemas() -> Value {
    // The call body: toolgate's own form, with one `args` schema per tool.
    let tools = crate::tools::render(crate::tools::Format::JsonSchema);
    let variants: Vec<Value> = tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            // `args` may be left out (or null) when the tool needs none.
            let needs_args = t["schema"]["required"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            let (required, args) = if needs_args {
                (json!(["tool", "args"]), t["schema"].clone())
            } else {
                (
                    json!(["tool"]),
                    json!({"anyOf": [t["schema"], {"type": "null"}]}),
                )
            };
            json!({
                "type": "object",
                "required": required,
                "additionalProperties": false,
                "properties": {
                    "id": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.:-]{1,128}$",
                           "description": "echoed in the Outcome; null or absent: one is assigned"},
                    "tool": {"const": t["name"]},
                    "args": args,
                }
            })
        })
        .collect();
    let object = |required: &[&str]| json!({"type": "object", "required": required});
    json!({
        "ToolCall": {"oneOf": variants},
        "Answer": {
            "type": "object",
            "required": ["approve"],
            "additionalProperties": false,
            "properties": {
                "approve": {"type": "boolean"},
                "note": {"type": ["string", "null"]},
                "scope": {"type": ["string", "null"], "enum": ["once", "session", null]},
            }
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["kind", "message"],
                "properties": {"kind": {"type": "string"}, "message": {"type": "string"}},
            }},
        },
        "Outcome": {
            "type": "object",
            "required": ["id", "tool", "decision", "status", "stdout", "stderr"],
            "properties": {
                "id": {"type": "string"},
                "tool": {"type": "string"},
                "decision": {"enum": ["allow", "ask", "deny"]},
                "status": {"enum": ["completed", "denied", "killed", "failed"]},
                "exit_code": {"type": "integer"},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
                "limits_hit": {"type": "array", "items": {"type": "string"}},
                "changes": {"type": "array", "items": object(&["path", "action", "kind", "decision", "applied"])},
                "artifacts": {"type": "array", "items": object(&["path", "media_type", "size", "sha256"])},
            }
        },
        "DryRun": object(&["id", "tool", "decision", "plan", "policy"]),
        "CallResult": {"anyOf": [
            {"$ref": "#/components/schemas/Outcome"},
            {"$ref": "#/components/schemas/DryRun"},
        ]},
        "Pending": {
            "type": "object",
            "required": ["id", "status"],
            "properties": {
                "id": {"type": "string"},
                "status": {"enum": ["pending", "running"]},
                "confirmation_id": {"type": ["string", "null"]},
            }
        },
        "CallStatus": {"anyOf": [
            {"$ref": "#/components/schemas/Outcome"},
            {"$ref": "#/components/schemas/Pending"},
        ]},
        "Confirmations": {"type": "array", "items": object(&["id", "call_id", "principal", "tool", "args", "reasons", "expires_unix_ms"])},
        "Answered": object(&["confirmation_id", "approved", "by"]),
        "Tools": {"type": "array", "items": object(&["name"])},
        "Session": object(&["name", "language", "backend", "state", "turns", "opened_at_ms", "last_turn_at_ms", "memory_limit_bytes", "idle_timeout_s", "lifetime_s"]),
        "Sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}},
        "AuditEntries": {"type": "array", "items": object(&["seq"])},
        "Health": object(&["status"]),
        "Document": object(&["openapi", "paths"]),
    })
}
