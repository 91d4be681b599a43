//! The pipeline: decide (policy) → confirm (gate) → prepare (plan) →
//! execute (backend or host file tools) → Outcome.
//!
//! `check` is everything but execution, so dry-run is exactly what `run`
//! would do up to the point where something happens.

use crate::call::{Tool, ToolCall};
use crate::error::Error;
use crate::filter::{Redactor, Report};
use crate::gate::{self, Answer, Approver, ConfirmationRequest, DenyAll};
use crate::metrics::{Gauges, Metrics, Stage};
use crate::outcome::{LimitHit, Outcome, Status, Truncation};
use crate::plan::{BackendKind, Plan};
use crate::policy::{Decision, Policy, Verdict};
use crate::sandbox::SessionInfo;
use crate::sandbox::hostfs::{FsError, Workspace};
use crate::sandbox::wasm::{WasmBackend, WasmConfig};
use crate::sandbox::{Backend, Job, Program, SandboxError, SessionRef};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

mod changes;

/// What `check` reports: the verdict and the plan, nothing executed.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub id: String,
    pub tool: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub plan: Plan,
    pub policy: String,
}

/// Builds an [`Executor`]. Defaults: the workspace is the current
/// directory, `ask` is answered by [`DenyAll`] (fail closed), a pending
/// confirmation expires after [`gate::DEFAULT_TTL`], the wasm backend is
/// enabled without a warm pool, no docker backend is attached, no audit
/// log is written, and the principal is `local`. The output filter follows
/// the policy's `[redaction]` table.
pub struct ExecutorBuilder {
    policy: Policy,
    workspace: Option<PathBuf>,
    approver: Arc<dyn Approver>,
    ttl: Duration,
    wasm: Option<WasmConfig>,
    native: Option<crate::sandbox::native::NativeConfig>,
    docker: Option<Arc<dyn Backend>>,
    audit: Option<Arc<crate::audit::AuditLog>>,
    state: Option<Arc<dyn crate::state::Store>>,
    principal: String,
    budgets: crate::budget::Budgets,
    max_running: Option<usize>,
}

impl ExecutorBuilder {
    /// Bounds the calls executing at once; more wait for a slot. A call
    /// waiting for its confirmation holds none (default: unbounded).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = Some(n);
        self
    }

    /// Appends an entry for every call to `log` (fsynced before returning),
    /// kept by the embedded state store.
    pub fn audit(mut self, log: Arc<crate::audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Keeps confirmations, budgets and the audit chain in `store` (one
    /// shared by several services: `state::postgres`). Not with
    /// [`ExecutorBuilder::audit`]: the store keeps the chain.
    pub fn state(mut self, store: Arc<dyn crate::state::Store>) -> Self {
        self.state = Some(store);
        self
    }

    /// Who the calls are made for, as recorded in the audit log (default `local`).
    /// Rate limits and budgets per principal (default: unlimited).
    pub fn budgets(mut self, b: crate::budget::Budgets) -> Self {
        self.budgets = b;
        self
    }

    pub fn principal(mut self, p: impl Into<String>) -> Self {
        self.principal = p.into();
        self
    }

    pub fn workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace = Some(dir.into());
        self
    }

    pub fn approver(mut self, a: Arc<dyn Approver>) -> Self {
        self.approver = a;
        self
    }

    pub fn confirmation_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Configures the wasm backend; `None` disables it.
    pub fn wasm(mut self, cfg: Option<WasmConfig>) -> Self {
        self.wasm = cfg;
        self
    }

    /// Configures the native backend (Linux); `None` disables it.
    pub fn native(mut self, cfg: Option<crate::sandbox::native::NativeConfig>) -> Self {
        self.native = cfg;
        self
    }

    /// Attaches a docker (or other) backend for `run_command` and `sh`.
    pub fn docker(mut self, b: Arc<dyn Backend>) -> Self {
        self.docker = Some(b);
        self
    }

    pub fn build(self) -> Result<Executor, Error> {
        let ws = match self.workspace {
            Some(w) => w,
            None => std::env::current_dir().map_err(|e| Error::Workspace {
                path: ".".into(),
                detail: e.to_string(),
            })?,
        };
        let workspace = std::fs::canonicalize(&ws).map_err(|e| Error::Workspace {
            path: ws.display().to_string(),
            detail: e.to_string(),
        })?;
        if !workspace.is_dir() {
            return Err(Error::Workspace {
                path: ws.display().to_string(),
                detail: "not a directory".into(),
            });
        }
        let state: Arc<dyn crate::state::Store> = match (self.state, self.audit) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "an audit log and a state store were both given: the store keeps the audit chain"
                        .into(),
                ));
            }
            (Some(s), None) => s,
            (None, audit) => Arc::new(crate::state::Memory::new(audit, crate::state::KEEP_CALLS)),
        };
        // What records or runs the calls may not be something a call rewrites.
        if let Some(path) = state.audit_path() {
            refuse_inside(&workspace, path, "the audit log")?;
        }
        if let Some(cfg) = &self.wasm {
            refuse_inside(&workspace, &cfg.cache_dir, "the compiled-runtime cache")?;
        }
        for kind in [BackendKind::Wasm, BackendKind::Docker, BackendKind::Native] {
            refuse_inside(
                &workspace,
                &crate::sandbox::stage::base_dir(kind),
                "the stage directory (TOOLGATE_STAGE_DIR, TMPDIR)",
            )?;
        }
        crate::sandbox::stage::reap_orphans();
        let redactor = Executor::redactor_for(&self.policy)?;
        let wasm = match self.wasm {
            Some(cfg) => Some(WasmBackend::new(cfg).map_err(SandboxError::from)?),
            None => None,
        };
        Ok(Executor {
            metrics: Arc::new(Metrics::default()),
            running: self
                .max_running
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1)))),
            gate: Arc::new(gate::Gate::new(state.clone())),
            state,
            principal: self.principal,
            budgets: self.budgets,
            redactor: Arc::new(redactor),
            redact: self.policy.redaction().enabled,
            policy: Arc::new(self.policy),
            workspace,
            approver: self.approver,
            ttl: self.ttl,
            wasm,
            native: self
                .native
                .map(|c| Arc::new(crate::sandbox::native::NativeBackend::new(c))),
            docker: self.docker,
        })
    }
}

