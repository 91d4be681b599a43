//! The confirmation gate: the only road from an `ask` verdict to execution.
//!
//! Each `ask` becomes a pending confirmation in a [`Gate`] (listable, with
//! an id and an expiry). It is answered either by the configured
//! [`Approver`] (callback, terminal prompt, deny-all) or from outside by id
//! ([`Gate::answer`], used by the HTTP service) — whichever comes first.
//! No answer in time, an approver that fails, or a shutdown is a rejection:
//! the gate fails closed. An approval may cover the rest of the session for
//! the same rules ([`Scope::Session`]). Dry-run never reaches the gate.

mod terminal;

pub use terminal::{ApproveMode, TerminalApprover};

use crate::policy::{Decision, MatchedRule};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Default time a confirmation may stay pending before it is rejected.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// What a human is asked to confirm. Arguments are shown redacted.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmationRequest {
    pub id: String,
    pub call_id: String,
    /// Who made the call: the one principal that may not answer it.
    pub principal: String,
    pub tool: String,
    pub args: serde_json::Value,
    pub reasons: Vec<String>,
    pub matched_rules: Vec<MatchedRule>,
    pub created_unix_ms: u128,
    pub expires_unix_ms: u128,
    /// Whether an approval may cover the same rules for the rest of the
    /// session (only when every ask comes from a named rule).
    pub session_scope_available: bool,
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
    pub scope: Scope,
}

/// How far an approval reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// This call only.
    #[default]
    Once,
    /// This call and, for the rest of the session, later calls asked about
    /// by the same rules (and nothing else).
    Session,
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
            scope: Scope::Once,
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
            scope: Scope::Once,
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
            scope: Scope::Once,
        }
    }
}

pub(crate) use crate::units::now_ms;

/// Errors answering a confirmation by id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateError {
    #[error("no pending confirmation {0}")]
    Unknown(String),
    #[error("confirmation {0} has expired (it was rejected)")]
    Expired(String),
    #[error("confirmation {0} was already answered")]
    Answered(String),
    /// The principal that made a call may not approve or reject it.
    #[error("confirmation {0} is for a call of yours: another principal must answer it")]
    OwnCall(String),
}

struct Waiting {
    req: ConfirmationRequest,
    tx: oneshot::Sender<Answer>,
}

/// Ids remembered after they end, so a late answer gets a clear error.
const REMEMBERED: usize = 4096;

