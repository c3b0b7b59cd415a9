"""The researcher's client: log in, create tasks whose inputs are sealed here, wait, open results.

The cryptography and the key trust are the Rust client's (``fedq._native``), the same code the
``fedq`` command line runs; this module adds names, progress, results as Python objects, and the
command line's files (session, trusted keys, task records), so that both tools can be mixed.
"""

from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import _native, errors

if TYPE_CHECKING:
    from .analysis import Analyses
from .progress import Progress
from .results import Result, Results

#: Pass as ``trust_store`` to keep trusted keys in memory only (nothing written).
IN_MEMORY = "in-memory"


def session_path() -> Path:
    """Where ``fedq login`` keeps the session (``FEDQ_SESSION``, or ``~/.config/fedq``'s)."""
    return Path(_native.session_path())


def trust_store_path() -> Path:
    """Where the command line keeps the trusted keys (``FEDQ_TRUST_STORE``, or ``~/.config/fedq``'s)."""
    return Path(_native.trust_store_path())


def _task_record(task: str) -> Path:
    return Path(_native.task_record_path(task))


def _write_private(path: Path, data: bytes) -> None:
    """Writes a file readable by its owner only, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _encode(value: Any) -> bytes:
    """An input as bytes: bytes as they are, text as UTF-8, anything else as JSON."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


@dataclass(frozen=True)
class Task:
    """A task this client created: its id, run, collaboration and jobs (job id, organization
    id), in the order of the organizations asked for."""

    id: str
    run: str
    collaboration: str
    jobs: list[tuple[str, str]]
    client: "Client" = field(repr=False, compare=False)

    def wait(self, timeout: float = 600, progress: bool | None = None) -> Results:
        return self.client.wait(self.id, timeout=timeout, progress=progress)

    def results(self) -> Results:
        return self.client.results(self.id)

    def kill(self) -> dict[str, Any]:
        return self.client.kill(self.id)

    def status(self) -> dict[str, str]:
        """Each organization's job status, by name."""
        task = self.client.task(self.id)
        return {j["organization_name"] or j["organization"]: j["status"] for j in task["jobs"]}