/// Runs tool calls under a policy. Cheap to share behind an `Arc`.
pub struct Executor {
    metrics: Arc<Metrics>,
    /// Calls executing at once (after any confirmation), when bounded.
    running: Option<Arc<tokio::sync::Semaphore>>,
    gate: Arc<gate::Gate>,
    /// Confirmations (through the gate), budgets and the audit chain.
    state: Arc<dyn crate::state::Store>,
    principal: String,
    policy: Arc<Policy>,
    redactor: Arc<Redactor>,
    redact: bool,
    workspace: PathBuf,
    approver: Arc<dyn Approver>,
    ttl: Duration,
    wasm: Option<WasmBackend>,
    native: Option<Arc<crate::sandbox::native::NativeBackend>>,
    docker: Option<Arc<dyn Backend>>,
    budgets: crate::budget::Budgets,
}

impl Executor {
    pub fn builder(policy: Policy) -> ExecutorBuilder {
        ExecutorBuilder {
            policy,
            workspace: None,
            approver: Arc::new(DenyAll),
            ttl: gate::DEFAULT_TTL,
            wasm: Some(WasmConfig::default()),
            native: Some(Default::default()),
            docker: None,
            audit: None,
            state: None,
            principal: "local".into(),
            budgets: crate::budget::Budgets::default(),
            max_running: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The output filter a policy asks for: its secret rules, the values of
    /// the host secrets it names, and its URL allowlist (nothing when
    /// `[redaction] enabled = false`).
    pub fn redactor_for(policy: &Policy) -> Result<Redactor, Error> {
        let r = policy.redaction();
        if r.enabled {
            let secrets = crate::filter::host_secrets(&r.secret_env, &r.secret_files);
            Redactor::with_rules(&secrets, Some(&policy.network().allow_hosts), &r.rules)
                .map(|f| f.loopback_urls(r.loopback_urls))
        } else {
            Redactor::with(&[], None)
        }
        .map_err(|e| Error::Internal {
            op: "build output filter",
            detail: e.to_string(),
        })
    }

    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    pub fn wasm(&self) -> Option<&WasmBackend> {
        self.wasm.as_ref()
    }

    /// The backends that may hold sessions.
    fn session_backends(&self) -> impl Iterator<Item = &dyn Backend> {
        let wasm = self.wasm.as_ref().map(|w| w as &dyn Backend);
        wasm.into_iter().chain(self.docker.as_deref())
    }

    /// `principal`'s python sessions (opened by `run_code` turns naming a
    /// `session`) on every backend, open and ended, oldest first.
    pub fn sessions(&self, principal: &str) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .session_backends()
            .flat_map(|b| b.sessions(principal))
            .collect();
        v.sort_by(|a, b| {
            a.opened_at_ms
                .cmp(&b.opened_at_ms)
                .then(a.name.cmp(&b.name))
        });
        v
    }

    /// Closes `principal`'s session `name` (its state is gone) wherever it
    /// lives; `None` if that principal has none of that name.
    pub fn close_session(&self, principal: &str, name: &str) -> Option<SessionInfo> {
        self.session_backends()
            .find_map(|b| b.close_session(principal, name))
    }

    /// Counters and stage latencies of the calls this executor ran.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text of [`Executor::metrics`] with the current
    /// pending confirmations and warm sandboxes.
    pub async fn render_metrics(&self) -> String {
        let mut warm = Vec::new();
        if let Some(w) = &self.wasm {
            warm.push(("wasm", w.warm()));
        }
        if let Some(n) = &self.native {
            warm.push(("native", n.warm()));
        }
        if let Some(d) = &self.docker {
            warm.push((d.kind().as_str(), d.warm()));
        }
        self.metrics.render(&Gauges {
            pending_confirmations: self.gate.pending().await.map_or(0, |p| p.len()),
            warm,
        })
    }

    /// Runs `f` as pipeline stage `stage`: in its own span, timed.
    fn stage<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let span = tracing::debug_span!("stage", stage = stage.as_str());
        let _in = span.enter();
        let t = Instant::now();
        let r = f();
        self.metrics.observe(stage, t.elapsed());
        r
    }

