//! The OpenAPI 3 document of the HTTP service, built from [`ROUTES`] — the
//! same table the router is built from, so a route cannot exist
//! undocumented (and a documented one without a handler answers 501, which
//! the tests catch) — and from the tool schemas.

use serde_json::{Value, json};

/// One route of the service.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Needs a bearer token.
    pub auth: bool,
    /// Only for principals that may approve.
    pub approver: bool,
    /// Status codes and what they mean.
    pub responses: &'static [(u16, &'static str)],
}

const COMMON: &[(u16, &str)] = &[
    (401, "unauthorized"),
    (429, "rate limited (see Retry-After)"),
];

pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/calls",
        summary: "Run a tool call (toolgate, OpenAI or Anthropic shape). `?dry_run=true` only checks it. A call that needs confirmation answers 202 with its confirmation id at once, or after `?wait=SECONDS`.",
        auth: true,
        approver: false,
        responses: &[
            (200, "the Outcome (or, with dry_run, the verdict and plan)"),
            (202, "pending: {id, status: pending, confirmation_id}"),
            (
                400,
                "malformed call, unknown tool, bad or oversize arguments",
            ),
            (403, "forbidden: this principal may not use the tool"),
            (409, "a call with this id exists"),
            (413, "body too large"),
            (503, "a backend, runtime or image is unavailable"),
        ],
    },
    Route {
        method: "get",
        path: "/v1/calls/{id}",
        summary: "A finished call's Outcome, or {status: running | pending, confirmation_id}.",
        auth: true,
        approver: false,
        responses: &[(200, "Outcome or status"), (404, "no such call")],
    },
    Route {
        method: "get",
        path: "/v1/confirmations",
        summary: "Pending confirmations, oldest first, with redacted arguments, reasons and expiry.",
        auth: true,
        approver: true,
        responses: &[(200, "list of confirmation requests"), (403, "forbidden")],
    },
    Route {
        method: "post",
        path: "/v1/confirmations/{id}",
        summary: "Answer a confirmation: {\"approve\": true|false, \"note\": \"…\", \"scope\": \"once\"|\"session\"}.",
        auth: true,
        approver: true,
        responses: &[
            (200, "answered"),
            (403, "forbidden"),
            (404, "no such confirmation"),
            (409, "already answered"),
            (410, "expired (the call was denied)"),
        ],
    },
    Route {
        method: "get",
        path: "/v1/tools",
        summary: "Tool definitions with JSON Schemas (the tools this principal may call).",
        auth: true,
        approver: false,
        responses: &[(200, "tool definitions")],
    },
    Route {
        method: "get",
        path: "/v1/audit",
        summary: "Audit entries: ?since_ms, tool, decision, principal, kind (call|request), limit (≤ 1000, newest).",
        auth: true,
        approver: true,
        responses: &[(200, "audit entries"), (403, "forbidden")],
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text: calls by tool, decision, status and backend; limits hit; pending confirmations; warm sandboxes; latency histograms per pipeline stage.",
        auth: true,
        approver: false,
        responses: &[(200, "metrics (text/plain; version=0.0.4)")],
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document.",
        auth: true,
        approver: false,
        responses: &[(200, "OpenAPI 3 document")],
    },
    Route {
        method: "get",
        path: "/healthz",
        summary: "Liveness; needs no token.",
        auth: false,
        approver: false,
        responses: &[(200, "{status: ok}")],
    },
];

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut responses = serde_json::Map::new();
        let common: &[(u16, &str)] = if r.auth { COMMON } else { &[] };
        for (code, what) in r.responses.iter().chain(common) {
            responses.insert(code.to_string(), json!({"description": what}));
        }
        let mut op = json!({
            "summary": r.summary,
            "responses": responses,
            "security": if r.auth { json!([{"bearer": []}]) } else { json!([]) },
        });
        if r.approver {
            op["description"] = json!("Needs a principal with `approve = true`.");
        }
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if r.path == "/v1/calls" {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ToolCall"}}}
            });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    // The call body: toolgate's own form, with one `args` schema per tool.
    let tools = crate::tools::render(crate::tools::Format::JsonSchema);
    let variants: Vec<Value> = tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            json!({
                "type": "object",
                "required": ["tool", "args"],
                "properties": {
                    "id": {"type": "string"},
                    "tool": {"const": t["name"]},
                    "args": t["schema"],
                }
            })
        })
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "toolgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sandboxed tool execution for AI agents: policy, confirmation, sandboxes, redaction, audit. OpenAI `function` tool calls and Anthropic `tool_use` blocks are accepted as well as the form below."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"ToolCall": {"oneOf": variants}},
        }
    })
}
