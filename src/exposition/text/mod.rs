//! The text format 0.0.4: the parser, the encoder, and the Go-compatible number and quoting
//! rules both follow.

pub mod canonical;
pub mod encode;
pub(super) mod float;
pub mod parse;
mod quote;
