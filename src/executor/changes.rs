//! A sandbox's workspace: staged before the run, its changes judged and
//! applied after (see `sandbox::stage`). The write rules decide each change
//! exactly as they decide `write_file`; `ask` changes go through the gate.

use super::Executor;
use crate::error::Error;
use crate::gate::{Answer, Approver, ConfirmationRequest};
use crate::outcome::{FileChange, Outcome};
use crate::plan::{MountAccess, Plan};
use crate::policy::paths::Access;
use crate::policy::{Decision, MatchedRule};
use crate::sandbox::SandboxError;
use crate::sandbox::stage::{Action, Change, Kind, Stage, StageLimits};
use std::path::Path;

/// Entries one stage may hold.
const MAX_STAGE_ENTRIES: usize = 200_000;

/// One change with its decision, before it is applied.
struct Judged {
    change: Change,
    decision: Decision,
    reason: Option<String>,
    rules: Vec<MatchedRule>,
}

fn blocking_err(op: &'static str) -> impl Fn(tokio::task::JoinError) -> Error {
    move |e| Error::Internal {
        op,
        detail: e.to_string(),
    }
}

fn stage_err(e: crate::sandbox::stage::StageError) -> Error {
    SandboxError::Workspace {
        path: "(stage)".into(),
        detail: e.to_string(),
    }
    .into()
}

impl Executor {
    /// Copies the visible workspace for a sandbox: every path `read_file`
    /// would deny or ask about is left out. Returns the stage and the plan
    /// pointing at it.
    pub(super) async fn stage_for(
        &self,
        plan: &Plan,
        owner: Option<(u32, u32)>,
    ) -> Result<(Stage, Plan), Error> {
        let policy = self.policy.clone();
        let ws = self.workspace.clone();
        let limits = StageLimits {
            max_bytes: plan.limits.stage_bytes,
            max_entries: MAX_STAGE_ENTRIES,
        };
        let base = crate::sandbox::stage::base_dir(plan.backend);
        let stage = tokio::task::spawn_blocking(move || {
            let hide = |rel: &str| policy.paths().hides(&ws, rel);
            Stage::create_in(&base, &ws, &hide, owner, limits)
        })
        .await
        .map_err(blocking_err("stage the workspace"))?
        .map_err(stage_err)?;
        let mut plan = plan.clone();
        // The first mount is the workspace; others (native's exposed
        // toolchains) are the host's, read-only.
        if let Some(m) = plan.mounts.first_mut() {
            m.host = stage.root().to_path_buf();
            m.stage = true;
        }
        Ok((stage, plan))
    }

    /// Judges every change in `stage`, asks about the `ask` ones, applies
    /// the allowed ones and records all of them in `o.changes`. Fails
    /// closed: if the stage cannot be read, nothing is applied.
    pub(super) async fn settle(
        &self,
        stage: Stage,
        plan: &Plan,
        o: &mut Outcome,
        approver: &dyn Approver,
        principal: &str,
    ) -> Result<(), Error> {
        let stage = std::sync::Arc::new(stage);
        let r = self
            .settle_stage(stage.clone(), plan, o, approver, principal)
            .await;
        // Removing the copy is off the call's path (on a journaled disk it
        // costs milliseconds); a process killed before it runs leaves the
        // stage to `reap_orphans`.
        tokio::task::spawn_blocking(move || drop(stage));
        r
    }

    async fn settle_stage(
        &self,
        stage: std::sync::Arc<Stage>,
        plan: &Plan,
        o: &mut Outcome,
        approver: &dyn Approver,
        principal: &str,
    ) -> Result<(), Error> {
        let (st, ws) = (stage.clone(), self.workspace.clone());
        let found = tokio::task::spawn_blocking(move || st.changes(&ws))
            .await
            .map_err(blocking_err("read the stage"))?;
        let changes = match found {
            Ok(c) => c,
            Err(e) => {
                o.reasons.push(format!(
                    "the sandbox's changes to the workspace were discarded: {e}"
                ));
                return Ok(());
            }
        };
        let read_only = plan
            .mounts
            .first()
            .is_some_and(|m| m.access == MountAccess::ReadOnly);
        let mut judged: Vec<Judged> = changes
            .into_iter()
            .map(|c| self.judge(c, read_only, plan.limits.file_size, &stage))
            .collect();
        if judged.iter().any(|j| j.decision == Decision::Ask) {
            let answer = self.confirm_changes(o, &judged, approver, principal).await;
            for j in judged.iter_mut().filter(|j| j.decision == Decision::Ask) {
                if answer.approved {
                    j.decision = Decision::Allow;
                }
                let verb = if answer.approved {
                    "approved"
                } else {
                    "rejected"
                };
                j.reason = Some(format!(
                    "{} (confirmation {} {verb} by {})",
                    j.reason.clone().unwrap_or_default(),
                    answer.confirmation_id,
                    answer.by
                ));
            }
        }
        let allowed: Vec<Change> = judged
            .iter()
            .filter(|j| j.decision == Decision::Allow)
            .map(|j| j.change.clone())
            .collect();
        let (st, ws) = (stage.clone(), self.workspace.clone());
        let results = tokio::task::spawn_blocking(move || {
            let refs: Vec<&Change> = allowed.iter().collect();
            st.apply(&ws, &refs)
        })
        .await
        .map_err(blocking_err("apply the sandbox's changes"))?;
        let mut results = results.into_iter();
        let mut discarded = 0;
        for j in judged {
            let (applied, reason) = if j.decision == Decision::Allow {
                match results.next() {
                    Some(Ok(())) => (true, j.reason),
                    Some(Err(why)) => (false, Some(why)),
                    None => (false, Some("not applied".into())),
                }
            } else {
                (false, j.reason)
            };
            discarded += usize::from(!applied);
            o.changes.push(FileChange {
                path: j.change.path,
                action: j.change.action.as_str(),
                kind: j.change.kind.as_str(),
                decision: j.decision,
                applied,
                reason,
            });
        }
        if discarded > 0 {
            o.reasons.push(format!(
                "{discarded} of the sandbox's {} change(s) to the workspace were not applied (see changes)",
                o.changes.len()
            ));
        }
        Ok(())
    }

