//! What the log's leaves say, in a fixed binary layout (version 1) that every party encodes and
//! parses the same way: one leaf per routed envelope (the SHA-256 of its full bytes and its clear
//! header fields, so that whoever holds the envelope can recompute the leaf) and one per event
//! that decides trust (keys, collaborations, nodes, roles), naming the organization it concerns
//! so that each organization's monitor can watch its own.
//!
//! Layout: `version (1) · type (1 envelope, 2 event) · body`, integers big-endian, identifiers as
//! their 16 UUID bytes, key fingerprints as their 32 bytes. A leaf is exactly as long as its type
//! says: trailing bytes are refused. Parsing never panics on any input (property-tested).

use fedq_core::ids::{CollaborationId, MessageId, NodeId, OrgId, RunId, TaskId};
use fedq_core::protocol::Kind;
use fedq_core::time::Timestamp;
use fedq_envelope::envelope::Header;
use sha2::{Digest as _, Sha256};

use crate::tree::{Hash, leaf_hash};

const VERSION: u8 = 1;
const ENVELOPE: u8 = 1;
const EVENT: u8 = 2;

/// A key fingerprint (SHA-256), as `SHA256:…` shows it in text.
pub type Fingerprint = [u8; 32];

/// A leaf of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// An envelope the router accepted.
    Envelope(EnvelopeLeaf),
    /// An event that decides trust.
    Event(EventLeaf),
}

/// An envelope as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeLeaf {
    /// SHA-256 of the envelope's full bytes.
    pub digest: Hash,
    /// The envelope's message id.
    pub id: MessageId,
    /// Its kind.
    pub kind: Kind,
    /// The organization that sealed and signed it.
    pub sender: OrgId,
    /// The fingerprint of the key that signed it.
    pub sender_key: Fingerprint,
    /// The organization it is sealed for.
    pub recipient: OrgId,
    /// The fingerprint of the key it is sealed to.
    pub recipient_key: Fingerprint,
    /// The collaboration the router checked.
    pub collaboration: CollaborationId,
    /// The task it belongs to.
    pub task: TaskId,
    /// The run it belongs to.
    pub run: RunId,
    /// When the sender sealed it, by its clock.
    pub created_at: Timestamp,
}

impl EnvelopeLeaf {
    /// The leaf of an envelope, from its full bytes and their parsed header: what the router
    /// logs and what anyone holding the envelope recomputes.
    pub fn of(header: &Header, bytes: &[u8]) -> Self {
        Self {
            digest: Sha256::digest(bytes).into(),
            id: header.id,
            kind: header.kind,
            sender: header.sender,
            sender_key: *header.sender_key.as_bytes(),
            recipient: header.recipient,
            recipient_key: *header.recipient_key.as_bytes(),
            collaboration: header.collaboration,
            task: header.task,
            run: header.run,
            created_at: header.created_at,
        }
    }
}

/// An event that decides whom an organization trusts, and when the server recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLeaf {
    /// The organization it concerns: the one whose monitor must recognise it.
    pub organization: OrgId,
    /// The server's clock when it happened.
    pub at: Timestamp,
    /// What happened.
    pub event: Event,
}

/// The events that decide trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The organization's first key was published.
    KeyPublished {
        /// Its fingerprint.
        key: Fingerprint,
    },
    /// A new key replaced `old` (with or without a rotation signed by `old`).
    KeyRotated {
        /// The key replaced.
        old: Fingerprint,
        /// The new key.
        new: Fingerprint,
    },
    /// A key was revoked.
    KeyRevoked {
        /// Its fingerprint.
        key: Fingerprint,
    },
    /// A collaboration was created with the organization in it.
    CollaborationCreated {
        /// The collaboration.
        collaboration: CollaborationId,
    },
    /// The organization joined a collaboration.
    MemberAdded {
        /// The collaboration.
        collaboration: CollaborationId,
    },
    /// The organization left a collaboration.
    MemberRemoved {
        /// The collaboration.
        collaboration: CollaborationId,
    },
    /// A node of the organization was registered.
    NodeRegistered {
        /// The node.
        node: NodeId,
    },
    /// A node of the organization was revoked.
    NodeRevoked {
        /// The node.
        node: NodeId,
    },
    /// A user of the organization got a role, or was removed.
    UserRoleChanged {
        /// The user's id.
        user: uuid::Uuid,
        /// 0 removed, 1 researcher, 2 organization administrator, 3 viewer (4, root, belongs to no
        /// organization and is not logged).
        role: u8,
    },
}

