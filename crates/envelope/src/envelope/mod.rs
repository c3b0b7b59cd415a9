//! The sealed envelope: the unit on the wire.
//!
//! A clear routing [`Header`] followed by the payload sealed with HPKE (RFC 9180, Base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) for the recipient organization,
//! with the header block as associated data, and an Ed25519 signature of the sender
//! organization over everything. See `docs/protocol.md` for the layout and the threat model.
//!
//! This module knows nothing of brokers, HTTP, databases or containers: the server, the node and
//! the command line all use it the same way.

mod header;
mod open;
mod padding;
mod rejections;
mod replay;
mod seal;

pub use header::{FormatError, Header, MAX_HEADER_LEN, MIN_LEN, Parsed, VERSION, parse, peek_header};
pub use open::{OpenError, OpenPolicy, Opened, Replay, check_times, open, open_with};
pub use padding::Padding;
pub use rejections::Rejections;
pub use replay::{MemoryReplayGuard, ReplayGuard, ReplayGuardError, Seen};
pub use seal::{Route, SealError, SealOptions, Sealed, seal};

type Aead = hpke::aead::ChaCha20Poly1305;
type Kdf = hpke::kdf::HkdfSha256;

/// HPKE's `info`: binds every key schedule to this protocol and version.
const HPKE_INFO: &[u8] = b"fedq envelope v1";
/// Prefix of the signed message, so that a fedq signature cannot be mistaken for another.
const SIGNATURE_CONTEXT: &[u8; 32] = b"fedq envelope v1 signature\0\0\0\0\0\0";

/// What the sender signs: a context string and the BLAKE3 hash of every byte before the
/// signature. Signing a digest keeps Ed25519 from hashing a large payload twice (with SHA-512),
/// and BLAKE3 hashes about five times faster than SHA-256 here, which matters for large results.
fn signature_message(digest: &[u8; 32]) -> [u8; 64] {
    let mut message = [0u8; 64];
    message[..32].copy_from_slice(SIGNATURE_CONTEXT);
    message[32..].copy_from_slice(digest);
    message
}

#[cfg(test)]
mod tests;
