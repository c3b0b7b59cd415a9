"""The node-local endpoint, as an algorithm sees it (``docs/algorithm-api.md``).

Only the standard library is used: algorithm images stay small, and nothing but the endpoint is
reachable from a container anyway.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from fedq_algorithm import fixed

#: Where the node mounts this run's volume, shared by the run's containers at this node.
RUN_DIR = Path("/fedq/run")
#: Where the node mounts its data sources, read-only, one entry per label.
DATA_DIR = Path("/data")

# Long polls wait up to 60 s at the node; leave room for that.
_TIMEOUT = 90

#: How long ``contribute`` and ``secure_sum`` wait for the other participants by default.
ROUND_TIMEOUT = 600


class NodeError(Exception):
    """The node refused a request, or answered what this package cannot read.

    ``status`` is the HTTP status (0 when the node could not be reached), ``code`` the node's
    stable error code (``docs/algorithm-api.md``, "Errors").
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if status == 0 else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class MissingEnvironment(NodeError):
    """``FEDQ_ENDPOINT`` or ``FEDQ_TOKEN`` is unset: not running under a fedq node."""

    def __init__(self, name: str) -> None:
        super().__init__(0, "missing_environment", f"{name} is not set; this runs in a container a fedq node starts")


@dataclass(frozen=True)
class Job:
    """This job, as the node describes it."""

    job: str
    task: str
    run: str
    collaboration: str
    organization: str
    organizations: list[str]
    requester: str
    image: str
    max_result_bytes: int | None = None

    @property
    def position(self) -> int:
        """This organization's position in the task's organizations (the requester's order)."""
        return self.organizations.index(self.organization)


@dataclass(frozen=True)
class Message:
    """A message from another container of this run."""

    id: str
    sender: str
    from_job: str
    topic: str
    body: bytes


@dataclass(frozen=True)
class Organization:
    """A member of the collaboration."""

    id: str
    key_id: str


@dataclass(frozen=True)
class Subtask:
    """A subtask this job created: its task and its jobs, by organization."""

    task: str
    jobs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubtaskResult:
    """One job's result of a subtask."""

    job: str
    organization: str
    status: str
    output: bytes
    reason: str | None

    def json(self) -> Any:
        """The output, decoded as JSON."""
        return json.loads(self.output)


@dataclass(frozen=True)
class SubtaskResults:
    """A subtask's results so far, and whether every job has finished."""

    complete: bool
    results: list[SubtaskResult]


#: The node's ``policy.min_cell_count`` when it sets none.
DEFAULT_MIN_CELL_COUNT = 3


