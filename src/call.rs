//! The tool-call model: what an agent asked for, parsed from any accepted shape.
//!
//! Owns parsing (toolgate's own form, OpenAI `function` tool calls, Anthropic
//! `tool_use` blocks), the typed arguments of the built-in tools, and the
//! size caps that apply before anything else looks at a call. It does not
//! decide anything: that is `policy`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest call document accepted, in bytes. Bounds parser work and memory
/// for hostile input before any policy is consulted.
pub const MAX_CALL_BYTES: usize = 4 * 1024 * 1024;

/// Nesting bound for call JSON; deeper documents are refused (stack safety).
const MAX_JSON_DEPTH: usize = 64;

/// Errors of parsing a tool call. Every variant is bad input (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("call is not valid JSON: {0}")]
    Json(String),
    #[error("call is {size} bytes, over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("call JSON nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    #[error("call has an unrecognised shape: {0}")]
    Shape(String),
    #[error("unknown tool {0:?} (known: run_command, run_code, read_file, write_file, list_dir)")]
    UnknownTool(String),
    #[error("tool {tool}: invalid arguments: {detail}")]
    Args { tool: &'static str, detail: String },
    #[error("cannot read the call: {0}")]
    Read(String),
    #[error("the call holds {0} tool calls; pass exactly one")]
    Count(usize),
}

/// Language of a `run_code` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
    Sh,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Sh => "sh",
        }
    }
}

impl std::str::FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "python" | "py" | "python3" => Ok(Language::Python),
            "javascript" | "js" => Ok(Language::Javascript),
            "sh" | "shell" => Ok(Language::Sh),
            other => Err(format!(
                "unknown language {other:?} (python, javascript, sh)"
            )),
        }
    }
}

/// A command: a shell string (parsed by the policy, run by `sh -c`) or an
/// argv list (run directly, no shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCommand {
    pub command: Command,
    /// Working directory, relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Requested wall-time limit in seconds; the policy limit still caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCode {
    pub language: Language,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Extra files to place in a scratch copy of the workspace: path -> text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Run as the next turn of this principal's session of that name (its
    /// variables kept from turn to turn); opened by its first turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Longest session name.
pub const MAX_SESSION_NAME: usize = 64;

/// Whether `name` may name a session: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_session_name(name: &str) -> bool {
    (1..=MAX_SESSION_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    pub path: String,
    /// Byte offset to start at.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub offset: Option<u64>,
    /// Maximum bytes to return; the policy's output cap still applies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
    /// Append instead of replacing. Still atomic: the whole new file is
    /// written to a temporary and renamed over the old one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListDir {
    #[serde(default = "dot")]
    pub path: String,
}

/// An optional count: JSON Schema's `integer` includes `3.0`, and so does
/// this (serde's `u64` alone refuses it).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    // `u64::MAX as f64` is 2^64, one past the largest u64.
                    .filter(|f| f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(f))
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a whole number ≥ 0, got {n}"))),
    }
}

fn dot() -> String {
    ".".to_string()
}

/// A built-in tool with typed arguments.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "tool", content = "args", rename_all = "snake_case")]
pub enum Tool {
    RunCommand(RunCommand),
    RunCode(RunCode),
    ReadFile(ReadFile),
    WriteFile(WriteFile),
    ListDir(ListDir),
}

/// Names of the built-in tools, in definition order.
pub const TOOL_NAMES: [&str; 5] = [
    "run_command",
    "run_code",
    "read_file",
    "write_file",
    "list_dir",
];

