//! What every backend needs around its sandboxes: a cap on how many exist
//! at once (slots), warm sandboxes kept per profile so a call does not wait
//! for one to start, and a capped output buffer.
//!
//! A [`WarmPool`] grants nothing by itself: with `per_profile = 0` it keeps
//! nothing warm, and every sandbox, warm or not, holds one slot for its
//! whole life. A sandbox is never handed out twice: [`WarmPool::lease`]
//! removes it from the pool.

use super::SandboxError;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One of the backend's sandbox slots, held for a sandbox's whole life.
pub type Slot = OwnedSemaphorePermit;

/// What [`WarmPool::lease`] gives: a warm sandbox, or a slot to start one in.
pub enum Lease<T> {
    Warm(T),
    Fresh(Slot),
}

/// Slots for the warm sandboxes a profile lacks, and the sandboxes of
/// profiles evicted to make room (the caller disposes of them).
pub struct Reserve<T> {
    pub slots: Vec<Slot>,
    pub evicted: Vec<T>,
}

struct Idle<K, T> {
    ready: HashMap<K, VecDeque<T>>,
    /// Sandboxes being started for the pool, per profile.
    filling: HashMap<K, usize>,
    /// Profiles, oldest first (the first to go when there are too many).
    order: VecDeque<K>,
}

/// Slots and warm sandboxes, keyed by profile `K`.
pub struct WarmPool<K, T> {
    slots: Arc<Semaphore>,
    per_profile: usize,
    max_profiles: usize,
    idle: Mutex<Idle<K, T>>,
}

