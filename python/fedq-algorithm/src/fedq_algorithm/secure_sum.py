"""Secure Sum in Python: the sum of one count per organization, such that no organization, and
not the server, learns another's count (``docs/algorithms.md``).

The same protocol as the Rust ``fedq-secure-sum``, so that a ring may mix them: the
organizations form a ring in the order the researcher listed them; the first (A) draws R
uniformly from the integers mod 2^64, keeps it in the run volume (file ``secure-sum-R``, 8 bytes
little-endian) and sends x1 = R + c_A to the second on topic ``secure-sum/1``; the i-th adds its
count and sends on ``secure-sum/{i+1}``; the last sends its sum back to A, where a second
container (a subtask at A, input ``{"role": "finish", …}``) reads R back and computes
N = x_n - R. Every value is 8 bytes little-endian, and sums wrap mod 2^64.

Input (JSON): ``{"data": "patients", "where": {"column": …, "equals": …}, "share": false,
"finisher_image": null}``. ``finisher_image`` names the image of A's second
container (default: this one), for example the Rust ``fedq/secure-sum``.
"""

from __future__ import annotations

import json
import secrets

from fedq_algorithm.data import count_rows
from fedq_algorithm.node import Node, run_in_container

R_FILE = "secure-sum-R"
MASK = (1 << 64) - 1


def encode(value: int) -> bytes:
    """A value mod 2^64, as it travels: 8 bytes, little-endian."""
    return (value & MASK).to_bytes(8, "little")


def decode(data: bytes) -> int:
    """A travelling value back; anything but 8 bytes is refused."""
    if len(data) != 8:
        raise ValueError(f"expected 8 bytes, got {len(data)}")
    return int.from_bytes(data, "little")


def run(node: Node) -> None:
    """One container of Secure Sum: a ring member, or A's second container."""
    spec = node.input_json() or {}
    if spec.get("role") == "finish":
        finish(node, spec)
        return
    job = node.job()
    ring = job.organizations
    n = len(ring)
    if n < 2:
        raise ValueError("a ring needs at least two organizations")
    me = job.position
    count = _count(node, spec)
    following = ring[(me + 1) % n]

    if me == 0:
        r = secrets.randbits(64)
        (node.run_dir() / R_FILE).write_bytes(encode(r))
        # The second container starts first, so that its start overlaps the trip around the ring.
        finisher = {"role": "finish", "ring": ring, "share": bool(spec.get("share"))}
        subtask = node.create_subtask([job.organization], json.dumps(finisher).encode(), spec.get("finisher_image"))
        x1 = (r + count) & MASK
        node.send(following, "secure-sum/1", encode(x1))
        results = node.wait_subtask(subtask.task)
        if not results:
            raise RuntimeError("the second container gave no result")
        done = results[0]
        if done.status != "completed":
            raise RuntimeError(f"the second container {done.status}: {done.reason}")
        node.post_json({"N": done.json()["N"], "organizations": n})
    else:
        # Only the organization before this one may hand it the running sum: any other member
        # could send a value it chose (0, say) and read this organization's count in the answer.
        x = decode(node.receive_one(f"secure-sum/{me}", sender=ring[me - 1]).body)
        total = (x + count) & MASK
        node.send(following, f"secure-sum/{me + 1}", encode(total))
        if spec.get("share"):
            node.post_json({"N": decode(node.receive_one("secure-sum/N", sender=ring[0]).body)})
        else:
            node.post_json({"contributed": True})


def finish(node: Node, spec: dict) -> None:
    """A's second container: takes the sum back from the last organization and removes R."""
    ring = spec["ring"]
    x = decode(node.receive_one(f"secure-sum/{len(ring)}", sender=ring[-1]).body)
    r = decode((node.run_dir() / R_FILE).read_bytes())
    total = (x - r) & MASK
    if spec.get("share"):
        for org in ring[1:]:
            node.send(org, "secure-sum/N", encode(total))
    node.post_json({"N": total})


def _count(node: Node, spec: dict) -> int:
    where = spec.get("where")
    path = node.data(spec.get("data", "patients"))
    if where:
        return count_rows(path, where["column"], where["equals"])
    return count_rows(path)


def main() -> None:
    run_in_container(run, "secure-sum")


if __name__ == "__main__":
    main()
