"""Fixtures for tests that need a real NAT (see lab.py).

``nat_lab`` / ``nat_lab2`` (second NAT router R2 with host B2 behind it) and
``nat_lab_factory`` build a :class:`NatLab`; ``routed_lab_factory`` builds
:class:`RoutedLab` s.  Each tears its labs down afterwards and checks that
their namespaces are gone.  Without root/iptables the tests skip locally and
fail under CI=true.  Each test body here is bounded to TEST_TIME_LIMIT
seconds (SIGALRM; ``@pytest.mark.time_limit(s)`` raises it for one test), so
a hang fails fast and teardown still runs.

Marker ``matrix``: the two-NAT baseline runs (several labs per test, thread
backend only); deselect with ``-m "not matrix"``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .lab import NatLab, RoutedLab, lab_available, leftover_namespaces, reap_stale_namespaces

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
def routed_lab_factory() -> Iterator[Callable[..., RoutedLab]]:
    """``make(chain=4, nat_a="linux", nat_b="linux", bootstrap_at=None) -> RoutedLab``
    (started); all closed at teardown, which fails if a namespace is left."""
    require_nat_lab()
    labs: list[RoutedLab] = []

    def make(**kwargs: Any) -> RoutedLab:
        lab = RoutedLab(**kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()
    left = [n for lab in labs for n in leftover_namespaces(lab.id)]
    assert not left, f"namespaces left behind: {left}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "time_limit(seconds): this test's own time limit")
    config.addinivalue_line(
        "markers", "matrix: two-NAT baseline runs (several labs per test; thread backend)"
    )


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

    marker = item.get_closest_marker("time_limit")
    limit = float(marker.args[0]) if marker else TEST_TIME_LIMIT

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{item.nodeid} exceeded {limit}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
