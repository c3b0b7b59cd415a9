//! Tests of sealing and opening: round trips, every check's own error, tampering, hostile bytes.

use std::time::Duration;

use hpke::Deserializable as _;
use proptest::prelude::*;

use super::seal::seal_header;
use super::*;
use crate::ids::{CollaborationId, MessageId, OrgId, RunId, TaskId};
use crate::keys::{Identity, Keyring, OrgKey, PublicKey};
use crate::protocol::{JobStatus, Kind, Payload};
use crate::time::Timestamp;

/// Two organizations, A and B, each knowing the other's public key, and an outsider C.
struct World {
    a: Identity,
    b: Identity,
    c: Identity,
    /// What B trusts: A's and C's keys.
    b_trusts: Keyring,
    now: Timestamp,
}

impl World {
    fn new() -> Self {
        let a = Identity::new(OrgId::new(), OrgKey::generate());
        let b = Identity::new(OrgId::new(), OrgKey::generate());
        let c = Identity::new(OrgId::new(), OrgKey::generate());
        let mut b_trusts = Keyring::new();
        b_trusts.insert(a.org(), a.current().public().clone());
        b_trusts.insert(c.org(), c.current().public().clone());
        Self { a, b, c, b_trusts, now: Timestamp::from_millis(1_800_000_000_000) }
    }

    fn b_public(&self) -> &PublicKey {
        self.b.current().public()
    }

    fn route(kind: Kind) -> Route {
        Route {
            kind,
            collaboration: CollaborationId::new(),
            task: TaskId::new(),
            run: RunId::new(),
            status: kind.carries_status().then_some(JobStatus::Completed),
        }
    }

    /// A seals `payload` for B.
    fn seal_a_to_b(&self, payload: &[u8]) -> Sealed {
        seal(
            &self.a,
            self.b.org(),
            self.b_public(),
            &Self::route(Kind::RunMessage),
            payload,
            &SealOptions::default(),
            self.now,
        )
        .unwrap()
    }

    /// B opens with a fresh replay guard.
    fn open_at_b(&self, bytes: &[u8]) -> Result<Opened, OpenError> {
        self.open_at_b_with(bytes, &mut MemoryReplayGuard::new())
    }

    fn open_at_b_with(&self, bytes: &[u8], guard: &mut MemoryReplayGuard) -> Result<Opened, OpenError> {
        open(bytes, &self.b, &self.b_trusts, guard, &OpenPolicy::default(), self.now)
    }

    /// A header from A to B that the test may then make lie.
    fn header_a_to_b(&self) -> Header {
        Header {
            version: VERSION,
            id: MessageId::random(),
            kind: Kind::RunMessage,
            sender: self.a.org(),
            sender_key: self.a.current().id(),
            recipient: self.b.org(),
            recipient_key: self.b.current().id(),
            collaboration: CollaborationId::new(),
            task: TaskId::new(),
            run: RunId::new(),
            created_at: self.now,
            expires_at: self.now.saturating_add(Duration::from_secs(3600)),
            status: None,
        }
    }
}

#[test]
fn every_kind_round_trips_through_seal_and_open() {
    let w = World::new();
    for payload in crate::protocol::Payload::examples() {
        let kind = payload.kind();
        let route = World::route(kind);
        let sealed =
            seal(&w.a, w.b.org(), w.b_public(), &route, &payload.to_bytes(), &SealOptions::default(), w.now)
                .unwrap();
        let opened = w.open_at_b(&sealed.bytes).unwrap();
        assert_eq!(opened.header, sealed.header);
        assert_eq!(opened.header.kind, kind);
        assert_eq!(opened.header.sender, w.a.org());
        assert_eq!(opened.decode().unwrap(), payload);
    }
}

#[test]
fn header_fields_are_what_was_sealed() {
    let w = World::new();
    let route = World::route(Kind::JobResult);
    let options = SealOptions { ttl: Duration::from_secs(60), padding: Padding::None };
    let sealed = seal(&w.a, w.b.org(), w.b_public(), &route, b"x", &options, w.now).unwrap();
    let h = peek_header(&sealed.bytes, usize::MAX).unwrap();
    assert_eq!(h, sealed.header);
    assert_eq!((h.collaboration, h.task, h.run), (route.collaboration, route.task, route.run));
    assert_eq!(h.recipient_key, w.b.current().id());
    assert_eq!(h.sender_key, w.a.current().id());
    assert_eq!(h.status, Some(JobStatus::Completed));
    assert_eq!(h.expires_at.since(h.created_at), Some(Duration::from_secs(60)));
}