class Client:
    """A logged-in session. Create one with :meth:`login` or :meth:`from_session`."""

    def __init__(self, native: _native.Client, key: str | os.PathLike[str] | None = None) -> None:
        self._native = native
        self._me: dict[str, Any] | None = None
        self._org_names: dict[str, str] = {}
        if key is not None:
            self.use_key(key)

    # --- sessions -------------------------------------------------------------------------

    @classmethod
    def login(
        cls,
        server: str,
        username: str,
        password: str | None = None,
        *,
        key: str | os.PathLike[str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        allow_plaintext: bool = False,
        trust_store: str | os.PathLike[str] | None = None,
        trust_on_first_use: bool = False,
        save_session: bool = False,
    ) -> "Client":
        """Logs in (asking for the password if none is given).

        ``key`` is your organization's private key file (needed to create tasks and open
        results). ``trust_store`` is where trusted keys are kept: by default the command line's
        (``~/.config/fedq/trusted-keys.json``), or :data:`IN_MEMORY`. Without
        ``trust_on_first_use``, an organization whose fingerprint you have not trusted (see
        :meth:`trust`) is refused. ``save_session`` keeps the session where ``fedq login``
        does, for the command line and :meth:`from_session`.
        """
        if password is None:
            password = getpass.getpass(f"password for {username}: ")
        ca = str(Path(ca_file).resolve()) if ca_file is not None else None
        native = _native.Client.login(
            server, username, password, ca, allow_plaintext, _store(trust_store), trust_on_first_use
        )
        if save_session:
            session = {"server": server, "token": native.token(), "ca_file": ca, "allow_plaintext": allow_plaintext}
            _write_private(session_path(), json.dumps(session, indent=2).encode())
        return cls(native, key)

    @classmethod
    def from_session(
        cls,
        *,
        key: str | os.PathLike[str] | None = None,
        session: str | os.PathLike[str] | None = None,
        trust_store: str | os.PathLike[str] | None = None,
        trust_on_first_use: bool = False,
    ) -> "Client":
        """The session ``fedq login`` (or ``login(save_session=True)``) saved."""
        path = Path(session) if session is not None else session_path()
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            raise errors.FedqError(
                f"not logged in (no session at {path}); run `fedq login` or Client.login(…, save_session=True)",
                "not_logged_in",
            ) from None
        native = _native.Client.with_token(
            saved["server"],
            saved["token"],
            saved.get("ca_file"),
            saved.get("allow_plaintext", False),
            _store(trust_store),
            trust_on_first_use,
        )
        return cls(native, key)

    def use_key(self, path: str | os.PathLike[str]) -> str:
        """Uses this organization key file (mode 0600); returns its fingerprint."""
        org = self.me().get("organization")
        if not org:
            raise errors.BadInput("this user belongs to no organization; log in as a researcher", "no_organization")
        return self._native.use_key(str(path), org)

    @property
    def analysis(self) -> "Analyses":
        """The analyses of ``docs/algorithms.md``: ``client.analysis.summary(…)``, ``.crosstab``,
        ``.correlation``, ``.linear``, ``.glm``, ``.kaplan_meier``."""
        from .analysis import Analyses

        return Analyses(self)

    # --- the directory --------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        text = self._native.call(method, path, None if body is None else json.dumps(body))
        return json.loads(text)

    def me(self) -> dict[str, Any]:
        """Who this session is: ``username``, ``organization`` (id), ``role``."""
        if self._me is None:
            self._me = self._call("GET", "/users/me")
        return self._me

    def organizations(self) -> list[dict[str, Any]]:
        """The organizations this session can see."""
        orgs = self._call("GET", "/organizations")
        self._org_names.update({o["id"]: o["name"] for o in orgs})
        return orgs

    def collaborations(self) -> list[dict[str, Any]]:
        """The collaborations of your organization."""
        return self._call("GET", "/collaborations")

    def organization_id(self, name_or_id: str) -> str:
        """An organization's id: an id as given, a name looked up among those you can see (the
        list fetched once, and again only for a name not in it)."""
        if _is_id(name_or_id):
            return name_or_id
        for refresh in (False, True):
            if refresh:
                self.organizations()
            for org_id, name in self._org_names.items():
                if name == name_or_id:
                    return org_id
        # Not among them: the native lookup says so in the command line's words.
        return self._native.organization_id(name_or_id)

    def collaboration_id(self, name_or_id: str) -> str:
        """A collaboration's id: an id as given, a name looked up among your collaborations."""
        if _is_id(name_or_id):
            return name_or_id
        return self._native.collaboration_id(name_or_id)

    def _name(self, org_id: str) -> str:
        if org_id not in self._org_names:
            self.organizations()
        return self._org_names.get(org_id, org_id)

    # --- keys -----------------------------------------------------------------------------

    def trusted_keys(self, collaboration: str) -> dict[str, str | errors.UntrustedKey]:
        """Each member's key as this client decides: its fingerprint if trusted, otherwise the
        :class:`~fedq.errors.UntrustedKey` that says why not. By organization name."""
        decided = self._native.trusted_keys(self.collaboration_id(collaboration))
        return {self._name(d.organization): d.fingerprint or d.refused for d in decided}

    def trust(self, organization: str, fingerprint: str) -> bool:
        """Trusts ``fingerprint`` (``SHA256:…``) for an organization, once compared with it out
        of band (as ``fedq keys trust``). False if it was trusted already."""
        return self._native.trust(self.organization_id(organization), fingerprint)

    # --- tasks ----------------------------------------------------------------------------

    def create_task(
        self,
        collaboration: str,
        image: str,
        organizations: Iterable[str],
        input: Any = b"",
        *,
        inputs: Mapping[str, Any] | None = None,
        name: str = "",
        logs: bool = False,
    ) -> Task:
        """Seals the input for each organization with your key and creates the task.

        ``input`` goes to every organization (bytes as they are, text as UTF-8, anything else
        as JSON); ``inputs`` gives some organizations (by name or id) their own. Names are
        accepted wherever an id is; the organizations' order is the algorithm's.
        """
        collaboration_id = self.collaboration_id(collaboration)
        org_ids = [self.organization_id(o) for o in organizations]
        if inputs:
            own = {self.organization_id(o): _encode(v) for o, v in inputs.items()}
            unknown = set(own) - set(org_ids)
            if unknown:
                names = ", ".join(self._name(o) for o in sorted(unknown))
                raise errors.BadInput(f"inputs given for organizations the task does not run at: {names}", "bad_input")
            sealed = [own.get(o, _encode(input)) for o in org_ids]
        else:
            sealed = [_encode(input)]
        created = self._native.create_task(collaboration_id, image, org_ids, sealed, name, logs)
        try:
            # Where `fedq result` looks, so that the command line checks these results too.
            _write_private(_task_record(created.task), json.dumps(created.jobs).encode())
        except OSError:
            pass
        return Task(created.task, created.run, collaboration_id, list(created.jobs), self)

    def run(
        self,
        collaboration: str,
        image: str,
        organizations: Iterable[str],
        input: Any = b"",
        *,
        timeout: float = 600,
        progress: bool | None = None,
        **options: Any,
    ) -> Results:
        """Creates a task and waits for its results (see :meth:`create_task`, :meth:`wait`)."""
        task = self.create_task(collaboration, image, organizations, input, **options)
        return task.wait(timeout=timeout, progress=progress)

    def task(self, task: str) -> dict[str, Any]:
        """A task as the server shows it, with its jobs' statuses."""
        return self._call("GET", f"/tasks/{_id(task)}")

    def tasks(self, limit: int = 20) -> list[dict[str, Any]]:
        """Tasks visible to this session, newest first."""
        return self._call("GET", f"/tasks?limit={int(limit)}")

    def kill(self, task: str | Task) -> dict[str, Any]:
        """Stops a task and its subtasks; the task as it is afterwards."""
        return self._call("POST", f"/tasks/{_id(task)}/kill")

    def results(self, task: str | Task) -> Results:
        """The results that have arrived, opened and checked (without waiting)."""
        task_id = _id(task)
        return self._look(task_id, 0, self._created_jobs(task_id))[1]

    def wait(self, task: str | Task, timeout: float = 600, progress: bool | None = None) -> Results:
        """Waits for every job (showing a progress bar where someone watches, unless
        ``progress`` says otherwise) and returns the results, opened and checked. Raises
        :class:`~fedq.errors.Incomplete`, which carries the results so far, after ``timeout``
        seconds."""
        task_id = _id(task)
        deadline = time.monotonic() + timeout
        shown = self.task(task_id)
        if shown.get("parent"):
            raise errors.BadInput(
                f"task {task_id} is a subtask of {shown['parent']}: its results go to the node that "
                f"created it; ask for {shown['parent']}'s",
                "bad_input",
            )
        created = self._created_jobs(task_id)
        bar = Progress(task_id, len(shown["jobs"]), progress)
        try:
            while True:
                # One look by the client's own rule (every job finished, every result here).
                shown, results = self._look(task_id, max(0, int(deadline - time.monotonic())), created)
                jobs = shown["jobs"]
                bar.update(jobs, {j["organization"]: j["organization_name"] for j in jobs})
                if results.complete:
                    return results
                if time.monotonic() >= deadline:
                    pending = [
                        f"{j['organization_name'] or j['organization']} ({j['status']})"
                        for j in shown["jobs"]
                        if not any(r.job == j["id"] for r in results)
                    ]
                    raise errors.Incomplete(
                        f"task {task_id}: {len(pending)} organization(s) had no result after "
                        f"{timeout:g} s: {', '.join(pending)}; the results are partial. Wait again "
                        f"later (client.wait({task_id!r}))",
                        results,
                        pending,
                    )
        finally:
            bar.close()

    def _created_jobs(self, task_id: str) -> list[tuple[str, str]]:
        """The jobs as created, where this machine created the task (the record `fedq` keeps
        too): the client checks results against them, and gives them in the order of the
        organizations asked for. Empty for a task created elsewhere."""
        try:
            created = [(job, org) for job, org in json.loads(_task_record(task_id).read_text())]
        except (OSError, ValueError):
            return []
        self._native.expect(task_id, created)
        return created

    def _look(self, task_id: str, wait: int, created: list[tuple[str, str]]) -> tuple[dict[str, Any], Results]:
        """The task as the server shows it, and its results so far, opened and checked."""
        look = self._native.look(task_id, wait)
        shown = json.loads(look.task)
        names = {j["organization"]: j["organization_name"] for j in shown["jobs"]}
        jobs = [job for job, _ in created] or [j["id"] for j in shown["jobs"]]
        order = {job: i for i, job in enumerate(jobs)}
        results = [
            Result(r.job, names.get(r.organization) or r.organization, r.organization, r.status, r.output, r.reason, r.log)
            for r in look.results
        ]
        results.sort(key=lambda r: order.get(r.job, len(order)))
        return shown, Results(task_id, results, look.complete)


def _store(trust_store: str | os.PathLike[str] | None) -> str | None:
    if trust_store is None:
        return str(trust_store_path())
    if trust_store == IN_MEMORY:
        return None
    return str(trust_store)


def _id(task: str | Task) -> str:
    return task.id if isinstance(task, Task) else str(task)


def _is_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


