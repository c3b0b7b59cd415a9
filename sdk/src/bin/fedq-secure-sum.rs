//! `fedq-secure-sum`: the sum of one count per organization, such that no organization, and not
//! the server, learns another's count.
//!
//! The organizations form a ring in the order the researcher listed them. The first (A) draws R
//! uniformly from the integers mod 2^64, keeps it in the run volume, and sends x1 = R + c_A to the
//! second; each next one adds its count and passes the sum on; the last sends its sum back to A.
//! A second container at A, in the same run, reads R back from the run volume and computes
//! N = x_n - R. Every value that travels is uniformly distributed whatever the counts are, so
//! it tells its receiver nothing; the server sees only sealed envelopes. Sums wrap mod 2^64, so
//! the result is exact as long as the true total is below 2^64.
//!
//! Input (JSON): `{"data": "patients", "where": {"column": "diagnosis", "equals": "E11"},
//! "share": true}`; `data` names the node's data source (a CSV file with a header line),
//! `where` (optional) counts only matching rows, `share` sends N to every organization of the
//! ring as well. Output (JSON): `{"N": …, "organizations": n}` at A; at the others `{"N": …}` with
//! `share`, else `{"contributed": true}`.

use fedq_sdk::{Failure, Node, random_u64s};
use serde::Deserialize;
use serde_json::json;

const R_FILE: &str = "secure-sum-R";

#[derive(Deserialize)]
struct Input {
    /// The data source to count.
    #[serde(default = "default_data")]
    data: String,
    /// Count only rows where a column equals a value.
    #[serde(default, rename = "where")]
    filter: Option<Filter>,
    /// Tell every organization the total.
    #[serde(default)]
    share: bool,
    /// Set by A for its second container.
    #[serde(default)]
    role: Option<String>,
    /// The ring, for the second container.
    #[serde(default)]
    ring: Vec<String>,
}

#[derive(Deserialize)]
struct Filter {
    column: String,
    equals: String,
}

fn default_data() -> String {
    "patients".into()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("secure-sum: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Failure> {
    let node = Node::from_env()?;
    let input: Input = serde_json::from_slice(&node.input()?).map_err(|e| Failure(format!("input: {e}")))?;
    if input.role.as_deref() == Some("finish") {
        return finish(&node, &input);
    }
    let job = node.job()?;
    let ring = job.organizations.clone();
    let n = ring.len();
    if n < 2 {
        return Err(Failure("a ring needs at least two organizations".into()));
    }
    let me = ring
        .iter()
        .position(|o| *o == job.organization)
        .ok_or_else(|| Failure("this organization is not in the ring".into()))?;
    let count = count_rows(&input)?;
    let next = &ring[(me + 1) % n];

    if me == 0 {
        let r = random_u64s(1)?[0];
        std::fs::write(Node::run_dir().join(R_FILE), r.to_le_bytes())
            .map_err(|e| Failure(format!("run volume: {e}")))?;
        // Start the second container first, so its start overlaps the trip around the ring.
        let finisher = json!({"role": "finish", "ring": ring, "share": input.share});
        let subtask =
            node.create_subtask(&[job.organization.as_str()], None, finisher.to_string().as_bytes())?;
        let x1 = r.wrapping_add(count);
        node.send(next, "secure-sum/1", &x1.to_le_bytes())?;
        let results = node.wait_subtask(&subtask.task)?;
        let done = results.first().ok_or_else(|| Failure("the second container gave no result".into()))?;
        if done.status != "completed" {
            return Err(Failure(format!("the second container {}: {:?}", done.status, done.reason)));
        }
        let out: serde_json::Value =
            serde_json::from_slice(&done.output).map_err(|e| Failure(format!("second container: {e}")))?;
        node.post_result(json!({"N": out["N"], "organizations": n}).to_string().as_bytes())?;
    } else {
        // Only the organization before this one may hand it the running sum: any other member
        // could send a value it chose (0, say) and read this organization's count in the answer.
        let incoming = node.receive_one(&ring[me - 1], &format!("secure-sum/{me}"))?;
        let x = read_u64(&incoming.body)?;
        let sum = x.wrapping_add(count);
        node.send(next, &format!("secure-sum/{}", me + 1), &sum.to_le_bytes())?;
        let result = if input.share {
            let total = read_u64(&node.receive_one(&ring[0], "secure-sum/N")?.body)?;
            json!({"N": total})
        } else {
            json!({"contributed": true})
        };
        node.post_result(result.to_string().as_bytes())?;
    }
    Ok(())
}

/// A's second container: takes the sum back from the last organization and removes R.
fn finish(node: &Node, input: &Input) -> Result<(), Failure> {
    let n = input.ring.len();
    let last = input.ring.last().ok_or_else(|| Failure("the ring is empty".into()))?;
    let incoming = node.receive_one(last, &format!("secure-sum/{n}"))?;
    let x = read_u64(&incoming.body)?;
    let stored =
        std::fs::read(Node::run_dir().join(R_FILE)).map_err(|e| Failure(format!("run volume: {e}")))?;
    let r = read_u64(&stored)?;
    let total = x.wrapping_sub(r);
    if input.share {
        for org in &input.ring[1..] {
            node.send(org, "secure-sum/N", &total.to_le_bytes())?;
        }
    }
    node.post_result(json!({"N": total}).to_string().as_bytes())?;
    Ok(())
}

/// Rows of the CSV data source (after its header line), those matching the filter if any.
fn count_rows(input: &Input) -> Result<u64, Failure> {
    let path = Node::data(&input.data);
    let text = std::fs::read_to_string(&path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').map(str::trim).collect();
    let column = match &input.filter {
        Some(f) => Some((
            header
                .iter()
                .position(|h| *h == f.column)
                .ok_or_else(|| Failure(format!("no column {:?}", f.column)))?,
            f.equals.as_str(),
        )),
        None => None,
    };
    let count = lines
        .filter(|l| !l.trim().is_empty())
        .filter(|l| column.is_none_or(|(i, value)| l.split(',').nth(i).map(str::trim) == Some(value)))
        .count();
    Ok(count as u64)
}

fn read_u64(bytes: &[u8]) -> Result<u64, Failure> {
    let bytes: [u8; 8] =
        bytes.try_into().map_err(|_| Failure(format!("expected 8 bytes, got {}", bytes.len())))?;
    Ok(u64::from_le_bytes(bytes))
}
