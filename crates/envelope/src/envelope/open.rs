//! Opening: every check an envelope must pass before its payload is handed out, in order.

use std::time::Duration;

use ed25519_dalek::Signature;
use hpke::Deserializable as _;

use super::header::{FormatError, Header, Parsed, parse};
use super::padding;
use super::replay::{ReplayGuard, ReplayGuardError, Seen};
use super::{Aead, HPKE_INFO, Kdf, signature_message};
use crate::ids::{MessageId, OrgId};
use crate::keys::{Identity, KemAlg, KeyId, PublicKey, SenderKeys};
use crate::protocol::{Payload, PayloadError};
use crate::time::Timestamp;

/// Limits applied when opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPolicy {
    /// The largest envelope accepted, in bytes.
    pub max_len: usize,
    /// How far the sender's clock may be ahead of or behind ours.
    pub clock_skew: Duration,
    /// The longest lifetime (expiry minus creation) accepted; bounds how long the replay guard
    /// must remember an id.
    pub max_lifetime: Duration,
}

impl Default for OpenPolicy {
    fn default() -> Self {
        Self {
            max_len: 16 * 1024 * 1024,
            clock_skew: Duration::from_secs(120),
            max_lifetime: Duration::from_secs(31 * 24 * 3600),
        }
    }
}

/// An envelope that passed every check.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its header.
    pub header: Header,
    /// The payload, padding removed.
    pub payload: Vec<u8>,
}

impl Opened {
    /// Decodes the payload as the kind the header names.
    pub fn decode(&self) -> Result<Payload, PayloadError> {
        Payload::from_bytes(self.header.kind, &self.payload)
    }
}

/// Why an envelope was refused. Each check has its own variant, and [`OpenError::code`] gives a
/// stable name for counters and dead-letter reasons.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not a well-formed version 1 envelope.
    #[error("malformed envelope: {0}")]
    Format(#[from] FormatError),
    /// Sealed for another organization.
    #[error("envelope is for organization {recipient}, not this one")]
    WrongRecipient {
        /// The header's recipient.
        recipient: OrgId,
    },
    /// Sealed to a key this organization does not hold (rotated away, or never ours).
    #[error("envelope is sealed to key {key}, which this organization does not hold")]
    UnknownRecipientKey {
        /// The header's recipient key.
        key: KeyId,
    },
    /// Past its expiry (beyond the allowed clock skew).
    #[error("envelope expired at {expires_at} (now {now})")]
    Expired {
        /// The header's expiry.
        expires_at: Timestamp,
        /// Our clock.
        now: Timestamp,
    },
    /// Created in the future (beyond the allowed clock skew).
    #[error("envelope was created at {created_at}, in the future (now {now})")]
    NotYetValid {
        /// The header's creation time.
        created_at: Timestamp,
        /// Our clock.
        now: Timestamp,
    },
    /// Expires before it was created, or lives longer than allowed.
    #[error("envelope lifetime from {created_at} to {expires_at} is not allowed")]
    BadLifetime {
        /// The header's creation time.
        created_at: Timestamp,
        /// The header's expiry.
        expires_at: Timestamp,
    },
    /// The sender's key is not known or no longer trusted.
    #[error("unknown key {key} for sender organization {sender}")]
    UnknownSenderKey {
        /// The header's sender.
        sender: OrgId,
        /// The header's sender key.
        key: KeyId,
    },
    /// The signature does not verify: the envelope was altered, or not sealed by the sender the
    /// header names.
    #[error("signature of sender organization {sender} does not verify: altered or forged envelope")]
    BadSignature {
        /// The header's sender.
        sender: OrgId,
    },
    /// The signature verified but the payload did not decrypt: the sender sealed it wrongly.
    #[error("payload does not decrypt with this organization's key")]
    Decrypt,
    /// The decrypted plaintext is not correctly padded.
    #[error("payload padding is malformed")]
    BadPadding,
    /// Opened before: a replay or a duplicate.
    #[error("envelope {id} was opened before (replay or duplicate)")]
    Replay {
        /// The header's message id.
        id: MessageId,
    },
    /// The replay guard could not check or record the id.
    #[error(transparent)]
    ReplayGuard(#[from] ReplayGuardError),
}

impl OpenError {
    /// Every code, in the order of the checks.
    pub const CODES: [&'static str; 12] = [
        "format",
        "wrong_recipient",
        "unknown_recipient_key",
        "expired",
        "not_yet_valid",
        "bad_lifetime",
        "unknown_sender_key",
        "bad_signature",
        "decrypt",
        "bad_padding",
        "replay",
        "replay_guard",
    ];

    /// A stable name for the failed check: for counters, logs and dead-letter reasons.
    pub fn code(&self) -> &'static str {
        Self::CODES[self.index()]
    }

    pub(crate) fn index(&self) -> usize {
        match self {
            OpenError::Format(_) => 0,
            OpenError::WrongRecipient { .. } => 1,
            OpenError::UnknownRecipientKey { .. } => 2,
            OpenError::Expired { .. } => 3,
            OpenError::NotYetValid { .. } => 4,
            OpenError::BadLifetime { .. } => 5,
            OpenError::UnknownSenderKey { .. } => 6,
            OpenError::BadSignature { .. } => 7,
            OpenError::Decrypt => 8,
            OpenError::BadPadding => 9,
            OpenError::Replay { .. } => 10,
            OpenError::ReplayGuard(_) => 11,
        }
    }
}

