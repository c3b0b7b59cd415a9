"""A mock federation for algorithm authors: run a Python algorithm at N simulated organizations,
each with its own data directory and run volume, on one machine, through an HTTP endpoint with
the node-local endpoint's semantics (job, input, messages, subtasks, result), without a server,
a broker or keys.

    from fedq_algorithm import mock
    from fedq_algorithm.secure_sum import run

    results = mock.run(run, {"A": "data/a", "B": "data/b", "C": "data/c"}, input={"data": "patients"})
    results["A"].json()   # {"N": …, "organizations": 3}

Each organization's data directory holds its data sources by label (``data/a/patients``). What
passes here runs unchanged at real nodes: the algorithm uses the same ``Node`` over HTTP. Not
simulated: the node's policy, container limits, sealing, and the network isolation.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from fedq_algorithm.node import DEFAULT_MIN_CELL_COUNT, Node

Algorithm = Callable[[Node], None]

#: The largest result a node accepts by default (``limits.max_result_bytes``), which the mock
#: reports; it does not enforce it.
MAX_RESULT_BYTES = 8 * 1024 * 1024


@dataclass
class Result:
    """One organization's job: its status (``completed`` or ``failed``), output and error."""

    organization: str
    status: str
    output: bytes
    reason: str | None = None

    def json(self) -> Any:
        return json.loads(self.output)


@dataclass
class _Job:
    id: str
    task: str
    run: str
    organization: str
    organizations: list[str]
    requester: str
    image: str
    input: bytes
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None
    output: bytes | None = None


