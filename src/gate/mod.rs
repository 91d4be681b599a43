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
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Default time a confirmation may stay pending before it is rejected.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// What a human is asked to confirm. Arguments are shown redacted.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The call itself (toolgate's JSON shape), kept by a shared ledger so
    /// that another service can run it once answered if the service that
    /// asked has stopped. Never shown: `args` above is the redacted view.
    #[serde(skip)]
    pub resume: Option<String>,
}

/// The answer, as recorded in the Outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The ledger (the state store) cannot be read or written: nothing is
    /// approved without it.
    #[error("confirmations are unavailable: {0}")]
    Unavailable(String),
}

/// Where confirmations and session approvals are kept: this process's
/// memory ([`MemoryLedger`]) or a store several services share
/// (`state::postgres`), so that a call asked on one service can be
/// answered on any. The first answer recorded is the answer: every
/// writer goes through [`Ledger::settle`], which refuses the second.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Whether another process may settle a confirmation (then the
    /// waiting side looks for answers in the ledger, not only locally).
    fn shared(&self) -> bool;
    /// Records a new pending confirmation.
    async fn open(&self, req: &ConfirmationRequest) -> Result<(), GateError>;
    /// Records `a` as the answer to `id` if none is yet. `answerer`, for an
    /// answer from outside (by id), is refused when it made the call and
    /// when the confirmation's expiry has passed.
    async fn settle(&self, id: &str, a: &Answer, answerer: Option<&str>) -> Result<(), GateError>;
    /// The request and its answer, if it is known.
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<(ConfirmationRequest, Option<Answer>)>, GateError>;
    /// Unanswered confirmations whose expiry has not passed, oldest first.
    async fn pending(&self) -> Result<Vec<ConfirmationRequest>, GateError>;
    /// The id of call `call_id`'s unanswered confirmation, if it has one.
    async fn pending_for(&self, call_id: &str) -> Result<Option<String>, GateError> {
        Ok(self
            .pending()
            .await?
            .into_iter()
            .find(|r| r.call_id == call_id)
            .map(|r| r.id))
    }
    /// Remembers that `principal` approved `rules` for the session.
    async fn approve_rules(&self, principal: &str, rules: &[String]) -> Result<(), GateError>;
    /// Whether `principal` approved every one of `rules` for the session.
    async fn approved(&self, principal: &str, rules: &[&str]) -> Result<bool, GateError>;
    /// Takes the answered confirmation `id` for running its call: `true`
    /// for the first taker only, so a call is never run by two services.
    async fn take(&self, id: &str) -> Result<bool, GateError>;
}

/// The judgement [`Ledger::settle`] makes, shared by every ledger so they
/// cannot differ: may `answerer` record an answer to `req` (whose answer
/// so far is `prior`) at `now`?
pub fn may_settle(
    req: &ConfirmationRequest,
    prior: Option<&Answer>,
    answerer: Option<&str>,
    now: u128,
) -> Result<(), GateError> {
    let id = || req.id.clone();
    match prior {
        Some(a) if a.by == EXPIRED => return Err(GateError::Expired(id())),
        Some(_) => return Err(GateError::Answered(id())),
        None => {}
    }
    if let Some(who) = answerer {
        // An agent holding its own token cannot approve itself.
        if who == req.principal {
            return Err(GateError::OwnCall(id()));
        }
        if now >= req.expires_unix_ms {
            return Err(GateError::Expired(id()));
        }
    }
    Ok(())
}

/// Who an expiry is recorded as.
pub const EXPIRED: &str = "expired";

/// Ids remembered after they end, so a late answer gets a clear error.
const REMEMBERED: usize = 4096;

/// The ledger of one process: confirmations and session approvals in
/// memory (the embedded default).
#[derive(Default)]
pub struct MemoryLedger {
    all: Mutex<HashMap<String, (ConfirmationRequest, Option<Answer>)>>,
    /// Settled ids, oldest first, forgotten beyond [`REMEMBERED`].
    settled: Mutex<VecDeque<String>>,
    /// (principal, rule id) pairs approved for the rest of the session.
    session_rules: Mutex<HashSet<(String, String)>>,
}

#[async_trait::async_trait]
impl Ledger for MemoryLedger {
    fn shared(&self) -> bool {
        false
    }

    async fn open(&self, req: &ConfirmationRequest) -> Result<(), GateError> {
        lock(&self.all).insert(req.id.clone(), (req.clone(), None));
        Ok(())
    }

