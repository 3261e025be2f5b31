//! The persistence format's messages (proto/pushgate/snapshot.proto), generated: a file of its
//! own so that the group codec (`codec`) and the aggregation state's (`aggregate::codec`) both
//! use them without depending on each other. The aggregation state's messages are the schema
//! its bytes follow; `aggregate::wire` and `aggregate::codec` write and read those bytes
//! directly, and only their tests build the messages (as the oracle), hence `dead_code`.
#![allow(clippy::all, missing_docs, dead_code)]

include!(concat!(env!("OUT_DIR"), "/pushgate.snapshot.rs"));