#[test]
fn empty_and_padded_payloads_round_trip() {
    let w = World::new();
    for padding in [Padding::None, Padding::Padme] {
        for len in [0usize, 1, 255, 1000, 70_000] {
            let payload = vec![0u8; len]; // trailing zeros must survive unpadding
            let options = SealOptions { padding, ..SealOptions::default() };
            let sealed = seal(
                &w.a,
                w.b.org(),
                w.b_public(),
                &World::route(Kind::RunMessage),
                &payload,
                &options,
                w.now,
            )
            .unwrap();
            assert_eq!(w.open_at_b(&sealed.bytes).unwrap().payload, payload);
        }
    }
}

#[test]
fn padding_hides_small_size_differences() {
    let w = World::new();
    let options = SealOptions { padding: Padding::Padme, ..SealOptions::default() };
    let size = |len: usize| {
        let sealed = seal(
            &w.a,
            w.b.org(),
            w.b_public(),
            &World::route(Kind::RunMessage),
            &vec![1; len],
            &options,
            w.now,
        )
        .unwrap();
        sealed.bytes.len()
    };
    assert_eq!(size(100_000), size(100_300)); // both in the bucket of 100,352 bytes
    assert_ne!(size(100_000), size(200_000));
}

#[test]
fn every_tampered_byte_is_rejected() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"the count is 1234");
    let mut rejected_by = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..sealed.bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = sealed.bytes.clone();
            bytes[i] ^= flip;
            let err = w.open_at_b(&bytes).expect_err("a tampered envelope must not open");
            *rejected_by.entry(err.code()).or_default() += 1;
        }
    }
    // Ciphertext, tag and signature changes are all caught by the signature.
    assert!(rejected_by["bad_signature"] > 0, "{rejected_by:?}");
    assert!(rejected_by["format"] > 0, "{rejected_by:?}");
    assert!(!rejected_by.contains_key("decrypt"), "{rejected_by:?}");
}

#[test]
fn truncated_and_extended_envelopes_are_rejected() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"payload");
    for len in 0..sealed.bytes.len() {
        assert!(w.open_at_b(&sealed.bytes[..len]).is_err(), "truncated to {len}");
    }
    let mut longer = sealed.bytes.clone();
    longer.push(0);
    assert!(w.open_at_b(&longer).is_err());
}

#[test]
fn wrong_recipient_is_its_own_error() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"for B only");
    let err =
        open(&sealed.bytes, &w.c, &w.b_trusts, &mut MemoryReplayGuard::new(), &OpenPolicy::default(), w.now)
            .unwrap_err();
    assert!(matches!(err, OpenError::WrongRecipient { recipient } if recipient == w.b.org()), "{err}");
}

#[test]
fn a_key_the_recipient_no_longer_holds_is_its_own_error() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"x");
    // B rotated and dropped the old key.
    let b_new = Identity::new(w.b.org(), OrgKey::generate());
    let err = open(
        &sealed.bytes,
        &b_new,
        &w.b_trusts,
        &mut MemoryReplayGuard::new(),
        &OpenPolicy::default(),
        w.now,
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::UnknownRecipientKey { .. }), "{err}");
}

#[test]
fn an_old_key_kept_after_rotation_still_opens() {
    let mut w = World::new();
    let sealed = w.seal_a_to_b(b"sealed before rotation");
    w.b.rotate_to(OrgKey::generate());
    assert_eq!(w.open_at_b(&sealed.bytes).unwrap().payload, b"sealed before rotation");
}

#[test]
fn expired_is_its_own_error_with_clock_skew_allowed() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"x");
    let policy = OpenPolicy::default();
    let at = |t: Timestamp| open(&sealed.bytes, &w.b, &w.b_trusts, &mut MemoryReplayGuard::new(), &policy, t);
    let expiry = sealed.header.expires_at;
    assert!(at(expiry.saturating_add(policy.clock_skew)).is_ok(), "within the skew");
    let err = at(expiry.saturating_add(policy.clock_skew + Duration::from_millis(1))).unwrap_err();
    assert!(matches!(err, OpenError::Expired { .. }), "{err}");
}

#[test]
fn created_in_the_future_is_its_own_error() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"x");
    let early = w.now.saturating_sub(OpenPolicy::default().clock_skew + Duration::from_secs(1));
    let err =
        open(&sealed.bytes, &w.b, &w.b_trusts, &mut MemoryReplayGuard::new(), &OpenPolicy::default(), early)
            .unwrap_err();
    assert!(matches!(err, OpenError::NotYetValid { .. }), "{err}");
}

