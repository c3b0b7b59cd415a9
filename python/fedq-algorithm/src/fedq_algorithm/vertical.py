"""A statistic over vertically partitioned data, in Python: the same protocol as the Rust
``fedq-vertical`` (``docs/algorithms.md``), so that its results and messages are the same.

A holds one column of the patients (age, say), B others (diagnosis and BMI) under the same
pseudonymous ids; C deals correlated randomness. The researcher learns how many patients satisfy
A's and B's conditions and the sum of B's value over them, as two additive shares (A's and B's
results) that only together give the answer; nobody sees another's columns.

Input (the same JSON for all three): ``{"a": {"data": "ages", "column": "age", "greater_than": 65},
"b": {"data": "diagnoses", "column": "diagnosis", "equals": "E11", "value": "bmi"}}``. The task's
organizations are A, B and C in that order. Each data source is a CSV with an ``id`` column.
"""

from __future__ import annotations

import secrets

from fedq_algorithm.data import read_csv
from fedq_algorithm.node import Node, run_in_container

MASK = (1 << 64) - 1
#: The two scalar products: the count, then the sum.
PRODUCTS = ("count", "sum")
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def encode(values: list[int]) -> bytes:
    """A vector mod 2^64 as it travels: 8 bytes per value, little-endian."""
    return b"".join((v & MASK).to_bytes(8, "little") for v in values)


def decode(data: bytes) -> list[int]:
    if not data or len(data) % 8:
        raise ValueError(f"a message of {len(data)} bytes is not a vector of u64")
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)]


def id_digest(rows: list[tuple[str, str]]) -> int:
    """64-bit FNV-1a over each sorted id's UTF-8 bytes followed by a newline (as the Rust one)."""
    h = FNV_OFFSET
    for row_id, _ in rows:
        for byte in row_id.encode("utf-8") + b"\n":
            h = ((h ^ byte) * FNV_PRIME) & MASK
    return h


def dot(a: list[int], b: list[int]) -> int:
    return sum(x * y for x, y in zip(a, b)) & MASK


def read_rows(node: Node, data: str, column: str) -> list[tuple[str, str]]:
    """(id, value of ``column``) for every row of a data source, sorted by id."""
    rows = read_csv(node.data(data))
    if rows and ("id" not in rows[0] or column not in rows[0]):
        raise KeyError(f"data source {data!r} needs columns 'id' and {column!r}")
    return sorted((row["id"], row[column]) for row in rows)


def _check(values: list[int], m: int) -> list[int]:
    if len(values) != m:
        raise ValueError(f"expected {m} values, got {len(values)}")
    return values


def run(node: Node) -> None:
    spec = node.input_json()
    job = node.job()
    orgs = job.organizations
    if len(orgs) != 3:
        raise ValueError("the task lists A (first column), B (second column) and C (dealer)")
    a, b, c = orgs
    me = job.position
    if me == 0:
        side = spec["a"]
        rows = read_rows(node, side["data"], side["column"])
        x = [int(int(v) > side["greater_than"]) for _, v in rows]
        node.send(b, "vertical/ids", encode([len(x), id_digest(rows)]))
        node.send(c, "vertical/ids", encode([len(x)]))
        shares = []
        for k in PRODUCTS:
            dealt = decode(node.receive_one(f"vertical/dealer-a-{k}", sender=c).body)
            ra, r_a = dealt[0], _check(dealt[1:], len(x))
            node.send(b, f"vertical/a-hat-{k}", encode([xi + ri for xi, ri in zip(x, r_a)]))
            b_hat = _check(decode(node.receive_one(f"vertical/b-hat-{k}", sender=b).body), len(x))
            u = decode(node.receive_one(f"vertical/u-{k}", sender=b).body)[0]
            shares.append((u - dot(r_a, b_hat) + ra) & MASK)
        node.post_json({"count_share": shares[0], "sum_share": shares[1]})
    elif me == 1:
        side = spec["b"]
        rows = read_rows(node, side["data"], side["column"])
        values = read_rows(node, side["data"], side["value"])
        header = decode(node.receive_one("vertical/ids", sender=a).body)
        if header[:2] != [len(rows), id_digest(rows)]:
            raise ValueError("A and B do not hold the same patient ids")
        selected = [int(d == side["equals"]) for _, d in rows]
        weighted = [s * int(v) for s, (_, v) in zip(selected, values)]
        shares = []
        for k, y in zip(PRODUCTS, (selected, weighted)):
            dealt = decode(node.receive_one(f"vertical/dealer-b-{k}", sender=c).body)
            rb, r_b = dealt[0], _check(dealt[1:], len(y))
            node.send(a, f"vertical/b-hat-{k}", encode([yi + ri for yi, ri in zip(y, r_b)]))
            a_hat = _check(decode(node.receive_one(f"vertical/a-hat-{k}", sender=a).body), len(y))
            v2 = secrets.randbits(64)
            node.send(a, f"vertical/u-{k}", encode([(dot(a_hat, y) + rb - v2) & MASK]))
            shares.append(v2)
        node.post_json({"count_share": shares[0], "sum_share": shares[1]})
    else:
        m = decode(node.receive_one("vertical/ids", sender=a).body)[0]
        for k in PRODUCTS:
            r_a = [secrets.randbits(64) for _ in range(m)]
            r_b = [secrets.randbits(64) for _ in range(m)]
            ra = secrets.randbits(64)
            rb = (dot(r_a, r_b) - ra) & MASK
            node.send(a, f"vertical/dealer-a-{k}", encode([ra, *r_a]))
            node.send(b, f"vertical/dealer-b-{k}", encode([rb, *r_b]))
        node.post_json({"dealt": m})


def combine(share_a: dict, share_b: dict) -> dict:
    """What the researcher does with A's and B's results: the count, the sum and the mean."""
    count = (share_a["count_share"] + share_b["count_share"]) & MASK
    total = (share_a["sum_share"] + share_b["sum_share"]) & MASK
    return {"count": count, "sum": total, "mean": total / count if count else None}


def main() -> None:
    run_in_container(run, "vertical")


if __name__ == "__main__":
    main()
