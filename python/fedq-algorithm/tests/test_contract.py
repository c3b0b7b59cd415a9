"""The mock federation's endpoint against the node-local endpoint's shared examples
(crates/algorithm-api/examples.json, which the node's and the Rust SDK's types are held to):
every route answers in the same shape, and every error with a code and status of the node's."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fedq_algorithm import Node, NodeError, mock

EXAMPLES = json.loads((Path(__file__).resolve().parents[3] / "crates/algorithm-api/examples.json").read_text())
ROUTES = EXAMPLES["routes"]
ERRORS = EXAMPLES["errors"]


def shape(value: Any) -> Any:
    """A value's structure: keys and JSON types, not contents."""
    if isinstance(value, dict):
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    return "null" if value is None else type(value).__name__


def call(node: Node, route: str, path: str | None = None, body: Any = None) -> tuple[int, Any]:
    """The example route `route` (at `path`, if given) with `body`: its status and answer."""
    example = ROUTES[route]
    data = None if body is None else json.dumps(body).encode()
    try:
        raw = node._request(example["method"], (path or example["path"]).removeprefix("/v1"), data,
                            "application/json" if data is not None else None)
    except NodeError as e:
        return e.status, {"code": e.code}
    return example["status"], json.loads(raw) if raw else None


def expect(route: str, status: int, answer: Any) -> None:
    example = ROUTES[route]
    assert status == example["status"], (route, status, answer)
    if "answer" in example:
        assert shape(answer) == shape(example["answer"]), route
    else:
        assert answer is None, route


def expect_error(seen: tuple[int, Any], code: str) -> None:
    status, answer = seen
    assert answer["code"] == code, (code, seen)
    assert ERRORS[code] == status, f"{code} comes with {ERRORS[code]} at a node, {status} from the mock"


def test_the_mock_answers_every_route_as_the_node_does(tmp_path):
    seen: dict[str, Any] = {}

    def lead(node: Node) -> None:
        me = node.job()
        other = next(o for o in me.organizations if o != me.organization)
        expect("job", *call(node, "job"))
        expect("organizations", *call(node, "organizations"))
        send = dict(ROUTES["send"]["request"], to=other)
        expect("send", *call(node, "send", body=send))
        subtask = dict(ROUTES["create_subtask"]["request"], organizations=[other], image="echo")
        status, created = call(node, "create_subtask", body=subtask)
        expect("create_subtask", status, created)
        path = f"/v1/subtasks/{created['task']}/results?wait=30"
        expect("subtask_results", *call(node, "subtask_results", path))
        round = dict(ROUTES["contribute"]["request"], participants=me.organizations, aggregator=me.organization)
        expect("contribute", *call(node, "contribute", body=round))
        expect("contribute", *call(node, "contribute", body=round))
        expect_error(call(node, "contribute", body=dict(round, values=[(v + 1) % (1 << 64) for v in round["values"]])),
                     "already_posted")
        path = f"/v1/secure-sum/counts?participants={','.join(me.organizations)}&wait=30"
        expect("secure_sum", *call(node, "secure_sum", path))
        lonely = dict(round, round="lonely", wait=0, participants=[me.organization, "Z"])
        expect_error(call(node, "contribute", body=lonely), "round_incomplete")
        expect("post_result", *call(node, "post_result", body=ROUTES["post_result"]["request"]))
        seen["lead"] = True

    def follow(node: Node) -> None:
        # The lead's message, then its errors: every code the mock gives is one the node gives.
        expect("receive", *call(node, "receive", "/v1/messages?topic=x1&wait=30"))
        expect_error(call(node, "send", body={"to": "Z", "topic": "t", "body": ""}), "not_in_run")
        expect_error(call(node, "send", body={"topic": "t"}), "malformed")
        expect_error(call(node, "send", body={"to": "A", "topic": "fedq.secure-sum.part", "body": ""}), "malformed")
        me = node.job()
        round = dict(ROUTES["contribute"]["request"], participants=me.organizations, aggregator="A")
        expect("contribute", *call(node, "contribute", body=round))
        expect_error(call(node, "contribute", body=dict(round, round="a b")), "malformed")
        expect_error(call(node, "subtask_results", "/v1/subtasks/none/results"), "not_found")
        expect_error(call(node, "job", "/v1/nothing"), "not_found")
        node.post_result(b"done")
        expect_error(call(node, "post_result", body={"output": base64.b64encode(b"again").decode()}),
                     "already_posted")
        seen["follow"] = True

    def echo(node: Node) -> None:
        node.post_result(node.input())

    orgs = {"A": tmp_path, "B": tmp_path}
    with mock.MockFederation(orgs, images={"lead": lead, "follow": follow, "echo": echo}) as federation:
        results = federation.run(lambda node: (lead if node.job().organization == "A" else follow)(node),
                                 {}, timeout=60)
    assert all(r.status == "completed" for r in results.values()), {o: r.reason for o, r in results.items()}
    assert seen == {"lead": True, "follow": True}


def test_an_unknown_token_is_unauthorized_with_the_nodes_status(tmp_path):
    with mock.MockFederation({"A": tmp_path}) as federation:
        stranger = Node(federation.endpoint, "not-a-token")
        expect_error(call(stranger, "job"), "unauthorized")
