"""What can go wrong, as exceptions a researcher can catch by kind. The native client
(``fedq._native``) raises these classes itself: which one a failure is, is decided in Rust.

Every exception has ``code``: the stable code the command line prints and ``docs/api.md`` lists
(the server's own code for a refusal, such as ``not_found`` or ``forbidden``; the envelope's
refusal code, such as ``bad_signature``, for a result that did not open), and ``exit_status``:
what ``fedq`` (and ``python -m fedq``) exits with for it: 3 for :class:`Incomplete`, 1 otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import Results


class FedqError(Exception):
    """Base of every fedq failure."""

    exit_status = 1

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class ServerUnreachable(FedqError):
    """No answer from the server (address, network, or TLS handshake)."""


class Refused(FedqError):
    """The server refused the request; ``status`` is its HTTP status, ``reason`` the reason
    code of a refused envelope."""

    def __init__(self, message: str, code: str, status: int, reason: str | None = None) -> None:
        super().__init__(message, code)
        self.status = status
        self.reason = reason


class AuthenticationFailed(Refused):
    """Wrong user name or password, or a session that has expired (HTTP 401)."""


class Forbidden(Refused):
    """The session may not do this (HTTP 403)."""


class NotFound(Refused):
    """No such task, organization or collaboration for this session (HTTP 404)."""


class KeyProblem(FedqError):
    """Base of the failures about organization keys."""


class WrongKey(KeyProblem):
    """The key file given is not your organization's published key."""


class KeyFileError(KeyProblem):
    """The key file cannot be read, or group or others can read it."""


class UntrustedKey(KeyProblem):
    """A key the server gave is not one you trust: ``key_unknown`` (trust its fingerprint
    first, or allow trust on first use), ``key_changed`` (a key no signed rotation leads to:
    possibly swapped), ``key_revoked``, ``key_not_logged`` (a first or rotated key that the
    transparency log does not prove), or ``trust_store`` (the store cannot be used)."""


class NotAMember(FedqError):
    """An organization is not a member of the collaboration."""


class ResultRefused(FedqError):
    """A result did not open, or is not the answer to what was asked (another task's, job's
    or organization's). ``code`` says which check refused it."""


class TlsError(FedqError):
    """TLS settings are unusable, or the server URL is plain text beyond this machine."""


class BadInput(FedqError, ValueError):
    """An argument is not usable (an unknown name, a malformed id, inputs that do not match)."""


class AnalysisFailed(FedqError):
    """An analysis did not run at every organization: ``reasons`` holds each failed
    organization's, as ``"registry-b: the data has no column 'bmi' (column_missing)"``."""

    def __init__(self, message: str, reasons: list[str]) -> None:
        super().__init__(message, "analysis_failed")
        self.reasons = reasons


class Incomplete(FedqError):
    """A wait ended before every job had its result. ``results`` holds those that arrived,
    ``pending`` the organizations (with their jobs' statuses) still without one."""

    exit_status = 3

    def __init__(self, message: str, results: "Results", pending: list[str]) -> None:
        super().__init__(message, "incomplete")
        self.results = results
        self.pending = pending