    async fn settle(&self, id: &str, a: &Answer, answerer: Option<&str>) -> Result<(), GateError> {
        {
            let mut all = lock(&self.all);
            let Some((req, prior)) = all.get_mut(id) else {
                return Err(GateError::Unknown(id.to_string()));
            };
            may_settle(req, prior.as_ref(), answerer, now_ms())?;
            *prior = Some(a.clone());
        }
        let mut s = lock(&self.settled);
        s.push_back(id.to_string());
        if s.len() > REMEMBERED
            && let Some(old) = s.pop_front()
        {
            lock(&self.all).remove(&old);
        }
        Ok(())
    }

    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<(ConfirmationRequest, Option<Answer>)>, GateError> {
        Ok(lock(&self.all).get(id).cloned())
    }

    async fn pending(&self) -> Result<Vec<ConfirmationRequest>, GateError> {
        let now = now_ms();
        let mut v: Vec<ConfirmationRequest> = lock(&self.all)
            .values()
            .filter(|(r, a)| a.is_none() && now < r.expires_unix_ms)
            .map(|(r, _)| r.clone())
            .collect();
        v.sort_by_key(|r| r.created_unix_ms);
        Ok(v)
    }

    async fn approve_rules(&self, principal: &str, rules: &[String]) -> Result<(), GateError> {
        lock(&self.session_rules)
            .extend(rules.iter().map(|r| (principal.to_string(), r.to_string())));
        Ok(())
    }

    async fn approved(&self, principal: &str, rules: &[&str]) -> Result<bool, GateError> {
        let s = lock(&self.session_rules);
        Ok(rules
            .iter()
            .all(|r| s.contains(&(principal.to_string(), r.to_string()))))
    }

    async fn take(&self, _: &str) -> Result<bool, GateError> {
        // One process: the waiter that asked is the only taker.
        Ok(true)
    }
}

/// An answer handed to a waiting [`Gate::confirm`]: already recorded in
/// the ledger, or (at shutdown) still to be recorded by the waiter.
struct Delivery {
    answer: Answer,
    recorded: bool,
}

/// How often a waiting call looks for an answer given on another service.
const POLL: Duration = Duration::from_millis(100);

