//! Tool definitions for agent frameworks: a JSON Schema per built-in tool,
//! rendered in OpenAI, Anthropic or plain JSON Schema form.

use serde_json::{Value, json};

/// (name, description, JSON Schema of the arguments).
pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "run_command",
            "Run a command in a sandbox (no network by default) with the workspace mounted at /workspace. Give a shell string or an argv list. Returns stdout, stderr and the exit code.",
            json!({
                "type": "object",
                "properties": {
                    "command": {
                        "description": "A shell command string, or an argv list run without a shell.",
                        "oneOf": [
                            {"type": "string", "minLength": 1},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1}
                        ]
                    },
                    "cwd": {"type": ["string", "null"], "description": "Working directory relative to the workspace."},
                    "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0, "description": "Seconds; the policy's limit still applies."}
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        ),
        (
            "run_code",
            "Run a program in a sandbox: python (with numpy, pandas and matplotlib; save figures to files) and javascript run in a WebAssembly interpreter with no network, no environment and only the workspace at /workspace (the current directory). Returns stdout, stderr, the exit code and which limit stopped it, if any.",
            json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": ["python", "javascript", "sh"]},
                    "code": {"type": "string", "description": "The program text."},
                    "stdin": {"type": ["string", "null"], "description": "Standard input for the program."},
                    "files": {
                        "type": "array",
                        "description": "Files written into the workspace before the program runs.",
                        "items": {
                            "type": "object",
                            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                            "required": ["path", "content"],
                            "additionalProperties": false
                        }
                    },
                    "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0, "description": "Seconds; the policy's limit still applies."},
                    "session": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "Python only: run as the next turn of the session of this name, keeping variables and imports from earlier turns like a notebook (the value of a last expression is printed); the first turn opens it. Without it every call starts clean."}
                },
                "required": ["language", "code"],
                "additionalProperties": false
            }),
        ),
        (
            "read_file",
            "Read a text file in the workspace.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace."},
                    "offset": {"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "description": "Byte offset to start at."},
                    "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": u64::MAX, "description": "Maximum bytes to return."}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        ),
        (
            "write_file",
            "Write (replace, or append to) a text file in the workspace, atomically. Parent directories are created.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace."},
                    "content": {"type": "string"},
                    "append": {"type": "boolean", "default": false}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        ),
        (
            "list_dir",
            "List a directory in the workspace: name, type and size of each entry.",
            json!({
                "type": "object",
                "properties": {"path": {"type": "string", "default": ".", "description": "Path relative to the workspace."}},
                "additionalProperties": false
            }),
        ),
    ]
}

/// Output shapes for `toolgate tools --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Openai,
    Anthropic,
    JsonSchema,
}

pub fn render(format: Format) -> Value {
    let defs = definitions();
    Value::Array(
        defs.into_iter()
            .map(|(name, desc, schema)| match format {
                Format::Openai => json!({"type": "function", "function": {"name": name, "description": desc, "parameters": schema}}),
                Format::Anthropic => json!({"name": name, "description": desc, "input_schema": schema}),
                Format::JsonSchema => json!({"name": name, "description": desc, "schema": schema}),
            })
            .collect(),
    )
}
