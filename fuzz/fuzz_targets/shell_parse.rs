//! The shell parser never panics, and a command it cannot fully resolve is
//! never allowed by the default policy.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static POLICY: OnceLock<toolgate::Policy> = OnceLock::new();
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let analysis = toolgate::policy::command::analyse_shell(src);
    if analysis.unresolved.is_empty() {
        return;
    }
    let policy = POLICY.get_or_init(toolgate::Policy::builtin_default);
    let call = toolgate::ToolCall::new(
        "f",
        toolgate::Tool::RunCommand(toolgate::call::RunCommand {
            command: toolgate::call::Command::Shell(src.to_string()),
            cwd: None,
            timeout: None,
        }),
    );
    let v = policy.evaluate(&call, std::path::Path::new("/nonexistent-fuzz-ws"));
    assert_ne!(
        v.decision,
        toolgate::Decision::Allow,
        "{src:?} unresolved {:?} yet allowed",
        analysis.unresolved
    );
});