#[test]
fn lifetimes_too_long_or_negative_are_refused() {
    let w = World::new();
    for expires_at in [
        w.now.saturating_add(Duration::from_secs(365 * 24 * 3600)),
        w.now.saturating_sub(Duration::from_secs(1)),
    ] {
        let header = Header { expires_at, ..w.header_a_to_b() };
        let sealed = seal_header(header, w.a.current(), w.b_public(), b"x", Padding::None).unwrap();
        let err = w.open_at_b(&sealed.bytes).unwrap_err();
        assert!(matches!(err, OpenError::BadLifetime { .. }), "{err}");
    }
}

#[test]
fn replay_is_its_own_error_and_the_first_open_still_counts() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"once");
    let mut guard = MemoryReplayGuard::new();
    assert!(w.open_at_b_with(&sealed.bytes, &mut guard).is_ok());
    let err = w.open_at_b_with(&sealed.bytes, &mut guard).unwrap_err();
    assert!(matches!(err, OpenError::Replay { id } if id == sealed.header.id), "{err}");
}

#[test]
fn a_rejected_forgery_does_not_burn_the_message_id() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"genuine");
    let mut forged = sealed.bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut guard = MemoryReplayGuard::new();
    assert!(w.open_at_b_with(&forged, &mut guard).is_err());
    assert!(guard.is_empty());
    assert!(w.open_at_b_with(&sealed.bytes, &mut guard).is_ok());
}

#[test]
fn unknown_sender_is_its_own_error() {
    let w = World::new();
    let stranger = Identity::new(OrgId::new(), OrgKey::generate());
    let sealed = seal(
        &stranger,
        w.b.org(),
        w.b_public(),
        &World::route(Kind::RunMessage),
        b"x",
        &SealOptions::default(),
        w.now,
    )
    .unwrap();
    let err = w.open_at_b(&sealed.bytes).unwrap_err();
    assert!(matches!(err, OpenError::UnknownSenderKey { sender, .. } if sender == stranger.org()), "{err}");
}

#[test]
fn sender_spoofing_is_refused() {
    let w = World::new();
    // C (whom B knows) seals for B but claims to be A, naming A's key: C cannot sign as A.
    let header = w.header_a_to_b();
    let forged = seal_header(header, w.c.current(), w.b_public(), b"x1 = 99", Padding::None).unwrap();
    let err = w.open_at_b(&forged.bytes).unwrap_err();
    assert!(matches!(err, OpenError::BadSignature { sender } if sender == w.a.org()), "{err}");

    // C claims to be A but names its own key: that is not a key of A.
    let header = Header { sender_key: w.c.current().id(), ..w.header_a_to_b() };
    let forged = seal_header(header, w.c.current(), w.b_public(), b"x1 = 99", Padding::None).unwrap();
    let err = w.open_at_b(&forged.bytes).unwrap_err();
    assert!(matches!(err, OpenError::UnknownSenderKey { sender, .. } if sender == w.a.org()), "{err}");
}

#[test]
fn holding_the_recipients_key_does_not_allow_impersonating_a_sender() {
    // Key-compromise impersonation: an attacker who stole B's private key can read what A sends
    // B. With HPKE Auth mode it could also derive the key A used and substitute a ciphertext of
    // its own; here every byte is under A's signature, which B's key does not help to forge.
    let w = World::new();
    let genuine = w.seal_a_to_b(b"x1 = 1000");
    let parsed = parse(&genuine.bytes, usize::MAX).unwrap();
    let enc = <crate::keys::KemAlg as hpke::Kem>::EncappedKey::from_bytes(parsed.enc).unwrap();
    let stolen = w.b.current().kem();
    let mut ctx =
        hpke::setup_receiver::<Aead, Kdf, crate::keys::KemAlg>(&hpke::OpModeR::Base, stolen, &enc, HPKE_INFO)
            .unwrap();
    let mut plaintext = parsed.ciphertext.to_vec();
    let tag = hpke::aead::AeadTag::<Aead>::from_bytes(parsed.tag).unwrap();
    ctx.open_inout_detached(plaintext.as_mut_slice().into(), parsed.header_block, &tag).unwrap();
    assert!(plaintext.starts_with(b"x1 = 1000"), "the attacker can read");

    let mut forged = genuine.bytes.clone();
    let ct_start = parsed.header_block.len() + parsed.enc.len();
    forged[ct_start..ct_start + 9].copy_from_slice(b"x1 = 9999");
    let err = w.open_at_b(&forged).unwrap_err();
    assert!(matches!(err, OpenError::BadSignature { .. }), "{err}");
}

