"""The algorithm package against the mock federation's endpoint (real HTTP, the Node class as
containers use it), and its parts alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedq_algorithm import Node, NodeError, mock
from fedq_algorithm.data import count_rows, read_csv
from fedq_algorithm.secure_sum import decode, encode
from fedq_algorithm.secure_sum import run as secure_sum


def registry(tmp_path: Path, name: str, rows: int) -> Path:
    """A data directory with a `patients` CSV of `rows` rows, every third one E11."""
    folder = tmp_path / name
    folder.mkdir()
    lines = ["id,age,diagnosis"] + [f"p{i:05},{20 + i % 70},{'E11' if i % 3 == 0 else 'I10'}" for i in range(rows)]
    (folder / "patients").write_text("\n".join(lines) + "\n")
    return folder


def test_secure_sum_gives_the_total_of_three_registries(tmp_path):
    orgs = {"A": registry(tmp_path, "a", 120), "B": registry(tmp_path, "b", 45), "C": registry(tmp_path, "c", 7)}
    results = mock.run(secure_sum, orgs, {"data": "patients"})
    assert results["A"].status == "completed", results["A"].reason
    assert results["A"].json() == {"N": 172, "organizations": 3}
    assert results["B"].json() == {"contributed": True}


def test_secure_sum_with_a_filter_shares_the_total(tmp_path):
    orgs = {"A": registry(tmp_path, "a", 30), "B": registry(tmp_path, "b", 31), "C": registry(tmp_path, "c", 32)}
    spec = {"data": "patients", "where": {"column": "diagnosis", "equals": "E11"}, "share": True}
    results = mock.run(secure_sum, orgs, spec)
    expected = 10 + 11 + 11
    assert results["A"].json()["N"] == expected
    assert results["B"].json() == {"N": expected}
    assert results["C"].json() == {"N": expected}


def test_a_missing_data_source_fails_the_job_with_the_reason(tmp_path):
    orgs = {"A": registry(tmp_path, "a", 3), "B": registry(tmp_path, "b", 3)}
    results = mock.run(secure_sum, orgs, {"data": "nothing-here"}, timeout=10)
    failed = [r for r in results.values() if r.status == "failed"]
    assert failed and any("nothing-here" in (r.reason or "") for r in failed)


def test_a_finisher_of_another_image_takes_part(tmp_path):
    seen = []

    def finisher(node: Node) -> None:
        seen.append(node.job().image)
        secure_sum(node)

    orgs = {"A": registry(tmp_path, "a", 5), "B": registry(tmp_path, "b", 6)}
    results = mock.run(secure_sum, orgs, {"finisher_image": "other"}, images={"other": finisher})
    assert results["A"].json()["N"] == 11
    assert seen == ["other"]


def test_the_node_refuses_a_wrong_token_with_a_typed_error(tmp_path):
    with mock.MockFederation({"A": registry(tmp_path, "a", 1)}) as federation:
        node = Node(federation.endpoint, "not-a-token")
        with pytest.raises(NodeError) as refused:
            node.job()
    assert refused.value.status == 401
    assert refused.value.code == "unauthorized"


def test_an_unreachable_endpoint_is_a_typed_error():
    with pytest.raises(NodeError) as refused:
        Node("http://127.0.0.1:9", "t").job()
    assert refused.value.code == "unreachable"


def test_from_env_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("FEDQ_ENDPOINT", raising=False)
    with pytest.raises(NodeError, match="FEDQ_ENDPOINT"):
        Node.from_env()


def test_messages_are_taken_by_topic_and_others_kept(tmp_path):
    def algorithm(node: Node) -> None:
        job = node.job()
        if job.position == 0:
            node.send(job.organizations[1], "second", b"2")
            node.send(job.organizations[1], "first", b"1")
            node.post_json("sent")
        else:
            first = node.receive_one("first", sender=job.organizations[0]).body
            second = node.receive_one("second", sender=job.organizations[0]).body
            node.post_result(first + second)

    orgs = {"A": registry(tmp_path, "a", 1), "B": registry(tmp_path, "b", 1)}
    results = mock.run(algorithm, orgs, b"")
    assert results["B"].output == b"12"


def test_a_ring_member_takes_the_running_sum_only_from_the_organization_before_it(tmp_path):
    """C, after B in the ring, sends B a first value of 0 before A's arrives; B must not take
    it (it would hand C its own count), so the total stays right and C learns nothing."""
    import threading

    from fedq_algorithm import secure_sum as ring

    forged = threading.Event()

    def ring_with_a_forger(node: Node) -> None:
        job = node.job()
        if job.organization == "C" and (node.input_json() or {}).get("role") != "finish":
            node.send("B", "secure-sum/1", ring.encode(0))
            forged.set()
        elif job.organization == "A" and (node.input_json() or {}).get("role") != "finish":
            forged.wait(30)
        ring.run(node)

    orgs = {"A": registry(tmp_path, "a", 3), "B": registry(tmp_path, "b", 5), "C": registry(tmp_path, "c", 7)}
    results = mock.run(ring_with_a_forger, orgs, {"data": "patients", "share": True})
    assert forged.is_set()
    assert results["A"].json()["N"] == 15
    assert results["B"].json()["N"] == 15


def test_values_travel_as_eight_little_endian_bytes():
    assert encode(1) == b"\x01" + b"\x00" * 7
    assert encode(-1) == b"\xff" * 8
    assert decode(encode(2**64 + 5)) == 5
    with pytest.raises(ValueError):
        decode(b"\x00" * 7)


def test_csv_rows_and_counts(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id, diagnosis\n1, E11\n2,I10\n\n3,E11\n")
    assert read_csv(path) == [{"id": "1", "diagnosis": "E11"}, {"id": "2", "diagnosis": "I10"}, {"id": "3", "diagnosis": "E11"}]
    assert count_rows(path) == 3
    assert count_rows(path, "diagnosis", "E11") == 2
    with pytest.raises(KeyError):
        count_rows(path, "age", "1")


def test_input_json_refuses_what_is_not_json(tmp_path):
    got = []

    def algorithm(node: Node) -> None:
        try:
            node.input_json()
        except NodeError as e:
            got.append(e.code)
        node.post_json(json.dumps("ok"))

    mock.run(algorithm, {"A": registry(tmp_path, "a", 1)}, b"\xff not json")
    assert got == ["invalid_input"]


def test_the_vertical_analysis_gives_the_count_and_mean_of_the_joined_columns(tmp_path):
    from fedq_algorithm.vertical import combine, id_digest
    from fedq_algorithm.vertical import run as vertical

    patients = [(f"pt-{i:04}", 20 + i * 37 % 75, "E11" if i % 4 == 0 else "I10", 18 + i * 13 % 25) for i in range(200)]
    dirs = {name: tmp_path / name for name in ("A", "B", "C")}
    for d in dirs.values():
        d.mkdir()
    (dirs["A"] / "ages").write_text("id,age\n" + "".join(f"{p[0]},{p[1]}\n" for p in patients))
    (dirs["B"] / "diagnoses").write_text(
        "id,diagnosis,bmi\n" + "".join(f"{p[0]},{p[2]},{p[3]}\n" for p in reversed(patients))
    )
    spec = {
        "a": {"data": "ages", "column": "age", "greater_than": 65},
        "b": {"data": "diagnoses", "column": "diagnosis", "equals": "E11", "value": "bmi"},
    }
    results = mock.run(vertical, dirs, spec)
    chosen = [p for p in patients if p[1] > 65 and p[2] == "E11"]
    answer = combine(results["A"].json(), results["B"].json())
    assert answer["count"] == len(chosen) and answer["sum"] == sum(p[3] for p in chosen)
    assert results["A"].json()["count_share"] != len(chosen), "a share alone is not the answer"
    assert results["C"].json() == {"dealt": 200}
    # The digest is the Rust one's (the same vector is checked in sdk/src/bin/fedq-vertical.rs).
    assert id_digest([("pt-0001", "70"), ("pt-0002", "80")]) == 0xf6ed436d639a609a



def test_secure_aggregation_gives_the_aggregator_the_sum_of_reals_and_counts(tmp_path):
    def algorithm(node):
        job = node.job()
        mine = {"A": [1.25, -3.5], "B": [2.5, 0.125], "C": [-0.75, 10.0]}[job.organization]
        first = job.organizations[0]
        node.contribute("means", mine, participants=job.organizations, aggregator=first, frac_bits=32)
        node.contribute("rows", [len(job.organization) * 100], participants=job.organizations, aggregator=first)
        if job.organization == first:
            node.post_json({"sum": node.secure_sum("means", participants=job.organizations, frac_bits=32),
                            "rows": node.secure_sum("rows", participants=job.organizations)})
        else:
            node.post_json({})

    results = mock.run(algorithm, {"A": tmp_path, "B": tmp_path, "C": tmp_path}, {})
    assert {o: r.status for o, r in results.items()} == dict.fromkeys("ABC", "completed")
    assert results["A"].json() == {"sum": [3.0, 6.625], "rows": [300]}


def test_a_round_that_misses_a_participant_fails_with_its_name(tmp_path):
    def algorithm(node):
        job = node.job()
        if job.organization == "C":
            return node.post_json({})
        try:
            node.contribute("r", [1], participants=job.organizations, aggregator="A", timeout=1)
        except NodeError as e:
            node.post_json({"code": e.code, "message": e.message})

    results = mock.run(algorithm, {"A": tmp_path, "B": tmp_path, "C": tmp_path}, {})
    said = results["A"].json()
    assert said["code"] == "round_incomplete" and "C" in said["message"], said


def test_fixed_point_values_round_trip_and_overflow_is_refused():
    from fedq_algorithm import fixed

    encoded = [fixed.encode([x], 20, 3)[0] for x in (1.5, -2.25, -2.5e-7)]
    assert fixed.decode(encoded, 20) == [1.5, -2.25, 0.0]
    assert fixed.encode([-2.5], 0, 3) == [(1 << 64) - 3], "half away from zero, as in Rust"
    assert fixed.decode([(1 << 64) - 7], 0) == [-7]
    with pytest.raises(OverflowError):
        fixed.encode([2.0**40], 22, 3)
    assert fixed.encode([2**40], 20, 3) == [2**60]
    with pytest.raises(OverflowError):
        fixed.encode([float("nan")], 0, 3)
