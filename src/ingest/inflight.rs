//! The bytes of push bodies held at once (`--push.max-inflight-bytes`): each push reserves what
//! it reads and decompresses before holding it, and a push that would pass the cap is refused
//! at once (503 with Retry-After) instead of growing the node's memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::telemetry::metrics as m;

/// The budget shared by every push of a node.
#[derive(Debug)]
pub struct InflightBytes {
    used: AtomicUsize,
    cap: usize,
}

impl InflightBytes {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(InflightBytes {
            used: AtomicUsize::new(0),
            cap,
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, grown as the body arrives.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            pool: Arc::clone(self),
            bytes: 0,
        }
    }

    fn take(&self, n: usize) -> bool {
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.cap)
            })
            .is_ok();
        if ok {
            self.report();
        }
        ok
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.report();
    }

    fn report(&self) {
        metrics::gauge!(m::PUSH_INFLIGHT_BYTES).set(self.used() as f64);
    }
}

/// Bytes one push holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<InflightBytes>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `n` more bytes; false (nothing reserved) when that would pass the cap.
    #[must_use]
    pub fn grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        if self.pool.take(n) {
            self.bytes += n;
            true
        } else {
            false
        }
    }

    /// Gives back `n` of the reserved bytes (a buffer freed before the push ends).
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        if n > 0 {
            self.bytes -= n;
            self.pool.give_back(n);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.pool.give_back(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_cap_and_give_back_on_drop() {
        let pool = InflightBytes::new(100);
        let mut a = pool.reservation();
        assert!(a.grow(60));
        let mut b = pool.reservation();
        assert!(!b.grow(41), "60 + 41 passes the cap");
        assert_eq!(pool.used(), 60);
        assert!(b.grow(40));
        assert_eq!(pool.used(), 100);
        a.shrink(10);
        assert_eq!((a.bytes(), pool.used()), (50, 90));
        drop(a);
        assert_eq!(pool.used(), 40);
        drop(b);
        assert_eq!(pool.used(), 0);
    }
}
