//! The persistence format's messages (proto/pushgate/snapshot.proto), generated: a file of its
//! own so that the group codec (`codec`) and the aggregation state's (`aggregate::codec`) both
//! use them without depending on each other.
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/pushgate.snapshot.rs"));
