//! Organization keys.
//!
//! Each organization has one secret: a 32-byte seed. From it two key pairs are derived with
//! HKDF-SHA256 and distinct labels: an X25519 key pair for HPKE (others seal *to* the
//! organization) and an Ed25519 key pair (the organization signs what it seals). Publishing one
//! [`PublicKey`] publishes both halves; its [`KeyId`] (the fingerprint) names the pair in
//! envelope headers, so an organization can rotate keys while old envelopes still open.
//! `docs/protocol.md` explains why the envelope signs rather than using HPKE's Auth mode.

mod file;
mod keyring;
pub mod trust;

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hpke::{Deserializable as _, Kem as _, Serializable as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

pub use file::{KeyFileError, ORG_KEY_FILE, SeedFile};
pub use keyring::{Identity, Keyring, SenderKeys};
pub use trust::{FirstUse, KeyTrust, LogAnchor, RETIRED_KEY_GRACE, Revocation, Rotation, TrustError};

/// The HPKE KEM fedq uses: DHKEM(X25519, HKDF-SHA256).
pub type KemAlg = hpke::kem::X25519HkdfSha256;
pub(crate) type KemPublic = <KemAlg as hpke::Kem>::PublicKey;
pub(crate) type KemPrivate = <KemAlg as hpke::Kem>::PrivateKey;

/// Length of a [`KeyId`] in bytes (a SHA-256 digest).
pub const KEY_ID_LEN: usize = 32;
/// Length of an encoded [`PublicKey`]: X25519 public key then Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 64;

const FINGERPRINT_LABEL: &[u8] = b"fedq organization public key v1\0";
const KEM_LABEL: &[u8] = b"fedq organization key v1: hpke x25519";
const SIG_LABEL: &[u8] = b"fedq organization key v1: ed25519";
const PUBLIC_PREFIX: &str = "fedq-pk1:";

/// A key's fingerprint, used as its identifier: SHA-256 over a label and the encoded public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(#[serde(with = "serde_bytes")] [u8; KEY_ID_LEN]);

impl KeyId {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

/// The one text form of a fingerprint, in the command line, the API, the dashboard, node pins
/// and error messages: `SHA256:` and 64 lowercase hexadecimal digits, one word to copy.
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", hex::encode(self.0))
    }
}

/// Serde for a [`KeyId`] as its text form (JSON files and API bodies; envelope headers carry
/// the raw bytes).
pub mod fingerprint_text {
    use super::KeyId;
    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Writes `SHA256:…`.
    pub fn serialize<S: Serializer>(id: &KeyId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Reads any form [`KeyId::from_str`](std::str::FromStr) takes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyId, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 bytes are plenty to tell keys apart in logs.
        write!(f, "KeyId({}…)", &hex::encode(self.0)[..16])
    }
}

impl FromStr for KeyId {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Also takes the digits alone, or grouped with spaces or colons as people copy them.
        let text = s.trim();
        let text = text.strip_prefix("SHA256:").or_else(|| text.strip_prefix("sha256:")).unwrap_or(text);
        let hex: String = text.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
        let mut bytes = [0u8; KEY_ID_LEN];
        hex::decode_to_slice(&hex, &mut bytes).map_err(|_| KeyParseError::Fingerprint)?;
        Ok(Self(bytes))
    }
}

/// Text that is not a valid public key or fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// Missing the `fedq-pk1:` prefix.
    #[error("a public key starts with {PUBLIC_PREFIX:?}")]
    Prefix,
    /// Not base64url, or not 64 bytes.
    #[error("a public key is {PUBLIC_KEY_LEN} bytes in unpadded base64url after the prefix")]
    Encoding,
    /// The X25519 or Ed25519 half is not a valid point.
    #[error("the public key holds an invalid {0} key")]
    InvalidPoint(&'static str),
    /// Not 64 hexadecimal digits.
    #[error("a fingerprint is 64 hexadecimal digits, optionally after \"SHA256:\"")]
    Fingerprint,
}

