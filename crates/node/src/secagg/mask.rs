//! The arithmetic of secure aggregation: pairwise masks that cancel in the sum.
//!
//! Each participating node holds one X25519 key pair per run. For a round, the nodes `i` and `j`
//! derive the same 32-byte seed from their Diffie–Hellman secret (HKDF-SHA256, bound to the run,
//! the round, the set of participants and the pair), and expand it with ChaCha20 into one mask
//! word per value. `i` adds the mask where `i < j` (by organization id) and subtracts it where
//! `i > j`, modulo 2^64, so that over every participant the masks cancel and only the sum of the
//! contributions is left. A masked vector is uniformly random to anyone without all of its
//! node's pair seeds.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit as _, StreamCipher as _};
use hkdf::Hkdf;
use sha2::{Digest as _, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::ids::{OrgId, RunId};

/// What the derivation is for: a seed of another protocol or version never equals one of these.
const CONTEXT: &[u8] = b"fedq secure aggregation v1: pair seed";

/// A round's name, as the algorithms give it: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Round(String);

impl Round {
    /// The longest name.
    pub const MAX_LEN: usize = 64;

    /// The round named `name`, if the name is one.
    pub fn parse(name: &str) -> Result<Self, String> {
        let fits = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        match fits {
            true => Ok(Self(name.to_owned())),
            false => Err(format!(
                "a round is named by 1 to {} characters of A-Z, a-z, 0-9, '.', '_' and '-': {name:?}",
                Self::MAX_LEN
            )),
        }
    }
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A round's participants: distinct organizations, sorted (the order every node derives in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participants(Vec<OrgId>);

impl Participants {
    /// The set of `orgs`; `None` if one is named twice.
    pub fn new(mut orgs: Vec<OrgId>) -> Option<Self> {
        orgs.sort();
        let before = orgs.len();
        orgs.dedup();
        (orgs.len() == before).then_some(Self(orgs))
    }

    /// The organizations, sorted.
    pub fn orgs(&self) -> &[OrgId] {
        &self.0
    }

    /// Whether `org` is one.
    pub fn contains(&self, org: OrgId) -> bool {
        self.0.binary_search(&org).is_ok()
    }

    /// A digest of the set, which each pair's seed is bound to.
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for org in &self.0 {
            hash.update(org.as_uuid().as_bytes());
        }
        hash.finalize().into()
    }
}

/// Why a pair's seed cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the public key of organization {0} for this run is of low order: its node must send another")]
pub struct WeakKey(pub OrgId);

/// The seed that `me` and `peer` share for `round` of `run`.
pub fn pair_seed(
    secret: &StaticSecret,
    their_public: &PublicKey,
    run: RunId,
    round: &Round,
    participants: &Participants,
    me: OrgId,
    peer: OrgId,
) -> Result<Zeroizing<[u8; 32]>, WeakKey> {
    let shared = secret.diffie_hellman(their_public);
    // A low-order point makes the secret a constant anyone can compute.
    if !shared.was_contributory() {
        return Err(WeakKey(peer));
    }
    let (low, high) = if me < peer { (me, peer) } else { (peer, me) };
    let mut info = Vec::with_capacity(CONTEXT.len() + 16 + 1 + round.0.len() + 32 + 32);
    info.extend_from_slice(CONTEXT);
    info.extend_from_slice(run.as_uuid().as_bytes());
    info.push(round.0.len() as u8);
    info.extend_from_slice(round.0.as_bytes());
    info.extend_from_slice(&participants.digest());
    info.extend_from_slice(low.as_uuid().as_bytes());
    info.extend_from_slice(high.as_uuid().as_bytes());
    let mut seed = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, shared.as_bytes())
        .expand(&info, seed.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(seed)
}

/// Masks `values` in place for `me`: adds each pair's mask where `me` is the lower of the two
/// organizations, subtracts it where it is the higher, modulo 2^64.
pub fn apply(me: OrgId, values: &mut [u64], seeds: &[(OrgId, Zeroizing<[u8; 32]>)]) {
    let mut words = vec![0u8; values.len() * 8];
    for (peer, seed) in seeds {
        words.fill(0);
        // A seed is used for one stream only, so the fixed nonce never repeats under one key.
        ChaCha20::new(&(**seed).into(), &[0u8; 12].into()).apply_keystream(&mut words);
        let add = me < *peer;
        for (value, word) in values.iter_mut().zip(words.chunks_exact(8)) {
            let mask = u64::from_le_bytes(word.try_into().expect("chunks of 8"));
            *value = if add { value.wrapping_add(mask) } else { value.wrapping_sub(mask) };
        }
    }
}

/// The sum of masked vectors of equal length, modulo 2^64.
pub fn sum<'a>(len: usize, vectors: impl IntoIterator<Item = &'a [u64]>) -> Vec<u64> {
    let mut total = vec![0u64; len];
    for vector in vectors {
        for (t, v) in total.iter_mut().zip(vector) {
            *t = t.wrapping_add(*v);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(n: u8) -> OrgId {
        format!("00000000-0000-4000-8000-0000000000{n:02x}").parse().unwrap()
    }

    fn run(n: u8) -> RunId {
        format!("00000000-0000-4000-8000-0000000001{n:02x}").parse().unwrap()
    }

    fn keys(n: u8) -> Vec<(OrgId, StaticSecret)> {
        (1..=n).map(|i| (org(i), StaticSecret::from([i; 32]))).collect()
    }

    /// Every participant's masked vector, as their nodes would make them.
    fn masked(
        run: RunId,
        round: &Round,
        inputs: &[Vec<u64>],
        keys: &[(OrgId, StaticSecret)],
    ) -> Vec<Vec<u64>> {
        let participants = Participants::new(keys.iter().map(|(o, _)| *o).collect()).unwrap();
        keys.iter()
            .zip(inputs)
            .map(|((me, secret), input)| {
                let seeds: Vec<_> = keys
                    .iter()
                    .filter(|(peer, _)| peer != me)
                    .map(|(peer, theirs)| {
                        let public = PublicKey::from(theirs);
                        (*peer, pair_seed(secret, &public, run, round, &participants, *me, *peer).unwrap())
                    })
                    .collect();
                let mut values = input.clone();
                apply(*me, &mut values, &seeds);
                values
            })
            .collect()
    }

    #[test]
    fn the_masks_cancel_in_the_sum_and_hide_each_vector() {
        let (run, round) = (run(9), Round::parse("irls-3").unwrap());
        let inputs = vec![vec![1, u64::MAX, 7], vec![2, 2, 0], vec![3, 0, 11]];
        let masked = masked(run, &round, &inputs, &keys(3));
        assert_eq!(sum(3, masked.iter().map(Vec::as_slice)), vec![6, 1, 18]);
        for (m, input) in masked.iter().zip(&inputs) {
            assert_ne!(m, input, "a masked vector is not its contribution");
        }
        // The sum of any two is not the sum of their contributions: only all of them unmask.
        let pair = sum(3, masked[..2].iter().map(Vec::as_slice));
        assert_ne!(pair, vec![3, 1, 7]);
    }

    #[test]
    fn seeds_are_bound_to_the_run_the_round_and_the_participants() {
        let keys = keys(3);
        let everyone = Participants::new(keys.iter().map(|(o, _)| *o).collect()).unwrap();
        let two = Participants::new(vec![org(1), org(2)]).unwrap();
        let public = PublicKey::from(&keys[1].1);
        let seed = |r: u8, round: &str, set: &Participants| {
            let round = Round::parse(round).unwrap();
            *pair_seed(&keys[0].1, &public, run(r), &round, set, org(1), org(2)).unwrap()
        };
        let base = seed(1, "r", &everyone);
        assert_ne!(base, seed(2, "r", &everyone));
        assert_ne!(base, seed(1, "s", &everyone));
        assert_ne!(base, seed(1, "r", &two));
        // Both ends derive the same seed.
        let round = Round::parse("r").unwrap();
        let back =
            pair_seed(&keys[1].1, &PublicKey::from(&keys[0].1), run(1), &round, &everyone, org(2), org(1))
                .unwrap();
        assert_eq!(base, *back);
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let round = Round::parse("r").unwrap();
        let set = Participants::new(vec![org(1), org(2)]).unwrap();
        let zero = PublicKey::from([0u8; 32]);
        let secret = StaticSecret::from([1; 32]);
        assert_eq!(pair_seed(&secret, &zero, run(1), &round, &set, org(1), org(2)), Err(WeakKey(org(2))));
    }

    #[test]
    fn round_names_and_participant_sets_are_checked() {
        assert!(Round::parse("irls-12.b_3").is_ok());
        for bad in ["", "a/b", "é", &"x".repeat(65)] {
            assert!(Round::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Participants::new(vec![org(1), org(1)]).is_none());
        assert_eq!(Participants::new(vec![org(2), org(1)]).unwrap().orgs(), &[org(1), org(2)]);
    }

    proptest::proptest! {
        #[test]
        fn any_contributions_sum_exactly(
            inputs in proptest::collection::vec(proptest::collection::vec(proptest::num::u64::ANY, 4), 2..6)
        ) {
            let keys = keys(inputs.len() as u8);
            let masked = masked(run(3), &Round::parse("p").unwrap(), &inputs, &keys);
            let expected = sum(4, inputs.iter().map(Vec::as_slice));
            proptest::prop_assert_eq!(sum(4, masked.iter().map(Vec::as_slice)), expected);
        }
    }
}
