//! The hybrid logical clock that stamps every write's version, and the bound on how far in the
//! future a peer's version may be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The default of `--cluster.max-clock-skew`.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Hybrid logical clock: `unix millis << 16 | counter`, strictly increasing on this node and
/// bumped past every version it receives, so a later write to a group always gets a higher
/// version than any earlier one the node has seen.
///
/// A version from a peer is only believed up to `max_skew` ahead of this node's wall clock:
/// beyond it, [`HybridClock::observe`] ignores it (and the callers refuse what carries it), so a
/// peer cannot push this clock, or what the store holds, towards the end of time.
#[derive(Debug)]
pub struct HybridClock {
    last: AtomicU64,
    max_skew_ms: AtomicU64,
}

impl Default for HybridClock {
    fn default() -> Self {
        HybridClock {
            last: AtomicU64::new(0),
            max_skew_ms: AtomicU64::new(DEFAULT_MAX_CLOCK_SKEW.as_millis() as u64),
        }
    }
}

impl HybridClock {
    pub fn now(&self) -> u64 {
        let physical = crate::time::unix_millis() << 16;
        // Saturates: the clock never wraps to the past, whatever was observed before.
        let next = |prev: u64| physical.max(prev.saturating_add(1));
        let prev = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |prev| Some(next(prev)))
            .unwrap_or_else(|p| p);
        next(prev)
    }

    /// Moves the clock past `version`, unless it is beyond the allowed skew (then ignored).
    pub fn observe(&self, version: u64) {
        if self.believable(version) {
            self.last.fetch_max(version, Ordering::AcqRel);
        }
    }

    /// The newest version a peer may send now: this node's wall clock plus the allowed skew
    /// (any counter within that millisecond).
    pub fn newest_allowed(&self) -> u64 {
        let ms =
            crate::time::unix_millis().saturating_add(self.max_skew_ms.load(Ordering::Relaxed));
        ms.checked_shl(16)
            .filter(|v| v >> 16 == ms)
            .map_or(u64::MAX, |v| v | 0xffff)
    }

    /// Whether `version` is at most the allowed skew ahead of this node's wall clock.
    pub fn believable(&self, version: u64) -> bool {
        version <= self.newest_allowed()
    }

    /// Sets the allowed skew (`--cluster.max-clock-skew`).
    pub fn set_max_skew(&self, skew: Duration) {
        self.max_skew_ms.store(
            u64::try_from(skew.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
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

    #[test]
    fn versions_beyond_the_skew_are_not_observed() {
        let c = HybridClock::default();
        c.set_max_skew(Duration::from_secs(60));
        let now_ms = crate::time::unix_millis();
        let within = (now_ms + 30_000) << 16;
        let beyond = (now_ms + 120_000) << 16;
        assert!(c.believable(within));
        assert!(!c.believable(beyond));
        assert!(!c.believable(u64::MAX));
        c.observe(beyond);
        c.observe(u64::MAX);
        assert!(
            c.now() < beyond,
            "a version beyond the skew moved the clock"
        );
        c.observe(within);
        assert!(c.now() > within);
    }

    #[test]
    fn the_clock_saturates_instead_of_overflowing() {
        let c = HybridClock::default();
        // Only reachable through a stored version (a skew this large is never configured).
        c.set_max_skew(Duration::from_millis(u64::MAX));
        assert_eq!(c.newest_allowed(), u64::MAX);
        c.observe(u64::MAX);
        assert_eq!(c.now(), u64::MAX);
        assert_eq!(c.now(), u64::MAX);
    }
}
