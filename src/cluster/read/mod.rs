//! The read path of a cluster node: a scrape collects the groups this node lacks from its peers
//! (`collect`) and merges them with its own, newest version first (`merge`); `answer` is the
//! peer's side of a collect call.

pub(crate) mod answer;
pub(crate) mod collect;
mod feed;
pub(crate) mod merge;
mod render;
pub(crate) mod stream;