/// Pending confirmations of one executor (one session).
#[derive(Default)]
pub struct Gate {
    pending: Mutex<HashMap<String, Waiting>>,
    ended: Mutex<VecDeque<(String, bool)>>,
    /// (principal, rule id) pairs approved for the rest of the session.
    session_rules: Mutex<HashSet<(String, String)>>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The rules that made a request `ask` (what a session approval covers).
fn ask_rules(req: &ConfirmationRequest) -> Vec<&str> {
    req.matched_rules
        .iter()
        .filter(|m| m.decision == Decision::Ask)
        .map(|m| m.id.as_str())
        .collect()
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Confirmations waiting for an answer, oldest first.
    pub fn pending(&self) -> Vec<ConfirmationRequest> {
        let mut v: Vec<ConfirmationRequest> = lock(&self.pending)
            .values()
            .map(|w| w.req.clone())
            .collect();
        v.sort_by_key(|r| r.created_unix_ms);
        v
    }

    /// Answers a pending confirmation by id.
    pub fn answer(
        &self,
        id: &str,
        approved: bool,
        scope: Scope,
        by: &str,
        note: Option<String>,
    ) -> Result<(), GateError> {
        let w = {
            let mut pending = lock(&self.pending);
            match pending.get(id) {
                // An agent holding its own token cannot approve itself.
                Some(w) if w.req.principal == by => {
                    return Err(GateError::OwnCall(id.to_string()));
                }
                Some(_) => pending.remove(id),
                None => None,
            }
        };
        let Some(w) = w else {
            return Err(self
                .answerable(id)
                .err()
                .unwrap_or_else(|| GateError::Unknown(id.to_string())));
        };
        self.remember(id, false);
        let a = Answer {
            confirmation_id: id.to_string(),
            approved,
            by: by.to_string(),
            note,
            scope,
        };
        // The waiting side may have just expired; then the answer is moot.
        let _ = w.tx.send(a);
        Ok(())
    }

    /// The pending confirmation of call `call_id`, if there is one.
    pub fn pending_for(&self, call_id: &str) -> Option<String> {
        lock(&self.pending)
            .values()
            .find(|w| w.req.call_id == call_id)
            .map(|w| w.req.id.clone())
    }

    /// `Ok` while `id` is pending; else why it cannot be answered
    /// (unknown, expired, answered). Changes nothing.
    pub fn answerable(&self, id: &str) -> Result<(), GateError> {
        if lock(&self.pending).contains_key(id) {
            return Ok(());
        }
        Err(match lock(&self.ended).iter().find(|(i, _)| i == id) {
            Some((_, true)) => GateError::Expired(id.to_string()),
            Some((_, false)) => GateError::Answered(id.to_string()),
            None => GateError::Unknown(id.to_string()),
        })
    }

    fn remember(&self, id: &str, expired: bool) {
        let mut e = lock(&self.ended);
        if e.len() >= REMEMBERED {
            e.pop_front();
        }
        e.push_back((id.to_string(), expired));
    }

    /// Whether an earlier session-wide approval covers this request: every
    /// ask must come from a named rule that the same principal had approved
    /// for the session (an unresolved construct, a default, flagged input or
    /// a tool-level `ask` is never covered).
    pub fn covered_by_session(&self, req: &ConfirmationRequest) -> bool {
        let rules = ask_rules(req);
        req.session_scope_available && !rules.is_empty() && {
            let s = lock(&self.session_rules);
            rules
                .iter()
                .all(|r| s.contains(&(req.principal.clone(), r.to_string())))
        }
    }

    /// Registers `req`, asks `approver`, and returns the first answer —
    /// from the approver or from [`Gate::answer`] — or a rejection at
    /// expiry or shutdown.
    pub async fn confirm(
        &self,
        approver: &dyn Approver,
        req: ConfirmationRequest,
        ttl: Duration,
    ) -> Answer {
        let reject = |by: &str, note: String| Answer {
            confirmation_id: req.id.clone(),
            approved: false,
            by: by.to_string(),
            note: Some(note),
            scope: Scope::Once,
        };
        if self.closed.load(Ordering::SeqCst) {
            return reject("shutdown", "the executor is shutting down".into());
        }
        if self.covered_by_session(&req) {
            return Answer {
                confirmation_id: req.id.clone(),
                approved: true,
                by: "session-approval".into(),
                note: Some(format!(
                    "rules {} were approved for this session",
                    ask_rules(&req).join(", ")
                )),
                scope: Scope::Session,
            };
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(
            req.id.clone(),
            Waiting {
                req: req.clone(),
                tx,
            },
        );
        let outcome = tokio::time::timeout(ttl, async {
            tokio::select! {
                a = approver.decide(&req) => a,
                a = rx => a.unwrap_or_else(|_| reject("shutdown", "the gate was closed".into())),
            }
        })
        .await;
        let expired = outcome.is_err();
        if lock(&self.pending).remove(&req.id).is_some() {
            self.remember(&req.id, expired);
        }
        let mut a = outcome.unwrap_or_else(|_| {
            reject(
                "expired",
                format!("no answer within {} s", ttl.as_secs_f64()),
            )
        });
        if a.approved && a.scope == Scope::Session {
            if req.session_scope_available {
                let who = &req.principal;
                lock(&self.session_rules).extend(
                    ask_rules(&req)
                        .into_iter()
                        .map(|r| (who.clone(), r.to_string())),
                );
            } else {
                // Approved for this call only: what asked has no name to remember.
                a.scope = Scope::Once;
                let once =
                    "approved once: this ask is not raised by a named rule, so it is asked again";
                a.note = Some(match a.note.take() {
                    Some(n) => format!("{n} ({once})"),
                    None => once.into(),
                });
            }
        }
        a
    }

    /// Rejects everything pending and every later request.
    pub fn shutdown(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let drained: Vec<(String, Waiting)> = lock(&self.pending).drain().collect();
        let n = drained.len();
        for (id, w) in drained {
            self.remember(&id, false);
            let _ = w.tx.send(Answer {
                confirmation_id: id,
                approved: false,
                by: "shutdown".into(),
                note: Some("the executor shut down while this was pending".into()),
                scope: Scope::Once,
            });
        }
        n
    }
}

/// Waits for [`Gate::answer`] only (for services whose humans answer by id).
pub struct External;

#[async_trait::async_trait]
impl Approver for External {
    async fn decide(&self, _: &ConfirmationRequest) -> Answer {
        std::future::pending().await
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
            principal: "agent".into(),
            tool: "run_command".into(),
            args: serde_json::json!({}),
            reasons: vec![],
            matched_rules: vec![],
            created_unix_ms: 0,
            expires_unix_ms: 0,
            session_scope_available: false,
        }
    }

    #[tokio::test]
    async fn expiry_rejects() {
        let g = Gate::new();
        let a = g.confirm(&Never, req(), Duration::from_millis(30)).await;
        assert!(!a.approved);
        assert_eq!(a.by, "expired");
        assert!(
            g.confirm(&AllowAll, req(), Duration::from_secs(1))
                .await
                .approved
        );
        assert!(
            !g.confirm(&DenyAll, req(), Duration::from_secs(1))
                .await
                .approved
        );
        assert!(
            !g.confirm(
                &FnApprover(|_: &ConfirmationRequest| false),
                req(),
                Duration::from_secs(1)
            )
            .await
            .approved
        );
    }
}
