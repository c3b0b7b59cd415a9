//! What nodes send each other for secure aggregation, inside sealed run messages whose topics
//! are the node's own (an algorithm can neither send nor take a topic that starts `fedq.`).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::mask::{Participants, Round};
use crate::ids::OrgId;

/// The prefix of the topics nodes keep for themselves.
pub const RESERVED_PREFIX: &str = "fedq.";
/// A node's public key for the run, to each other participant.
pub const KEY_TOPIC: &str = "fedq.secure-sum.key";
/// A masked contribution, to the aggregator.
pub const PART_TOPIC: &str = "fedq.secure-sum.part";

/// The most values in one round.
pub const MAX_VALUES: usize = 1 << 20;

/// A node's X25519 public key for one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOffer {
    /// 32 bytes.
    pub public: ByteBuf,
}

/// One participant's masked vector for a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The round.
    pub round: String,
    /// Every participant of the round, sorted.
    pub participants: Vec<OrgId>,
    /// The contribution plus the sender's masks, modulo 2^64.
    pub values: Vec<u64>,
}

/// A node-to-node body that is not what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not MessagePack of the type.
    #[error("not a secure-sum message: {0}")]
    Undecodable(String),
    /// A key that is not 32 bytes.
    #[error("a run key of {0} bytes (32 expected)")]
    KeyLength(usize),
    /// A round with a name that is not one.
    #[error("{0}")]
    Round(String),
    /// Participants named twice or not sorted, or a sender that is not one of them.
    #[error("the participants are not a sorted set that includes the sender")]
    Participants,
    /// Too many values, or none.
    #[error("a contribution of {0} values (1 to {MAX_VALUES})")]
    Length(usize),
}

impl KeyOffer {
    /// The offer of `public`.
    pub fn new(public: [u8; 32]) -> Self {
        Self { public: ByteBuf::from(public.to_vec()) }
    }

    /// Encoded for a run message.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("key offers encode")
    }

    /// The key an offer's bytes carry.
    pub fn decode(bytes: &[u8]) -> Result<[u8; 32], WireError> {
        let offer: Self = rmp_serde::from_slice(bytes).map_err(|e| WireError::Undecodable(e.to_string()))?;
        <[u8; 32]>::try_from(offer.public.as_slice()).map_err(|_| WireError::KeyLength(offer.public.len()))
    }
}

impl Part {
    /// Encoded for a run message.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("parts encode")
    }

    /// A part's bytes, checked: its round's name, its participants (a sorted set with `sender`
    /// in it) and its length.
    pub fn decode(bytes: &[u8], sender: OrgId) -> Result<(Round, Participants, Vec<u64>), WireError> {
        let part: Self = rmp_serde::from_slice(bytes).map_err(|e| WireError::Undecodable(e.to_string()))?;
        let round = Round::parse(&part.round).map_err(WireError::Round)?;
        let participants = Participants::new(part.participants.clone())
            .filter(|p| p.orgs() == part.participants && p.contains(sender))
            .ok_or(WireError::Participants)?;
        if part.values.is_empty() || part.values.len() > MAX_VALUES {
            return Err(WireError::Length(part.values.len()));
        }
        Ok((round, participants, part.values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(n: u8) -> OrgId {
        format!("00000000-0000-4000-8000-0000000000{n:02x}").parse().unwrap()
    }

    #[test]
    fn parts_and_keys_read_back_and_bad_ones_are_refused() {
        let part = Part { round: "r1".into(), participants: vec![org(1), org(2)], values: vec![5, 6] };
        let (round, participants, values) = Part::decode(&part.encode(), org(2)).unwrap();
        assert_eq!(
            (round.to_string(), participants.orgs(), values),
            ("r1".to_owned(), &[org(1), org(2)][..], vec![5, 6])
        );
        assert_eq!(Part::decode(&part.encode(), org(3)), Err(WireError::Participants));
        let unsorted = Part { participants: vec![org(2), org(1)], ..part.clone() };
        assert_eq!(Part::decode(&unsorted.encode(), org(1)), Err(WireError::Participants));
        let empty = Part { values: vec![], ..part.clone() };
        assert_eq!(Part::decode(&empty.encode(), org(1)), Err(WireError::Length(0)));
        let badly_named = Part { round: "a b".into(), ..part };
        assert!(matches!(Part::decode(&badly_named.encode(), org(1)), Err(WireError::Round(_))));
        assert_eq!(KeyOffer::decode(&KeyOffer::new([7; 32]).encode()), Ok([7; 32]));
        let short = KeyOffer { public: ByteBuf::from(vec![1, 2]) };
        assert_eq!(KeyOffer::decode(&short.encode()), Err(WireError::KeyLength(2)));
    }

    proptest::proptest! {
        /// Whatever a partner sends, reading it answers, never panics.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Part::decode(&bytes, org(1));
            let _ = KeyOffer::decode(&bytes);
        }
    }
}
