"""The Python client against a real federation (see conftest.py)."""

import json
import os
import subprocess
import sys
import time

import pytest

import fedq

REGISTRIES = ["registry-0", "registry-1", "registry-2"]
SECURE_SUM = "fedq/secure-sum:0.1.0"
PROBE = "fedq/probe:0.1.0"


def _task_count(client: fedq.Client) -> int:
    return len(client.tasks(limit=500))


def test_secure_sum_by_names_with_a_dataframe(client, fed):
    assert "registries" in [c["name"] for c in client.collaborations()]
    assert client.me()["username"] == fed["user"]
    task = client.create_task("registries", SECURE_SUM, REGISTRIES, {"data": "patients", "share": True})
    assert [org for _, org in task.jobs] == [client.organization_id(n) for n in REGISTRIES]
    results = task.wait(timeout=180, progress=False)
    assert results.complete
    assert [r.organization for r in results] == REGISTRIES
    total = sum(fed["counts"])
    assert all(r.ok and r.json()["N"] == total for r in results), results
    frame = results.dataframe()
    assert list(frame["organization"]) == REGISTRIES
    assert list(frame["N"]) == [total] * 3
    assert task.status() == dict.fromkeys(REGISTRIES, "completed")
    assert task.id in [t["id"] for t in client.tasks()]


