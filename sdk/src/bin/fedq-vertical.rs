//! `fedq-vertical`: a statistic over vertically partitioned data. Organization A holds one
//! column of the patients (age, say), B another (diagnosis and BMI) for the same pseudonymous
//! ids; the researcher learns how many patients satisfy both A's and B's condition and the sum
//! of B's value over them (so their mean), and nothing per patient. A third organization C
//! deals correlated randomness and learns nothing but the number of patients.
//!
//! The protocol is the commodity-server scalar product (Du and Atallah), in the ring of
//! integers mod 2^64, once for the count (x·b) and once for the sum (x·(b∘v)), where x_i is 1 if
//! A's condition holds for patient i, b_i likewise at B, and v_i is B's value:
//! C sends (Ra, ra) to A and (Rb, rb) to B, random with ra + rb = Ra·Rb; A sends â = x + Ra to B;
//! B sends b̂ = y + Rb to A and u = â·y + rb − V2 for a random V2; A computes
//! V1 = u − Ra·b̂ + ra = x·y − V2. A posts V1, B posts V2: each share alone is uniformly
//! random; the researcher adds them. Documented in `docs/algorithms.md`.
//!
//! Input (the same JSON for all three; each takes its part):
//! `{"a": {"data": "ages", "column": "age", "greater_than": 65},
//!   "b": {"data": "diagnoses", "column": "diagnosis", "equals": "E11", "value": "bmi"}}`.
//! Each data source is a CSV with an `id` column; rows are aligned by sorting on it, and A and
//! B must hold the same ids (checked by count and by a digest of the sorted ids).
//!
//! Every message is taken from the organization whose role sends it (the dealer's randomness
//! from C, â from A, b̂ and u from B): a partner posing as the dealer would otherwise choose
//! (Ra, ra) and read A's condition bit for every patient out of â.

use fedq_sdk::{Failure, Node, random_u64s};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Input {
    a: SideA,
    b: SideB,
}

#[derive(Deserialize)]
struct SideA {
    data: String,
    column: String,
    greater_than: i64,
}

#[derive(Deserialize)]
struct SideB {
    data: String,
    column: String,
    equals: String,
    value: String,
}

/// The two scalar products: the count, then the sum.
const PRODUCTS: [&str; 2] = ["count", "sum"];

