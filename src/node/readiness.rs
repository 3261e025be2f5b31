//! The readiness latch behind `/-/ready`: a single node is ready at once; a cluster node once it
//! joined and pulled its groups, and no longer once it starts leaving or stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether this node answers `/-/ready` with 200; clones share the latch.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn new(ready: bool) -> Readiness {
        Readiness(Arc::new(AtomicBool::new(ready)))
    }

    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::Release);
    }

    #[cfg(test)]
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The flag the HTTP handlers read (`AppState::ready`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_latch_the_http_side_reads() {
        let r = Readiness::new(false);
        let http = r.flag();
        let joined = r.clone();
        joined.set_ready();
        assert!(r.is_ready() && http.load(Ordering::Acquire));
        r.set_not_ready();
        assert!(!joined.is_ready() && !http.load(Ordering::Acquire));
    }
}
