//! The cluster lifecycle: rebalancing, hinted handoff, anti-entropy, tombstone collection
//! (`rounds`, `sync`), the pull of a joining node and the handover of a leaving one (`handover`).

mod handover;
mod rounds;
pub(crate) mod sync;

pub use rounds::{LifecycleSettings, Reconciler};

#[cfg(test)]
mod tests;
