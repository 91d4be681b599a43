//! What every backend's sessions share: how a session is listed
//! ([`SessionInfo`]), how sessions are keyed and bounded (`Registry`).
//!
//! A session is an interpreter kept across calls (wasm: one instance on its
//! own thread; docker: one container and one Python process in it). Each
//! backend runs its own; they agree on what a listing says, on ownership
//! (a [`SessionRef`] is principal + name: a principal never reaches
//! another's), and on the fact that an ended session is forgotten once the
//! next turn of its name opens a new one.

use super::SessionRef;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ended sessions kept per principal for listing (the oldest go first).
const KEEP_ENDED: usize = 16;

/// Where a session stands, as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub name: String,
    pub language: &'static str,
    /// `wasm` or `docker`: where the session's interpreter lives.
    pub backend: &'static str,
    /// `open`, `ended` (a limit, an exit, idle or lifetime: see `ended`) or `closed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    pub turns: u64,
    pub opened_at_ms: u64,
    pub last_turn_at_ms: u64,
    pub memory_limit_bytes: u64,
    pub idle_timeout_s: u64,
    pub lifetime_s: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Marks a session ended with why, once (a closed or ended one keeps its
/// first reason).
pub(crate) fn end(info: &Mutex<SessionInfo>, why: String) {
    let mut i = info.lock().unwrap_or_else(|p| p.into_inner());
    if i.state == "open" {
        i.state = "ended";
        i.ended = Some(why);
    }
}

/// A copy of how a session stands (the lock is never held across work).
pub(crate) fn snapshot(info: &Mutex<SessionInfo>) -> SessionInfo {
    info.lock()
        .map(|i| i.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// What every backend refuses as a turn: sessions run python, and a turn
/// reads no stdin.
pub(crate) fn check_turn(
    language: crate::call::Language,
    stdin: Option<&str>,
) -> Result<(), super::SandboxError> {
    if language != crate::call::Language::Python {
        return Err(super::SandboxError::Unsupported(format!(
            "sessions run python; this call is {}",
            language.as_str()
        )));
    }
    if stdin.is_some() {
        return Err(super::SandboxError::Unsupported(
            "a session turn reads no stdin: pass data in files or in the code".into(),
        ));
    }
    Ok(())
}

/// Counts a turn that ran.
pub(crate) fn count_turn(info: &Mutex<SessionInfo>) {
    let mut i = info.lock().unwrap_or_else(|p| p.into_inner());
    i.turns += 1;
    i.last_turn_at_ms = now_ms();
}

/// What the Outcome says when a turn opened its session.
pub(crate) fn opened_note(name: &str, before: Option<String>) -> String {
    match before {
        Some(why) => format!("session {name:?} had ended ({why}); this turn opened a new one"),
        None => format!("session {name:?} opened"),
    }
}

/// Why turn `n` ends its session, if it does: a limit (other than cut
/// output), a quit or a dead interpreter leaves nothing known to go on with.
pub(crate) fn why_ended(
    out: &crate::sandbox::RawOutput,
    n: u64,
    quit: bool,
    died: bool,
) -> Option<String> {
    use crate::outcome::LimitHit;
    if let Some(h) = out
        .limits_hit
        .iter()
        .find(|h| **h != LimitHit::OutputTruncated)
    {
        Some(format!("turn {n} hit a limit: {}", h.as_str()))
    } else if quit {
        Some(format!("turn {n} quit the interpreter"))
    } else if died {
        Some(format!("turn {n} ended the interpreter"))
    } else {
        None
    }
}

/// A backend's session as the registry sees it.
pub(crate) trait Entry {
    fn info(&self) -> SessionInfo;
    /// Still able to take a turn.
    fn open(&self) -> bool;
}

/// A backend's sessions, keyed by owner and name.
pub(crate) struct Registry<E> {
    map: Mutex<HashMap<SessionRef, Arc<E>>>,
}

impl<E> Default for Registry<E> {
    fn default() -> Self {
        Registry {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<E: Entry> Registry<E> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionRef, Arc<E>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open session `r`, else `None` and why the last one of that name
    /// ended (it is forgotten: the caller opens a new one).
    pub fn live(&self, r: &SessionRef) -> (Option<Arc<E>>, Option<String>) {
        let mut m = self.map();
        match m.get(r) {
            Some(e) if e.open() => (Some(e.clone()), None),
            Some(e) => {
                let why = e.info().ended.unwrap_or_else(|| "it ended".into());
                m.remove(r);
                (None, Some(why))
            }
            None => (None, None),
        }
    }

    /// Open sessions of `principal`.
    pub fn open_count(&self, principal: &str) -> usize {
        self.map()
            .iter()
            .filter(|(k, e)| k.principal == principal && e.open())
            .count()
    }

    /// Refuses a new session to a principal already holding `max`.
    pub fn room_for(&self, principal: &str, max: usize) -> Result<(), super::SandboxError> {
        if self.open_count(principal) >= max {
            return Err(super::SandboxError::Unsupported(format!(
                "{max} open sessions is the most one principal may hold; close one first"
            )));
        }
        Ok(())
    }

    pub fn insert(&self, r: SessionRef, e: Arc<E>) {
        let mut m = self.map();
        m.insert(r.clone(), e);
        // Forget the oldest ended sessions of this principal beyond the bound.
        let mut ended: Vec<(u64, SessionRef)> = m
            .iter()
            .filter(|(k, e)| k.principal == r.principal && !e.open())
            .map(|(k, e)| (e.info().last_turn_at_ms, k.clone()))
            .collect();
        if ended.len() > KEEP_ENDED {
            ended.sort_by_key(|(at, _)| *at);
            for (_, k) in ended.iter().take(ended.len() - KEEP_ENDED) {
                m.remove(k);
            }
        }
    }

    pub fn list(&self, principal: &str) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .map()
            .iter()
            .filter(|(k, _)| k.principal == principal)
            .map(|(_, e)| e.info())
            .collect();
        v.sort_by(|a, b| {
            a.opened_at_ms
                .cmp(&b.opened_at_ms)
                .then(a.name.cmp(&b.name))
        });
        v
    }

    /// Removes a session and returns it with how it stood, `closed` if it
    /// was open (the backend stops what it still runs).
    pub fn close(&self, r: &SessionRef) -> Option<(SessionInfo, Arc<E>)> {
        let e = self.map().remove(r)?;
        let mut info = e.info();
        if info.state == "open" {
            info.state = "closed";
        }
        Some((info, e))
    }

    /// Forgets every session; returns them.
    pub fn close_all(&self) -> Vec<Arc<E>> {
        self.map().drain().map(|(_, e)| e).collect()
    }
}
