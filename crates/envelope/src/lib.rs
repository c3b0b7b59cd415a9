//! Organization keys and the sealed envelope: HPKE to the recipient, Ed25519 by the sender,
//! the header bound to the ciphertext. This crate depends on no broker, HTTP, database or
//! container crate, so every role seals and opens the same way and the cryptography can be
//! reviewed on its own.

pub mod envelope;
pub mod keys;

use fedq_core::{files, ids, protocol, time};