class MockFederation:
    """Organizations with their data directories, and an endpoint shared by their jobs."""

    def __init__(self, organizations: Mapping[str, str | Path], images: Mapping[str, Algorithm] | None = None,
                 other_images: Callable[[str], Algorithm] | None = None,
                 min_cell_count: Mapping[str, int] | None = None):
        """``images`` maps image names to algorithms; an image named by a subtask that is not
        there is run by ``other_images(name)`` if given (``container``, say), else refused.
        ``min_cell_count`` is an organization's node policy's minimum, where it is not 3."""
        self.organizations = list(organizations)
        self.min_cell_count = dict(min_cell_count or {})
        self.data = {org: Path(path) for org, path in organizations.items()}
        self.images = dict(images or {})
        self.other_images = other_images
        self._tmp = tempfile.TemporaryDirectory(prefix="fedq-mock-")
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}  # by token
        self._subtasks: dict[str, list[_Job]] = {}
        self._inboxes: dict[tuple[str, str], queue.Queue] = {}  # (run, organization)
        # Secure aggregation, summed in the clear (the mock has no keys): the organizations
        # whose node took part in a run (its run key), and each round's contributions.
        self._keyed: set[tuple[str, str]] = set()  # (run, organization)
        self._rounds: dict[tuple[str, str], dict[str, tuple[list[str], list[int]]]] = {}  # (run, round)
        self._changed = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()

    def __enter__(self) -> MockFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, algorithm: Algorithm, input: Any, organizations: list[str] | None = None,
            timeout: float = 60, image: str = "main") -> dict[str, Result]:
        """Runs a task of ``algorithm`` at ``organizations`` (default: all, in order) with the
        same ``input`` (bytes, or JSON-encoded); returns each organization's result. The jobs
        see ``image`` as their image (subtasks that name no image run it again)."""
        self.images.setdefault(image, algorithm)
        raw = input if isinstance(input, bytes) else json.dumps(input).encode()
        orgs = organizations or self.organizations
        run = str(uuid.uuid4())
        jobs = self._start(orgs, image, raw, run, requester="researcher")
        results = {}
        for job in jobs:
            if not job.done.wait(timeout):
                raise TimeoutError(f"the job at {job.organization} did not finish within {timeout} s")
            results[job.organization] = job.result
        return results

    # -- jobs ----------------------------------------------------------------------------------

    def _start(self, orgs: list[str], image: str, raw: bytes, run: str, requester: str) -> list[_Job]:
        task = str(uuid.uuid4())
        jobs = []
        for org in orgs:
            if org not in self.data:
                raise KeyError(f"no organization {org!r} in this mock federation")
            job = _Job(str(uuid.uuid4()), task, run, org, list(orgs), requester, image, raw)
            token = uuid.uuid4().hex
            with self._lock:
                self._jobs[token] = job
                self._inboxes.setdefault((run, org), queue.Queue())
            jobs.append(job)
            run_dir = Path(self._tmp.name) / run / org
            run_dir.mkdir(parents=True, exist_ok=True)
            node = Node(self.endpoint, token, run_dir=run_dir, data_dir=self.data[org],
                        min_cell_count=self.min_cell_count.get(org, DEFAULT_MIN_CELL_COUNT))
            threading.Thread(target=self._execute, args=(job, node), daemon=True).start()
        with self._lock:
            self._subtasks[task] = jobs
        return jobs

    def _execute(self, job: _Job, node: Node) -> None:
        algorithm = self.images.get(job.image)
        if algorithm is None and self.other_images is not None:
            algorithm = self.images.setdefault(job.image, self.other_images(job.image))
        try:
            if algorithm is None:
                raise KeyError(f"no image {job.image!r} in this mock federation (MockFederation(images=…))")
            algorithm(node)
            job.result = Result(job.organization, "completed", job.output or b"")
        except BaseException as e:  # the container's exit: anything raised fails the job
            traceback.print_exc()
            job.result = Result(job.organization, "failed", job.output or b"", f"{type(e).__name__}: {e}")
        job.done.set()

    # -- the endpoint --------------------------------------------------------------------------

    def _handler(self):
        federation = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                federation._serve(self, "GET")

            def do_POST(self) -> None:
                federation._serve(self, "POST")

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        token = h.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            job = self._jobs.get(token)
        if job is None:
            return _answer(h, 401, {"code": "unauthorized", "message": "no job has this token"})
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = url.path.removeprefix("/v1")
        try:
            status, answer = self._route(job, method, path, query, body, h.headers.get("Content-Type", ""))
        except (KeyError, ValueError) as e:
            status, answer = 400, {"code": "malformed", "message": str(e)}
        _answer(h, status, answer)

    def _route(self, job: _Job, method: str, path: str, query: dict, body: bytes, content_type: str):
        if (method, path) == ("GET", "/job"):
            return 200, {
                "job": job.id, "task": job.task, "run": job.run, "collaboration": "mock",
                "organization": job.organization, "organizations": job.organizations,
                "requester": job.requester, "image": job.image, "max_result_bytes": MAX_RESULT_BYTES,
            }
        if (method, path) == ("GET", "/input"):
            return 200, job.input
        if (method, path) == ("GET", "/organizations"):
            return 200, {"collaboration": "mock",
                         "organizations": [{"id": o, "key_id": "mock"} for o in self.organizations]}
        if (method, path) == ("POST", "/messages"):
            request = json.loads(body)
            to = request["to"]
            if request["topic"].startswith("fedq."):
                return 400, {"code": "malformed", "message": 'topics that start with "fedq." are the node\'s own'}
            if to not in job.organizations and to != job.organization:
                # As at a real node: only organizations with a job in the run.
                with self._lock:
                    in_run = (job.run, to) in self._inboxes
                if not in_run:
                    return 403, {"code": "not_in_run", "message": f"{to} has no job in this run; nothing was sent"}
            message = {"id": uuid.uuid4().hex, "from": job.organization, "from_job": job.id,
                       "topic": request["topic"], "body": request["body"]}
            with self._lock:
                inbox = self._inboxes.setdefault((job.run, to), queue.Queue())
            inbox.put(message)
            return 202, {"id": message["id"]}
        if (method, path) == ("GET", "/messages"):
            wait = min(float(query.get("wait", 0)), 60)
            return 200, {"messages": self._take(job, query.get("topic"), query.get("from"), wait)}
        if (method, path) == ("POST", "/subtasks"):
            request = json.loads(body)
            image = request.get("image") or job.image
            raw = base64.b64decode(request["input"])
            jobs = self._start(list(request["organizations"]), image, raw, job.run, requester=job.organization)
            return 201, {"task": jobs[0].task, "jobs": [{"job": j.id, "organization": j.organization} for j in jobs]}
        if method == "GET" and path.startswith("/subtasks/") and path.endswith("/results"):
            task = path.split("/")[2]
            with self._lock:
                jobs = self._subtasks.get(task)
            if jobs is None:
                return 404, {"code": "not_found", "message": f"no subtask {task}"}
            wait = float(query.get("wait", 0))
            for j in jobs:
                j.done.wait(wait)
            results = [{"job": j.id, "organization": j.organization, "status": j.result.status,
                        "output": base64.b64encode(j.result.output).decode(), "reason": j.result.reason}
                       for j in jobs if j.done.is_set()]
            return 200, {"complete": len(results) == len(jobs), "results": results}
        if (method, path) == ("POST", "/secure-sum"):
            return self._contribute(job, json.loads(body))
        if method == "GET" and path.startswith("/secure-sum/"):
            participants = query.get("participants", "")
            return self._sum(job, path.removeprefix("/secure-sum/"), participants.split(","), float(query.get("wait", 0)))
        if (method, path) == ("POST", "/result"):
            if job.output is not None:
                return 409, {"code": "already_posted", "message": "this job already posted its result"}
            job.output = base64.b64decode(json.loads(body)["output"]) if content_type.startswith("application/json") else body
            return 204, None
        return 404, {"code": "not_found", "message": f"{method} {path} is not a route of the endpoint"}

    def _contribute(self, job: _Job, request: dict) -> tuple[int, Any]:
        round, participants = _round(request["round"], request["participants"])
        values = [int(v) for v in request["values"]]
        if job.organization not in participants:
            raise ValueError(f"this organization ({job.organization}) is not among the round's participants")
        if not values or any(not 0 <= v < 1 << 64 for v in values):
            raise ValueError("a contribution is 1 or more integers from 0 to 2^64 - 1")
        wait = min(float(request.get("wait", 0)), 60)
        with self._changed:
            self._keyed.add((job.run, job.organization))
            self._changed.notify_all()
            missing = self._wait_for(lambda: [o for o in participants if (job.run, o) not in self._keyed], wait)
            if missing:
                return 504, {"code": "round_incomplete",
                             "message": f"round {round}: no run key from organization(s) {', '.join(missing)} "
                                        f"after {wait:g} s; ask again, or fail the round"}
            contributions = self._rounds.setdefault((job.run, round), {})
            if job.organization in contributions:
                # The same values again are a retry; others under the same masks would tell
                # the aggregator their difference.
                if contributions[job.organization] == (participants, values):
                    return 202, {"round": round, "participants": participants}
                return 409, {"code": "already_posted",
                             "message": f"this organization contributed other values to round {round} already"}
            contributions[job.organization] = (participants, values)
            self._changed.notify_all()
        return 202, {"round": round, "participants": participants}

    def _sum(self, job: _Job, round: str, participants: list[str], wait: float) -> tuple[int, Any]:
        round, participants = _round(round, participants)
        with self._changed:
            contributions = self._rounds.setdefault((job.run, round), {})
            missing = self._wait_for(lambda: [o for o in participants if o not in contributions], min(wait, 60))
            if missing:
                return 504, {"code": "round_incomplete",
                             "message": f"round {round}: no contribution from organization(s) "
                                        f"{', '.join(missing)} after {wait:g} s; ask again, or fail the round"}
            parts = [contributions[o] for o in participants]
        for org, (theirs, values) in zip(participants, parts):
            if theirs != participants or len(values) != len(parts[0][1]):
                return 403, {"code": "refused", "message": f"round {round}: organization {org}'s contribution "
                                                           "is for other participants or of another length"}
        total = [sum(column) % (1 << 64) for column in zip(*(values for _, values in parts))]
        return 200, {"round": round, "participants": participants, "sum": total}

    def _wait_for(self, missing: Callable[[], list[str]], wait: float) -> list[str]:
        """Waits (holding the federation's lock between checks) until ``missing`` is empty or
        ``wait`` seconds have passed; what is still missing."""
        self._changed.wait_for(lambda: not missing(), timeout=wait)
        return missing()

    def _take(self, job: _Job, topic: str | None, sender: str | None, wait: float) -> list[dict]:
        with self._lock:
            inbox = self._inboxes[(job.run, job.organization)]
        # Messages with another topic, or from another sender than the one named, stay for
        # whoever asks for them, as at a real node.
        deadline = wait
        kept, taken = [], []
        while True:
            try:
                message = inbox.get(timeout=deadline) if deadline > 0 else inbox.get_nowait()
            except queue.Empty:
                break
            if (topic is None or message["topic"] == topic) and (sender is None or message["from"] == sender):
                taken.append(message)
                deadline = 0
            else:
                kept.append(message)
        for message in kept:
            inbox.put(message)
        return taken


