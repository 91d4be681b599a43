//! The state store on PostgreSQL: every service pointed at the same
//! database acts as one.
//!
//! - Schema: created and upgraded at connect, in one transaction under an
//!   advisory lock, so services starting together migrate once.
//! - Audit chain: one table of lines, each exactly as the file would hold
//!   it ([`crate::audit::compose`]). An append takes a transaction-scoped
//!   advisory lock, reads the head, writes the next entry chained to it and
//!   commits; so the fleet has one chain, never a fork, and
//!   its lines feed the file verifier unchanged.
//! - Budgets: a row per (counter, principal) locked `FOR UPDATE` while the
//!   admission is judged ([`crate::budget::judge`], the same judgement as
//!   the embedded store) against the database's clock.
//! - Confirmations: a row per confirmation; the first answer is written
//!   under the row's lock ([`crate::gate::may_settle`]), later ones get
//!   why not.
//! - Call records: a row per call, with its response once finished.

use super::{CallRecord, StateError, Store};
use crate::audit::{AuditError, compose, genesis, head_of};
use crate::budget::{Budgets, HOUR_MS, Refusal, Totals, judge};
use crate::gate::{Answer, ConfirmationRequest, GateError, Ledger, may_settle};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// The schema, one step per version; applied in order, each once.
const MIGRATIONS: &[&str] = &[
    // 1: everything services share.
    "CREATE TABLE toolgate_audit (seq bigint PRIMARY KEY, line text NOT NULL);
     CREATE TABLE toolgate_confirmations (
        id text PRIMARY KEY, call_id text NOT NULL, principal text NOT NULL,
        instance text NOT NULL, request text NOT NULL, created_ms bigint NOT NULL,
        expires_ms bigint NOT NULL, answer text);
     CREATE INDEX toolgate_confirmations_open ON toolgate_confirmations (created_ms) WHERE answer IS NULL;
     CREATE INDEX toolgate_confirmations_call ON toolgate_confirmations (call_id);
     CREATE TABLE toolgate_session_rules (
        principal text NOT NULL, rule text NOT NULL, PRIMARY KEY (principal, rule));
     CREATE TABLE toolgate_usage (
        counter text NOT NULL, principal text NOT NULL, calls bigint NOT NULL DEFAULT 0,
        wall double precision NOT NULL DEFAULT 0, cpu double precision NOT NULL DEFAULT 0,
        PRIMARY KEY (counter, principal));
     CREATE TABLE toolgate_recent (counter text NOT NULL, principal text NOT NULL, at_ms bigint NOT NULL);
     CREATE INDEX toolgate_recent_by ON toolgate_recent (counter, principal, at_ms);
     CREATE TABLE toolgate_calls (
        id text PRIMARY KEY, principal text NOT NULL, instance text NOT NULL,
        started_ms bigint NOT NULL, status integer, body text, retry_after bigint);",
    // 2: services say they are alive; a call asked on one that stopped is
    // taken over by another.
    "CREATE TABLE toolgate_instances (id text PRIMARY KEY, seen_ms bigint NOT NULL);
     ALTER TABLE toolgate_confirmations ADD COLUMN call text, ADD COLUMN taken_by text;",
];

/// Advisory lock keys (arbitrary constants, toolgate's own).
const LOCK_MIGRATE: i64 = 0x746f_6f6c_6761_0001;
const LOCK_AUDIT: i64 = 0x746f_6f6c_6761_0002;

/// Connections per service.
const POOL: usize = 16;

/// A URL for messages: its password, if any, replaced.
pub fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => "[not a URL]".into(),
    }
}

/// The PostgreSQL store.
pub struct Postgres {
    pool: Pool,
    shown: String,
    key: Option<Vec<u8>>,
}

