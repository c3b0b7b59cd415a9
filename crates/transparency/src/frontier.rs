//! The right edge of a Merkle tree: the roots of its perfect subtrees, largest first, which is all
//! a monitor needs to keep (at most 64 hashes) to recompute the tree head after appending the
//! leaves it reads. A monitor that replays every new entry into its frontier and gets the signed
//! root has checked both that the entries are the log's and that the log only grew.

use serde::{Deserialize, Serialize};

use crate::tree::{Hash, empty_hash, node_hash};

/// The perfect-subtree roots of a tree of `size` leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, from the largest subtree (leftmost) to the smallest.
    #[serde(with = "hex_hashes")]
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its leaf hash.
    pub fn push_hash(&mut self, hash: Hash) {
        let mut current = hash;
        // Each trailing one bit of the old size is a perfect subtree the new leaf completes.
        let mut merges = self.size.trailing_ones();
        while merges > 0 {
            let left = self.peaks.pop().expect("a peak per set bit");
            current = node_hash(&left, &current);
            merges -= 1;
        }
        self.peaks.push(current);
        self.size += 1;
    }

    /// The tree head (RFC 9162's MTH) of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else { return empty_hash() };
        // Smaller subtrees are right children of the larger ones, from the right.
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

mod hex_hashes {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::tree::Hash;

    pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hashes.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                let bytes = hex::decode(t).map_err(serde::de::Error::custom)?;
                Hash::try_from(bytes.as_slice()).map_err(|_| serde::de::Error::custom("a hash is 32 bytes"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tree::{MerkleTree, leaf_hash};

    #[test]
    fn the_empty_frontier_has_the_empty_root() {
        assert_eq!(Frontier::new().root(), empty_hash());
    }

    proptest! {
        /// At every size the frontier's root is the full tree's.
        #[test]
        fn the_frontier_gives_the_trees_root_at_every_size(n in 0usize..300) {
            let mut tree = MerkleTree::new();
            let mut frontier = Frontier::new();
            for i in 0..n {
                let hash = leaf_hash(&(i as u64).to_be_bytes());
                tree.push_hash(hash);
                frontier.push_hash(hash);
                prop_assert_eq!(frontier.root(), tree.root());
                prop_assert_eq!(frontier.size(), tree.size());
            }
        }
    }

    #[test]
    fn a_frontier_survives_being_saved() {
        let mut frontier = Frontier::new();
        for i in 0..11u8 {
            frontier.push_hash(leaf_hash(&[i]));
        }
        let saved = serde_json::to_string(&frontier).unwrap();
        let back: Frontier = serde_json::from_str(&saved).unwrap();
        assert_eq!(back, frontier);
        assert!(serde_json::from_str::<Frontier>(r#"{"size":1,"peaks":["00"]}"#).is_err());
    }
}