def test_the_command_line_opens_what_python_created(client, fed):
    task = client.create_task("registries", SECURE_SUM, REGISTRIES[:2], {"data": "patients"})
    # The saved session, the trusted keys and the task's jobs are where the command line looks.
    cli = subprocess.run(
        [fed["cli"], "result", task.id, "--key", fed["key"], "--json", "--timeout", "180"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert cli.returncode == 0, cli.stderr
    outputs = json.loads(cli.stdout)
    assert len(outputs) == 2
    module = subprocess.run(
        [sys.executable, "-m", "fedq", "result", task.id, "--key", fed["key"], "--json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert module.returncode == 0, module.stderr
    rows = json.loads(module.stdout)
    assert [r["organization"] for r in rows] == REGISTRIES[:2]
    assert all(r["status"] == "completed" for r in rows)


def test_kill_stops_a_running_task(client):
    task = client.create_task("registries", PROBE, REGISTRIES[:1], [{"op": "sleep", "ms": 120_000}])
    _until(lambda: task.status()["registry-0"] == "running")
    task.kill()
    _until(lambda: task.status()["registry-0"] == "killed")
    assert all(r.status == "killed" for r in task.results())


def _until(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


def test_a_wait_that_times_out_is_incomplete(client):
    task = client.create_task("registries", PROBE, REGISTRIES[:2], [{"op": "sleep", "ms": 120_000}])
    with pytest.raises(fedq.Incomplete) as raised:
        task.wait(timeout=1, progress=False)
    assert raised.value.exit_status == 3
    assert raised.value.code == "incomplete"
    assert len(raised.value.pending) == 2 and not raised.value.results.complete
    task.kill()


def test_a_wrong_key_is_refused_before_anything_is_sent(client, fed):
    before = _task_count(client)
    wrong = fedq.Client.login(fed["server"], fed["user"], fed["password"], key=fed["wrong_key"])
    with pytest.raises(fedq.WrongKey) as raised:
        wrong.create_task("registries", SECURE_SUM, REGISTRIES, {"data": "patients"})
    assert raised.value.code == "wrong_key"
    assert "is not the key the server publishes" in str(raised.value)
    assert "the server's directory was changed" in str(raised.value)
    assert _task_count(client) == before


def test_keys_not_yet_trusted_are_refused(client, fed):
    before = _task_count(client)
    fresh = fedq.Client.login(
        fed["server"], fed["user"], fed["password"], key=fed["key"], trust_store=fedq.IN_MEMORY
    )
    decided = fresh.trusted_keys("registries")
    assert decided["registry-0"] == fed["pins"]["registry-0"], "one's own key is trusted"
    assert isinstance(decided["registry-1"], fedq.UntrustedKey)
    assert decided["registry-1"].code == "key_unknown"
    # Organizations are named beside their ids; the suggested command keeps the id.
    assert "organization registry-1 (" in str(decided["registry-1"]), str(decided["registry-1"])
    with pytest.raises(fedq.UntrustedKey) as raised:
        fresh.create_task("registries", SECURE_SUM, REGISTRIES, {"data": "patients"})
    assert raised.value.code == "key_unknown"
    assert "fedq keys trust" in str(raised.value)
    assert "organization registry-" in str(raised.value), str(raised.value)
    assert _task_count(client) == before


def test_an_outsider_sees_nothing_and_cannot_run(client, fed):
    task = client.create_task("registries", SECURE_SUM, REGISTRIES[:1], {"data": "patients"})
    olga = fedq.Client.login(
        fed["server"], fed["outsider"], fed["password"], key=fed["outsider_key"], trust_store=fedq.IN_MEMORY
    )
    assert "registries" not in [c["name"] for c in olga.collaborations()]
    with pytest.raises(fedq.BadInput):
        olga.create_task("registries", SECURE_SUM, REGISTRIES, {"data": "patients"})
    # By id, the server itself refuses her the collaboration's keys.
    with pytest.raises(fedq.Refused) as raised:
        olga.create_task(task.collaboration, SECURE_SUM, [o for _, o in task.jobs], {"data": "patients"})
    assert raised.value.status in (403, 404)
    with pytest.raises((fedq.NotFound, fedq.Forbidden)):
        olga.task(task.id)
    with pytest.raises((fedq.NotFound, fedq.Forbidden)):
        olga.kill(task.id)
    task.wait(timeout=180, progress=False)


def test_a_wrong_password_is_refused(fed):
    with pytest.raises(fedq.AuthenticationFailed) as raised:
        fedq.Client.login(fed["server"], fed["user"], "not-the-password", trust_store=fedq.IN_MEMORY)
    assert raised.value.status == 401


def test_a_swapped_key_is_refused(client, fed):
    swapped = os.environ["FEDQ_TEST_SWAPPED_KEY"]
    before = _task_count(client)
    with pytest.raises(fedq.UntrustedKey) as raised:
        client.create_task("registries", SECURE_SUM, REGISTRIES, {"data": "patients"})
    assert raised.value.code == "key_changed"
    assert swapped in str(raised.value) and fed["pins"]["registry-2"] in str(raised.value)
    assert "for organization registry-2 (" in str(raised.value), str(raised.value)
    assert _task_count(client) == before
    assert isinstance(client.trusted_keys("registries")["registry-2"], fedq.UntrustedKey)


def test_analyses_by_name_give_pooled_statistics_as_dataframes(client: fedq.Client, fed: dict):
    # The registries' patients: rows i = 0…count-1 with age 20 + i % 70, E11 every third row.
    ages = [20 + i % 70 for count in fed["counts"] for i in range(count)]
    registries = list(fed["pins"])
    summary = client.analysis.summary("registries", registries, data="patients", columns=["age"], progress=False)
    assert int(summary.loc["age", "count"]) == len(ages) and int(summary.loc["age", "missing"]) == 0
    mean = sum(ages) / len(ages)
    assert summary.loc["age", "mean"] == pytest.approx(mean, rel=1e-12)
    variance = sum((a - mean) ** 2 for a in ages) / (len(ages) - 1)
    assert summary.loc["age", "variance"] == pytest.approx(variance, rel=1e-10)

    older = client.analysis.crosstab("registries", registries, data="patients", rows="diagnosis", columns="diagnosis",
                                     levels={"diagnosis": ["E11", "I10"]}, where="age >= 50", progress=False)
    e11 = sum(1 for count in fed["counts"] for i in range(count) if i % 3 == 0 and 20 + i % 70 >= 50)
    assert int(older.table.loc["E11", "E11"]) == e11 and int(older.table.loc["E11", "I10"]) == 0

    with pytest.raises(fedq.AnalysisFailed) as raised:
        client.analysis.summary("registries", registries, data="patients", columns=["bmi"], progress=False)
    assert "column_missing" in str(raised.value) and "registry-1" in str(raised.value)