    /// The write rules' decision on one change.
    fn judge(&self, c: Change, read_only: bool, file_size: u64, stage: &Stage) -> Judged {
        let deny = |c: Change, why: &str| Judged {
            change: c,
            decision: Decision::Deny,
            reason: Some(why.to_string()),
            rules: vec![],
        };
        if read_only {
            return deny(c, "the workspace is read-only for this sandbox");
        }
        if c.kind == Kind::Other {
            return deny(c, "special files are not copied out of a sandbox");
        }
        if let Some(t) = &c.target
            && !link_stays_inside(&self.workspace, &c.path, t)
        {
            return deny(c, "the symlink leads out of the workspace");
        }
        if let Some(t) = &c.target {
            // A link is judged as what it names too: a `notes.txt` that is
            // really `.env` would carry the secret's rules to a new name.
            let joined = beside(&c.path, t);
            let paths = self.policy.paths();
            if paths.hides(&self.workspace, &joined)
                || paths
                    .check(&self.workspace, &joined, Access::Write)
                    .decision
                    > Decision::Allow
            {
                return deny(c, "the symlink points at a path the policy protects");
            }
        }
        if c.kind == Kind::File
            && c.action != Action::Delete
            && std::fs::symlink_metadata(stage.root().join(&c.path))
                .is_ok_and(|m| m.len() > file_size)
        {
            return deny(c, "larger than the policy's file_size limit");
        }
        let check = self
            .policy
            .paths()
            .check(&self.workspace, &c.path, Access::Write);
        Judged {
            change: c,
            decision: check.decision,
            reason: (check.decision > Decision::Allow).then(|| check.reasons.join("; ")),
            rules: check.matched,
        }
    }

    /// One confirmation for every `ask` change of a call.
    async fn confirm_changes(
        &self,
        o: &Outcome,
        judged: &[Judged],
        approver: &dyn Approver,
        principal: &str,
    ) -> Answer {
        let asked: Vec<&Judged> = judged
            .iter()
            .filter(|j| j.decision == Decision::Ask)
            .collect();
        let now = crate::gate::now_ms();
        let mut args = serde_json::json!({
            "changes": asked.iter().map(|j| serde_json::json!({
                "path": j.change.path,
                "action": j.change.action,
                "kind": j.change.kind,
            })).collect::<Vec<_>>(),
        });
        super::redact_json(&self.redactor, &mut args);
        let req = ConfirmationRequest {
            id: format!("conf_{}", uuid::Uuid::new_v4().simple()),
            call_id: o.id.clone(),
            principal: principal.to_string(),
            tool: format!("{} (workspace changes)", o.tool),
            args,
            reasons: crate::policy::dedup(asked.iter().filter_map(|j| j.reason.clone()).collect()),
            matched_rules: asked.iter().flat_map(|j| j.rules.clone()).collect(),
            created_unix_ms: now,
            expires_unix_ms: now + self.ttl.as_millis(),
            // Changes found after a run are confirmed one run at a time.
            session_scope_available: false,
            // The call has run: nothing to take over.
            resume: None,
        };
        self.gate.confirm(approver, req, self.ttl).await
    }
}

/// Whether a symlink made at `path` pointing at `target` stays in the
/// workspace, read lexically and as the kernel would resolve it now.
fn link_stays_inside(workspace: &Path, path: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let joined = beside(path, target);
    crate::workpath::normalize(workspace, &joined).is_ok()
        && crate::workpath::resolve(workspace, &joined).is_ok()
}

/// `target` read from the directory of `path` (how a relative symlink resolves).
fn beside(path: &str, target: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{target}"),
        None => target.to_string(),
    }
}
