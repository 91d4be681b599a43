//! Shared state: what several toolgate services must agree on to act as
//! one, behind one trait, [`Store`]:
//!
//! - confirmations and session approvals (a call asked on one service is
//!   answered on any; the first answer recorded is the answer);
//! - call records (a result is read on any service);
//! - rate limits and budgets (one count per principal for the fleet,
//!   admitted atomically);
//! - the audit chain (one chain, appended under one lock).
//!
//! [`Memory`] is the embedded default: this process's memory and the audit
//! file, no server (what a single service or the library needs).
//! [`postgres::Postgres`] keeps all of it in PostgreSQL, so services on
//! any number of hosts share it; its state survives their restarts.

pub mod postgres;

use crate::audit::{AuditError, AuditLog};
use crate::budget::{Budgets, Limiter, Refusal};
use crate::gate::{Ledger, MemoryLedger};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A store that cannot do what was asked. Never says a password: URLs
/// are shown without their userinfo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state store {store}: {detail}")]
    Unavailable { store: String, detail: String },
    #[error("state store {store}: {detail}")]
    Corrupt { store: String, detail: String },
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("invalid state store {0:?}: expected postgres://USER@HOST[:PORT]/DB")]
    BadUrl(String),
}

/// Finished call records the embedded store keeps for `GET /v1/calls/{id}`.
pub const KEEP_CALLS: usize = 10_000;

/// The counters budgets are kept under.
pub const CALLS: &str = "calls";
pub const REQUESTS: &str = "requests";

/// A call's record, for `GET /v1/calls/{id}` on any service.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub principal: String,
    /// The service (its instance id) that runs the call.
    pub instance: String,
    /// The finished response: HTTP status, body, `Retry-After` seconds.
    pub done: Option<(u16, Value, Option<u64>)>,
}

/// Everything services share. The embedded [`Memory`] or [`postgres::Postgres`].
#[async_trait::async_trait]
pub trait Store: Ledger {
    /// What this store is, for logs and `/healthz` (no secrets).
    fn describe(&self) -> String;

    /// The audit file, when the chain is kept in one (it may not be inside
    /// a workspace).
    fn audit_path(&self) -> Option<&Path>;

    /// Whether calls are audited at all (the library's default store
    /// without a log is not).
    fn audits(&self) -> bool;

    /// Appends one audit entry (seq, ts_ms and prev are added) and returns
    /// its hash; durable before it returns.
    async fn audit(&self, fields: Map<String, Value>) -> Result<String, StateError>;

    /// The audit chain's lines, oldest first, as a file holds them
    /// (`None`: no audit).
    async fn audit_lines(&self) -> Result<Option<Vec<String>>, StateError>;

    /// Admits one call of `principal` under `counter`, counting it, or
    /// says why not; atomic across every service sharing the store.
    async fn admit(
        &self,
        counter: &str,
        principal: &str,
        budgets: &Budgets,
    ) -> Result<Result<(), Refusal>, StateError>;

    /// Charges what an admitted call used.
    async fn charge(
        &self,
        counter: &str,
        principal: &str,
        wall: Duration,
        cpu: Option<Duration>,
    ) -> Result<(), StateError>;

    /// Records a call as started here; `false` if the id is taken.
    async fn start_call(&self, id: &str, principal: &str) -> Result<bool, StateError>;

    /// Records a call's response.
    async fn finish_call(
        &self,
        id: &str,
        status: u16,
        body: &Value,
        retry_after: Option<u64>,
    ) -> Result<(), StateError>;

    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StateError>;

    /// Says this service is alive (shared stores; the embedded one has no
    /// one else to tell).
    async fn heartbeat(&self) -> Result<(), StateError> {
        Ok(())
    }

    /// Confirmations whose service has not been heard from for `stale`
    /// and whose call was never taken: answered ones, and unanswered ones
    /// past their expiry (recorded here as expired). For another service
    /// to [`Ledger::take`] and run (or deny) in its place.
    async fn orphans(&self, _stale: Duration) -> Result<Vec<Orphan>, StateError> {
        Ok(Vec::new())
    }
}

/// A call asked on a service that stopped, answered since.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub confirmation: String,
    /// The call, in toolgate's JSON shape.
    pub call: String,
    pub principal: String,
    pub answer: crate::gate::Answer,
}

/// Connects to the shared store `url` names (`postgres://…`). The
/// embedded store has no URL: it is [`Memory`], made directly.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StateError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::Postgres::connect(url, AuditLog::key_from_env()).await?,
        ))
    } else {
        Err(StateError::BadUrl(postgres::without_password(url)))
    }
}

/// This process's id among the services sharing a store (a fresh UUID per
/// process).
pub fn instance() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The embedded store: this process's memory and, when given, the audit
/// file. Today's single-service behaviour; needs no server.
pub struct Memory {
    ledger: MemoryLedger,
    audit: Option<Arc<AuditLog>>,
    limiters: Mutex<HashMap<String, Limiter>>,
    calls: Mutex<(HashMap<String, CallRecord>, VecDeque<String>)>,
    keep_calls: usize,
}

