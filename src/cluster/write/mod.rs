//! The write path of a cluster node: a write (`op`) is routed to its owners (`route`), applied by
//! its primary and copied to the other holders (`replicate`); `entry_load` decides who sends the
//! replicas of a write this node forwards.

pub(crate) mod entry_load;
pub(crate) mod op;
pub(crate) mod replicate;
pub(crate) mod route;