/// Pending confirmations of one executor, kept in its [`Ledger`].
pub struct Gate {
    ledger: Arc<dyn Ledger>,
    /// Confirmations this process waits on (by id, with their call's id),
    /// to wake them at once.
    waiting: Mutex<HashMap<String, (String, oneshot::Sender<Delivery>)>>,
    closed: AtomicBool,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(Arc::new(MemoryLedger::default()))
    }
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
    pub fn new(ledger: Arc<dyn Ledger>) -> Gate {
        Gate {
            ledger,
            waiting: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Confirmations waiting for an answer (on any service sharing the
    /// ledger), oldest first.
    pub async fn pending(&self) -> Result<Vec<ConfirmationRequest>, GateError> {
        self.ledger.pending().await
    }

    /// Answers a pending confirmation by id, on behalf of principal `by`.
    pub async fn answer(
        &self,
        id: &str,
        approved: bool,
        scope: Scope,
        by: &str,
        note: Option<String>,
    ) -> Result<(), GateError> {
        let a = Answer {
            confirmation_id: id.to_string(),
            approved,
            by: by.to_string(),
            note,
            scope,
        };
        self.ledger.settle(id, &a, Some(by)).await?;
        // The waiter may be here (woken now) or on another service (it
        // finds the answer in the ledger).
        if let Some((_, tx)) = lock(&self.waiting).remove(id) {
            let _ = tx.send(Delivery {
                answer: a,
                recorded: true,
            });
        }
        Ok(())
    }

    /// The pending confirmation of call `call_id`, if there is one.
    pub async fn pending_for(&self, call_id: &str) -> Option<String> {
        self.ledger.pending_for(call_id).await.ok().flatten()
    }

    /// The confirmation this process waits on for call `call_id`, if any:
    /// for a call running here, no store is asked.
    pub fn waiting_for(&self, call_id: &str) -> Option<String> {
        lock(&self.waiting)
            .iter()
            .find(|(_, (c, _))| c == call_id)
            .map(|(id, _)| id.clone())
    }

    /// `Ok` while `id` is pending; else why it cannot be answered
    /// (unknown, expired, answered). Changes nothing.
    pub async fn answerable(&self, id: &str) -> Result<(), GateError> {
        match self.ledger.get(id).await? {
            None => Err(GateError::Unknown(id.to_string())),
            Some((req, prior)) => may_settle(&req, prior.as_ref(), None, now_ms()).and_then(|()| {
                if now_ms() >= req.expires_unix_ms {
                    Err(GateError::Expired(id.to_string()))
                } else {
                    Ok(())
                }
            }),
        }
    }

    /// Whether an earlier session-wide approval covers this request: every
    /// ask must come from a named rule that the same principal had approved
    /// for the session (an unresolved construct, a default, flagged input or
    /// a tool-level `ask` is never covered).
    pub async fn covered_by_session(&self, req: &ConfirmationRequest) -> bool {
        let rules = ask_rules(req);
        req.session_scope_available
            && !rules.is_empty()
            && self
                .ledger
                .approved(&req.principal, &rules)
                .await
                .unwrap_or(false)
    }

    /// Registers `req`, asks `approver`, and returns the first answer —
    /// from the approver, from [`Gate::answer`] here, or from another
    /// service sharing the ledger — or a rejection at expiry or shutdown,
    /// or when the ledger fails.
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
        if self.covered_by_session(&req).await {
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
        if let Err(e) = self.ledger.open(&req).await {
            return reject("unavailable", e.to_string());
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(req.id.clone(), (req.call_id.clone(), tx));
        let elsewhere = async {
            if !self.ledger.shared() {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(POLL).await;
                if let Ok(Some((_, Some(a)))) = self.ledger.get(&req.id).await {
                    return a;
                }
            }
        };
        let got = tokio::time::timeout(ttl, async {
            tokio::select! {
                a = approver.decide(&req) => Delivery { answer: a, recorded: false },
                d = rx => d.unwrap_or_else(|_| Delivery {
                    answer: reject("shutdown", "the gate was closed".into()),
                    recorded: false,
                }),
                a = elsewhere => Delivery { answer: a, recorded: true },
            }
        })
        .await;
        lock(&self.waiting).remove(&req.id);
        let d = got.unwrap_or_else(|_| Delivery {
            answer: reject(EXPIRED, format!("no answer within {} s", ttl.as_secs_f64())),
            recorded: false,
        });
        let mut a = if d.recorded {
            d.answer
        } else {
            // First answer recorded wins: an approval recorded elsewhere a
            // moment before this expiry stands, and the other way round.
            match self.ledger.settle(&req.id, &d.answer, None).await {
                Ok(()) => d.answer,
                Err(GateError::Answered(_) | GateError::Expired(_)) => {
                    match self.ledger.get(&req.id).await {
                        Ok(Some((_, Some(a)))) => a,
                        _ => reject("unavailable", "the recorded answer cannot be read".into()),
                    }
                }
                Err(e) => reject("unavailable", e.to_string()),
            }
        };
        // The call is this service's to run or deny only if no other
        // service took it over (one would have, had this one looked
        // stopped to it); taking it keeps the others from doing so later.
        if req.resume.is_some() && !matches!(self.ledger.take(&req.id).await, Ok(true)) {
            return reject(
                "taken",
                "another service took this call over; it did not run here".into(),
            );
        }
        if a.approved && a.scope == Scope::Session {
            let rules: Vec<String> = ask_rules(&req).iter().map(|r| r.to_string()).collect();
            let kept = req.session_scope_available
                && self
                    .ledger
                    .approve_rules(&req.principal, &rules)
                    .await
                    .is_ok();
            if !kept {
                // Approved for this call only: what asked has no name to
                // remember (or it could not be remembered).
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

    /// Rejects everything this process waits on and every later request.
    pub fn shutdown(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let drained: Vec<(String, (String, oneshot::Sender<Delivery>))> =
            lock(&self.waiting).drain().collect();
        let n = drained.len();
        for (id, (_, tx)) in drained {
            let _ = tx.send(Delivery {
                answer: Answer {
                    confirmation_id: id,
                    approved: false,
                    by: "shutdown".into(),
                    note: Some("the executor shut down while this was pending".into()),
                    scope: Scope::Once,
                },
                recorded: false,
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
            expires_unix_ms: u128::MAX,
            session_scope_available: false,
            resume: None,
        }
    }

    #[tokio::test]
    async fn expiry_rejects() {
        let g = Gate::default();
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