fn main() {
    if let Err(e) = run() {
        eprintln!("vertical: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Failure> {
    let node = Node::from_env()?;
    let input: Input = serde_json::from_slice(&node.input()?).map_err(|e| Failure(format!("input: {e}")))?;
    let job = node.job()?;
    let orgs = &job.organizations;
    if orgs.len() != 3 {
        return Err(Failure("the task lists A (first column), B (second column) and C (dealer)".into()));
    }
    let me =
        orgs.iter().position(|o| *o == job.organization).ok_or_else(|| Failure("not in the task".into()))?;
    let (a, b, c) = (&orgs[0], &orgs[1], &orgs[2]);
    match me {
        0 => {
            let rows = read_rows(&input.a.data, &input.a.column)?;
            let x: Vec<u64> = rows
                .iter()
                .map(|(_, v)| v.parse::<i64>().map(|age| u64::from(age > input.a.greater_than)))
                .collect::<Result<_, _>>()
                .map_err(|e| Failure(format!("column {}: {e}", input.a.column)))?;
            let ids = id_digest(&rows);
            let header = [x.len() as u64, ids];
            node.send(b, "vertical/ids", &encode(&header))?;
            node.send(c, "vertical/ids", &encode(&header[..1]))?;
            let mut shares = Vec::new();
            for k in PRODUCTS {
                let dealt = decode(&node.receive_one(c, &format!("vertical/dealer-a-{k}"))?.body)?;
                let (ra, r_a) = (dealt[0], &dealt[1..]);
                check_len(r_a, x.len())?;
                let a_hat: Vec<u64> = x.iter().zip(r_a).map(|(x, r)| x.wrapping_add(*r)).collect();
                node.send(b, &format!("vertical/a-hat-{k}"), &encode(&a_hat))?;
                let b_hat = decode(&node.receive_one(b, &format!("vertical/b-hat-{k}"))?.body)?;
                check_len(&b_hat, x.len())?;
                let u = decode(&node.receive_one(b, &format!("vertical/u-{k}"))?.body)?;
                let v1 = u[0].wrapping_sub(dot(r_a, &b_hat)).wrapping_add(ra);
                shares.push(v1);
            }
            node.post_result(
                json!({"count_share": shares[0], "sum_share": shares[1]}).to_string().as_bytes(),
            )?;
        }
        1 => {
            let rows = read_rows(&input.b.data, &input.b.column)?;
            let values = read_rows(&input.b.data, &input.b.value)?;
            let header = decode(&node.receive_one(a, "vertical/ids")?.body)?;
            if header.first() != Some(&(rows.len() as u64)) || header.get(1) != Some(&id_digest(&rows)) {
                return Err(Failure("A and B do not hold the same patient ids".into()));
            }
            let selected: Vec<u64> = rows.iter().map(|(_, d)| u64::from(*d == input.b.equals)).collect();
            let weighted: Vec<u64> = selected
                .iter()
                .zip(&values)
                .map(|(s, (_, v))| v.parse::<u64>().map(|v| s * v))
                .collect::<Result<_, _>>()
                .map_err(|e| Failure(format!("column {}: {e}", input.b.value)))?;
            let mut shares = Vec::new();
            for (k, y) in PRODUCTS.iter().zip([&selected, &weighted]) {
                let dealt = decode(&node.receive_one(c, &format!("vertical/dealer-b-{k}"))?.body)?;
                let (rb, r_b) = (dealt[0], &dealt[1..]);
                check_len(r_b, y.len())?;
                let b_hat: Vec<u64> = y.iter().zip(r_b).map(|(y, r)| y.wrapping_add(*r)).collect();
                node.send(a, &format!("vertical/b-hat-{k}"), &encode(&b_hat))?;
                let a_hat = decode(&node.receive_one(a, &format!("vertical/a-hat-{k}"))?.body)?;
                check_len(&a_hat, y.len())?;
                let v2 = random_u64s(1)?[0];
                let u = dot(&a_hat, y).wrapping_add(rb).wrapping_sub(v2);
                node.send(a, &format!("vertical/u-{k}"), &encode(&[u]))?;
                shares.push(v2);
            }
            node.post_result(
                json!({"count_share": shares[0], "sum_share": shares[1]}).to_string().as_bytes(),
            )?;
        }
        _ => {
            let m = decode(&node.receive_one(a, "vertical/ids")?.body)?[0] as usize;
            for k in PRODUCTS {
                let r_a = random_u64s(m)?;
                let r_b = random_u64s(m)?;
                let ra = random_u64s(1)?[0];
                let rb = dot(&r_a, &r_b).wrapping_sub(ra);
                node.send(a, &format!("vertical/dealer-a-{k}"), &encode(&[&[ra][..], &r_a].concat()))?;
                node.send(b, &format!("vertical/dealer-b-{k}"), &encode(&[&[rb][..], &r_b].concat()))?;
            }
            node.post_result(json!({"dealt": m}).to_string().as_bytes())?;
        }
    }
    Ok(())
}

/// (id, value of `column`) for every row of the CSV data source, sorted by id.
fn read_rows(data: &str, column: &str) -> Result<Vec<(String, String)>, Failure> {
    let path = Node::data(data);
    let text = std::fs::read_to_string(&path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').map(str::trim).collect();
    let find = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| Failure(format!("no column {name:?}")))
    };
    let (id, col) = (find("id")?, find(column)?);
    let mut rows: Vec<(String, String)> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split(',').map(str::trim).collect();
            (cells.get(id).unwrap_or(&"").to_string(), cells.get(col).unwrap_or(&"").to_string())
        })
        .collect();
    rows.sort();
    Ok(rows)
}

/// A digest of the sorted ids, so that A and B can tell they hold the same patients without
/// sending the ids themselves: 64-bit FNV-1a over each id's UTF-8 bytes followed by a newline.
/// A fixed, written-down function (not `DefaultHasher`, whose algorithm Rust may change), so that
/// images built apart, and the Python implementation, agree. It detects mistakes, not a
/// dishonest party.
fn id_digest(rows: &[(String, String)]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (id, _) in rows {
        for byte in id.bytes().chain([b'\n']) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
    hash
}

fn dot(a: &[u64], b: &[u64]) -> u64 {
    a.iter().zip(b).fold(0u64, |acc, (x, y)| acc.wrapping_add(x.wrapping_mul(*y)))
}

fn encode(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Result<Vec<u64>, Failure> {
    if !bytes.len().is_multiple_of(8) || bytes.is_empty() {
        return Err(Failure(format!("a message of {} bytes is not a vector of u64", bytes.len())));
    }
    Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

fn check_len(v: &[u64], m: usize) -> Result<(), Failure> {
    if v.len() == m { Ok(()) } else { Err(Failure(format!("expected {m} values, got {}", v.len()))) }
}

#[cfg(test)]
mod tests {
    /// The digest is written down (docs/algorithms.md) so that every implementation agrees: the
    /// Python one checks the same vector (python/fedq-algorithm/tests/test_algorithm.py).
    #[test]
    fn the_id_digest_is_fnv1a_of_each_id_and_a_newline() {
        let rows = [("pt-0001".to_owned(), "70".to_owned()), ("pt-0002".to_owned(), "80".to_owned())];
        assert_eq!(super::id_digest(&rows), 0xf6ed436d639a609a);
    }
}
