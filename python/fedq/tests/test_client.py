"""The client's Python parts on their own: errors, results, inputs, names (the federation suite
in federation/ covers the rest against real services)."""

import json
import subprocess
import sys

import pytest

import fedq
from fedq import client as client_module
from fedq import errors
from fedq.results import Result, Results


def offline_native():
    # A session from a token connects to nothing until it is used; port 9 on loopback
    # (discard) has no listener of this test.
    return fedq._native.Client.with_token("http://127.0.0.1:9", "token", trust_store=None)


ORG = "0b0e8c7e-3f5a-4e59-9d0b-5f2e54a1c001"


@pytest.mark.parametrize(
    ("call", "expected", "code"),
    [
        (lambda n: n.expect("not-an-id", []), fedq.BadInput, "bad_input"),
        (lambda n: n.trust(ORG, "not a fingerprint"), fedq.BadInput, "bad_input"),
        (lambda n: n.look(ORG), fedq.BadInput, "bad_input"),
        (lambda n: n.use_key("/nonexistent/org.key", ORG), fedq.KeyFileError, "key_file"),
        (lambda n: n.call("GET", "/users/me"), fedq.ServerUnreachable, "unreachable"),
        (lambda n: n.call("PATCH", "/users/me"), fedq.BadInput, "bad_input"),
    ],
)
def test_the_native_client_raises_the_typed_exceptions(call, expected, code):
    # The class is chosen on the Rust side; refusals by HTTP status (401, 403, 404) are the
    # federation suite's, against a real server.
    with pytest.raises(fedq.FedqError) as raised:
        call(offline_native())
    assert type(raised.value) is expected
    assert raised.value.code == code and raised.value.exit_status == 1 and str(raised.value)


def test_an_unreachable_server_is_a_typed_error():
    # Port 9 on loopback (discard): nothing of this test listens there.
    with pytest.raises(fedq.ServerUnreachable) as raised:
        fedq.Client.login("http://127.0.0.1:9", "ada", "pw", trust_store=fedq.IN_MEMORY)
    assert raised.value.code == "unreachable"


def test_plain_text_beyond_loopback_is_refused_before_connecting():
    with pytest.raises(fedq.TlsError):
        fedq.Client.login("http://fedq.invalid", "ada", "pw", trust_store=fedq.IN_MEMORY)


def test_inputs_are_bytes_text_or_json():
    assert client_module._encode(b"\x00\x01") == b"\x00\x01"
    assert client_module._encode("é") == "é".encode()
    assert json.loads(client_module._encode({"data": "patients"})) == {"data": "patients"}


def test_ids_are_told_from_names():
    # Names are looked up by the native client (fedq_client's lookup, the command line's).
    assert client_module._is_id("0b0e8c7e-3f5a-4e59-9d0b-5f2e54a1c001") and not client_module._is_id("registry-0")


def result(org, output, status="completed"):
    return Result("job-" + org, org, "id-" + org, status, output)


def test_tabular_results_become_one_dataframe():
    results = Results(
        "t",
        [
            result("a", b'{"N": 3, "mean": 1.5}'),
            result("b", b'[{"N": 4, "mean": 2.0}]'),
            result("c", b"N,mean\n5,2.5\n"),
            result("d", b"", status="failed"),
        ],
        complete=True,
    )
    frame = results.dataframe()
    assert list(frame["organization"]) == ["a", "b", "c"]
    assert [int(n) for n in frame["N"]] == [3, 4, 5]
    assert Results("t", results[:2], True).json() == {"a": {"N": 3, "mean": 1.5}, "b": [{"N": 4, "mean": 2.0}]}
    columns = result("x", b'{"age": [30, 40], "n": [1, 2]}').dataframe()
    assert list(columns["age"]) == [30, 40]
    with pytest.raises(ValueError):
        result("y", b"42").dataframe()


def test_the_module_says_when_there_is_no_session(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "fedq", "whoami"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "not_logged_in" in out.stderr and "fedq login" in out.stderr


def test_incomplete_exits_like_the_command_line():
    e = fedq.Incomplete("late", Results("t", [], False), ["registry-1 (running)"])
    assert e.exit_status == 3 and e.code == "incomplete"


def test_an_analysis_returns_the_aggregators_output_wherever_it_is():
    from fedq.analysis import Analyses

    class Client:
        def run(self, collaboration, image, organizations, spec, timeout, progress):
            self.spec = spec
            return Results("t", [result("a", b'{"analysis": "summary", "contributed": true}'),
                                 result("b", b'{"analysis": "summary", "organizations": 2, "columns": {}}')], True)

    client = Client()
    out = Analyses(client).run("c", ["a", "b"], {"analysis": "summary", "aggregator": "id-b"})
    assert out == {"analysis": "summary", "organizations": 2, "columns": {}}
    assert client.spec["aggregator"] == "id-b"


def test_a_vertical_analysis_takes_the_dealers_output_as_a_table():
    from fedq.analysis import Analyses

    class Client:
        def run(self, collaboration, image, organizations, spec, timeout, progress):
            self.spec, self.organizations = spec, organizations
            out = (b'{"analysis": "vertical_summary", "organizations": 3, "n": 5, "columns": {"age": {"count": 4, '
                   b'"missing": 1, "sum": 200.0, "mean": 50.0, "variance": 4.0, "std": 2.0}}}')
            return Results("t", [result("a", b'{"analysis": "vertical_summary", "contributed": true}'),
                                 result("b", b'{"analysis": "vertical_summary", "contributed": true}'),
                                 result("c", out)], True)

    client = Client()
    frame = Analyses(client).vertical_summary("c", ["ra", "rb", "dealer"], a={"data": "ages", "columns": ["age"]},
                                              b={"data": "diagnoses", "columns": []})
    assert client.organizations == ["ra", "rb", "dealer"]
    assert client.spec == {"analysis": "vertical_summary", "id": "id", "a": {"data": "ages", "columns": ["age"]},
                           "b": {"data": "diagnoses", "columns": []}}
    assert frame.loc["age", "mean"] == 50.0 and frame.attrs["n"] == 5