def container(image: str, timeout: float = 600, docker: str = "docker") -> Algorithm:
    """An algorithm image as an algorithm of the mock federation: each job runs ``image`` in
    Docker with the node's environment (``FEDQ_ENDPOINT``, ``FEDQ_TOKEN``, the run volume at
    ``/fedq/run``, the organization's data read-only at ``/data``), as the caller's user and on
    the host's network, so that it reaches the mock endpoint on 127.0.0.1. Any image a node runs
    (Python, Rust, shell) runs here unchanged; but this is a test bench for your own data, not
    the node's isolation: no limits, no policy, no internal network."""

    def run_container(node: Node) -> None:
        name = f"fedq-mock-{uuid.uuid4().hex[:12]}"
        command = [
            docker, "run", "--rm", "--name", name, "--network", "host",
            "--user", f"{os.getuid()}:{os.getgid()}",
            "-e", f"FEDQ_ENDPOINT={node._base}", "-e", f"FEDQ_TOKEN={node._token}",
            "-e", "FEDQ_RUN_DIR=/fedq/run", "-e", "FEDQ_DATA_DIR=/data",
            "-v", f"{node.run_dir()}:/fedq/run", "-v", f"{node._data_dir.resolve()}:/data:ro",
            image,
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run([docker, "rm", "--force", name], capture_output=True)
            raise TimeoutError(f"{image} ran longer than {timeout:g} s") from None
        if done.stderr:
            sys.stderr.write(done.stderr)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{image} exited with status {done.returncode}: {last[0]}")

    run_container.__name__ = f"container({image})"
    return run_container


def run(algorithm: Algorithm, organizations: Mapping[str, str | Path], input: Any,
        images: Mapping[str, Algorithm] | None = None, timeout: float = 60,
        min_cell_count: Mapping[str, int] | None = None) -> dict[str, Result]:
    """Runs ``algorithm`` once at every organization of a fresh mock federation."""
    with MockFederation(organizations, images, min_cell_count=min_cell_count) as federation:
        return federation.run(algorithm, input, timeout=timeout)


def _round(name: str, participants: list[str]) -> tuple[str, list[str]]:
    """A round's name and its participants, checked and sorted as the node does."""
    if not (0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)):
        raise ValueError(f"a round is named by 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-': {name!r}")
    if len(set(participants)) != len(participants):
        raise ValueError("an organization is named twice among the participants")
    return name, sorted(participants)


def _answer(h: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    h.send_response(status)
    h.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
    h.send_header("Content-Length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)