impl Parsed<'_> {
    /// Checks the signature against the sender's public key. The router can call this too: it
    /// needs only public keys, so the server can refuse a forged envelope without reading it.
    pub fn verify_signature(&self, sender_key: &PublicKey) -> bool {
        let Ok(signature) = Signature::from_slice(self.signature) else { return false };
        let digest: [u8; 32] = blake3::hash(self.signed).into();
        // `verify_strict` also refuses non-canonical signatures, so a signature cannot be
        // altered into another valid one (no malleability for duplicate detection to trip on).
        sender_key.verifying_key().verify_strict(&signature_message(&digest), &signature).is_ok()
    }
}

/// Checks the time fields of a header against `now`.
pub fn check_times(header: &Header, policy: &OpenPolicy, now: Timestamp) -> Result<(), OpenError> {
    let (created_at, expires_at) = (header.created_at, header.expires_at);
    let lifetime_ok = expires_at.since(created_at).is_some_and(|life| life <= policy.max_lifetime);
    if !lifetime_ok {
        return Err(OpenError::BadLifetime { created_at, expires_at });
    }
    if now.saturating_sub(policy.clock_skew) > expires_at {
        return Err(OpenError::Expired { expires_at, now });
    }
    if created_at > now.saturating_add(policy.clock_skew) {
        return Err(OpenError::NotYetValid { created_at, now });
    }
    Ok(())
}

/// Opens an envelope addressed to `me`. The checks run in this order, and the first that fails
/// is returned: format and version, recipient, time, sender key, signature, decryption and
/// padding, replay. The id is recorded in `guard` only when everything else passed, so a forged
/// envelope cannot make a genuine one look like a replay.
pub fn open<K, G>(
    bytes: &[u8],
    me: &Identity,
    keys: &K,
    guard: &mut G,
    policy: &OpenPolicy,
    now: Timestamp,
) -> Result<Opened, OpenError>
where
    K: SenderKeys + ?Sized,
    G: ReplayGuard,
{
    open_with(bytes, me, keys, Replay::Record(guard), policy, now)
}

/// What opening does about replays.
pub enum Replay<'a> {
    /// Check and record the id in one step ([`ReplayGuard::check_and_record`]): the envelope
    /// is handled once it is opened.
    Record(&'a mut dyn ReplayGuard),
    /// Refuse an id `seen` reports, record nothing: the caller records the id itself once the
    /// envelope's effect is durable, so that a crash in between lets the redelivery through.
    CheckOnly(&'a dyn Fn(MessageId, Timestamp) -> Result<bool, ReplayGuardError>),
    /// No replay check: the caller recognises repeats by something inside the envelope (a node
    /// knows a job start by its job id).
    Unchecked,
}

/// [`open`] with the replay check chosen by the caller.
pub fn open_with<K>(
    bytes: &[u8],
    me: &Identity,
    keys: &K,
    replay: Replay<'_>,
    policy: &OpenPolicy,
    now: Timestamp,
) -> Result<Opened, OpenError>
where
    K: SenderKeys + ?Sized,
{
    let parsed = parse(bytes, policy.max_len)?;
    let header = &parsed.header;
    if header.recipient != me.org() {
        return Err(OpenError::WrongRecipient { recipient: header.recipient });
    }
    let my_key =
        me.key(&header.recipient_key).ok_or(OpenError::UnknownRecipientKey { key: header.recipient_key })?;
    check_times(header, policy, now)?;
    let sender_key = keys
        .sender_key(header.sender, &header.sender_key)
        .ok_or(OpenError::UnknownSenderKey { sender: header.sender, key: header.sender_key })?;
    if !parsed.verify_signature(&sender_key) {
        return Err(OpenError::BadSignature { sender: header.sender });
    }

    let enc = <KemAlg as hpke::Kem>::EncappedKey::from_bytes(parsed.enc).map_err(|_| OpenError::Decrypt)?;
    let tag = hpke::aead::AeadTag::<Aead>::from_bytes(parsed.tag).map_err(|_| OpenError::Decrypt)?;
    let mut plaintext = parsed.ciphertext.to_vec();
    hpke::single_shot_open_inout_detached::<Aead, Kdf, KemAlg>(
        &hpke::OpModeR::Base,
        my_key.kem(),
        &enc,
        HPKE_INFO,
        plaintext.as_mut_slice().into(),
        parsed.header_block,
        &tag,
    )
    .map_err(|_| OpenError::Decrypt)?;
    let len = padding::unpadded_len(&plaintext).ok_or(OpenError::BadPadding)?;
    plaintext.truncate(len);

    let forget_after = header.expires_at.saturating_add(policy.clock_skew);
    let seen = match replay {
        Replay::Record(guard) => guard.check_and_record(header.id, forget_after, now)?,
        Replay::CheckOnly(seen) if seen(header.id, now)? => Seen::Before,
        Replay::CheckOnly(_) | Replay::Unchecked => Seen::New,
    };
    match seen {
        Seen::New => Ok(Opened { header: parsed.header, payload: plaintext }),
        Seen::Before => Err(OpenError::Replay { id: parsed.header.id }),
    }
}