/// An event as people read it (`fedq audit`, the node's log): keys by their fingerprints
/// (`SHA256:…`, as `fedq keys` prints them), not as byte arrays.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = |key: &Fingerprint| format!("SHA256:{}", hex::encode(key));
        match self {
            Event::KeyPublished { key } => write!(f, "key published {}", fp(key)),
            Event::KeyRotated { old, new } => write!(f, "key rotated {} -> {}", fp(old), fp(new)),
            Event::KeyRevoked { key } => write!(f, "key revoked {}", fp(key)),
            Event::CollaborationCreated { collaboration } => {
                write!(f, "collaboration created {collaboration}")
            }
            Event::MemberAdded { collaboration } => write!(f, "added to collaboration {collaboration}"),
            Event::MemberRemoved { collaboration } => write!(f, "removed from collaboration {collaboration}"),
            Event::NodeRegistered { node } => write!(f, "node registered {node}"),
            Event::NodeRevoked { node } => write!(f, "node revoked {node}"),
            Event::UserRoleChanged { user, role } => {
                let role = match role {
                    0 => "removed",
                    1 => "researcher",
                    2 => "org_admin",
                    3 => "viewer",
                    _ => "unknown role",
                };
                write!(f, "user {user}: {role}")
            }
        }
    }
}

/// Why bytes are not a leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    /// A layout this program does not know.
    #[error("leaf version {0} is not one this program reads (version 1); upgrade fedq")]
    Version(u8),
    /// Neither an envelope nor an event.
    #[error("unknown leaf type {0}")]
    Type(u8),
    /// An envelope kind or event this version does not know.
    #[error("unknown {what} {value}")]
    Unknown {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u8,
    },
    /// Too short or too long for its type.
    #[error("a leaf of this type has {expected} bytes, not {actual}")]
    Length {
        /// The length its type has.
        expected: usize,
        /// The length given.
        actual: usize,
    },
}

impl Event {
    fn tag(&self) -> u8 {
        match self {
            Event::KeyPublished { .. } => 1,
            Event::KeyRotated { .. } => 2,
            Event::KeyRevoked { .. } => 3,
            Event::CollaborationCreated { .. } => 4,
            Event::MemberAdded { .. } => 5,
            Event::MemberRemoved { .. } => 6,
            Event::NodeRegistered { .. } => 7,
            Event::NodeRevoked { .. } => 8,
            Event::UserRoleChanged { .. } => 9,
        }
    }

    fn body_len(tag: u8) -> Option<usize> {
        Some(match tag {
            1 | 3 => 32,
            2 => 64,
            4..=8 => 16,
            9 => 17,
            _ => return None,
        })
    }
}

