//! Rate limits and budgets per principal: how often and how much a
//! principal (an agent, a token, a session) may run.
//!
//! Rates are sliding windows (calls per minute and per hour); budgets are
//! totals for the life of the executor (calls, wall seconds, CPU seconds
//! as the sandboxes measure them). Both live in the library so embedded use gets
//! them too; the HTTP service maps a refusal to 429 with `Retry-After`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits per principal; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budgets {
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    /// Calls in total.
    pub calls: Option<u64>,
    /// Elapsed seconds of calls in total.
    pub wall_seconds: Option<f64>,
    /// CPU seconds in total, as the backends measure them (wasm guest
    /// thread, docker cgroup; host file tools count none).
    pub cpu_seconds: Option<f64>,
}

/// Why a principal may not run now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("rate limit: {limit} per {window} for principal `{principal}`")]
    Rate {
        principal: String,
        limit: u32,
        window: &'static str,
        retry_after: Duration,
    },
    #[error("budget exhausted: {what} for principal `{principal}`")]
    Budget { principal: String, what: String },
}

impl Refusal {
    /// When trying again can succeed (`None`: not before the budget is reset).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Rate { retry_after, .. } => Some(*retry_after),
            Refusal::Budget { .. } => None,
        }
    }
}

/// What a principal has used in total, as a store keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub calls: u64,
    pub wall: f64,
    pub cpu: f64,
}

/// Milliseconds in the windows.
pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;

/// The one judgement every store makes: may `principal` start one more
/// call at `now` (ms), given its totals and the start times (ms, oldest
/// first) of its calls in the last hour?
pub fn judge(
    principal: &str,
    b: &Budgets,
    used: &Totals,
    recent: &[u64],
    now: u64,
) -> Result<(), Refusal> {
    let p = || principal.to_string();
    let spent = |what: String| Refusal::Budget {
        principal: p(),
        what,
    };
    if let Some(max) = b.calls
        && used.calls >= max
    {
        return Err(spent(format!("{max} calls")));
    }
    if let Some(max) = b.wall_seconds
        && used.wall >= max
    {
        return Err(spent(format!("{max} wall seconds")));
    }
    if let Some(max) = b.cpu_seconds
        && used.cpu >= max
    {
        return Err(spent(format!("{max} CPU seconds")));
    }
    for (limit, window, name) in [
        (b.per_minute, MINUTE_MS, "minute"),
        (b.per_hour, HOUR_MS, "hour"),
    ] {
        let Some(limit) = limit else { continue };
        let inside: Vec<u64> = recent
            .iter()
            .copied()
            .filter(|t| now.saturating_sub(*t) < window)
            .collect();
        if inside.len() >= limit as usize {
            // The oldest call in the window leaves it first.
            let oldest = inside.first().copied().unwrap_or(now);
            let retry_after =
                Duration::from_millis(window.saturating_sub(now.saturating_sub(oldest)))
                    .max(Duration::from_secs(1));
            return Err(Refusal::Rate {
                principal: p(),
                limit,
                window: name,
                retry_after,
            });
        }
    }
    Ok(())
}

#[derive(Default)]
struct Usage {
    /// Start times (ms after the limiter's origin) within the last hour.
    recent: VecDeque<u64>,
    totals: Totals,
}

/// Tracks usage per principal against one set of [`Budgets`], in this
/// process's memory (the embedded store's).
pub struct Limiter {
    budgets: Budgets,
    origin: Instant,
    usage: Mutex<HashMap<String, Usage>>,
}

impl Limiter {
    pub fn new(budgets: Budgets) -> Limiter {
        Limiter {
            budgets,
            origin: Instant::now(),
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Admits one call (or request) for `principal`, counting it, or says
    /// why not. A refused attempt is not counted.
    pub fn admit(&self, principal: &str) -> Result<(), Refusal> {
        self.admit_at(principal, Instant::now())
    }

    /// [`Limiter::admit`] judged under `budgets` instead of the limiter's
    /// own (a store keeps the usage; the caller says the limits).
    pub fn admit_under(&self, budgets: &Budgets, principal: &str) -> Result<(), Refusal> {
        self.judge_at(budgets, principal, Instant::now())
    }

    fn admit_at(&self, principal: &str, now: Instant) -> Result<(), Refusal> {
        self.judge_at(&self.budgets, principal, now)
    }

    fn judge_at(&self, budgets: &Budgets, principal: &str, now: Instant) -> Result<(), Refusal> {
        let now = now.saturating_duration_since(self.origin).as_millis() as u64;
        let mut all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let u = all.entry(principal.to_string()).or_default();
        // Forget what is older than the longest window.
        while u
            .recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= HOUR_MS)
        {
            u.recent.pop_front();
        }
        judge(
            principal,
            budgets,
            &u.totals,
            u.recent.make_contiguous(),
            now,
        )?;
        u.recent.push_back(now);
        u.totals.calls += 1;
        Ok(())
    }

    /// Charges what an admitted call used.
    pub fn charge(&self, principal: &str, wall: Duration, cpu: Option<Duration>) {
        let mut all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let u = all.entry(principal.to_string()).or_default();
        u.totals.wall += wall.as_secs_f64();
        u.totals.cpu += cpu.map_or(0.0, |c| c.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_window_slides() {
        let l = Limiter::new(Budgets {
            per_minute: Some(2),
            ..Budgets::default()
        });
        let t0 = Instant::now();
        l.admit_at("a", t0).unwrap();
        l.admit_at("a", t0 + Duration::from_secs(10)).unwrap();
        let r = l.admit_at("a", t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(r.retry_after(), Some(Duration::from_secs(40)));
        // Another principal has its own window.
        l.admit_at("b", t0 + Duration::from_secs(20)).unwrap();
        // After the first call leaves the window, one more fits.
        l.admit_at("a", t0 + Duration::from_secs(61)).unwrap();
        assert!(l.admit_at("a", t0 + Duration::from_secs(62)).is_err());
    }

    #[test]
    fn budgets_are_totals() {
        let l = Limiter::new(Budgets {
            calls: Some(3),
            wall_seconds: Some(1.0),
            ..Budgets::default()
        });
        l.admit("a").unwrap();
        l.charge("a", Duration::from_millis(600), None);
        l.admit("a").unwrap();
        l.charge("a", Duration::from_millis(600), None);
        let r = l.admit("a").unwrap_err();
        assert!(matches!(r, Refusal::Budget { .. }), "{r}");
        assert_eq!(r.retry_after(), None);
        let l = Limiter::new(Budgets {
            calls: Some(1),
            ..Budgets::default()
        });
        l.admit("a").unwrap();
        assert!(l.admit("a").is_err());
    }
}
