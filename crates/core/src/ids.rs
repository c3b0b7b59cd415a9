//! Typed identifiers.
//!
//! Every entity of the federation has its own identifier type so that an organization id can
//! never be passed where a task id is expected. All are random (version 4) UUIDs: parties create
//! them without coordination and they reveal nothing about counts or order. On the wire
//! (MessagePack) they are 16 raw bytes; in JSON and on the command line they are the usual
//! hyphenated text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The error returned when text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {text:?}: expected a UUID such as 6f1c2a8e-0d1b-4c55-9a43-1e2f3a4b5c6d")]
pub struct ParseIdError {
    kind: &'static str,
    text: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random identifier.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError {
                    kind: $kind,
                    text: s.chars().take(64).collect(),
                })
            }
        }
    };
}

id_type!(
    /// An organization: a party of the federation that owns one key pair.
    OrgId, "organization"
);
id_type!(
    /// A collaboration: a set of organizations that agreed to analyse together.
    CollaborationId, "collaboration"
);
id_type!(
    /// A node: one organization's worker next to its data.
    NodeId, "node"
);
id_type!(
    /// A task: a request to run one algorithm image at some organizations.
    TaskId, "task"
);
id_type!(
    /// A job: one organization's execution of a task.
    JobId, "job"
);
id_type!(
    /// A run: the whole sequence started by one researcher task, subtasks included. Keys the
    /// per-run volume at each node.
    RunId, "run"
);

id_type!(
    /// A user of the server: a root administrator, or a person of one organization.
    UserId, "user"
);
id_type!(
    /// A one-time node enrollment token's record (never the token itself).
    EnrollmentId, "enrollment"
);

/// The 128-bit random identifier of one envelope, used to detect replays and duplicates.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(#[serde(with = "serde_bytes")] [u8; 16]);

impl MessageId {
    /// A new identifier of 128 bits from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        Self(bytes)
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| ParseIdError { kind: "message", text: s.chars().take(64).collect() })?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_messagepack() {
        let org = OrgId::new();
        assert_eq!(org.to_string().parse::<OrgId>().unwrap(), org);
        let bytes = rmp_serde::to_vec(&org).unwrap();
        // A UUID is 16 raw bytes in MessagePack (bin8 marker, length, bytes).
        assert_eq!(bytes.len(), 18);
        assert_eq!(rmp_serde::from_slice::<OrgId>(&bytes).unwrap(), org);

        let id = MessageId::random();
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        let bytes = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(rmp_serde::from_slice::<MessageId>(&bytes).unwrap(), id);
    }

    #[test]
    fn bad_text_is_a_typed_error_naming_the_kind() {
        let err = "not-a-uuid".parse::<TaskId>().unwrap_err();
        assert!(err.to_string().contains("invalid task id"), "{err}");
        assert!("abc".parse::<MessageId>().is_err());
    }

    #[test]
    fn random_message_ids_differ() {
        assert_ne!(MessageId::random(), MessageId::random());
    }
}
