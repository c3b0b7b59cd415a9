"""Type stubs of the native client (``fedq-client`` in Rust, bound with PyO3).

Use :class:`fedq.Client`; this module is its engine. Its failures are raised as the
exceptions of :mod:`fedq.errors`.
"""

from pathlib import Path

__version__: str
#: The statuses a job cannot leave (fedq-core's one list of them).
TERMINAL_STATUSES: list[str]

def session_path() -> Path: ...
def trust_store_path() -> Path: ...
def task_record_path(task: str) -> Path: ...

from .errors import UntrustedKey

class Created:
    task: str
    run: str
    #: ``(job, organization)``, in the order of the organizations asked for.
    jobs: list[tuple[str, str]]

class Opened:
    job: str
    organization: str
    status: str
    output: bytes
    reason: str | None
    log: str

class Look:
    #: The task as the server shows it, as JSON text.
    task: str
    complete: bool
    results: list[Opened]

class KeyDecision:
    organization: str
    fingerprint: str | None
    refused: UntrustedKey | None

class Client:
    @staticmethod
    def login(
        server: str,
        username: str,
        password: str,
        ca_file: str | None = None,
        allow_plaintext: bool = False,
        trust_store: str | None = None,
        trust_on_first_use: bool = False,
    ) -> Client: ...
    @staticmethod
    def with_token(
        server: str,
        token: str,
        ca_file: str | None = None,
        allow_plaintext: bool = False,
        trust_store: str | None = None,
        trust_on_first_use: bool = False,
    ) -> Client: ...
    def token(self) -> str: ...
    def use_key(self, path: str, organization: str) -> str: ...
    def call(self, method: str, path: str, body: str | None = None) -> str: ...
    def create_task(
        self,
        collaboration: str,
        image: str,
        organizations: list[str],
        inputs: list[bytes],
        name: str = "",
        return_log: bool = False,
    ) -> Created: ...
    def expect(self, task: str, jobs: list[tuple[str, str]]) -> None: ...
    def organization_id(self, name_or_id: str) -> str: ...
    def collaboration_id(self, name_or_id: str) -> str: ...
    def look(self, task: str, wait_secs: int = 0) -> Look: ...
    def trusted_keys(self, collaboration: str) -> list[KeyDecision]: ...
    def trust(self, organization: str, fingerprint: str) -> bool: ...