impl Tool {
    pub fn name(&self) -> &'static str {
        match self {
            Tool::RunCommand(_) => "run_command",
            Tool::RunCode(_) => "run_code",
            Tool::ReadFile(_) => "read_file",
            Tool::WriteFile(_) => "write_file",
            Tool::ListDir(_) => "list_dir",
        }
    }

    /// Builds a tool from its name and JSON arguments.
    pub fn from_parts(name: &str, args: Value) -> Result<Tool, CallError> {
        fn typed<T: serde::de::DeserializeOwned>(
            tool: &'static str,
            args: Value,
        ) -> Result<T, CallError> {
            serde_json::from_value(args).map_err(|e| CallError::Args {
                tool,
                detail: e.to_string(),
            })
        }
        let args = if args.is_null() {
            Value::Object(Default::default())
        } else {
            args
        };
        let tool = match name {
            "run_command" => Tool::RunCommand(typed("run_command", args)?),
            "run_code" => Tool::RunCode(typed("run_code", args)?),
            "read_file" => Tool::ReadFile(typed("read_file", args)?),
            "write_file" => Tool::WriteFile(typed("write_file", args)?),
            "list_dir" => Tool::ListDir(typed("list_dir", args)?),
            other => return Err(CallError::UnknownTool(truncate_for_msg(other))),
        };
        tool.check_bounds()?;
        Ok(tool)
    }

    /// The bounds the tool schemas ([`crate::tools`]) state that serde's
    /// types do not: a call the published schema calls invalid is refused.
    fn check_bounds(&self) -> Result<(), CallError> {
        let bad = |detail: &str| {
            Err(CallError::Args {
                tool: self.name(),
                detail: detail.into(),
            })
        };
        let timeout = match self {
            Tool::RunCommand(a) => {
                match &a.command {
                    Command::Shell(s) if s.is_empty() => return bad("command is empty"),
                    Command::Argv(v) if v.is_empty() => return bad("command is an empty list"),
                    _ => {}
                }
                a.timeout
            }
            Tool::RunCode(a) => {
                if a.session.as_deref().is_some_and(|n| !valid_session_name(n)) {
                    return bad("session is 1-64 characters of A-Z a-z 0-9 . _ -");
                }
                a.timeout
            }
            Tool::ReadFile(a) => {
                if a.limit == Some(0) {
                    return bad("limit is at least 1");
                }
                None
            }
            Tool::WriteFile(_) | Tool::ListDir(_) => None,
        };
        if timeout.is_some_and(|t| t.is_nan() || t <= 0.0) {
            return bad("timeout is a number of seconds above 0");
        }
        Ok(())
    }

    /// Every string argument, with its argument name, for input inspection.
    pub fn strings(&self) -> Vec<(&'static str, &str)> {
        let mut v: Vec<(&'static str, &str)> = Vec::new();
        match self {
            Tool::RunCommand(a) => {
                match &a.command {
                    Command::Shell(s) => v.push(("command", s)),
                    Command::Argv(argv) => v.extend(argv.iter().map(|s| ("command", s.as_str()))),
                }
                if let Some(c) = &a.cwd {
                    v.push(("cwd", c));
                }
            }
            Tool::RunCode(a) => {
                v.push(("code", &a.code));
                if let Some(s) = &a.stdin {
                    v.push(("stdin", s));
                }
                for f in &a.files {
                    v.push(("files.path", &f.path));
                    v.push(("files.content", &f.content));
                }
            }
            Tool::ReadFile(a) => v.push(("path", &a.path)),
            Tool::WriteFile(a) => {
                v.push(("path", &a.path));
                v.push(("content", &a.content));
            }
            Tool::ListDir(a) => v.push(("path", &a.path)),
        }
        v
    }
}

/// Where a call came from, kept so a response can be shaped the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallFormat {
    Toolgate,
    Openai,
    Anthropic,
}

/// One tool call, whatever shape it arrived in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(flatten)]
    pub tool: Tool,
    #[serde(skip)]
    pub format: CallFormat,
}

impl ToolCall {
    pub fn new(id: impl Into<String>, tool: Tool) -> ToolCall {
        ToolCall {
            id: id.into(),
            tool,
            format: CallFormat::Toolgate,
        }
    }

    /// A `run_code` call with a fresh id (what `toolgate exec` runs).
    pub fn run_code(language: Language, code: String) -> ToolCall {
        ToolCall::new(
            format!("exec_{}", uuid::Uuid::new_v4().simple()),
            Tool::RunCode(RunCode {
                language,
                code,
                stdin: None,
                files: vec![],
                timeout: None,
                session: None,
            }),
        )
    }

    /// Parses exactly one call from JSON text in any accepted shape.
    pub fn parse(text: &str) -> Result<ToolCall, CallError> {
        let mut calls = Self::parse_many(text)?;
        match calls.len() {
            1 => Ok(calls.remove(0)),
            n => Err(CallError::Count(n)),
        }
    }

    /// Parses one or more calls (an OpenAI `tool_calls` array or message may hold several).
    pub fn parse_many(text: &str) -> Result<Vec<ToolCall>, CallError> {
        if text.len() > MAX_CALL_BYTES {
            return Err(CallError::TooLarge {
                size: text.len(),
                max: MAX_CALL_BYTES,
            });
        }
        check_depth(text)?;
        let v: Value = serde_json::from_str(text).map_err(|e| CallError::Json(e.to_string()))?;
        Self::from_value(v)
    }

