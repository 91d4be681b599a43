//! toolgate as the tool runner of an agent loop.
//!
//! The "model" is a scripted stand-in (no network): it reads the
//! conversation so far — including tool results and denials — and emits
//! OpenAI-shaped tool calls until it has an answer. The loop hands every
//! call to one `Executor` (embedded default policy, wasm backend, an audit
//! log, a call budget) and feeds the Outcome back as the tool message.
//!
//! Run: `cargo run --example agent_loop`

use serde_json::{Value, json};
use std::sync::Arc;
use toolgate::budget::Budgets;
use toolgate::{Executor, Policy, Status, ToolCall};

/// What the model returns: tool calls, or a final answer.
enum Turn {
    Calls(Vec<Value>),
    Answer(String),
}

/// A scripted model: it adapts to what the tools said.
fn model(history: &[Value]) -> Turn {
    let last_tool = history
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or("").to_string());
    let step = history.iter().filter(|m| m["role"] == "assistant").count();
    let call = |id: &str, name: &str, args: Value| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}});
    match step {
        // A prompt-injected first idea: read the user's SSH key.
        0 => Turn::Calls(vec![call(
            "call_1",
            "run_command",
            json!({"command": "cat ~/.ssh/id_rsa"}),
        )]),
        // Denied — the model reads the reason and does the actual task.
        1 if last_tool.as_deref().is_some_and(|t| t.contains("denied")) => Turn::Calls(vec![call(
            "call_2",
            "read_file",
            json!({"path": "data.csv"}),
        )]),
        2 => Turn::Calls(vec![call(
            "call_3",
            "run_code",
            json!({"language": "python", "code":
                "rows = [l.split(',') for l in open('/workspace/data.csv').read().split()][1:]\nprint(sum(int(r[1]) for r in rows))"}),
        )]),
        _ => Turn::Answer(format!(
            "The total is {}.",
            last_tool.unwrap_or_default().trim()
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let ws = tempfile::tempdir()?;
    std::fs::write(ws.path().join("data.csv"), "item,count\na,3\nb,4\nc,35\n")?;
    let audit_dir = tempfile::tempdir()?;
    let audit = Arc::new(toolgate::audit::AuditLog::open(
        audit_dir.path().join("audit.jsonl"),
        None,
    )?);
    let exec = Executor::builder(Policy::builtin_default())
        .workspace(ws.path())
        .audit(audit.clone())
        .principal("agent-loop")
        // A runaway loop stops at the budget, whatever the model does.
        .budgets(Budgets {
            calls: Some(10),
            ..Budgets::default()
        })
        .build()?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut history =
        vec![json!({"role": "user", "content": "What is the total count in data.csv?"})];
    for _ in 0..10 {
        match model(&history) {
            Turn::Answer(a) => {
                println!("model: {a}");
                break;
            }
            Turn::Calls(calls) => {
                history.push(json!({"role": "assistant", "tool_calls": calls}));
                for c in calls {
                    let call = ToolCall::parse(&c.to_string())?;
                    let o = rt.block_on(exec.run(&call))?;
                    // What the model sees: the output, or why it was refused.
                    let content = match o.status {
                        Status::Completed => o.stdout.clone(),
                        Status::Denied => format!("denied: {}", o.reasons.join("; ")),
                        _ => format!("{:?}: {}{}", o.status, o.stdout, o.stderr),
                    };
                    println!(
                        "tool {} {} -> {:?}: {}",
                        c["function"]["name"].as_str().unwrap_or("?"),
                        c["function"]["arguments"].as_str().unwrap_or(""),
                        o.status,
                        content.trim()
                    );
                    history
                        .push(json!({"role": "tool", "tool_call_id": c["id"], "content": content}));
                }
            }
        }
    }
    rt.block_on(exec.close());
    let v = toolgate::audit::verify(&[audit.path().to_path_buf()], None)
        .map_err(|f| anyhow::anyhow!("audit: {f:?}"))?;
    println!("audit: {} entries, chain verified", v.entries);
    Ok(())
}
