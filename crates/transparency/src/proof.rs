//! Verifying the log's proofs, as RFC 9162 writes the algorithms (2.1.3.2 and 2.1.4.2): what a
//! node or an auditor runs on what the server hands out. A proof that does not check is refused
//! with the reason, never repaired.

use crate::tree::{Hash, node_hash};

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree, or the old size is above the new one.
    #[error("the sizes do not fit: {0}")]
    Sizes(String),
    /// The proof has too many or too few hashes for the sizes it claims.
    #[error("the proof has the wrong number of hashes for these sizes")]
    Length,
    /// The hashes do not lead to the tree head given.
    #[error("the proof does not lead to the tree head: the log is not what it claims to be")]
    Mismatch,
}

/// Checks that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves whose head is
/// `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Sizes(format!("leaf {index} in a tree of {size}")));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks that the tree of `old` leaves with head `old_root` is a prefix of the tree of `new`
/// leaves with head `new_root`: nothing the log showed before was changed or removed.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::Sizes(format!("old size {old} above new size {new}")));
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if old_root == new_root { Ok(()) } else { Err(ProofError::Mismatch) };
    }
    if old == 0 {
        // Every tree extends the empty one.
        return if proof.is_empty() { Ok(()) } else { Err(ProofError::Length) };
    }
    if proof.is_empty() {
        return Err(ProofError::Length);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{MerkleTree, leaf_hash};
    use proptest::prelude::*;

    fn tree(n: u64) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for i in 0..n {
            tree.push(&i.to_le_bytes());
        }
        tree
    }

    #[test]
    fn every_leaf_of_small_trees_proves_its_inclusion() {
        let t = tree(33);
        for size in 1..=33 {
            let root = t.root_at(size).unwrap();
            for index in 0..size {
                let proof = t.inclusion_proof(index, size).unwrap();
                assert_eq!(
                    verify_inclusion(&t.leaf(index).unwrap(), index, size, &proof, &root),
                    Ok(()),
                    "{index}/{size}"
                );
            }
        }
    }

    #[test]
    fn every_pair_of_small_trees_proves_consistency() {
        let t = tree(33);
        for new in 0..=33 {
            for old in 0..=new {
                let proof = t.consistency_proof(old, new).unwrap();
                let (a, b) = (t.root_at(old).unwrap(), t.root_at(new).unwrap());
                assert_eq!(verify_consistency(old, new, &proof, &a, &b), Ok(()), "{old}→{new}");
            }
        }
    }

    #[test]
    fn a_rewritten_history_fails_consistency() {
        let honest = tree(20);
        let mut rewritten = MerkleTree::new();
        for i in 0..20u64 {
            rewritten.push(&(if i == 7 { 1000 } else { i }).to_le_bytes());
        }
        // The log shows the old head, then a new one whose prefix differs at leaf 7.
        let proof = rewritten.consistency_proof(10, 20).unwrap();
        let err = verify_consistency(10, 20, &proof, &honest.root_at(10).unwrap(), &rewritten.root());
        assert_eq!(err, Err(ProofError::Mismatch));
    }

    #[test]
    fn a_leaf_left_out_fails_inclusion() {
        let t = tree(12);
        let absent = leaf_hash(b"never logged");
        let proof = t.inclusion_proof(5, 12).unwrap();
        assert_eq!(verify_inclusion(&absent, 5, 12, &proof, &t.root()), Err(ProofError::Mismatch));
    }

    proptest! {
        #[test]
        fn proofs_verify_and_any_change_is_refused(
            n in 1u64..300, pick in any::<u64>(), old_pick in any::<u64>(), flip in any::<(usize, u8)>()
        ) {
            let t = tree(n);
            let index = pick % n;
            let root = t.root();
            let proof = t.inclusion_proof(index, n).unwrap();
            let leaf = t.leaf(index).unwrap();
            prop_assert_eq!(verify_inclusion(&leaf, index, n, &proof, &root), Ok(()));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let (i, bit) = (flip.0 % bad.len(), 1u8 << (flip.1 % 8));
                bad[i][0] ^= bit;
                prop_assert!(verify_inclusion(&leaf, index, n, &bad, &root).is_err());
                prop_assert!(verify_inclusion(&leaf, index, n, &proof[..proof.len() - 1], &root).is_err());
            }

            let old = old_pick % (n + 1);
            let proof = t.consistency_proof(old, n).unwrap();
            let old_root = t.root_at(old).unwrap();
            prop_assert_eq!(verify_consistency(old, n, &proof, &old_root, &root), Ok(()));
            if old > 0 && old < n {
                let mut other = old_root;
                other[0] ^= 1;
                prop_assert_eq!(verify_consistency(old, n, &proof, &other, &root), Err(ProofError::Mismatch));
                let mut bad = proof.clone();
                let i = flip.0 % bad.len();
                bad[i][31] ^= 0x80;
                prop_assert!(verify_consistency(old, n, &bad, &old_root, &root).is_err());
            }
        }

        /// Garbage in: any proof, any sizes; an answer, never a panic.
        #[test]
        fn arbitrary_proofs_never_panic(
            index in any::<u64>(), size in any::<u64>(), old in any::<u64>(),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70)
        ) {
            let _ = verify_inclusion(&[0; 32], index, size, &proof, &[1; 32]);
            let _ = verify_consistency(old, size, &proof, &[0; 32], &[1; 32]);
        }
    }
}