#[test]
fn the_router_can_verify_the_sender_without_any_private_key() {
    let w = World::new();
    let sealed = w.seal_a_to_b(b"x");
    let parsed = parse(&sealed.bytes, usize::MAX).unwrap();
    assert!(parsed.verify_signature(w.a.current().public()));
    assert!(!parsed.verify_signature(w.c.current().public()));
}

#[test]
fn oversized_envelopes_are_refused_before_any_work() {
    let w = World::new();
    let sealed = w.seal_a_to_b(&[7; 2048]);
    let policy = OpenPolicy { max_len: 1024, ..OpenPolicy::default() };
    let err =
        open(&sealed.bytes, &w.b, &w.b_trusts, &mut MemoryReplayGuard::new(), &policy, w.now).unwrap_err();
    assert!(matches!(err, OpenError::Format(FormatError::TooLarge { max: 1024, .. })), "{err}");
}

#[test]
fn status_must_match_the_kind() {
    let w = World::new();
    let route = Route { status: None, ..World::route(Kind::JobResult) };
    assert!(seal(&w.a, w.b.org(), w.b_public(), &route, b"x", &SealOptions::default(), w.now).is_err());
    let header = Header { status: Some(JobStatus::Running), ..w.header_a_to_b() };
    let sealed = seal_header(header, w.a.current(), w.b_public(), b"x", Padding::None).unwrap();
    let err = w.open_at_b(&sealed.bytes).unwrap_err();
    assert!(matches!(err, OpenError::Format(FormatError::StatusMismatch { .. })), "{err}");
}

#[test]
fn rejections_are_counted_by_reason() {
    let w = World::new();
    let counts = Rejections::new();
    let sealed = w.seal_a_to_b(b"x");
    let mut guard = MemoryReplayGuard::new();
    for bytes in [&sealed.bytes[..], &sealed.bytes[..], b"junk"] {
        if let Err(e) = w.open_at_b_with(bytes, &mut guard) {
            counts.record(&e);
        }
    }
    assert_eq!(counts.get("replay"), 1);
    assert_eq!(counts.get("format"), 1);
    assert_eq!(counts.snapshot().iter().map(|(_, n)| n).sum::<u64>(), 2);
}

/// Byte strings that reach past the first checks: random, with a valid prefix, or a genuine
/// envelope's header block followed by random bytes.
fn hostile_bytes(genuine: Vec<u8>, header_end: usize) -> impl Strategy<Value = Vec<u8>> {
    let prefix = genuine[..header_end].to_vec();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(len, rest)| {
            let mut v = b"FQE\x01".to_vec();
            v.extend_from_slice(&(len % 700).to_be_bytes());
            v.extend(rest);
            v
        }),
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(move |rest| {
            let mut v = prefix.clone();
            v.extend(rest);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_open(bytes in {
        let w = World::new();
        let sealed = w.seal_a_to_b(b"x");
        let header_end = parse(&sealed.bytes, usize::MAX).unwrap().header_block.len();
        hostile_bytes(sealed.bytes, header_end)
    }) {
        let w = World::new();
        let _ = peek_header(&bytes, usize::MAX);
        prop_assert!(w.open_at_b(&bytes).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_change_to_a_genuine_envelope_is_refused(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let w = World::new();
        let sealed = w.seal_a_to_b(b"a + R mod 2^64");
        let mut bytes = sealed.bytes.clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        prop_assume!(bytes != sealed.bytes);
        prop_assert!(w.open_at_b(&bytes).is_err());
    }
}

#[test]
fn payload_of_the_wrong_kind_fails_to_decode_after_opening() {
    let w = World::new();
    let status = Payload::JobStatus(crate::protocol::JobStatusUpdate {
        job: crate::ids::JobId::new(),
        status: crate::protocol::JobStatus::Running,
        detail: None,
    });
    let sealed = seal(
        &w.a,
        w.b.org(),
        w.b_public(),
        &World::route(Kind::JobStart),
        &status.to_bytes(),
        &SealOptions::default(),
        w.now,
    )
    .unwrap();
    let opened = w.open_at_b(&sealed.bytes).unwrap();
    assert!(opened.decode().is_err());
}