class Node:
    """The node-local endpoint of this job."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        run_dir: str | Path = RUN_DIR,
        data_dir: str | Path = DATA_DIR,
        min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    ) -> None:
        self._base = endpoint.rstrip("/")
        self._token = token
        self._run_dir = Path(run_dir)
        self._data_dir = Path(data_dir)
        #: The fewest of this node's rows that a count it computes may rest on (a table's cell,
        #: the rows an analysis uses): its data owner's ``policy.min_cell_count``.
        self.min_cell_count = min_cell_count

    @classmethod
    def from_env(cls) -> Node:
        """The endpoint, token and directories the node passed to this container."""
        endpoint = os.environ.get("FEDQ_ENDPOINT")
        if not endpoint:
            raise MissingEnvironment("FEDQ_ENDPOINT")
        token = os.environ.get("FEDQ_TOKEN")
        if not token:
            raise MissingEnvironment("FEDQ_TOKEN")
        minimum = os.environ.get("FEDQ_MIN_CELL_COUNT", "")
        return cls(
            endpoint,
            token,
            os.environ.get("FEDQ_RUN_DIR", RUN_DIR),
            os.environ.get("FEDQ_DATA_DIR", DATA_DIR),
            int(minimum) if minimum.isdigit() else DEFAULT_MIN_CELL_COUNT,
        )

    # -- the job -----------------------------------------------------------------------------

    def job(self) -> Job:
        """This job: its ids, organization, the task's organizations, requester and image."""
        body = self._json("GET", "/job")
        return Job(
            job=body["job"],
            task=body["task"],
            run=body["run"],
            collaboration=body["collaboration"],
            organization=body["organization"],
            organizations=list(body["organizations"]),
            requester=body["requester"],
            image=body["image"],
            max_result_bytes=body.get("max_result_bytes"),
        )

    def input(self) -> bytes:
        """This job's input, as the researcher sealed it."""
        return self._request("GET", "/input")

    def input_json(self) -> Any:
        """This job's input, decoded as JSON."""
        raw = self.input()
        try:
            return json.loads(raw)
        except ValueError as e:
            raise NodeError(0, "invalid_input", f"the job's input is not JSON: {e}") from None

    def organizations(self) -> list[Organization]:
        """The collaboration's members."""
        body = self._json("GET", "/organizations")
        return [Organization(o["id"], o["key_id"]) for o in body["organizations"]]

    # -- messages ------------------------------------------------------------------------------

    def send(self, to: str, topic: str, body: bytes) -> None:
        """Sends ``body`` to this run's job at organization ``to``, once the broker has it."""
        self._json("POST", "/messages", {"to": to, "topic": topic, "body": _b64(body)})

    def receive(self, topic: str | None = None, wait: int = 30, sender: str | None = None) -> list[Message]:
        """Takes this run's messages (with ``topic``, and from organization ``sender``, if given),
        waiting up to ``wait`` seconds (at most 60) for at least one. Each message is taken once.

        Any member of the run may send any topic: a protocol that expects a value from one
        organization names it as ``sender`` (or uses ``receive_one``, which requires it), so
        that a value another member forged is never the one taken."""
        query = {"wait": str(max(0, min(int(wait), 60)))}
        if topic is not None:
            query["topic"] = topic
        if sender is not None:
            query["from"] = sender
        body = self._json("GET", "/messages?" + urllib.parse.urlencode(query))
        return [
            Message(m.get("id", ""), m["from"], m["from_job"], m["topic"], _unb64(m["body"]))
            for m in body["messages"]
        ]

    def receive_one(self, topic: str, *, sender: str, timeout: float | None = None) -> Message:
        """Waits for the next message with ``topic`` from organization ``sender``: up to
        ``timeout`` seconds (raising :class:`TimeoutError` then), or without one as long as the
        node's wall-clock limit on the job lets it. Messages on the topic from anyone else stay
        in the inbox."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            messages = self.receive(topic, wait=max(1, min(30, math.ceil(left))), sender=sender)
            if messages:
                return messages[0]
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no message on {topic!r} from {sender} within {timeout:g} s")

    # -- subtasks ------------------------------------------------------------------------------

    def create_subtask(self, organizations: list[str], input: bytes, image: str | None = None) -> Subtask:
        """Creates a subtask in this run at ``organizations`` running ``image`` (default: this
        job's image), with the same ``input`` for each."""
        body = self._json(
            "POST",
            "/subtasks",
            {"organizations": list(organizations), "image": image, "input": _b64(input)},
        )
        return Subtask(body["task"], {j["organization"]: j["job"] for j in body["jobs"]})

    def subtask_results(self, task: str, wait: int = 30) -> SubtaskResults:
        """A subtask's results, waiting up to ``wait`` seconds for all of them."""
        path = f"/subtasks/{urllib.parse.quote(task, safe='')}/results?wait={max(0, int(wait))}"
        body = self._json("GET", path)
        results = [
            SubtaskResult(r["job"], r["organization"], r["status"], _unb64(r["output"]), r.get("reason"))
            for r in body["results"]
        ]
        return SubtaskResults(bool(body["complete"]), results)

    def wait_subtask(self, task: str) -> list[SubtaskResult]:
        """Waits until every job of a subtask has finished; returns their results."""
        while True:
            results = self.subtask_results(task, wait=30)
            if results.complete:
                return results.results

    # -- secure aggregation --------------------------------------------------------------------

    def contribute(
        self,
        round: str,
        values: Iterable[float | int],
        *,
        participants: Iterable[str],
        aggregator: str,
        frac_bits: int = 0,
        timeout: float = ROUND_TIMEOUT,
    ) -> None:
        """Contributes ``values`` to secure-aggregation ``round`` of ``participants``
        (organizations of the run, this one included), whose sum the job at ``aggregator``
        receives; reals are encoded with ``frac_bits`` fractional bits (``fedq_algorithm.fixed``).
        Waits up to ``timeout`` seconds for every participant's node; a round still incomplete
        then raises the node's ``round_incomplete``, which names who is missing."""
        participants = list(participants)
        words = fixed.encode(values, frac_bits, len(set(participants)))
        self.contribute_words(round, words, participants=participants, aggregator=aggregator, timeout=timeout)

    def contribute_words(
        self,
        round: str,
        words: list[int],
        *,
        participants: Iterable[str],
        aggregator: str,
        timeout: float = ROUND_TIMEOUT,
    ) -> None:
        """:meth:`contribute` of integers modulo 2^64 as they are (``fixed.encode_wide``'s, say)."""
        body = {"round": round, "participants": list(participants), "aggregator": aggregator, "values": words}
        self._until_round_complete(timeout, lambda wait: self._json("POST", "/secure-sum", {**body, "wait": wait}))

    def secure_sum(
        self,
        round: str,
        *,
        participants: Iterable[str],
        frac_bits: int = 0,
        timeout: float = ROUND_TIMEOUT,
    ) -> list[int] | list[float]:
        """At the aggregator's organization: the sum of ``round``'s contributions by
        ``participants``, decoded with ``frac_bits`` fractional bits, waiting up to ``timeout``
        seconds for all of them."""
        return fixed.decode(self.secure_sum_words(round, participants=participants, timeout=timeout), frac_bits)

    def secure_sum_words(self, round: str, *, participants: Iterable[str], timeout: float = ROUND_TIMEOUT) -> list[int]:
        """:meth:`secure_sum` as the integers modulo 2^64 that the node summed."""
        path = f"/secure-sum/{urllib.parse.quote(round, safe='')}?" + urllib.parse.urlencode(
            {"participants": ",".join(participants)}
        )
        body = self._until_round_complete(timeout, lambda wait: self._json("GET", f"{path}&wait={wait}"))
        return body["sum"]

    @staticmethod
    def _until_round_complete(timeout: float, ask: Callable[[int], Any]) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0, min(60, int(deadline - time.monotonic())))
            try:
                return ask(wait)
            except NodeError as e:
                if e.code != "round_incomplete" or time.monotonic() >= deadline:
                    raise

    # -- the result ----------------------------------------------------------------------------

    def post_result(self, output: bytes) -> None:
        """This job's result, once. The node seals it for the requester when the container
        exits."""
        if len(output) > 1024 * 1024:
            limit = self.job().max_result_bytes
            if limit is not None and len(output) > limit:
                raise NodeError(
                    0,
                    "result_too_large",
                    f"the result is {len(output)} bytes; this node accepts at most {limit} "
                    "(limits.max_result_mib in its node.toml)",
                )
        self._request("POST", "/result", output, "application/octet-stream")

    def post_json(self, value: Any) -> None:
        """This job's result, as JSON."""
        self.post_result(json.dumps(value).encode())

    # -- the node's files ----------------------------------------------------------------------

    def run_dir(self) -> Path:
        """This run's volume at this node."""
        return self._run_dir

    def data(self, label: str) -> Path:
        """Where the node mounts the data source ``label``."""
        return self._data_dir / label

    def read_csv(self, label: str) -> list[dict[str, str]]:
        """The rows of the CSV data source ``label`` (with a header line), as dictionaries."""
        from fedq_algorithm.data import read_csv

        return read_csv(self.data(label))

    def read_dataframe(self, label: str):  # -> pandas.DataFrame
        """The data source ``label`` as a pandas DataFrame (CSV, or Parquet with pyarrow)."""
        from fedq_algorithm.data import read_dataframe

        return read_dataframe(self.data(label))

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        request = urllib.request.Request(self._base + "/v1" + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                error = json.loads(raw)
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http", raw.decode(errors="replace")[:200] or e.reason
            raise NodeError(e.code, code, message) from None
        except urllib.error.URLError as e:
            raise NodeError(0, "unreachable", f"the node's endpoint did not answer: {e.reason}") from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        raw = self._request(method, path, data, "application/json" if data is not None else None)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise NodeError(0, "decode", f"unexpected answer from the node: {e}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise NodeError(0, "decode", f"invalid base64 from the node: {e}") from None


def run_in_container(algorithm: Callable[[Node], None], name: str) -> None:
    """A container's main: runs ``algorithm`` on the node's endpoint; a failure is one line on
    standard error (the node keeps it as the job's reason) and exit status 1."""
    try:
        algorithm(Node.from_env())
    except (NodeError, OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