    /// [`Executor::stage`] for a future.
    async fn stage_async<T>(&self, stage: Stage, f: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let r = f
            .instrument(tracing::debug_span!("stage", stage = stage.as_str()))
            .await;
        self.metrics.observe(stage, t.elapsed());
        r
    }

    /// Pending confirmations; answer them with [`gate::Gate::answer`].
    pub fn gate(&self) -> &gate::Gate {
        &self.gate
    }

    /// Rejects every pending confirmation (each is audited as rejected by
    /// `shutdown`) and every later one.
    pub fn shutdown(&self) -> usize {
        self.gate.shutdown()
    }

    /// Shuts down and releases the backends' sandboxes (removes pooled
    /// containers and native sandboxes, waits for pending removals). Call
    /// before exiting.
    pub async fn close(&self) {
        self.gate.shutdown();
        if let Some(w) = &self.wasm {
            w.shutdown().await;
        }
        if let Some(n) = &self.native {
            n.shutdown().await;
        }
        if let Some(d) = &self.docker {
            d.shutdown().await;
        }
    }

    /// Decides and prepares, executing nothing.
    pub fn check(&self, call: &ToolCall) -> Result<DryRun, Error> {
        self.policy.check_sizes(call)?;
        // A workspace removed under a running service is the caller's
        // problem, named as such (the path rules would only deny).
        if let Err(e) = std::fs::metadata(&self.workspace).and_then(|m| {
            m.is_dir()
                .then_some(())
                .ok_or_else(|| std::io::Error::other("not a directory"))
        }) {
            return Err(Error::Workspace {
                path: self.workspace.display().to_string(),
                detail: e.to_string(),
            });
        }
        let mut verdict = self.stage(Stage::Decide, || {
            self.policy.evaluate(call, &self.workspace)
        });
        // Reasons quote the call; a secret in it must not be echoed back.
        // Redact first, then shorten: a cut secret is no longer recognised.
        let mut report = Report::default();
        for r in &mut verdict.reasons {
            self.redactor.redact_secrets_into(r, &mut report);
            *r = crate::call::shorten(r, 300);
        }
        for m in &mut verdict.matched_rules {
            self.redactor
                .redact_secrets_into(&mut m.subject, &mut report);
            m.subject = crate::call::shorten(&m.subject, 200);
        }
        let plan = self.stage(Stage::Prepare, || {
            Plan::prepare(
                &self.policy,
                call,
                &self.workspace,
                verdict.decision == Decision::Ask,
            )
        });
        Ok(DryRun {
            id: call.id.clone(),
            tool: call.tool.name().to_string(),
            verdict,
            plan,
            policy: self.policy.source().to_string(),
        })
    }

    /// Runs one call through the whole pipeline.
    ///
    /// `Err` is for bad input and unavailable backends; everything the
    /// call itself does — denied, killed, failed — is an `Outcome`.
    pub async fn run(&self, call: &ToolCall) -> Result<Outcome, Error> {
        self.run_as(call, &self.principal).await
    }

    /// Runs a call on behalf of `principal` (recorded in the audit log).
    pub async fn run_as(&self, call: &ToolCall, principal: &str) -> Result<Outcome, Error> {
        self.run_with(call, principal, None).await
    }

    /// Runs a call asked on a service that stopped, with the answer it was
    /// given since (from [`crate::state::Store::orphans`]) standing in for
    /// the gate: judged again now, like every approved call; run if it was
    /// approved, denied if not.
    pub async fn run_answered(
        &self,
        call: &ToolCall,
        principal: &str,
        answer: Answer,
    ) -> Result<Outcome, Error> {
        struct Recorded(Answer);
        #[async_trait::async_trait]
        impl Approver for Recorded {
            async fn decide(&self, req: &crate::gate::ConfirmationRequest) -> Answer {
                Answer {
                    confirmation_id: req.id.clone(),
                    ..self.0.clone()
                }
            }
        }
        self.run_with(call, principal, Some(&Recorded(answer)))
            .await
    }

    /// Like [`Executor::run_as`], with `approver` answering this call's
    /// confirmation instead of the configured one (an MCP client's
    /// elicitation, a chat message).
    pub async fn run_with(
        &self,
        call: &ToolCall,
        principal: &str,
        approver: Option<&dyn Approver>,
    ) -> Result<Outcome, Error> {
        // Ids, names and decisions only: never an argument or an output.
        let span = tracing::info_span!(
            "call",
            call_id = %crate::call::shorten(&call.id, 128),
            principal = %principal,
            tool = call.tool.name(),
            decision = tracing::field::Empty,
            backend = tracing::field::Empty,
        );
        self.run_traced(call, principal, approver)
            .instrument(span)
            .await
    }