    /// Accepts a parsed JSON value of any accepted shape.
    pub fn from_value(v: Value) -> Result<Vec<ToolCall>, CallError> {
        match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(Self::from_value(item)?);
                }
                Ok(out)
            }
            Value::Object(mut m) => {
                // OpenAI assistant message or response wrapper: {"tool_calls":[...]}.
                if let Some(tc) = m.remove("tool_calls") {
                    return Self::from_value(tc);
                }
                // Anthropic message: {"content":[{"type":"tool_use",...}, {"type":"text"}]}.
                if let Some(Value::Array(blocks)) = m.get("content")
                    && m.get("type").and_then(Value::as_str) != Some("tool_use")
                {
                    let uses: Vec<Value> = blocks
                        .iter()
                        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                        .cloned()
                        .collect();
                    return Self::from_value(Value::Array(uses));
                }
                let id = match m.remove("id") {
                    Some(Value::String(s)) => Some(s),
                    Some(Value::Null) | None => None,
                    Some(other) => {
                        return Err(CallError::Shape(format!(
                            "id must be a string, got {other}"
                        )));
                    }
                };
                let id = id.unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()));
                check_id(&id)?;
                // OpenAI: {"type":"function","function":{"name":..,"arguments":"<json>"}}
                if let Some(f) = m.remove("function") {
                    let Value::Object(mut f) = f else {
                        return Err(CallError::Shape("`function` must be an object".into()));
                    };
                    let name = take_name(&mut f)?;
                    let args = match f.remove("arguments") {
                        Some(Value::String(s)) => {
                            if s.trim().is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_str(&s).map_err(|e| {
                                    CallError::Json(format!("function.arguments: {e}"))
                                })?
                            }
                        }
                        Some(v @ Value::Object(_)) => v,
                        Some(Value::Null) | None => Value::Null,
                        Some(_) => {
                            return Err(CallError::Shape(
                                "function.arguments must be a JSON string".into(),
                            ));
                        }
                    };
                    return Ok(vec![ToolCall {
                        id,
                        tool: Tool::from_parts(&name, args)?,
                        format: CallFormat::Openai,
                    }]);
                }
                // Anthropic: {"type":"tool_use","id":..,"name":..,"input":{..}}
                if m.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let name = take_name(&mut m)?;
                    let input = m.remove("input").unwrap_or(Value::Null);
                    return Ok(vec![ToolCall {
                        id,
                        tool: Tool::from_parts(&name, input)?,
                        format: CallFormat::Anthropic,
                    }]);
                }
                // toolgate: {"id":..,"tool":..,"args":{..}}
                if let Some(tool) = m.remove("tool") {
                    let Value::String(name) = tool else {
                        return Err(CallError::Shape("`tool` must be a string".into()));
                    };
                    let args = m.remove("args").unwrap_or(Value::Null);
                    if let Some(k) = m.keys().next() {
                        return Err(CallError::Shape(format!("unknown field {k:?} in call")));
                    }
                    return Ok(vec![ToolCall {
                        id,
                        tool: Tool::from_parts(&name, args)?,
                        format: CallFormat::Toolgate,
                    }]);
                }
                Err(CallError::Shape(
                    "expected {\"tool\",\"args\"}, an OpenAI function call, or an Anthropic tool_use block".into(),
                ))
            }
            other => Err(CallError::Shape(format!(
                "expected a JSON object, got {}",
                json_kind(&other)
            ))),
        }
    }
}

fn take_name(m: &mut serde_json::Map<String, Value>) -> Result<String, CallError> {
    match m.remove("name") {
        Some(Value::String(s)) => Ok(s),
        _ => Err(CallError::Shape("missing string field `name`".into())),
    }
}

