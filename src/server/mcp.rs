//! `toolgate mcp`: the built-in tools over the Model Context Protocol
//! (stdio), on the official Rust SDK.
//!
//! Outcomes come back as tool results; a denial is a tool error whose text
//! tells the model why, so it can change course instead of retrying. An
//! `ask` is put to the user through MCP elicitation when the client
//! supports it, otherwise to the configured approver; no answer is a
//! rejection.

use crate::gate::{Answer, Approver, ConfirmationRequest, Scope};
use crate::{Executor, Outcome, Status, ToolCall};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::{ElicitationError, Peer, RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use std::sync::Arc;
use std::time::Duration;

/// Errors of running the MCP server.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP session failed: {0}")]
    Session(String),
}

/// The MCP server handler: one executor, one principal.
#[derive(Clone)]
pub struct McpServer {
    exec: Arc<Executor>,
    principal: String,
    ttl: Duration,
}

impl McpServer {
    pub fn new(exec: Arc<Executor>, principal: impl Into<String>, ttl: Duration) -> McpServer {
        McpServer {
            exec,
            principal: principal.into(),
            ttl,
        }
    }

    /// Serves on stdin/stdout until the client disconnects, then closes
    /// the executor's sandboxes.
    pub async fn serve_stdio(self) -> Result<(), McpError> {
        let exec = self.exec.clone();
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| McpError::Session(e.to_string()))?;
        let r = running.waiting().await;
        exec.close().await;
        r.map(|_| ()).map_err(|e| McpError::Session(e.to_string()))
    }
}

/// The user's answer to an elicitation.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// Run this call?
    pub approve: bool,
}
rmcp::elicit_safe!(Approval);

/// Puts a confirmation to the MCP client's user.
struct Elicit {
    peer: Peer<RoleServer>,
    ttl: Duration,
}

#[async_trait::async_trait]
impl Approver for Elicit {
    async fn decide(&self, req: &ConfirmationRequest) -> Answer {
        let msg = format!(
            "toolgate: allow `{}` with {}?\nWhy this is asked: {}",
            req.tool,
            crate::call::shorten(&req.args.to_string(), 600),
            req.reasons.join("; ")
        );
        let (approved, note) = match self
            .peer
            .elicit_with_timeout::<Approval>(msg, Some(self.ttl))
            .await
        {
            Ok(Some(a)) => (a.approve, None),
            Ok(None) => (false, Some("no answer content".to_string())),
            Err(ElicitationError::UserDeclined) => (false, Some("declined".into())),
            Err(ElicitationError::UserCancelled) => (false, Some("cancelled".into())),
            Err(e) => (false, Some(format!("elicitation failed: {e}"))),
        };
        Answer {
            confirmation_id: req.id.clone(),
            approved,
            by: "mcp-elicitation".into(),
            note,
            scope: Scope::Once,
        }
    }
}

/// The text a model reads for an outcome.
fn render(o: &Outcome) -> String {
    let mut s = String::new();
    match o.status {
        Status::Denied => {
            s.push_str("denied by toolgate: ");
            s.push_str(&o.reasons.join("; "));
            return s;
        }
        Status::Killed => s.push_str(&format!(
            "stopped by a limit ({}); output may be incomplete\n",
            o.limits_hit
                .iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Status::Failed => {
            if let Some(c) = o.exit_code {
                s.push_str(&format!("exit code {c}\n"));
            }
            if let Some(e) = &o.error {
                s.push_str(e);
                s.push('\n');
            }
        }
        Status::Completed => {}
    }
    s.push_str(&o.stdout);
    if !o.stderr.is_empty() {
        s.push_str("\n[stderr]\n");
        s.push_str(&o.stderr);
    }
    s
}

/// Tools that manage this principal's python sessions (opened by
/// `run_code` with `session`). They run nothing, so no policy decides them.
fn session_tools() -> [Tool; 2] {
    let obj = |v: serde_json::Value| Arc::new(v.as_object().cloned().unwrap_or_default());
    [
        Tool::new(
            "list_sessions",
            "List your python sessions (opened by run_code with `session`), open and ended, with why an ended one ended.",
            obj(
                serde_json::json!({"type": "object", "properties": {}, "additionalProperties": false}),
            ),
        ),
        Tool::new(
            "close_session",
            "Close one of your python sessions: its interpreter and variables are gone.",
            obj(serde_json::json!({
                "type": "object",
                "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
                "required": ["name"],
                "additionalProperties": false
            })),
        ),
    ]
}

impl McpServer {
    /// Answers `list_sessions` and `close_session`; `None` for other tools.
    fn session_tool(&self, request: &CallToolRequestParams) -> Option<CallToolResult> {
        let args = request.arguments.clone().unwrap_or_default();
        match &*request.name {
            "list_sessions" => {
                let list = self.exec.sessions(&self.principal);
                let text = serde_json::to_string_pretty(&list).unwrap_or_default();
                Some(CallToolResult::success(vec![ContentBlock::text(text)]))
            }
            "close_session" => {
                let name = args.get("name").and_then(|n| n.as_str()).unwrap_or("");
                Some(match self.exec.close_session(&self.principal, name) {
                    Some(info) => CallToolResult::success(vec![ContentBlock::text(
                        serde_json::to_string_pretty(&info).unwrap_or_default(),
                    )]),
                    None => CallToolResult::error(vec![ContentBlock::text(format!(
                        "no session named {:?}",
                        crate::call::shorten(name, 64)
                    ))]),
                })
            }
            _ => None,
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("toolgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools run under a policy in a sandbox. A denied call returns an error that says why; do not retry it unchanged.",
            );
        // Elicitation (server-to-client requests) exists up to this version.
        info.protocol_version = ProtocolVersion::V_2025_06_18;
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let defs = crate::tools::render(crate::tools::Format::JsonSchema);
        let tools: Vec<Tool> = defs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let name = t["name"].as_str()?.to_string();
                let desc = t["description"].as_str().unwrap_or("").to_string();
                let schema = t["schema"].as_object()?.clone();
                Some(Tool::new(name, desc, Arc::new(schema)))
            })
            .chain(session_tools())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(r) = self.session_tool(&request) {
            return Ok(r.into());
        }
        let body = serde_json::json!({
            "tool": request.name,
            "args": request.arguments.unwrap_or_default(),
        });
        let call = match ToolCall::parse(&body.to_string()) {
            Ok(c) => c,
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "invalid call: {e}"
                ))])
                .into());
            }
        };
        let elicits = context
            .peer
            .peer_info()
            .is_some_and(|i| i.capabilities.elicitation.is_some());
        let elicit = elicits.then(|| Elicit {
            peer: context.peer.clone(),
            ttl: self.ttl,
        });
        let result = self
            .exec
            .run_with(
                &call,
                &self.principal,
                elicit.as_ref().map(|e| e as &dyn Approver),
            )
            .await;
        Ok(match result {
            Ok(o) => {
                let text = render(&o);
                if o.status == Status::Completed {
                    CallToolResult::success(vec![ContentBlock::text(text)])
                } else {
                    CallToolResult::error(vec![ContentBlock::text(text)])
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                self.exec
                    .redactor()
                    .redact_secrets_into(&mut msg, &mut Default::default());
                CallToolResult::error(vec![ContentBlock::text(format!("toolgate error: {msg}"))])
            }
        }
        .into())
    }
}
