"""``hyperdht demo`` end to end, and the emulated-NAT socket it relies on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from hyperdht.testing.natsocket import NATSocket, nat_socket

DEADLINE = 30.0  # the demo takes about a second; only a broken run waits this long
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

try:
    import gevent  # noqa: F401

    HAVE_GEVENT = True
except ImportError:
    HAVE_GEVENT = False

STEPS = [
    r"^ 1\. bootstrap node listening on 127\.0\.0\.1:\d+$",
    r"^ 2\. 3 relay nodes joined: ",
    r"^ 3\. node N listening on 127\.0\.0\.1:\d+ behind an emulated NAT",
    r"^ 4\. N announced key [0-9a-f]{16}\.\.\. \(stored by [1-9]\d* nodes\)$",
    r"^ 5\. client C on 127\.0\.0\.1:\d+ looked the key up: peer 127\.0\.0\.1:\d+, returned by ",
    r"^ 6\. C pings N directly: no answer .*\(RequestTimeout\), its NAT dropped [1-9]",
    r"^ 7\. C hole punches through 127\.0\.0\.1:\d+: N answered from 127\.0\.0\.1:\d+",
    r"^ 8\. C -> N on the punched path: 'hello from the client'$",
    r"^ 9\. N -> C: 'hello back from behind the NAT'$",
    r"^demo finished",
]


@pytest.mark.parametrize("demo_backend", ["thread", "gevent"])
def test_demo_runs_every_step(demo_backend: str) -> None:
    if demo_backend == "gevent" and not HAVE_GEVENT and not IN_CI:
        pytest.skip("gevent is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "hyperdht", "demo", "--backend", demo_backend],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 0, result
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"hyperdht demo ({demo_backend} backend), everything on 127.0.0.1"
    assert len(lines) == len(STEPS) + 1, lines
    for pattern, line in zip(STEPS, lines[1:], strict=True):
        assert re.search(pattern, line), (pattern, line)
    # The peer found, pinged and punched is the NATed node of step 3.
    natted = re.search(r"on (127\.0\.0\.1:\d+) behind", lines[3]).group(1)  # type: ignore[union-attr]
    assert f"peer {natted}," in lines[5]
    assert f"N answered from {natted}," in lines[7]


def test_demo_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hyperdht", "demo", "--backend", "nope"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("hyperdht demo: error: ")


# -- the emulated NAT ------------------------------------------------------------


@pytest.fixture
def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(DEADLINE)
    yield sock  # type: ignore[misc]
    sock.close()


def wait_queued(nat: NATSocket) -> None:
    """Block until a datagram is queued on the wrapped socket (unread)."""
    nat.socket.settimeout(DEADLINE)
    nat.socket.recv(100, socket.MSG_PEEK)


def test_nat_drops_strangers_until_it_has_sent_to_them(udp: socket.socket) -> None:
    with NATSocket.bind("127.0.0.1") as nat:
        here = nat.getsockname()
        udp.sendto(b"unsolicited", here)
        wait_queued(nat)
        nat.setblocking(False)
        with pytest.raises(BlockingIOError):  # dropped, and nothing else waiting
            nat.recvfrom(100)
        assert nat.dropped == 1
        assert not nat.allows(udp.getsockname())

        nat.sendto(b"hi", udp.getsockname())  # opens the filter to udp's address
        assert nat.allows(udp.getsockname())
        assert udp.recvfrom(100) == (b"hi", here)
        udp.sendto(b"answer", here)
        nat.settimeout(DEADLINE)
        assert nat.recvfrom(100) == (b"answer", udp.getsockname())
        assert nat.dropped == 1


def test_nat_filters_on_host_and_port(udp: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, NATSocket.bind() as nat:
        other.bind(("127.0.0.1", 0))
        nat.setblocking(False)
        nat.sendto(b"hi", udp.getsockname())
        other.sendto(b"same host, other port", nat.getsockname())
        udp.sendto(b"ok", nat.getsockname())
        nat.setblocking(True)
        nat.settimeout(DEADLINE)
        assert nat.recvfrom(100)[0] == b"ok"
        assert nat.dropped == 1


def test_nat_delegates_to_the_wrapped_socket() -> None:
    with NATSocket.bind() as nat:
        assert nat.fileno() == nat.socket.fileno()
        assert nat.getsockname() == nat.socket.getsockname()
        nat.settimeout(1.5)
        assert nat.gettimeout() == nat.socket.gettimeout() == 1.5
        nat.setblocking(False)
        assert nat.gettimeout() == 0.0
    assert nat.socket.fileno() == -1  # closed with the wrapper


def test_nat_socket_factory() -> None:
    with nat_socket("thread") as sock:
        assert isinstance(sock, NATSocket)
    with nat_socket("gevent") as sock:  # one class serves both drivers
        assert isinstance(sock, NATSocket)
    with pytest.raises(ValueError):
        nat_socket("trio")