fn ms(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Postgres {
    /// Connects, with a pool of 16 connections, and brings the
    /// schema up to date. `key` keys the audit chain's HMACs.
    pub async fn connect(url: &str, key: Option<Vec<u8>>) -> Result<Postgres, StateError> {
        let shown = without_password(url);
        let cfg: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StateError::Unavailable {
                    store: shown.clone(),
                    detail: format!("bad URL: {e}"),
                })?;
        let mgr = Manager::from_config(
            cfg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StateError::Unavailable {
                store: shown.clone(),
                detail: e.to_string(),
            })?;
        let pg = Postgres {
            pool,
            shown,
            key: key.filter(|k| !k.is_empty()),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    fn down(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Unavailable {
            store: self.shown.clone(),
            detail: e.to_string(),
        }
    }

    fn gate_down(&self, e: impl std::fmt::Display) -> GateError {
        GateError::Unavailable(self.down(e).to_string())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool.get().await.map_err(|e| self.down(e))
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.down(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(|e| self.down(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS toolgate_schema (version integer NOT NULL)")
            .await
            .map_err(|e| self.down(e))?;
        let have: i64 = tx
            .query_one("SELECT count(*) FROM toolgate_schema", &[])
            .await
            .map_err(|e| self.down(e))?
            .get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            tx.batch_execute(m).await.map_err(|e| self.down(e))?;
            tx.execute(
                "INSERT INTO toolgate_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(|e| self.down(e))?;
        }
        tx.commit().await.map_err(|e| self.down(e))
    }

    /// The database's clock, in ms: one clock for the whole fleet's windows.
    async fn now(c: &impl deadpool_postgres::GenericClient) -> Result<u64, tokio_postgres::Error> {
        let v: i64 = c
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await?
            .get(0);
        Ok(v.max(0) as u64)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, text: &str) -> Result<T, StateError> {
        serde_json::from_str(text).map_err(|e| StateError::Corrupt {
            store: self.shown.clone(),
            detail: e.to_string(),
        })
    }
}

#[async_trait::async_trait]
impl Ledger for Postgres {
    fn shared(&self) -> bool {
        true
    }

    async fn open(&self, req: &ConfirmationRequest) -> Result<(), GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        let text = serde_json::to_string(req).map_err(|e| self.gate_down(e))?;
        c.execute(
            "INSERT INTO toolgate_confirmations (id, call_id, principal, instance, request, created_ms, expires_ms, call)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &req.id,
                &req.call_id,
                &req.principal,
                &super::instance(),
                &text,
                &ms(req.created_unix_ms),
                &ms(req.expires_unix_ms),
                &req.resume,
            ],
        )
        .await
        .map_err(|e| self.gate_down(e))?;
        Ok(())
    }

    async fn settle(&self, id: &str, a: &Answer, answerer: Option<&str>) -> Result<(), GateError> {
        let down = |e: tokio_postgres::Error| self.gate_down(e);
        let mut c = self.client().await.map_err(|e| self.gate_down(e))?;
        let tx = c.transaction().await.map_err(down)?;
        let Some(row) = tx
            .query_opt(
                "SELECT request, answer FROM toolgate_confirmations WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(down)?
        else {
            return Err(GateError::Unknown(id.to_string()));
        };
        let req: ConfirmationRequest = self
            .parse(row.get::<_, &str>(0))
            .map_err(|e| self.gate_down(e))?;
        let prior: Option<Answer> = match row.get::<_, Option<&str>>(1) {
            Some(t) => Some(self.parse(t).map_err(|e| self.gate_down(e))?),
            None => None,
        };
        may_settle(&req, prior.as_ref(), answerer, crate::units::now_ms())?;
        let text = serde_json::to_string(a).map_err(|e| self.gate_down(e))?;
        tx.execute(
            "UPDATE toolgate_confirmations SET answer = $2 WHERE id = $1",
            &[&id, &text],
        )
        .await
        .map_err(down)?;
        tx.commit().await.map_err(down)
    }

    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<(ConfirmationRequest, Option<Answer>)>, GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        let Some(row) = c
            .query_opt(
                "SELECT request, answer FROM toolgate_confirmations WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.gate_down(e))?
        else {
            return Ok(None);
        };
        let req = self
            .parse(row.get::<_, &str>(0))
            .map_err(|e| self.gate_down(e))?;
        let answer = match row.get::<_, Option<&str>>(1) {
            Some(t) => Some(self.parse(t).map_err(|e| self.gate_down(e))?),
            None => None,
        };
        Ok(Some((req, answer)))
    }

    async fn pending(&self) -> Result<Vec<ConfirmationRequest>, GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        let rows = c
            .query(
                "SELECT request FROM toolgate_confirmations
                 WHERE answer IS NULL AND expires_ms > $1 ORDER BY created_ms",
                &[&ms(crate::units::now_ms())],
            )
            .await
            .map_err(|e| self.gate_down(e))?;
        rows.iter()
            .map(|r| {
                self.parse(r.get::<_, &str>(0))
                    .map_err(|e| self.gate_down(e))
            })
            .collect()
    }

    async fn pending_for(&self, call_id: &str) -> Result<Option<String>, GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        let row = c
            .query_opt(
                "SELECT id FROM toolgate_confirmations
                 WHERE call_id = $1 AND answer IS NULL AND expires_ms > $2
                 ORDER BY created_ms DESC LIMIT 1",
                &[&call_id, &ms(crate::units::now_ms())],
            )
            .await
            .map_err(|e| self.gate_down(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn approve_rules(&self, principal: &str, rules: &[String]) -> Result<(), GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        for r in rules {
            c.execute(
                "INSERT INTO toolgate_session_rules (principal, rule) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&principal, r],
            )
            .await
            .map_err(|e| self.gate_down(e))?;
        }
        Ok(())
    }

    async fn approved(&self, principal: &str, rules: &[&str]) -> Result<bool, GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        let want: std::collections::BTreeSet<&str> = rules.iter().copied().collect();
        let list: Vec<String> = want.iter().map(|r| r.to_string()).collect();
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM toolgate_session_rules WHERE principal = $1 AND rule = ANY($2)",
                &[&principal, &list],
            )
            .await
            .map_err(|e| self.gate_down(e))?
            .get(0);
        Ok(n as usize == want.len())
    }

    async fn take(&self, id: &str) -> Result<bool, GateError> {
        let c = self.client().await.map_err(|e| self.gate_down(e))?;
        let n = c
            .execute(
                "UPDATE toolgate_confirmations SET taken_by = $2 WHERE id = $1 AND taken_by IS NULL",
                &[&id, &super::instance()],
            )
            .await
            .map_err(|e| self.gate_down(e))?;
        Ok(n == 1)
    }
}

#[async_trait::async_trait]
impl Store for Postgres {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn audit_path(&self) -> Option<&Path> {
        None
    }

    fn audits(&self) -> bool {
        true
    }

    async fn audit(&self, fields: Map<String, Value>) -> Result<String, StateError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.down(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_AUDIT])
            .await
            .map_err(|e| self.down(e))?;
        let head = tx
            .query_opt(
                "SELECT line FROM toolgate_audit ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(|e| self.down(e))?;
        let (seq, prev) = match head {
            None => (0, genesis()),
            Some(row) => head_of(row.get::<_, &str>(0)).ok_or_else(|| StateError::Corrupt {
                store: self.shown.clone(),
                detail: "the audit chain's last entry is not an entry".into(),
            })?,
        };
        let next = seq.checked_add(1).ok_or_else(|| StateError::Corrupt {
            store: self.shown.clone(),
            detail: "seq at its maximum".into(),
        })?;
        let (line, hash) = compose(next, &prev, fields, self.key.as_deref())
            .map_err(|_| StateError::Audit(AuditError::NotObject))?;
        tx.execute(
            "INSERT INTO toolgate_audit (seq, line) VALUES ($1, $2)",
            &[&(next as i64), &line],
        )
        .await
        .map_err(|e| self.down(e))?;
        tx.commit().await.map_err(|e| self.down(e))?;
        Ok(hash)
    }

    async fn audit_lines(&self) -> Result<Option<Vec<String>>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT line FROM toolgate_audit ORDER BY seq", &[])
            .await
            .map_err(|e| self.down(e))?;
        Ok(Some(rows.into_iter().map(|r| r.get(0)).collect()))
    }

    async fn admit(
        &self,
        counter: &str,
        principal: &str,
        budgets: &Budgets,
    ) -> Result<Result<(), Refusal>, StateError> {
        let down = |e: tokio_postgres::Error| self.down(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(down)?;
        tx.execute(
            "INSERT INTO toolgate_usage (counter, principal) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&counter, &principal],
        )
        .await
        .map_err(down)?;
        // The row's lock serialises admissions of this principal fleet-wide.
        let row = tx
            .query_one(
                "SELECT calls, wall, cpu FROM toolgate_usage WHERE counter = $1 AND principal = $2 FOR UPDATE",
                &[&counter, &principal],
            )
            .await
            .map_err(down)?;
        let used = Totals {
            calls: row.get::<_, i64>(0).max(0) as u64,
            wall: row.get(1),
            cpu: row.get(2),
        };
        let now = Self::now(&tx).await.map_err(down)?;
        let horizon = now.saturating_sub(HOUR_MS) as i64;
        tx.execute(
            "DELETE FROM toolgate_recent WHERE counter = $1 AND principal = $2 AND at_ms <= $3",
            &[&counter, &principal, &horizon],
        )
        .await
        .map_err(down)?;
        let recent: Vec<u64> = tx
            .query(
                "SELECT at_ms FROM toolgate_recent WHERE counter = $1 AND principal = $2 ORDER BY at_ms",
                &[&counter, &principal],
            )
            .await
            .map_err(down)?
            .iter()
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .collect();
        if let Err(refusal) = judge(principal, budgets, &used, &recent, now) {
            // Nothing counted; the transaction rolls back when dropped.
            return Ok(Err(refusal));
        }
        tx.execute(
            "INSERT INTO toolgate_recent (counter, principal, at_ms) VALUES ($1, $2, $3)",
            &[&counter, &principal, &(now as i64)],
        )
        .await
        .map_err(down)?;
        tx.execute(
            "UPDATE toolgate_usage SET calls = calls + 1 WHERE counter = $1 AND principal = $2",
            &[&counter, &principal],
        )
        .await
        .map_err(down)?;
        tx.commit().await.map_err(down)?;
        Ok(Ok(()))
    }

    async fn charge(
        &self,
        counter: &str,
        principal: &str,
        wall: Duration,
        cpu: Option<Duration>,
    ) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE toolgate_usage SET wall = wall + $3, cpu = cpu + $4 WHERE counter = $1 AND principal = $2",
            &[
                &counter,
                &principal,
                &wall.as_secs_f64(),
                &cpu.map_or(0.0, |c| c.as_secs_f64()),
            ],
        )
        .await
        .map_err(|e| self.down(e))?;
        Ok(())
    }

    async fn start_call(&self, id: &str, principal: &str) -> Result<bool, StateError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO toolgate_calls (id, principal, instance, started_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[
                    &id,
                    &principal,
                    &super::instance(),
                    &ms(crate::units::now_ms()),
                ],
            )
            .await
            .map_err(|e| self.down(e))?;
        Ok(n == 1)
    }

    async fn finish_call(
        &self,
        id: &str,
        status: u16,
        body: &Value,
        retry_after: Option<u64>,
    ) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE toolgate_calls SET status = $2, body = $3, retry_after = $4 WHERE id = $1",
            &[
                &id,
                &i32::from(status),
                &body.to_string(),
                &retry_after.map(|r| r.min(i64::MAX as u64) as i64),
            ],
        )
        .await
        .map_err(|e| self.down(e))?;
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), StateError> {
        let c = self.client().await?;
        let now = Self::now(&c).await.map_err(|e| self.down(e))? as i64;
        c.execute(
            "INSERT INTO toolgate_instances (id, seen_ms) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
            &[&super::instance(), &now],
        )
        .await
        .map_err(|e| self.down(e))?;
        Ok(())
    }

    async fn orphans(&self, stale: Duration) -> Result<Vec<super::Orphan>, StateError> {
        let c = self.client().await?;
        let now = Self::now(&c).await.map_err(|e| self.down(e))? as i64;
        let quiet = now - stale.as_millis().min(i64::MAX as u128) as i64;
        let rows = c
            .query(
                "SELECT c.id, c.call, c.principal, c.answer, c.request FROM toolgate_confirmations c
                 LEFT JOIN toolgate_instances i ON i.id = c.instance
                 WHERE c.taken_by IS NULL AND c.call IS NOT NULL AND c.instance <> $1
                   AND (i.seen_ms IS NULL OR i.seen_ms < $2)
                   AND (c.answer IS NOT NULL OR c.expires_ms <= $3)",
                &[&super::instance(), &quiet, &ms(crate::units::now_ms())],
            )
            .await
            .map_err(|e| self.down(e))?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let answer: Answer = match r.get::<_, Option<&str>>(3) {
                Some(t) => self.parse(t)?,
                None => {
                    // Past its expiry with nobody left to wait: expired.
                    let expired = Answer {
                        confirmation_id: id.clone(),
                        approved: false,
                        by: crate::gate::EXPIRED.into(),
                        note: Some(
                            "no answer before it expired; the service that asked had stopped"
                                .into(),
                        ),
                        scope: crate::gate::Scope::Once,
                    };
                    match self.settle(&id, &expired, None).await {
                        Ok(()) => expired,
                        // Answered a moment ago: the next sweep has it.
                        Err(_) => continue,
                    }
                }
            };
            out.push(super::Orphan {
                confirmation: id,
                call: r.get(1),
                principal: r.get(2),
                answer,
            });
        }
        Ok(out)
    }

    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StateError> {
        let c = self.client().await?;
        let Some(r) = c
            .query_opt(
                "SELECT principal, instance, status, body, retry_after FROM toolgate_calls WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.down(e))?
        else {
            return Ok(None);
        };
        let done = match (r.get::<_, Option<i32>>(2), r.get::<_, Option<&str>>(3)) {
            (Some(status), Some(body)) => Some((
                u16::try_from(status).unwrap_or(500),
                self.parse(body)?,
                r.get::<_, Option<i64>>(4).map(|v| v.max(0) as u64),
            )),
            _ => None,
        };
        Ok(Some(CallRecord {
            principal: r.get(0),
            instance: r.get(1),
            done,
        }))
    }
}
