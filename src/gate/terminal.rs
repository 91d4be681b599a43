//! The approver for a person at a terminal, and the choice of approver
//! from a mode (`--approve prompt|deny|allow`).

use super::{AllowAll, Answer, Approver, ConfirmationRequest, DenyAll, Scope};
use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

/// Who answers `ask` decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveMode {
    /// Ask on the controlling terminal.
    Prompt,
    /// Reject every confirmation (the non-interactive default).
    Deny,
    /// Approve every confirmation: tests and demos only.
    Allow,
}

impl ApproveMode {
    /// `mode`, or else prompt when stdin and stderr are terminals and deny
    /// otherwise (fail closed when nobody can answer).
    pub fn or_default(mode: Option<ApproveMode>) -> ApproveMode {
        mode.unwrap_or(
            if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
                ApproveMode::Prompt
            } else {
                ApproveMode::Deny
            },
        )
    }

    pub fn approver(self) -> Arc<dyn Approver> {
        match self {
            ApproveMode::Allow => Arc::new(AllowAll),
            ApproveMode::Deny => Arc::new(DenyAll),
            ApproveMode::Prompt => Arc::new(TerminalApprover),
        }
    }
}

/// Asks on the controlling terminal (`/dev/tty`, never stdin, which may carry
/// data); only an explicit `yes` (or `always`) approves.
pub struct TerminalApprover;

#[async_trait::async_trait]
impl Approver for TerminalApprover {
    async fn decide(&self, req: &ConfirmationRequest) -> Answer {
        let r = req.clone();
        let answer = tokio::task::spawn_blocking(move || prompt(&r).unwrap_or_default())
            .await
            .unwrap_or_default();
        Answer {
            confirmation_id: req.id.clone(),
            approved: answer == "yes" || answer == "always",
            by: "terminal".into(),
            note: None,
            scope: if answer == "always" {
                Scope::Session
            } else {
                Scope::Once
            },
        }
    }
}

fn prompt(req: &ConfirmationRequest) -> std::io::Result<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    writeln!(
        tty,
        "\ntoolgate: confirmation {} for {} call {}",
        req.id, req.tool, req.call_id
    )?;
    writeln!(
        tty,
        "  args: {}",
        serde_json::to_string(&req.args).unwrap_or_default()
    )?;
    for r in &req.reasons {
        writeln!(tty, "  because: {r}")?;
    }
    write!(
        tty,
        "Run it? 'yes' approves this call, 'always' also later calls asked by the same rules; anything else rejects: "
    )?;
    tty.flush()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(tty.take(4096)), &mut line)?;
    Ok(line.trim().to_string())
}
