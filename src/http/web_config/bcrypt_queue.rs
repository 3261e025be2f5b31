//! The queue of bcrypt checks: at most one running per core (like exporter-toolkit's mutex),
//! a bounded number pending in all, and a bounded number per client address. A check that
//! does not fit is refused at once, so a flood of wrong passwords from some clients cannot
//! make every other client's first login wait behind it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::telemetry::metrics as m;

/// `--web.auth.max-pending` and `--web.auth.max-pending-per-client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    pub max_pending: usize,
    pub max_pending_per_client: usize,
}

impl Default for AuthLimits {
    /// The flags' defaults.
    fn default() -> Self {
        AuthLimits {
            max_pending: 16,
            max_pending_per_client: 2,
        }
    }
}

/// Why a check was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_pending` checks are pending.
    Full,
    /// This client has `max_pending_per_client` checks pending.
    Client,
}

pub(super) struct BcryptQueue {
    limits: AuthLimits,
    /// Checks running at once: one per core.
    running: Semaphore,
    /// Pending checks (running or waiting): in all, and by client address.
    pending: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl BcryptQueue {
    pub(super) fn new(limits: AuthLimits) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(BcryptQueue {
            limits,
            running: Semaphore::new(cores),
            pending: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place in the queue for `client`'s check, or why there is none (counted).
    pub(super) fn enter(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Place, Refusal> {
        let mut pending = self.pending.lock();
        let refusal = if pending.0 >= self.limits.max_pending {
            Some(Refusal::Full)
        } else if client.is_some_and(|c| {
            pending.1.get(&c).copied().unwrap_or(0) >= self.limits.max_pending_per_client
        }) {
            Some(Refusal::Client)
        } else {
            None
        };
        if let Some(r) = refusal {
            let reason = match r {
                Refusal::Full => "queue_full",
                Refusal::Client => "client_limit",
            };
            metrics::counter!(m::AUTH_CHECKS_REFUSED_TOTAL, "reason" => reason).increment(1);
            return Err(r);
        }
        pending.0 += 1;
        if let Some(c) = client {
            *pending.1.entry(c).or_insert(0) += 1;
        }
        Ok(Place {
            queue: Arc::clone(self),
            client,
        })
    }

    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.pending.lock().0
    }
}

/// A pending check; leaves the queue when dropped.
pub(super) struct Place {
    queue: Arc<BcryptQueue>,
    client: Option<IpAddr>,
}

impl Place {
    /// Waits for a core (in arrival order) and runs `check` on the blocking pool.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _running = self.queue.running.acquire().await.ok()?;
        tokio::task::spawn_blocking(check).await.ok()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut pending = self.queue.pending.lock();
        pending.0 -= 1;
        if let Some(c) = self.client {
            if let Some(n) = pending.1.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    pending.1.remove(&c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn places_are_bounded_in_all_and_per_client_and_freed_on_drop() {
        let q = BcryptQueue::new(AuthLimits {
            max_pending: 3,
            max_pending_per_client: 2,
        });
        let a1 = q.enter(ip(1)).unwrap();
        let _a2 = q.enter(ip(1)).unwrap();
        assert_eq!(q.enter(ip(1)).err(), Some(Refusal::Client));
        let _b1 = q.enter(ip(2)).unwrap();
        assert_eq!(q.enter(ip(3)).err(), Some(Refusal::Full));
        assert_eq!(q.pending(), 3);
        drop(a1);
        assert!(q.enter(ip(1)).is_ok(), "a freed place is reusable");
        assert_eq!(q.pending(), 2, "the place taken above was dropped again");
    }
}