    async fn run_traced(
        &self,
        call: &ToolCall,
        principal: &str,
        approver: Option<&dyn Approver>,
    ) -> Result<Outcome, Error> {
        let t0 = Instant::now();
        let dry = match self.check(call) {
            Ok(d) => d,
            Err(e) => {
                self.count(call.tool.name(), None, &Err(e.kind()));
                tracing::info!(error_kind = e.kind(), "call refused as bad input");
                return Err(e);
            }
        };
        let span = tracing::Span::current();
        span.record("decision", dry.verdict.decision.as_str());
        span.record("backend", dry.plan.backend.as_str());
        let admitted = self
            .state
            .admit(crate::state::CALLS, principal, &self.budgets)
            .await;
        let result = match admitted {
            // Without the store no budget can be judged: nothing runs.
            Err(e) => Err(Error::State(e)),
            Ok(Err(refusal)) => Err(Error::Refused(refusal)),
            Ok(Ok(())) => {
                let approver = approver.unwrap_or(self.approver.as_ref());
                let r = self
                    .decide_and_execute(call, &dry, t0, approver, principal)
                    .await;
                if let Ok(o) = &r {
                    // A charge lost to a store failure is logged, not fatal:
                    // the call has run and its outcome must be returned.
                    if let Err(e) = self
                        .state
                        .charge(
                            crate::state::CALLS,
                            principal,
                            Duration::from_secs_f64(o.duration_ms / 1e3),
                            o.cpu_ms.map(|c| Duration::from_secs_f64(c / 1e3)),
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "a call's usage was not charged");
                    }
                }
                r
            }
        };
        self.stage_async(Stage::Audit, self.audit(call, principal, &dry, &result))
            .await?;
        let status = result.as_ref().map(|o| o.status).map_err(Error::kind);
        self.count(&dry.tool, Some(&dry), &status);
        match &status {
            Ok(s) => tracing::info!(
                status = s.as_str(),
                duration_ms = t0.elapsed().as_secs_f64() * 1e3,
                "call finished"
            ),
            Err(kind) => tracing::warn!(error_kind = kind, "call failed"),
        }
        result
    }

    /// Counts a finished call and the limits it hit.
    fn count(&self, tool: &str, dry: Option<&DryRun>, status: &Result<Status, &'static str>) {
        let decision = dry.map_or("none", |d| d.verdict.decision.as_str());
        let backend = dry.map_or("none", |d| d.plan.backend.as_str());
        let status = match status {
            Ok(s) => s.as_str().to_string(),
            Err(kind) => format!("error:{kind}"),
        };
        self.metrics.call(tool, decision, &status, backend);
    }

    /// The rate limits and budgets this executor enforces.
    pub fn budgets(&self) -> &crate::budget::Budgets {
        &self.budgets
    }

    /// Where confirmations, budgets and the audit chain are kept.
    pub fn state(&self) -> &Arc<dyn crate::state::Store> {
        &self.state
    }

    async fn decide_and_execute(
        &self,
        call: &ToolCall,
        dry: &DryRun,
        t0: Instant,
        approver: &dyn Approver,
        principal: &str,
    ) -> Result<Outcome, Error> {
        let decision = dry.verdict.decision;
        let denied = |reasons: Vec<String>, answer: Option<Answer>| {
            let mut o = Outcome::new(&call.id, &dry.tool, decision, Status::Denied);
            o.reasons = reasons;
            o.confirmation = answer;
            o.duration_ms = ms(t0.elapsed());
            o
        };
        let mut answer: Option<Answer> = None;
        let mut plan = dry.plan.clone();
        match decision {
            Decision::Deny => return Ok(denied(dry.verdict.reasons.clone(), None)),
            Decision::Ask => {
                let req = self.confirmation_request(call, dry, principal);
                let a = self
                    .stage_async(Stage::Confirm, self.gate.confirm(approver, req, self.ttl))
                    .await;
                let mut reasons = dry.verdict.reasons.clone();
                if !a.approved {
                    reasons.push(format!(
                        "confirmation {} rejected by {}",
                        a.confirmation_id, a.by
                    ));
                    return Ok(denied(reasons, Some(a)));
                }
                // The workspace may have changed while the human read the
                // request: judge the call again, as it stands now.
                let now = self.check(call)?;
                if let Some(why) = changed_since_approval(&dry.verdict, &now.verdict) {
                    reasons.extend(now.verdict.reasons.iter().cloned());
                    reasons.push(format!(
                        "confirmation {} was approved, but judged again before running: {why}",
                        a.confirmation_id
                    ));
                    return Ok(denied(crate::policy::dedup(reasons), Some(a)));
                }
                plan = now.plan;
                answer = Some(a);
            }
            Decision::Allow => {}
        }
        self.stage_async(
            Stage::Audit,
            self.audit_intent(call, principal, dry, &plan, answer.as_ref()),
        )
        .await?;
        let (mut o, staged) = {
            // Only running calls hold a slot; a pending confirmation does not.
            let _slot = match &self.running {
                Some(s) => Some(
                    s.clone()
                        .acquire_owned()
                        .await
                        .map_err(|e| Error::Internal {
                            op: "acquire a running slot",
                            detail: e.to_string(),
                        })?,
                ),
                None => None,
            };
            self.stage_async(
                Stage::Execute,
                self.execute(call, &plan, decision, principal),
            )
            .await?
        };
        // Judged and applied outside the running slot: an `ask` among the
        // changes waits for a human without holding one.
        if let Some(stage) = staged {
            self.settle(stage, &plan, &mut o, approver, principal)
                .await?;
        }
        if matches!(call.tool, Tool::RunCode(_)) {
            self.artifacts(&mut o);
        }
        for h in &o.limits_hit {
            self.metrics.limit_hit(h.as_str());
        }
        if answer.is_some() {
            // Keep what the human approved on the record.
            o.reasons.splice(0..0, dry.verdict.reasons.iter().cloned());
        }
        o.confirmation = answer;
        self.stage(Stage::Filter, || self.filter(&mut o));
        o.duration_ms = ms(t0.elapsed());
        Ok(o)
    }

    /// The fields every audit entry of a call carries (arguments redacted
    /// and shortened).
    fn audit_record(
        &self,
        kind: &str,
        call: &ToolCall,
        principal: &str,
        dry: &DryRun,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut args = serde_json::to_value(&call.tool)
            .ok()
            .and_then(|v| v.get("args").cloned())
            .unwrap_or(serde_json::Value::Null);
        redact_json(&self.redactor, &mut args);
        shorten_json(&mut args, 2048);
        let rec = serde_json::json!({
            "kind": kind,
            "call_id": call.id,
            "principal": principal,
            "tool": dry.tool,
            "args": args,
            "decision": dry.verdict.decision,
            "reasons": dry.verdict.reasons,
            "matched_rules": dry.verdict.matched_rules.iter().map(|m| &m.id).collect::<Vec<_>>(),
            "flags": dry.verdict.flags.iter().map(|f| f.kind).collect::<Vec<_>>(),
            "backend": dry.plan.backend,
            "limits": dry.plan.limits,
            "network": dry.plan.network,
        });
        match rec {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    async fn append(&self, rec: serde_json::Map<String, serde_json::Value>) -> Result<(), Error> {
        self.state
            .audit(rec)
            .await
            .map(|_| ())
            .map_err(|e| Error::Internal {
                op: "audit",
                detail: e.to_string(),
            })
    }

    /// The intent entry, fsynced before the call has any effect: if toolgate
    /// dies while the call runs, the log still says what was started. An
    /// audit failure here fails the call before it runs.
    async fn audit_intent(
        &self,
        call: &ToolCall,
        principal: &str,
        dry: &DryRun,
        plan: &Plan,
        answer: Option<&Answer>,
    ) -> Result<(), Error> {
        if !self.state.audits() {
            return Ok(());
        }
        let mut m = self.audit_record("intent", call, principal, dry);
        m.insert(
            "backend".into(),
            serde_json::to_value(plan.backend).unwrap_or_default(),
        );
        m.insert(
            "limits".into(),
            serde_json::to_value(&plan.limits).unwrap_or_default(),
        );
        m.insert(
            "confirmation".into(),
            serde_json::to_value(answer).unwrap_or_default(),
        );
        self.append(m).await
    }

    /// Writes the call's result entry (fsynced) before anything is returned.
    /// An audit failure fails the call: no unrecorded outcome leaves.
    async fn audit(
        &self,
        call: &ToolCall,
        principal: &str,
        dry: &DryRun,
        result: &Result<Outcome, Error>,
    ) -> Result<(), Error> {
        if !self.state.audits() {
            return Ok(());
        }
        let mut m = self.audit_record("call", call, principal, dry);
        match result {
            Ok(o) => {
                m.insert(
                    "confirmation".into(),
                    serde_json::to_value(&o.confirmation).unwrap_or_default(),
                );
                m.insert(
                    "outcome".into(),
                    serde_json::json!({
                        "status": o.status,
                        "exit_code": o.exit_code,
                        "limits_hit": o.limits_hit,
                        "stdout_bytes": o.stdout.len(),
                        "stderr_bytes": o.stderr.len(),
                        "truncated": o.truncated,
                        "redactions": o.redactions,
                        "error": o.error,
                        "changes": o.changes,
                        // Every connection the egress proxy allowed or refused.
                        "egress": o.egress,
                        // What went back to the caller, by digest (not content).
                        "artifacts": o.artifacts.iter().map(|a| serde_json::json!({
                            "path": a.path,
                            "media_type": a.media_type,
                            "size": a.size,
                            "sha256": a.sha256,
                        })).collect::<Vec<_>>(),
                    }),
                );
                m.insert("duration_ms".into(), o.duration_ms.into());
            }
            Err(e) => {
                let mut msg = e.to_string();
                self.redactor
                    .redact_secrets_into(&mut msg, &mut Report::default());
                m.insert(
                    "outcome".into(),
                    serde_json::json!({"status": "error", "error_kind": e.kind(), "error": msg}),
                );
            }
        }
        self.append(m).await
    }

    /// The output filter, on every field that reaches the model.
    fn filter(&self, o: &mut Outcome) {
        if !self.redact {
            return;
        }
        let mut rep = Report::default();
        self.redactor.redact_into(&mut o.stdout, &mut rep);
        self.redactor.redact_into(&mut o.stderr, &mut rep);
        if let Some(e) = &mut o.error {
            self.redactor.redact_into(e, &mut rep);
        }
        for r in &mut o.reasons {
            self.redactor.redact_into(r, &mut rep);
        }
        for a in &mut o.artifacts {
            self.redactor.redact_into(&mut a.path, &mut rep);
            if let Some(t) = &mut a.text {
                self.redactor.redact_into(t, &mut rep);
            }
        }
        for c in &mut o.changes {
            self.redactor.redact_into(&mut c.path, &mut rep);
            if let Some(r) = &mut c.reason {
                self.redactor.redact_into(r, &mut rep);
            }
        }
        o.redactions.merge(rep);
    }

    /// Describes the files the call left in the workspace (applied changes
    /// only: what the write rules refused is no artifact), inlining small
    /// images and text. An image whose bytes hold a secret the output
    /// filter would remove is not inlined (a PNG text chunk is text).
    fn artifacts(&self, o: &mut Outcome) {
        use crate::outcome::{Artifact, Inline};
        let Ok(w) = Workspace::open(&self.workspace) else {
            return;
        };
        let written = o.changes.iter().filter(|c| {
            c.applied && c.kind == "file" && matches!(c.action, "create" | "modify" | "replace")
        });
        let mut out = Vec::new();
        for c in written.take(Artifact::MAX) {
            let (media_type, inline) = Artifact::media_type(&c.path);
            let keep = match inline {
                Inline::Image => Artifact::INLINE_IMAGE,
                Inline::Text => Artifact::INLINE_TEXT,
                Inline::No => 0,
            };
            let Ok(d) = w.digest(&self.workspace, &c.path, keep + 1) else {
                continue;
            };
            let whole = d.size <= keep;
            let mut a = Artifact {
                path: c.path.clone(),
                media_type,
                size: d.size,
                sha256: d.sha256,
                base64: None,
                text: None,
            };
            match inline {
                Inline::Image if whole => {
                    let mut probe = printable_runs(&d.bytes, 8);
                    let mut rep = Report::default();
                    // Secrets only: a link inside an image is not shown to anyone.
                    self.redactor.redact_secrets_into(&mut probe, &mut rep);
                    if rep.is_empty() || !self.redact {
                        use base64::Engine;
                        a.base64 = Some(base64::engine::general_purpose::STANDARD.encode(&d.bytes));
                    } else {
                        o.reasons.push(format!(
                            "artifact {} is not inlined: it holds text the output filter removes",
                            c.path
                        ));
                    }
                }
                Inline::Text if whole => {
                    a.text = Some(String::from_utf8_lossy(&d.bytes).into_owned());
                }
                _ => {}
            }
            out.push(a);
        }
        o.artifacts = out;
    }

    /// The executor's output filter (for tools that show text to a model or a log).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn confirmation_request(
        &self,
        call: &ToolCall,
        dry: &DryRun,
        principal: &str,
    ) -> ConfirmationRequest {
        let now = gate::now_ms();
        let mut args = serde_json::to_value(&call.tool)
            .ok()
            .and_then(|v| v.get("args").cloned())
            .unwrap_or(serde_json::Value::Null);
        redact_json(&self.redactor, &mut args);
        ConfirmationRequest {
            id: format!("conf_{}", uuid::Uuid::new_v4().simple()),
            call_id: call.id.clone(),
            principal: principal.to_string(),
            tool: dry.tool.clone(),
            args,
            reasons: dry.verdict.reasons.clone(),
            matched_rules: dry.verdict.matched_rules.clone(),
            created_unix_ms: now,
            expires_unix_ms: now + self.ttl.as_millis(),
            session_scope_available: dry.verdict.session_approvable,
            // A shared store keeps the call so that another service can
            // run it once answered, should this one stop meanwhile.
            resume: self
                .state
                .shared()
                .then(|| serde_json::to_string(call).ok())
                .flatten(),
        }
    }

    /// Executes an allowed (or approved) call according to its plan. A
    /// sandboxed call also returns its stage, whose changes are not applied yet.
    async fn execute(
        &self,
        call: &ToolCall,
        plan: &Plan,
        decision: Decision,
        principal: &str,
    ) -> Result<(Outcome, Option<crate::sandbox::stage::Stage>), Error> {
        let tool = call.tool.name();
        let mut o = Outcome::new(&call.id, tool, decision, Status::Completed);
        o.backend = Some(plan.backend);
        let ws = &self.workspace;
        // Every tool needs the workspace; one that vanished since the
        // executor was built is the caller's problem (bad_workspace), for
        // every backend alike.
        let w = Workspace::open(ws)?;
        let fs_fail = |o: &mut Outcome, e: FsError| {
            o.status = Status::Failed;
            o.error = Some(e.to_string());
        };
        match &call.tool {
            Tool::ReadFile(a) => {
                let max = a.limit.unwrap_or(u64::MAX).min(plan.limits.output_bytes);
                match w.read(ws, &a.path, a.offset.unwrap_or(0), max) {
                    Ok(r) => {
                        o.stdout = r.content;
                        o.truncated.stdout = r.truncated;
                        if r.truncated {
                            o.limits_hit.push(LimitHit::OutputTruncated);
                        }
                        if r.binary {
                            o.reasons
                                .push("file is not UTF-8 text; invalid bytes were replaced".into());
                        }
                    }
                    Err(e) => fs_fail(&mut o, e),
                }
            }
            Tool::WriteFile(a) => match w.write(
                ws,
                &a.path,
                a.content.as_bytes(),
                a.append,
                plan.limits.file_size,
            ) {
                Ok(n) => o.stdout = format!("wrote {n} bytes to {}", a.path),
                Err(e) => fs_fail(&mut o, e),
            },
            Tool::ListDir(a) => match w.list(ws, &a.path) {
                Ok((mut entries, truncated)) => {
                    // The same view a sandbox gets: what read_file would
                    // deny or ask about is not listed.
                    let before = entries.len();
                    let dir = a.path.trim_end_matches('/');
                    entries.retain(|e| {
                        let p = if dir.is_empty() || dir == "." {
                            e.name.clone()
                        } else {
                            format!("{dir}/{}", e.name)
                        };
                        !self.policy.paths().hides(ws, &p)
                    });
                    if entries.len() < before {
                        o.reasons.push(format!(
                            "{} entries hidden by the path rules",
                            before - entries.len()
                        ));
                    }
                    o.stdout = serde_json::to_string(&entries).map_err(|e| Error::Internal {
                        op: "list_dir",
                        detail: e.to_string(),
                    })?;
                    o.truncated.stdout = truncated;
                }
                Err(e) => fs_fail(&mut o, e),
            },
            Tool::RunCode(a) => {
                if !a.files.is_empty() {
                    for f in &a.files {
                        if let Err(e) = w.write(
                            ws,
                            &f.path,
                            f.content.as_bytes(),
                            false,
                            plan.limits.file_size,
                        ) {
                            fs_fail(&mut o, e);
                            return Ok((o, None));
                        }
                    }
                }
                let job = Job {
                    program: Program::Code {
                        language: a.language,
                        code: a.code.clone(),
                    },
                    stdin: a.stdin.clone(),
                    cwd: None,
                    session: a.session.as_ref().map(|name| SessionRef {
                        principal: principal.to_string(),
                        name: name.clone(),
                    }),
                };
                let stage = self.sandboxed(plan, &job, &mut o).await?;
                return Ok((o, Some(stage)));
            }
            Tool::RunCommand(a) => {
                // A cwd that is not a folder is the tool failing, like a
                // read_file of a missing file (the sandbox checks again
                // against its own view, where hidden paths are absent).
                if let Some(c) = &a.cwd
                    && let Err(e) = crate::sandbox::working_dir(ws, c)
                {
                    o.status = Status::Failed;
                    o.error = Some(e.to_string());
                    return Ok((o, None));
                }
                let job = Job {
                    program: Program::Command(a.command.clone()),
                    stdin: None,
                    cwd: a.cwd.clone(),
                    session: None,
                };
                let stage = self.sandboxed(plan, &job, &mut o).await?;
                return Ok((o, Some(stage)));
            }
        }
        Ok((o, None))
    }

    /// Runs `job` in the plan's backend on a stage of the workspace.
    async fn sandboxed(
        &self,
        plan: &Plan,
        job: &Job,
        o: &mut Outcome,
    ) -> Result<crate::sandbox::stage::Stage, Error> {
        let backend: &dyn Backend = match plan.backend {
            BackendKind::Wasm => match &self.wasm {
                Some(w) => w,
                None => {
                    return Err(SandboxError::Unavailable {
                        backend: "wasm",
                        detail: "disabled in this executor".into(),
                    }
                    .into());
                }
            },
            BackendKind::Docker => match &self.docker {
                Some(d) => d.as_ref(),
                None => {
                    return Err(SandboxError::Unavailable {
                        backend: "docker",
                        detail: "no docker backend is attached to this executor (python and javascript run on wasm; run_command and sh need docker or native)".into(),
                    }
                    .into());
                }
            },
            BackendKind::Native => match &self.native {
                Some(n) => n.as_ref(),
                None => {
                    return Err(SandboxError::Unavailable {
                        backend: "native",
                        detail: "disabled in this executor".into(),
                    }
                    .into());
                }
            },
            BackendKind::Host => {
                return Err(Error::Internal {
                    op: "route",
                    detail: "code cannot run on the host backend".into(),
                });
            }
        };
        if job.session.is_some() && !matches!(plan.backend, BackendKind::Wasm | BackendKind::Docker)
        {
            return Err(SandboxError::Unsupported(format!(
                "sessions run on the wasm and docker backends; the policy runs this call on {}",
                plan.backend.as_str()
            ))
            .into());
        }
        let (stage, plan) = self.stage_for(plan, backend.sandbox_user()).await?;
        let raw = backend.execute(&plan, job).await?;
        o.reasons.extend(raw.notes.iter().cloned());
        // Host names (and the SNI a refusal quotes) are the guest's words:
        // filtered like its output.
        o.egress = raw.egress.clone();
        let redactor = self.redactor();
        for e in &mut o.egress {
            redactor.redact_secrets_into(&mut e.host, &mut Default::default());
            if let Some(r) = &mut e.reason {
                redactor.redact_secrets_into(r, &mut Default::default());
            }
        }
        o.exit_code = raw.exit_code;
        o.cpu_ms = raw.cpu_time.map(|d| d.as_secs_f64() * 1e3);
        o.stdout = String::from_utf8_lossy(&raw.stdout).into_owned();
        o.stderr = String::from_utf8_lossy(&raw.stderr).into_owned();
        o.truncated = Truncation {
            stdout: raw.stdout_truncated,
            stderr: raw.stderr_truncated,
        };
        o.output_untrusted = raw.output_untrusted;
        o.error = raw.detail;
        o.limits_hit = raw.limits_hit;
        // A limit that was hit but let the program exit (memory refused,
        // fork refused, output cut) is reported; only a kill is `killed`.
        let killed = o.limits_hit.iter().any(|h| {
            matches!(
                h,
                LimitHit::TimeoutCpu | LimitHit::TimeoutWall | LimitHit::Trap
            )
        });
        if killed || raw.exit_code.is_none() {
            o.status = Status::Killed;
        }
        Ok(stage)
    }
}

