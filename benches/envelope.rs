//! Seal and open of fedq envelopes beside the bare `hpke` single-shot calls of the same sizes.
//!
//! Rows, for 256 B, 64 KiB and 1 MiB payloads:
//! - `hpke_base`: `hpke::single_shot_seal`/`open`, Base mode; the bare primitive, no sender
//!   authentication.
//! - `hpke_auth`: the same in Auth mode; the cheapest sender authentication HPKE offers (and the
//!   one fedq does not use, see docs/protocol.md).
//! - `hpke_base_ed25519`: Base mode plus an Ed25519 signature over the BLAKE3 hash of the output, done
//!   by hand; the cryptographic floor of fedq's construction.
//! - `envelope`: `fedq::envelope::seal`/`open`, with header encoding, every check and a replay
//!   guard.
//!
//! `scripts/bench` runs this and writes the table into docs/benchmarks.md.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use fedq::envelope::{self, MemoryReplayGuard, OpenPolicy, Route, SealOptions};
use fedq::ids::{CollaborationId, OrgId, RunId, TaskId};
use fedq::keys::{Identity, KemAlg, Keyring, OrgKey};
use fedq::protocol::Kind;
use fedq::time::Timestamp;
use hpke::{Kem as _, OpModeR, OpModeS};

type Aead = hpke::aead::ChaCha20Poly1305;
type Kdf = hpke::kdf::HkdfSha256;

const SIZES: [(usize, &str); 3] = [(256, "256B"), (64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];
const INFO: &[u8] = b"fedq envelope v1";
const AAD: &[u8] = &[0u8; 300]; // about the size of a real header block

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn route() -> Route {
    Route {
        kind: Kind::RunMessage,
        collaboration: CollaborationId::new(),
        task: TaskId::new(),
        run: RunId::new(),
        status: None,
    }
}

fn seal(c: &mut Criterion) {
    let (sk_s, pk_s) = KemAlg::gen_keypair();
    let (_, pk_r) = KemAlg::gen_keypair();
    let signer = SigningKey::from_bytes(&[9; 32]);
    let a = Identity::new(OrgId::new(), OrgKey::generate());
    let b_key = OrgKey::generate();
    let b_org = OrgId::new();
    let route = route();

    let mut group = c.benchmark_group("seal");
    for (len, name) in SIZES {
        let msg = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("hpke_base", name), |bench| {
            bench.iter(|| {
                hpke::single_shot_seal::<Aead, Kdf, KemAlg>(&OpModeS::Base, &pk_r, INFO, black_box(&msg), AAD)
                    .unwrap()
            })
        });
        let auth = OpModeS::Auth((sk_s.clone(), pk_s.clone()));
        group.bench_function(BenchmarkId::new("hpke_auth", name), |bench| {
            bench.iter(|| {
                hpke::single_shot_seal::<Aead, Kdf, KemAlg>(&auth, &pk_r, INFO, black_box(&msg), AAD).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("hpke_base_ed25519", name), |bench| {
            bench.iter(|| {
                let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, KemAlg>(
                    &OpModeS::Base,
                    &pk_r,
                    INFO,
                    black_box(&msg),
                    AAD,
                )
                .unwrap();
                let digest = blake3::Hasher::new().update(AAD).update(&ct).finalize();
                (enc, ct, signer.sign(digest.as_bytes()))
            })
        });
        group.bench_function(BenchmarkId::new("envelope", name), |bench| {
            bench.iter(|| {
                envelope::seal(
                    &a,
                    b_org,
                    b_key.public(),
                    &route,
                    black_box(&msg),
                    &SealOptions::default(),
                    Timestamp::now(),
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let (sk_s, pk_s) = KemAlg::gen_keypair();
    let (sk_r, pk_r) = KemAlg::gen_keypair();
    let signer = SigningKey::from_bytes(&[9; 32]);
    let verifier = signer.verifying_key();
    let a = Identity::new(OrgId::new(), OrgKey::generate());
    let b = Identity::new(OrgId::new(), OrgKey::generate());
    let mut keyring = Keyring::new();
    keyring.insert(a.org(), a.current().public().clone());
    let route = route();

    let mut group = c.benchmark_group("open");
    for (len, name) in SIZES {
        let msg = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        let (enc, ct) =
            hpke::single_shot_seal::<Aead, Kdf, KemAlg>(&OpModeS::Base, &pk_r, INFO, &msg, AAD).unwrap();
        group.bench_function(BenchmarkId::new("hpke_base", name), |bench| {
            bench.iter(|| {
                hpke::single_shot_open::<Aead, Kdf, KemAlg>(
                    &OpModeR::Base,
                    &sk_r,
                    &enc,
                    INFO,
                    black_box(&ct),
                    AAD,
                )
                .unwrap()
            })
        });
        let (auth_enc, auth_ct) = hpke::single_shot_seal::<Aead, Kdf, KemAlg>(
            &OpModeS::Auth((sk_s.clone(), pk_s.clone())),
            &pk_r,
            INFO,
            &msg,
            AAD,
        )
        .unwrap();
        let auth = OpModeR::Auth(pk_s.clone());
        group.bench_function(BenchmarkId::new("hpke_auth", name), |bench| {
            bench.iter(|| {
                hpke::single_shot_open::<Aead, Kdf, KemAlg>(
                    &auth,
                    &sk_r,
                    &auth_enc,
                    INFO,
                    black_box(&auth_ct),
                    AAD,
                )
                .unwrap()
            })
        });
        let digest = blake3::Hasher::new().update(AAD).update(&ct).finalize();
        let signature = signer.sign(digest.as_bytes());
        group.bench_function(BenchmarkId::new("hpke_base_ed25519", name), |bench| {
            bench.iter(|| {
                let digest = blake3::Hasher::new().update(AAD).update(black_box(&ct)).finalize();
                verifier.verify_strict(digest.as_bytes(), &signature).unwrap();
                hpke::single_shot_open::<Aead, Kdf, KemAlg>(&OpModeR::Base, &sk_r, &enc, INFO, &ct, AAD)
                    .unwrap()
            })
        });
        let sealed = envelope::seal(
            &a,
            b.org(),
            b.current().public(),
            &route,
            &msg,
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap();
        let policy = OpenPolicy::default();
        group.bench_function(BenchmarkId::new("envelope", name), |bench| {
            bench.iter_batched_ref(
                MemoryReplayGuard::new,
                // The opened payload is dropped inside the timed routine, as `iter` does for the
                // bare rows; keeping a batch of 1 MiB outputs alive would time page faults.
                |guard| {
                    drop(
                        envelope::open(
                            black_box(&sealed.bytes),
                            &b,
                            &keyring,
                            guard,
                            &policy,
                            Timestamp::now(),
                        )
                        .unwrap(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group!(name = benches; config = config(); targets = seal, open);
criterion_main!(benches);
