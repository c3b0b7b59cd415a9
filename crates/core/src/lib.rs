//! What every part of fedq speaks: typed identifiers, timestamps, the wire protocol of
//! envelopes and control messages, the REST contract's bodies, and files written whole. No
//! I/O beyond files, no async runtime, no transport.

pub mod contract;
pub mod files;
pub mod ids;
pub mod protocol;
pub mod time;