impl Memory {
    /// `keep_calls`: finished call records kept (the oldest go first).
    pub fn new(audit: Option<Arc<AuditLog>>, keep_calls: usize) -> Memory {
        Memory {
            ledger: MemoryLedger::default(),
            audit,
            limiters: Mutex::new(HashMap::new()),
            calls: Mutex::new((HashMap::new(), VecDeque::new())),
            keep_calls,
        }
    }

    /// The usage kept under `counter` (judged under the budgets each
    /// caller gives).
    fn limiter<R>(&self, counter: &str, f: impl FnOnce(&Limiter) -> R) -> R {
        let mut all = lock(&self.limiters);
        let l = all
            .entry(counter.to_string())
            .or_insert_with(|| Limiter::new(Budgets::default()));
        f(l)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait::async_trait]
impl Ledger for Memory {
    fn shared(&self) -> bool {
        false
    }
    async fn open(
        &self,
        req: &crate::gate::ConfirmationRequest,
    ) -> Result<(), crate::gate::GateError> {
        self.ledger.open(req).await
    }
    async fn settle(
        &self,
        id: &str,
        a: &crate::gate::Answer,
        answerer: Option<&str>,
    ) -> Result<(), crate::gate::GateError> {
        self.ledger.settle(id, a, answerer).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<
        Option<(
            crate::gate::ConfirmationRequest,
            Option<crate::gate::Answer>,
        )>,
        crate::gate::GateError,
    > {
        self.ledger.get(id).await
    }
    async fn pending(
        &self,
    ) -> Result<Vec<crate::gate::ConfirmationRequest>, crate::gate::GateError> {
        self.ledger.pending().await
    }
    async fn pending_for(&self, call_id: &str) -> Result<Option<String>, crate::gate::GateError> {
        self.ledger.pending_for(call_id).await
    }
    async fn approve_rules(
        &self,
        principal: &str,
        rules: &[String],
    ) -> Result<(), crate::gate::GateError> {
        self.ledger.approve_rules(principal, rules).await
    }
    async fn approved(
        &self,
        principal: &str,
        rules: &[&str],
    ) -> Result<bool, crate::gate::GateError> {
        self.ledger.approved(principal, rules).await
    }
    async fn take(&self, id: &str) -> Result<bool, crate::gate::GateError> {
        self.ledger.take(id).await
    }
}

#[async_trait::async_trait]
impl Store for Memory {
    fn describe(&self) -> String {
        "embedded".into()
    }

    fn audit_path(&self) -> Option<&Path> {
        self.audit.as_deref().map(AuditLog::path)
    }

    fn audits(&self) -> bool {
        self.audit.is_some()
    }

    async fn audit(&self, fields: Map<String, Value>) -> Result<String, StateError> {
        match &self.audit {
            Some(log) => Ok(log.append(&fields)?),
            None => Ok(String::new()),
        }
    }

    async fn audit_lines(&self) -> Result<Option<Vec<String>>, StateError> {
        let Some(log) = &self.audit else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(log.path()).map_err(|source| AuditError::Io {
            path: log.path().display().to_string(),
            source,
        })?;
        Ok(Some(text.lines().map(str::to_string).collect()))
    }

    async fn admit(
        &self,
        counter: &str,
        principal: &str,
        budgets: &Budgets,
    ) -> Result<Result<(), Refusal>, StateError> {
        Ok(self.limiter(counter, |l| l.admit_under(budgets, principal)))
    }

    async fn charge(
        &self,
        counter: &str,
        principal: &str,
        wall: Duration,
        cpu: Option<Duration>,
    ) -> Result<(), StateError> {
        self.limiter(counter, |l| l.charge(principal, wall, cpu));
        Ok(())
    }

    async fn start_call(&self, id: &str, principal: &str) -> Result<bool, StateError> {
        let mut c = lock(&self.calls);
        if c.0.contains_key(id) {
            return Ok(false);
        }
        c.0.insert(
            id.to_string(),
            CallRecord {
                principal: principal.to_string(),
                instance: instance().to_string(),
                done: None,
            },
        );
        c.1.push_back(id.to_string());
        // Forget the oldest finished calls beyond the cap (a running one
        // stops the sweep: it is never forgotten).
        while c.1.len() > self.keep_calls {
            let Some(old) = c.1.front().cloned() else {
                break;
            };
            if c.0.get(&old).is_some_and(|r| r.done.is_none()) {
                break;
            }
            c.1.pop_front();
            c.0.remove(&old);
        }
        Ok(true)
    }

    async fn finish_call(
        &self,
        id: &str,
        status: u16,
        body: &Value,
        retry_after: Option<u64>,
    ) -> Result<(), StateError> {
        if let Some(r) = lock(&self.calls).0.get_mut(id) {
            r.done = Some((status, body.clone(), retry_after));
        }
        Ok(())
    }

    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StateError> {
        Ok(lock(&self.calls).0.get(id).cloned())
    }
}
