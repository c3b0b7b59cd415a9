//! Sealing: header, HPKE Base-mode encryption to the recipient, Ed25519 signature of the sender.

use std::time::Duration;

use ed25519_dalek::Signer as _;
use hpke::Serializable as _;

use super::header::{ENC_LEN, FormatError, Header, VERSION, write_header_block};
use super::padding::{self, Padding};
use super::{Aead, HPKE_INFO, Kdf, signature_message};
use crate::ids::{CollaborationId, MessageId, OrgId, RunId, TaskId};
use crate::keys::{Identity, KemAlg, OrgKey, PublicKey};
use crate::protocol::{JobStatus, Kind};
use crate::time::Timestamp;

/// Where an envelope goes and what it is, apart from the parties: the routing fields of the
/// header that the caller chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What the envelope is for.
    pub kind: Kind,
    /// The collaboration the task runs in.
    pub collaboration: CollaborationId,
    /// The task.
    pub task: TaskId,
    /// The run.
    pub run: RunId,
    /// The job status reported, for `job_status` and `job_result` only.
    pub status: Option<JobStatus>,
}

/// Options of sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOptions {
    /// How long the envelope may wait in queues before it must not be opened.
    pub ttl: Duration,
    /// Padding of the sealed payload.
    pub padding: Padding,
}

impl Default for SealOptions {
    fn default() -> Self {
        // A week lets a task wait out a node that is down over a long weekend.
        Self { ttl: Duration::from_secs(7 * 24 * 3600), padding: Padding::None }
    }
}

/// A sealed envelope: its bytes and, for the caller's bookkeeping, its header.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The clear header, as encoded in `bytes`.
    pub header: Header,
    /// The envelope on the wire.
    pub bytes: Vec<u8>,
}

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The route's status does not fit its kind.
    #[error(transparent)]
    Route(#[from] FormatError),
    /// The HPKE library refused (a degenerate recipient key).
    #[error("HPKE sealing failed: {0:?}")]
    Hpke(hpke::HpkeError),
}

/// Seals `payload` from `sender` for organization `recipient`, whose public key is
/// `recipient_key`.
pub fn seal(
    sender: &Identity,
    recipient: OrgId,
    recipient_key: &PublicKey,
    route: &Route,
    payload: &[u8],
    options: &SealOptions,
    now: Timestamp,
) -> Result<Sealed, SealError> {
    if route.kind.carries_status() != route.status.is_some() {
        return Err(
            FormatError::StatusMismatch { kind: route.kind, status_present: route.status.is_some() }.into()
        );
    }
    let key = sender.current();
    let header = Header {
        version: VERSION,
        id: MessageId::random(),
        kind: route.kind,
        sender: sender.org(),
        sender_key: key.id(),
        recipient,
        recipient_key: recipient_key.id(),
        collaboration: route.collaboration,
        task: route.task,
        run: route.run,
        created_at: now,
        expires_at: now.saturating_add(options.ttl),
        status: route.status,
    };

    seal_header(header, key, recipient_key, payload, options.padding)
}

/// Seals `payload` under a header the caller built. `seal` is the only caller outside tests;
/// tests use it to build envelopes whose header lies (a forged sender, a bad lifetime).
pub(crate) fn seal_header(
    header: Header,
    key: &OrgKey,
    recipient_key: &PublicKey,
    payload: &[u8],
    padding: Padding,
) -> Result<Sealed, SealError> {
    // One buffer, laid out as on the wire, so the payload is copied once and encrypted in place.
    let padded_len = padding.padded_len(payload.len());
    let mut buf =
        Vec::with_capacity(512 + padded_len + super::header::TAG_LEN + super::header::SIGNATURE_LEN);
    write_header_block(&header, &mut buf);
    let header_end = buf.len();
    buf.resize(header_end + ENC_LEN, 0);
    let ct_start = buf.len();
    buf.extend_from_slice(payload);
    padding::pad(&mut buf, ct_start, padded_len);

    let (aad_and_enc, plaintext) = buf.split_at_mut(ct_start);
    let (enc, tag) = hpke::single_shot_seal_inout_detached::<Aead, Kdf, KemAlg>(
        &hpke::OpModeS::Base,
        recipient_key.kem(),
        HPKE_INFO,
        plaintext.into(),
        &aad_and_enc[..header_end],
    )
    .map_err(SealError::Hpke)?;
    aad_and_enc[header_end..].copy_from_slice(&enc.to_bytes());
    buf.extend_from_slice(&tag.to_bytes());

    let digest: [u8; 32] = blake3::hash(&buf).into();
    let signature = key.signing_key().sign(&signature_message(&digest));
    buf.extend_from_slice(&signature.to_bytes());
    Ok(Sealed { header, bytes: buf })
}
