//! The hybrid logical clock that stamps every write's version.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hybrid logical clock: `unix millis << 16 | counter`, strictly increasing on this node and
/// bumped past every version it receives, so a later write to a group always gets a higher
/// version than any earlier one the node has seen.
#[derive(Debug, Default)]
pub struct HybridClock(AtomicU64);

impl HybridClock {
    pub fn now(&self) -> u64 {
        let physical = crate::time::unix_millis() << 16;
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |prev| {
                Some(physical.max(prev + 1))
            })
            .unwrap_or_else(|p| p);
        physical.max(prev + 1)
    }

    pub fn observe(&self, version: u64) {
        self.0.fetch_max(version, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_jumps_past_observed_versions() {
        let c = HybridClock::default();
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        c.observe(b + 1_000_000);
        assert!(c.now() > b + 1_000_000);
    }
}