impl Leaf {
    /// The leaf's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Leaf::Envelope(e) => {
                out.push(ENVELOPE);
                out.extend_from_slice(&e.digest);
                out.extend_from_slice(e.id.as_bytes());
                out.push(Kind::ALL.iter().position(|k| *k == e.kind).expect("every kind is listed") as u8);
                out.extend_from_slice(e.sender.as_uuid().as_bytes());
                out.extend_from_slice(&e.sender_key);
                out.extend_from_slice(e.recipient.as_uuid().as_bytes());
                out.extend_from_slice(&e.recipient_key);
                out.extend_from_slice(e.collaboration.as_uuid().as_bytes());
                out.extend_from_slice(e.task.as_uuid().as_bytes());
                out.extend_from_slice(e.run.as_uuid().as_bytes());
                out.extend_from_slice(&e.created_at.as_millis().to_be_bytes());
            }
            Leaf::Event(e) => {
                out.push(EVENT);
                out.push(e.event.tag());
                out.extend_from_slice(e.organization.as_uuid().as_bytes());
                out.extend_from_slice(&e.at.as_millis().to_be_bytes());
                match e.event {
                    Event::KeyPublished { key } | Event::KeyRevoked { key } => out.extend_from_slice(&key),
                    Event::KeyRotated { old, new } => {
                        out.extend_from_slice(&old);
                        out.extend_from_slice(&new);
                    }
                    Event::CollaborationCreated { collaboration }
                    | Event::MemberAdded { collaboration }
                    | Event::MemberRemoved { collaboration } => {
                        out.extend_from_slice(collaboration.as_uuid().as_bytes())
                    }
                    Event::NodeRegistered { node } | Event::NodeRevoked { node } => {
                        out.extend_from_slice(node.as_uuid().as_bytes())
                    }
                    Event::UserRoleChanged { user, role } => {
                        out.extend_from_slice(user.as_bytes());
                        out.push(role);
                    }
                }
            }
        }
        out
    }

    /// The leaf's hash in the tree.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// Parses a leaf's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LeafError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8_or(LeafError::Length { expected: 2, actual: bytes.len() })?;
        if version != VERSION {
            return Err(LeafError::Version(version));
        }
        match r.u8_or(LeafError::Length { expected: 2, actual: bytes.len() })? {
            ENVELOPE => {
                const LEN: usize = 2 + 32 + 16 + 1 + 16 + 32 + 16 + 32 + 16 * 3 + 8;
                if bytes.len() != LEN {
                    return Err(LeafError::Length { expected: LEN, actual: bytes.len() });
                }
                let digest = r.array();
                let id = MessageId::from_bytes(r.array());
                let kind_index = r.byte();
                let kind = *Kind::ALL
                    .get(usize::from(kind_index))
                    .ok_or(LeafError::Unknown { what: "envelope kind", value: kind_index })?;
                Ok(Leaf::Envelope(EnvelopeLeaf {
                    digest,
                    id,
                    kind,
                    sender: OrgId::from_uuid(r.uuid()),
                    sender_key: r.array(),
                    recipient: OrgId::from_uuid(r.uuid()),
                    recipient_key: r.array(),
                    collaboration: CollaborationId::from_uuid(r.uuid()),
                    task: TaskId::from_uuid(r.uuid()),
                    run: RunId::from_uuid(r.uuid()),
                    created_at: Timestamp::from_millis(r.i64()),
                }))
            }
            EVENT => {
                let tag = r.u8_or(LeafError::Length { expected: 3, actual: bytes.len() })?;
                let body = Event::body_len(tag).ok_or(LeafError::Unknown { what: "event", value: tag })?;
                let len = 3 + 16 + 8 + body;
                if bytes.len() != len {
                    return Err(LeafError::Length { expected: len, actual: bytes.len() });
                }
                let organization = OrgId::from_uuid(r.uuid());
                let at = Timestamp::from_millis(r.i64());
                let event = match tag {
                    1 => Event::KeyPublished { key: r.array() },
                    2 => Event::KeyRotated { old: r.array(), new: r.array() },
                    3 => Event::KeyRevoked { key: r.array() },
                    4 => Event::CollaborationCreated { collaboration: CollaborationId::from_uuid(r.uuid()) },
                    5 => Event::MemberAdded { collaboration: CollaborationId::from_uuid(r.uuid()) },
                    6 => Event::MemberRemoved { collaboration: CollaborationId::from_uuid(r.uuid()) },
                    7 => Event::NodeRegistered { node: NodeId::from_uuid(r.uuid()) },
                    8 => Event::NodeRevoked { node: NodeId::from_uuid(r.uuid()) },
                    _ => Event::UserRoleChanged { user: r.uuid(), role: r.byte() },
                };
                Ok(Leaf::Event(EventLeaf { organization, at, event }))
            }
            other => Err(LeafError::Type(other)),
        }
    }

    /// The organizations whose monitors must recognise this leaf: the sender and the recipient
    /// of an envelope, the organization an event concerns.
    pub fn organizations(&self) -> Vec<OrgId> {
        match self {
            Leaf::Envelope(e) => vec![e.sender, e.recipient],
            Leaf::Event(e) => vec![e.organization],
        }
    }
}

/// Reads fixed fields from bytes whose length was checked first (so that the reads below
/// cannot run past the end).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8_or(&mut self, short: LeafError) -> Result<u8, LeafError> {
        let byte = *self.bytes.get(self.at).ok_or(short)?;
        self.at += 1;
        Ok(byte)
    }

    fn byte(&mut self) -> u8 {
        let byte = self.bytes[self.at];
        self.at += 1;
        byte
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let out = self.bytes[self.at..self.at + N].try_into().expect("length checked");
        self.at += N;
        out
    }

    fn uuid(&mut self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.array())
    }

    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.array())
    }
}

