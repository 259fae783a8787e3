"""Fixtures for tests that need a real NAT (see lab.py).

``nat_lab`` / ``nat_lab2`` (second NAT router R2 with host B2 behind it) and
``nat_lab_factory`` build a :class:`NatLab`, tear it down afterwards and check
that its namespaces are gone.  Without root/iptables the tests skip locally
and fail under CI=true.  Each test body here is bounded to TEST_TIME_LIMIT
seconds (SIGALRM), so a hang fails fast and teardown still runs.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .lab import NatLab, lab_available, leftover_namespaces, reap_stale_namespaces

TEST_TIME_LIMIT = 20.0
_reaped = False


def require_nat_lab() -> None:
    """Skip (locally) or fail (CI=true) unless a NatLab can be built here."""
    global _reaped
    ok, reason = lab_available()
    if not ok:
        reason = f"NAT lab unavailable: {reason}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    if not _reaped:
        _reaped = True
        reap_stale_namespaces()  # only those of dead processes


@pytest.fixture
def nat_lab_factory() -> Iterator[Callable[..., NatLab]]:
    """``make(second_nat=False) -> NatLab`` (started); all closed at teardown."""
    require_nat_lab()
    labs: list[NatLab] = []

    def make(**kwargs: Any) -> NatLab:
        lab = NatLab(**kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()
    left = [n for lab in labs for n in leftover_namespaces(lab.id)]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def nat_lab(nat_lab_factory: Callable[..., NatLab]) -> NatLab:
    """P and B on the wan, A behind NAT router R."""
    return nat_lab_factory()


@pytest.fixture
def nat_lab2(nat_lab_factory: Callable[..., NatLab]) -> NatLab:
    """As ``nat_lab`` plus NAT router R2 with host B2 behind it."""
    return nat_lab_factory(second_nat=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        return (yield)

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{item.nodeid} exceeded {TEST_TIME_LIMIT}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIME_LIMIT)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