impl<K: Hash + Eq + Clone, T> WarmPool<K, T> {
    /// `slots` sandboxes at most, `per_profile` kept warm for each of at most
    /// `max_profiles` profiles.
    pub fn new(slots: usize, per_profile: usize, max_profiles: usize) -> WarmPool<K, T> {
        WarmPool {
            slots: Arc::new(Semaphore::new(slots)),
            per_profile,
            max_profiles: max_profiles.max(1),
            idle: Mutex::new(Idle {
                ready: HashMap::new(),
                filling: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Idle<K, T>> {
        // The state stays consistent even if a holder panicked mid-update:
        // every mutation is a single push/pop/insert.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A warm sandbox for `key` (skipping any that `alive` says died while
    /// idle), else a slot to start a fresh one in; waits for a slot when
    /// every one is taken.
    pub async fn lease(
        &self,
        key: &K,
        alive: impl Fn(&T) -> bool,
    ) -> Result<Lease<T>, SandboxError> {
        if let Some(q) = self.idle().ready.get_mut(key) {
            while let Some(t) = q.pop_front() {
                if alive(&t) {
                    return Ok(Lease::Warm(t));
                }
            }
        }
        let slot =
            self.slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| SandboxError::Internal {
                    op: "acquire sandbox slot",
                    detail: e.to_string(),
                })?;
        Ok(Lease::Fresh(slot))
    }

    /// A slot now, if one is free (a session holds one for its life and
    /// must not wait behind calls).
    pub fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Slots for the sandboxes `key` lacks to have `per_profile` warm ones,
    /// counting those being started. Never waits: when slots run out it
    /// reserves fewer. Each slot must be answered by [`WarmPool::filled`].
    pub fn reserve(&self, key: &K) -> Reserve<T> {
        let mut out = Reserve {
            slots: Vec::new(),
            evicted: Vec::new(),
        };
        if self.per_profile == 0 {
            return out;
        }
        let mut idle = self.idle();
        if !idle.order.contains(key) {
            while idle.order.len() >= self.max_profiles {
                let Some(old) = idle.order.pop_front() else {
                    break;
                };
                out.evicted
                    .extend(idle.ready.remove(&old).into_iter().flatten());
            }
            idle.order.push_back(key.clone());
        }
        let have = idle.ready.get(key).map_or(0, VecDeque::len);
        let filling = idle.filling.entry(key.clone()).or_insert(0);
        for _ in (have + *filling)..self.per_profile {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            *filling += 1;
            out.slots.push(slot);
        }
        out
    }

    /// A sandbox started for `key` after [`WarmPool::reserve`] is ready
    /// (`Some`), or failed to start (`None`).
    pub fn filled(&self, key: &K, sandbox: Option<T>) {
        let mut idle = self.idle();
        if let Some(n) = idle.filling.get_mut(key) {
            *n = n.saturating_sub(1);
        }
        if let Some(t) = sandbox {
            idle.ready.entry(key.clone()).or_default().push_back(t);
        }
    }

    /// Warm sandboxes that `alive` says are usable.
    pub fn warm(&self, alive: impl Fn(&T) -> bool) -> usize {
        self.idle()
            .ready
            .values()
            .flatten()
            .filter(|t| alive(t))
            .count()
    }

    /// Empties the pool, for shutdown.
    pub fn drain(&self) -> Vec<T> {
        let mut idle = self.idle();
        idle.order.clear();
        idle.ready.drain().flat_map(|(_, q)| q).collect()
    }
}

/// The first `cap` bytes of an output stream; the rest is dropped and the
/// drop noted, so a flood is cut while the program keeps running.
#[derive(Debug, Default)]
pub struct Capped {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped {
            buf: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Sets the cap (a pooled sandbox learns its limits when its job arrives).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    pub fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.truncated |= take < data.len();
    }

    /// What was kept and whether anything was dropped; leaves it empty
    /// (a session's next turn starts a new count).
    pub fn take(&mut self) -> (Vec<u8>, bool) {
        (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.truncated),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_the_first_bytes_and_notes_the_drop() {
        let mut c = Capped::new(5);
        c.push(b"abc");
        assert_eq!(c.take(), (b"abc".to_vec(), false));
        let mut c = Capped::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        c.push(b"ij");
        assert_eq!(c.take(), (b"abcde".to_vec(), true));
    }

    #[tokio::test]
    async fn warm_sandboxes_are_leased_once_and_slots_bound_the_total() {
        let pool: WarmPool<&str, u32> = WarmPool::new(3, 2, 8);
        let r = pool.reserve(&"a");
        assert_eq!(r.slots.len(), 2);
        // Nothing more while two are being started.
        assert_eq!(pool.reserve(&"a").slots.len(), 0);
        for (i, _slot) in r.slots.into_iter().enumerate() {
            pool.filled(&"a", Some(i as u32));
        }
        assert_eq!(pool.warm(|_| true), 2);
        let Lease::Warm(first) = pool.lease(&"a", |_| true).await.unwrap() else {
            panic!("expected a warm sandbox");
        };
        let Lease::Warm(second) = pool.lease(&"a", |_| true).await.unwrap() else {
            panic!("expected a warm sandbox");
        };
        assert_ne!(first, second);
        // The two reserved slots were dropped above (the items kept none),
        // so three are free: a third lease is fresh.
        assert!(matches!(
            pool.lease(&"a", |_| true).await.unwrap(),
            Lease::Fresh(_)
        ));
    }

    #[tokio::test]
    async fn dead_sandboxes_are_skipped_and_old_profiles_evicted() {
        let pool: WarmPool<u8, u32> = WarmPool::new(8, 1, 2);
        for k in [1u8, 2] {
            let r = pool.reserve(&k);
            assert_eq!(r.slots.len(), 1);
            pool.filled(&k, Some(u32::from(k) * 10));
        }
        // A third profile evicts the oldest, handing back its sandbox.
        let r = pool.reserve(&3);
        assert_eq!(r.evicted, vec![10]);
        pool.filled(&3, None);
        // Profile 2's sandbox died while idle: a fresh slot instead.
        assert!(matches!(
            pool.lease(&2, |t| *t != 20).await.unwrap(),
            Lease::Fresh(_)
        ));
        assert_eq!(pool.drain(), Vec::<u32>::new());
    }
}
