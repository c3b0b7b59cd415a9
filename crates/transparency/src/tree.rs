//! The Merkle tree of RFC 9162, 2.1.1: `MTH({}) = SHA-256()`, `MTH({d}) = SHA-256(0x00 || d)`,
//! and for n > 1 with k the largest power of two below n,
//! `MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`. The prefixes 0x00 and 0x01 keep a
//! leaf from ever being taken for an inner node (second-preimage resistance).
//!
//! [`MerkleTree`] keeps every complete ("perfect") subtree's hash, level by level, so that any
//! tree head or proof of any size up to the current one costs O(log n) hashes: about 2n hashes
//! of memory (64 MB for a million leaves).

use sha2::{Digest as _, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The hash of a leaf's bytes.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new().chain_update([0u8]).chain_update(leaf).finalize().into()
}

/// The hash of an inner node from its children's.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([1u8]).chain_update(left).chain_update(right).finalize().into()
}

/// The hash of the empty tree.
pub fn empty_hash() -> Hash {
    Sha256::new().finalize().into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree of leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// `levels[l][i]` is the hash of the perfect subtree of leaves `[i·2^l, (i+1)·2^l)`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of these leaf hashes, in order.
    pub fn from_leaf_hashes(hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for hash in hashes {
            tree.push_hash(hash);
        }
        tree
    }

    /// How many leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf (its bytes); returns its index.
    pub fn push(&mut self, leaf: &[u8]) -> u64 {
        self.push_hash(leaf_hash(leaf))
    }

    /// Appends a leaf by its leaf hash; returns its index.
    pub fn push_hash(&mut self, hash: Hash) -> u64 {
        let index = self.size();
        let mut level = 0;
        let mut current = hash;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(current);
            let len = self.levels[level].len();
            // A right child completes its parent.
            if len % 2 == 1 {
                break;
            }
            current = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            level += 1;
        }
        index
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(usize::try_from(index).ok()?).copied()
    }

    /// The tree head of the first `size` leaves (RFC 9162's MTH), if the tree has that many.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        (size <= self.size()).then(|| self.subtree(0, size))
    }

    /// The current tree head.
    pub fn root(&self) -> Hash {
        self.subtree(0, self.size())
    }

    /// MTH of leaves `[start, end)`, where `start` is a multiple of the largest power of two not
    /// above `end - start` (true of every range RFC 9162's recursion visits).
    pub(crate) fn subtree(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        match n {
            0 => empty_hash(),
            _ if n.is_power_of_two() && start.is_multiple_of(n) => {
                let level = n.trailing_zeros() as usize;
                self.levels[level][(start >> level) as usize]
            }
            _ => {
                let k = split(n);
                node_hash(&self.subtree(start, start + k), &self.subtree(start + k, end))
            }
        }
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162,
    /// 2.1.3.1): the sibling hashes from the leaf up.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Some(proof)
    }

    /// PATH(m, D[start:end]), appended bottom-up.
    fn path(&self, m: u64, start: u64, end: u64, proof: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, proof);
            proof.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, proof);
            proof.push(self.subtree(start, start + k));
        }
    }

    /// The consistency proof between the trees of the first `old` and the first `new` leaves
    /// (RFC 9162, 2.1.4.1); empty when `old` is 0 or equals `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old > new || new > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Some(proof)
    }

    /// SUBPROOF(m, D[start:end], b).
    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, proof: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                proof.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, proof);
            proof.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, proof);
            proof.push(self.subtree(start, start + k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of the reference implementation's test data (certificate-transparency), whose
    /// tree heads are published with it.
    fn reference_leaves() -> Vec<Vec<u8>> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|h| hex::decode(h).unwrap())
            .collect()
    }

    #[test]
    fn tree_heads_match_the_reference_implementations() {
        let mut tree = MerkleTree::new();
        assert_eq!(
            hex::encode(tree.root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for leaf in reference_leaves() {
            tree.push(&leaf);
        }
        assert_eq!(
            hex::encode(tree.root_at(1).unwrap()),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex::encode(tree.root()),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    #[test]
    fn a_tree_rebuilt_from_its_leaf_hashes_has_the_same_heads() {
        let mut tree = MerkleTree::new();
        for i in 0..37u32 {
            tree.push(&i.to_le_bytes());
        }
        let rebuilt = MerkleTree::from_leaf_hashes((0..37).map(|i| tree.leaf(i).unwrap()));
        for size in 0..=37 {
            assert_eq!(tree.root_at(size), rebuilt.root_at(size));
        }
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        assert_eq!([2, 3, 4, 5, 8, 9, 1 << 20].map(split), [1, 2, 2, 4, 4, 8, 1 << 19]);
    }
}