/// Ids are echoed into logs, file names of nothing, and HTTP paths: keep them tame.
fn check_id(id: &str) -> Result<(), CallError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(CallError::Shape(
            "id must be 1-128 characters of [A-Za-z0-9-_.:]".into(),
        ));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`] before serde recurses into it.
fn check_depth(text: &str) -> Result<(), CallError> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(CallError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Replaces control characters in attacker-controlled text for messages.
pub(crate) fn sanitize_for_msg(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Shortens text to `max` characters (after redaction, never before:
/// a cut secret would no longer be recognised).
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Shortens attacker-controlled text before it goes into an error message.
pub(crate) fn truncate_for_msg(s: &str) -> String {
    shorten(&sanitize_for_msg(s), 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes_to_the_same_tool() {
        let own = ToolCall::parse(r#"{"id":"a1","tool":"read_file","args":{"path":"src/x.rs"}}"#)
            .unwrap();
        let openai = ToolCall::parse(
            r#"{"id":"a1","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"src/x.rs\"}"}}"#,
        )
        .unwrap();
        let anth = ToolCall::parse(
            r#"{"type":"tool_use","id":"a1","name":"read_file","input":{"path":"src/x.rs"}}"#,
        )
        .unwrap();
        assert_eq!(own.tool, openai.tool);
        assert_eq!(own.tool, anth.tool);
        assert_eq!(openai.format, CallFormat::Openai);
        assert_eq!(anth.format, CallFormat::Anthropic);
    }

    #[test]
    fn openai_tool_calls_array_and_anthropic_message() {
        let many = ToolCall::parse_many(
            r#"{"role":"assistant","tool_calls":[
              {"id":"c1","type":"function","function":{"name":"list_dir","arguments":"{}"}},
              {"id":"c2","type":"function","function":{"name":"run_command","arguments":"{\"command\":[\"ls\",\"-l\"]}"}}]}"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(
            many[1].tool,
            Tool::RunCommand(RunCommand {
                command: Command::Argv(vec!["ls".into(), "-l".into()]),
                cwd: None,
                timeout: None,
            })
        );
        let msg = ToolCall::parse(
            r#"{"role":"assistant","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"list_dir","input":{}}]}"#,
        )
        .unwrap();
        assert_eq!(msg.id, "t");
    }

    #[test]
    fn errors_are_specific() {
        assert!(matches!(ToolCall::parse("{"), Err(CallError::Json(_))));
        assert!(matches!(
            ToolCall::parse(r#"{"tool":"rm_rf","args":{}}"#),
            Err(CallError::UnknownTool(_))
        ));
        assert!(matches!(
            ToolCall::parse(r#"{"tool":"read_file","args":{}}"#),
            Err(CallError::Args { .. })
        ));
        assert!(matches!(
            ToolCall::parse(r#"{"tool":"read_file","args":{"path":1}}"#),
            Err(CallError::Args { .. })
        ));
        assert!(matches!(
            ToolCall::parse(r#"{"tool":"read_file","args":{"path":"a","x":1}}"#),
            Err(CallError::Args { .. })
        ));
        assert!(matches!(
            ToolCall::parse(&"[".repeat(100)),
            Err(CallError::TooDeep)
        ));
        assert!(matches!(ToolCall::parse("[]"), Err(CallError::Count(0))));
        assert!(matches!(
            ToolCall::parse(r#"{"id":"a b","tool":"list_dir"}"#),
            Err(CallError::Shape(_))
        ));
    }

    /// The arguments are judged by the bounds the published tool schemas
    /// state (the HTTP service's fuzzing holds the two together): what the
    /// schema calls invalid is refused, what it allows is accepted.
    #[test]
    fn arguments_keep_the_bounds_their_schemas_state() {
        let refused = [
            r#"{"tool":"run_command","args":{"command":""}}"#,
            r#"{"tool":"run_command","args":{"command":[]}}"#,
            r#"{"tool":"run_command","args":{"command":"ls","timeout":0}}"#,
            r#"{"tool":"run_code","args":{"language":"python","code":"","timeout":-1}}"#,
            r#"{"tool":"read_file","args":{"path":"a","limit":0}}"#,
            r#"{"tool":"read_file","args":{"path":"a","offset":1.5}}"#,
            r#"{"tool":"read_file","args":{"path":"a","offset":-1}}"#,
            r#"{"tool":"read_file","args":{"path":"a","offset":18446744073709551616}}"#,
            r#"{"tool":"write_file","args":{"path":"a","content":"x","append":null}}"#,
        ];
        for c in refused {
            assert!(
                matches!(ToolCall::parse(c), Err(CallError::Args { .. })),
                "{c} accepted"
            );
        }
        let accepted = [
            r#"{"tool":"read_file","args":{"path":"a","offset":3.0,"limit":null}}"#,
            r#"{"tool":"read_file","args":{"path":"a","offset":18446744073709551615}}"#,
            r#"{"tool":"run_command","args":{"command":"ls","cwd":null,"timeout":null}}"#,
            r#"{"tool":"run_code","args":{"language":"python","code":"1","stdin":null,"timeout":0.5}}"#,
            r#"{"id":null,"tool":"list_dir","args":null}"#,
        ];
        for c in accepted {
            assert!(ToolCall::parse(c).is_ok(), "{c}: {:?}", ToolCall::parse(c));
        }
        let Tool::ReadFile(r) = ToolCall::parse(accepted[0]).unwrap().tool else {
            panic!("not read_file")
        };
        assert_eq!(r.offset, Some(3));
    }
}