/// The runs of at least `min` printable ASCII characters in `bytes`, one
/// per line (what `strings` shows): text hidden in a binary file, without
/// the noise its compressed data would add.
fn printable_runs(bytes: &[u8], min: usize) -> String {
    let mut out = String::new();
    for run in bytes.split(|b| !(b.is_ascii_graphic() || *b == b' ')) {
        if run.len() >= min {
            out.push_str(&String::from_utf8_lossy(run));
            out.push('\n');
        }
    }
    out
}

/// Shortens long strings in a JSON value (audit entries keep the shape
/// and a digest, not megabytes of code).
fn shorten_json(v: &mut serde_json::Value, max: usize) {
    match v {
        serde_json::Value::String(s) if s.len() > max => {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(s.as_bytes()));
            *s = format!(
                "{}… [{} bytes, sha256 {digest}]",
                crate::call::shorten(s, max),
                s.len()
            );
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| shorten_json(x, max)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| shorten_json(x, max)),
        _ => {}
    }
}

/// Redacts every string inside a JSON value.
pub(crate) fn redact_json(r: &Redactor, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => r.redact_secrets_into(s, &mut Report::default()),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_json(r, x)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| redact_json(r, x)),
        _ => {}
    }
}

/// Refuses `path` (which may not exist yet) inside `workspace` (canonical):
/// sandboxed code could rewrite it.
pub(crate) fn refuse_inside(workspace: &Path, path: &Path, what: &str) -> Result<(), Error> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    // The deepest existing ancestor, with symlinks resolved.
    let inside = abs
        .ancestors()
        .find_map(|a| std::fs::canonicalize(a).ok())
        .is_some_and(|c| c.starts_with(workspace));
    if inside {
        return Err(Error::Usage(format!(
            "{what} {} lies inside the workspace {}: sandboxed code could rewrite it; put it outside",
            path.display(),
            workspace.display()
        )));
    }
    Ok(())
}

/// Why a call judged again after its approval may not run: it is now
/// denied, or it asks for something other than what was approved.
fn changed_since_approval(approved: &Verdict, now: &Verdict) -> Option<String> {
    fn asks(v: &Verdict) -> Vec<&str> {
        let mut r: Vec<&str> = v
            .matched_rules
            .iter()
            .filter(|m| m.decision == Decision::Ask)
            .map(|m| m.id.as_str())
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }
    match now.decision {
        Decision::Deny => Some("it is now denied".into()),
        Decision::Ask if asks(now) != asks(approved) || now.reasons != approved.reasons => {
            Some("it now asks about something other than what was approved".into())
        }
        Decision::Ask | Decision::Allow => None,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
