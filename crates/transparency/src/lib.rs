//! The transparency log's mathematics, with no I/O: the Merkle tree of RFC 9162 (Certificate
//! Transparency 2.0), section 2.1, over SHA-256: the tree head of a list of leaves, inclusion
//! proofs (a leaf is in the tree of size n) and consistency proofs (the tree of size m is a prefix
//! of the tree of size n), built and verified; and the log's signed tree head.
//!
//! Every party runs the verifiers: the server builds proofs, nodes and `fedq audit` check them,
//! so a server that rewrote history or showed two organizations different histories is caught
//! by arithmetic, not trust.

pub mod frontier;
pub mod leaf;
pub mod monitor;
pub mod proof;
pub mod tree;
pub mod tree_head;
pub mod wire;

pub use frontier::Frontier;
pub use leaf::{EnvelopeLeaf, Event, EventLeaf, Leaf, LeafError};
pub use monitor::{Accepted, Alarm, Monitor};
pub use proof::{ProofError, verify_consistency, verify_inclusion};
pub use tree::{Hash, MerkleTree, leaf_hash, node_hash};
pub use tree_head::{SignedTreeHead, TreeHead, TreeHeadError};
pub use wire::WireError;