/// An organization's public key: what others seal to and verify signatures with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kem: KemPublic,
    sig: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    fn new(kem: KemPublic, sig: VerifyingKey) -> Self {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes[..32].copy_from_slice(&kem.to_bytes());
        bytes[32..].copy_from_slice(sig.as_bytes());
        let id = KeyId(Sha256::new().chain_update(FINGERPRINT_LABEL).chain_update(bytes).finalize().into());
        Self { kem, sig, id }
    }

    /// The fingerprint, which is also the key's identifier in envelope headers.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The encoded key: 32 bytes of X25519 then 32 bytes of Ed25519.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes[..32].copy_from_slice(&self.kem.to_bytes());
        bytes[32..].copy_from_slice(self.sig.as_bytes());
        bytes
    }

    /// Decodes [`PublicKey::to_bytes`], checking both halves.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyParseError> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(KeyParseError::Encoding);
        }
        let kem = KemPublic::from_bytes(&bytes[..32]).map_err(|_| KeyParseError::InvalidPoint("X25519"))?;
        let sig_bytes: [u8; 32] = bytes[32..].try_into().expect("length checked above");
        let sig = VerifyingKey::from_bytes(&sig_bytes).map_err(|_| KeyParseError::InvalidPoint("Ed25519"))?;
        // A weak (small-order) signing key would let anyone forge signatures that verify.
        if sig.is_weak() {
            return Err(KeyParseError::InvalidPoint("Ed25519"));
        }
        Ok(Self::new(kem, sig))
    }

    pub(crate) fn kem(&self) -> &KemPublic {
        &self.kem
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.sig
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({:?})", self.id)
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or(KeyParseError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| KeyParseError::Encoding)?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An organization's private key. Never printed, logged or sent anywhere: `Debug` shows only
/// the fingerprint, and the seed is wiped from memory on drop.
pub struct OrgKey {
    seed: Zeroizing<[u8; 32]>,
    kem: KemPrivate,
    sig: SigningKey,
    public: PublicKey,
}

impl OrgKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("the operating system's random source is unavailable");
        Self::from_seed(seed)
    }

    /// Derives both key pairs from a seed.
    pub fn from_seed(seed: Zeroizing<[u8; 32]>) -> Self {
        let hkdf = Hkdf::<Sha256>::new(None, seed.as_ref());
        let mut kem_ikm = Zeroizing::new([0u8; 32]);
        let mut sig_seed = Zeroizing::new([0u8; 32]);
        hkdf.expand(KEM_LABEL, kem_ikm.as_mut()).expect("32 bytes is a valid HKDF length");
        hkdf.expand(SIG_LABEL, sig_seed.as_mut()).expect("32 bytes is a valid HKDF length");
        let (kem, kem_public) = KemAlg::derive_keypair(kem_ikm.as_ref());
        let sig = SigningKey::from_bytes(&sig_seed);
        let public = PublicKey::new(kem_public, sig.verifying_key());
        Self { seed, kem, sig, public }
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The fingerprint of the public half.
    pub fn id(&self) -> KeyId {
        self.public.id
    }

    pub(crate) fn kem(&self) -> &KemPrivate {
        &self.kem
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.sig
    }

    pub(crate) fn seed(&self) -> &[u8; 32] {
        &self.seed
    }
}

impl fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgKey({:?}, secret redacted)", self.public.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_keys_differ() {
        let seed = Zeroizing::new([7u8; 32]);
        let a = OrgKey::from_seed(seed.clone());
        let b = OrgKey::from_seed(seed);
        assert_eq!(a.public(), b.public());
        assert_ne!(OrgKey::generate().id(), OrgKey::generate().id());
    }

    #[test]
    fn public_key_text_round_trips() {
        let key = OrgKey::generate();
        let text = key.public().to_string();
        assert!(text.starts_with(PUBLIC_PREFIX));
        let parsed: PublicKey = text.parse().unwrap();
        assert_eq!(&parsed, key.public());
        assert_eq!(parsed.id(), key.id());
        assert_eq!(key.id().to_string().parse::<KeyId>().unwrap(), key.id());
        let text = key.id().to_string();
        assert!(text.starts_with("SHA256:") && text.len() == 7 + 64, "{text}");
        let bare = &text[7..];
        let grouped: Vec<&str> = (0..16).map(|i| &bare[i * 4..i * 4 + 4]).collect();
        assert_eq!(grouped.join(" ").parse::<KeyId>().unwrap(), key.id());
        assert_eq!(bare.parse::<KeyId>().unwrap(), key.id());
    }

    #[test]
    fn malformed_public_keys_are_typed_errors() {
        assert_eq!("abc".parse::<PublicKey>().unwrap_err(), KeyParseError::Prefix);
        assert_eq!("fedq-pk1:!!".parse::<PublicKey>().unwrap_err(), KeyParseError::Encoding);
        // An Ed25519 point of small order (the identity) is refused.
        let mut bytes = OrgKey::generate().public().to_bytes();
        bytes[32..].copy_from_slice(&{
            let mut identity = [0u8; 32];
            identity[0] = 1;
            identity
        });
        assert_eq!(PublicKey::from_bytes(&bytes).unwrap_err(), KeyParseError::InvalidPoint("Ed25519"));
    }

    proptest::proptest! {
        /// Fingerprints come from people and from the server: any text parses or is refused,
        /// never a panic, and every fingerprint reads back from its one text form.
        #[test]
        fn fingerprints_parse_any_text_without_panicking(text in ".{0,100}", bytes in proptest::array::uniform32(0u8..)) {
            let _ = text.parse::<KeyId>();
            let id = KeyId::from_bytes(bytes);
            proptest::prop_assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = OrgKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(key.seed())));
        assert!(shown.contains("redacted"));
    }
}