#[cfg(test)]
mod display_tests {
    use super::Event;

    #[test]
    fn keys_are_shown_by_fingerprint() {
        let shown = Event::KeyRotated { old: [0xab; 32], new: [0x01; 32] }.to_string();
        assert_eq!(shown, format!("key rotated SHA256:{} -> SHA256:{}", "ab".repeat(32), "01".repeat(32)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid_of(b: [u8; 16]) -> uuid::Uuid {
        uuid::Uuid::from_bytes(b)
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(|key| Event::KeyPublished { key }),
            any::<([u8; 32], [u8; 32])>().prop_map(|(old, new)| Event::KeyRotated { old, new }),
            any::<[u8; 32]>().prop_map(|key| Event::KeyRevoked { key }),
            any::<[u8; 16]>().prop_map(|c| Event::CollaborationCreated {
                collaboration: CollaborationId::from_uuid(uuid_of(c))
            }),
            any::<[u8; 16]>()
                .prop_map(|c| Event::MemberAdded { collaboration: CollaborationId::from_uuid(uuid_of(c)) }),
            any::<[u8; 16]>()
                .prop_map(|c| Event::MemberRemoved { collaboration: CollaborationId::from_uuid(uuid_of(c)) }),
            any::<[u8; 16]>().prop_map(|n| Event::NodeRegistered { node: NodeId::from_uuid(uuid_of(n)) }),
            any::<[u8; 16]>().prop_map(|n| Event::NodeRevoked { node: NodeId::from_uuid(uuid_of(n)) }),
            any::<([u8; 16], u8)>().prop_map(|(u, role)| Event::UserRoleChanged { user: uuid_of(u), role }),
        ]
    }

    fn any_leaf() -> impl Strategy<Value = Leaf> {
        let envelope = (
            any::<[u8; 32]>(),
            any::<[[u8; 16]; 6]>(),
            0..4usize,
            any::<([u8; 32], [u8; 32])>(),
            any::<i64>(),
        )
            .prop_map(|(digest, ids, kind, (sk, rk), at)| {
                Leaf::Envelope(EnvelopeLeaf {
                    digest,
                    id: MessageId::from_bytes(ids[0]),
                    kind: Kind::ALL[kind],
                    sender: OrgId::from_uuid(uuid_of(ids[1])),
                    sender_key: sk,
                    recipient: OrgId::from_uuid(uuid_of(ids[2])),
                    recipient_key: rk,
                    collaboration: CollaborationId::from_uuid(uuid_of(ids[3])),
                    task: TaskId::from_uuid(uuid_of(ids[4])),
                    run: RunId::from_uuid(uuid_of(ids[5])),
                    created_at: Timestamp::from_millis(at),
                })
            });
        let event = (any::<[u8; 16]>(), any::<i64>(), any_event()).prop_map(|(org, at, event)| {
            Leaf::Event(EventLeaf {
                organization: OrgId::from_uuid(uuid_of(org)),
                at: Timestamp::from_millis(at),
                event,
            })
        });
        prop_oneof![envelope, event]
    }

    proptest! {
        #[test]
        fn every_leaf_parses_back_to_itself(leaf in any_leaf()) {
            let bytes = leaf.encode();
            prop_assert_eq!(Leaf::decode(&bytes), Ok(leaf.clone()));
            // One byte more or less is refused, never misread.
            let mut longer = bytes.clone();
            longer.push(0);
            let refused = matches!(Leaf::decode(&longer), Err(LeafError::Length { .. }));
            prop_assert!(refused);
            prop_assert!(Leaf::decode(&bytes[..bytes.len() - 1]).is_err());
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_read_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(leaf) = Leaf::decode(&bytes) {
                prop_assert_eq!(leaf.encode(), bytes);
            }
        }
    }

    #[test]
    fn an_unknown_version_says_to_upgrade() {
        assert_eq!(Leaf::decode(&[2, 1]), Err(LeafError::Version(2)));
        assert!(LeafError::Version(2).to_string().contains("upgrade fedq"));
        assert_eq!(Leaf::decode(&[1, 9]), Err(LeafError::Type(9)));
        assert_eq!(Leaf::decode(&[1, 2, 42]), Err(LeafError::Unknown { what: "event", value: 42 }));
    }
}
