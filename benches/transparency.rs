//! The transparency log at 1,000,000 leaves: building the tree, the size of inclusion and
//! consistency proofs, and the time to verify each (what every node spends per check).
//!
//!     cargo bench --bench transparency

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use fedq::transparency::{MerkleTree, verify_consistency, verify_inclusion};

const LEAVES: u64 = 1_000_000;

fn transparency(c: &mut Criterion) {
    let started = Instant::now();
    let mut tree = MerkleTree::new();
    for i in 0..LEAVES {
        tree.push(&i.to_le_bytes());
    }
    let root = tree.root();
    eprintln!("built a tree of {LEAVES} leaves in {:.2?}", started.elapsed());

    let index = 123_457;
    let inclusion = tree.inclusion_proof(index, LEAVES).unwrap();
    let leaf = tree.leaf(index).unwrap();
    let old = 999_000;
    let consistency = tree.consistency_proof(old, LEAVES).unwrap();
    let old_root = tree.root_at(old).unwrap();
    eprintln!(
        "inclusion proof: {} hashes, {} bytes; consistency proof {old} → {LEAVES}: {} hashes, {} bytes",
        inclusion.len(),
        inclusion.len() * 32,
        consistency.len(),
        consistency.len() * 32
    );

    let mut group = c.benchmark_group("transparency_1m");
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(black_box(&leaf), index, LEAVES, black_box(&inclusion), &root).unwrap())
    });
    group.bench_function("verify_consistency", |b| {
        b.iter(|| verify_consistency(old, LEAVES, black_box(&consistency), &old_root, &root).unwrap())
    });
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| tree.inclusion_proof(black_box(index), LEAVES).unwrap())
    });
    group.finish();
}

criterion_group!(benches, transparency);
criterion_main!(benches);
