"""Shared fixtures.

``HYPERDHT_TEST_BACKEND`` (set by the tox backend factor) picks the driver
that every real-socket test runs on; the ``backend`` fixture exposes it.
"""

from __future__ import annotations

import os

import pytest

BACKEND = os.environ.get("HYPERDHT_TEST_BACKEND", "thread")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def backend() -> str:
    """The driver name the suite runs on ("thread" or "gevent")."""
    if BACKEND == "gevent":
        pytest.importorskip("gevent") if not IN_CI else __import__("gevent")
    return BACKEND


def require(condition: bool, reason: str) -> None:
    """Skip locally when a CI-only tool is missing, but fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)
