"""fedq for researchers: run analyses across organizations whose data never leaves them.

>>> import fedq
>>> client = fedq.Client.login("https://fedq.example.org", "alice", key="alice.key")
>>> results = client.run("registries", "fedq/secure-sum:0.1.0", ["registry-0", "registry-1"])
>>> results.json()

Inputs are sealed, and results opened, on this machine with your organization's key, by the same
Rust code as the ``fedq`` command line; the server sees neither.
"""

from ._native import __version__
from .client import IN_MEMORY, Client, Task
from .errors import (
    AnalysisFailed,
    AuthenticationFailed,
    BadInput,
    FedqError,
    Forbidden,
    Incomplete,
    KeyFileError,
    KeyProblem,
    NotAMember,
    NotFound,
    Refused,
    ResultRefused,
    ServerUnreachable,
    TlsError,
    UntrustedKey,
    WrongKey,
)
from .results import Result, Results

__all__ = [
    "IN_MEMORY",
    "AnalysisFailed",
    "AuthenticationFailed",
    "BadInput",
    "Client",
    "FedqError",
    "Forbidden",
    "Incomplete",
    "KeyFileError",
    "KeyProblem",
    "NotAMember",
    "NotFound",
    "Refused",
    "Result",
    "Results",
    "ResultRefused",
    "ServerUnreachable",
    "Task",
    "TlsError",
    "UntrustedKey",
    "WrongKey",
    "__version__",
]
