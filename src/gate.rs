//! The confirmation gate: the only road from an `ask` verdict to execution.
//!
//! An [`Approver`] answers; the gate bounds how long it may take. No answer
//! in time, an approver error, or a dropped approver is a rejection: the gate
//! fails closed. Dry-run never reaches the gate.

use crate::policy::MatchedRule;
use serde::Serialize;
use std::time::Duration;

/// Default time a confirmation may stay pending before it is rejected.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// What a human is asked to confirm. Arguments are shown redacted.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmationRequest {
    pub id: String,
    pub call_id: String,
    pub tool: String,
    pub args: serde_json::Value,
    pub reasons: Vec<String>,
    pub matched_rules: Vec<MatchedRule>,
    pub created_unix_ms: u128,
    pub expires_unix_ms: u128,
}

/// The answer, as recorded in the Outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub confirmation_id: String,
    pub approved: bool,
    /// Who answered (`auto-deny`, `auto-allow`, `terminal`, a principal …), or `expired`.
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Answers confirmations. Implement it to plug in a UI, a chat, a pager.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    async fn decide(&self, req: &ConfirmationRequest) -> Answer;
}

/// Rejects everything: the default when no human is present.
pub struct DenyAll;

#[async_trait::async_trait]
impl Approver for DenyAll {
    async fn decide(&self, req: &ConfirmationRequest) -> Answer {
        Answer {
            confirmation_id: req.id.clone(),
            approved: false,
            by: "auto-deny".into(),
            note: Some("no approver is configured (non-interactive)".into()),
        }
    }
}

/// Approves everything. For tests and demos only.
pub struct AllowAll;

#[async_trait::async_trait]
impl Approver for AllowAll {
    async fn decide(&self, req: &ConfirmationRequest) -> Answer {
        Answer {
            confirmation_id: req.id.clone(),
            approved: true,
            by: "auto-allow".into(),
            note: None,
        }
    }
}

/// A blocking closure as approver (runs on a blocking thread).
pub struct FnApprover<F>(pub F);

#[async_trait::async_trait]
impl<F> Approver for FnApprover<F>
where
    F: Fn(&ConfirmationRequest) -> bool + Send + Sync + Clone + 'static,
{
    async fn decide(&self, req: &ConfirmationRequest) -> Answer {
        let f = self.0.clone();
        let r = req.clone();
        let approved = tokio::task::spawn_blocking(move || f(&r))
            .await
            .unwrap_or(false);
        Answer {
            confirmation_id: req.id.clone(),
            approved,
            by: "callback".into(),
            note: None,
        }
    }
}

pub(crate) fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Asks `approver`, rejecting if it does not answer within `ttl`.
pub async fn confirm(approver: &dyn Approver, req: &ConfirmationRequest, ttl: Duration) -> Answer {
    match tokio::time::timeout(ttl, approver.decide(req)).await {
        Ok(a) => a,
        Err(_) => Answer {
            confirmation_id: req.id.clone(),
            approved: false,
            by: "expired".into(),
            note: Some(format!("no answer within {} s", ttl.as_secs_f64())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;
    #[async_trait::async_trait]
    impl Approver for Never {
        async fn decide(&self, _: &ConfirmationRequest) -> Answer {
            std::future::pending().await
        }
    }

    fn req() -> ConfirmationRequest {
        ConfirmationRequest {
            id: "c1".into(),
            call_id: "x".into(),
            tool: "run_command".into(),
            args: serde_json::json!({}),
            reasons: vec![],
            matched_rules: vec![],
            created_unix_ms: 0,
            expires_unix_ms: 0,
        }
    }

    #[tokio::test]
    async fn expiry_rejects() {
        let a = confirm(&Never, &req(), Duration::from_millis(30)).await;
        assert!(!a.approved);
        assert_eq!(a.by, "expired");
        assert!(
            confirm(&AllowAll, &req(), Duration::from_secs(1))
                .await
                .approved
        );
        assert!(
            !confirm(&DenyAll, &req(), Duration::from_secs(1))
                .await
                .approved
        );
        assert!(
            !confirm(
                &FnApprover(|_: &ConfirmationRequest| false),
                &req(),
                Duration::from_secs(1)
            )
            .await
            .approved
        );
    }
}
