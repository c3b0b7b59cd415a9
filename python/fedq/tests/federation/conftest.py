"""The federation this suite runs against, set up by tests/integration/python_client.rs (run it
with `cargo test --test integration python_client`): server, broker, database and three nodes."""

import json
import os

import pytest

import fedq


def _env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(
            f"{name} is not set: this suite runs against a federation that "
            "`cargo test --test integration python_client` sets up"
        )
    return value


@pytest.fixture(scope="session")
def fed() -> dict:
    return {
        "server": _env("FEDQ_TEST_SERVER"),
        "user": _env("FEDQ_TEST_USER"),
        "password": _env("FEDQ_TEST_PASSWORD"),
        "key": _env("FEDQ_TEST_KEY"),
        "wrong_key": _env("FEDQ_TEST_WRONG_KEY"),
        "outsider": _env("FEDQ_TEST_OUTSIDER_USER"),
        "outsider_key": _env("FEDQ_TEST_OUTSIDER_KEY"),
        "pins": json.loads(_env("FEDQ_TEST_PINS")),
        "counts": json.loads(_env("FEDQ_TEST_COUNTS")),
        "cli": _env("FEDQ_TEST_CLI"),
    }


@pytest.fixture()
def client(fed: dict) -> fedq.Client:
    """Ada, researcher at registry-0, trusting every registry's key by its fingerprint (as after
    comparing them out of band), in the default store the command line uses too."""
    c = fedq.Client.login(fed["server"], fed["user"], fed["password"], key=fed["key"], save_session=True)
    for name, fingerprint in fed["pins"].items():
        c.trust(name, fingerprint)
    return c
