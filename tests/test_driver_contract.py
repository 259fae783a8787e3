"""The shape of the driver layer: the contract's two halves, the one
registry of backend names, the one shared socket-driver implementation,
the library's exception types, and a simulator that reaches into no other
object's private state.

Nothing here needs the network except the bind tests (loopback only).
"""

from __future__ import annotations

import ast
import errno
import socket
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import hyperdht.drivers
from hyperdht.datagram import SendOptions
from hyperdht.drivers import BACKENDS, DRIVER_CLASSES, create_driver, driver_class
from hyperdht.drivers.base import Driver, Transport, Waiting
from hyperdht.drivers.socket import RECV_BATCH, SocketDriver
from hyperdht.drivers.thread import ThreadDriver
from hyperdht.errors import ArgumentError, ArgumentTypeError, BindError, HyperDHTError, StateError
from hyperdht.ipencoding import Address
from hyperdht.testing import Network, TraceEvent

try:
    import gevent
except ImportError:  # pragma: no cover - depends on the environment
    gevent = None

TESTING = Path(__file__).resolve().parent.parent / "hyperdht" / "testing"


class Recorder:
    """An endpoint that records what it is given and sends what it holds."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address, float]] = []
        self.out: list[Any] = []
        self.flushes = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append((data, addr, now))

    def datagrams_to_send(self) -> list[Any]:
        self.flushes += 1
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


# -- the contract ------------------------------------------------------------------


def test_transport_has_no_blocking_waits_and_driver_is_both_halves() -> None:
    for name in ("wait", "new_event", "spawn", "lock", "locked"):
        assert not hasattr(Transport, name), name
    for name in ("start", "flush", "close", "send_datagrams", "now", "address"):
        assert not hasattr(Waiting, name), name
    assert issubclass(Driver, Transport) and issubclass(Driver, Waiting)


# -- the registry -----------------------------------------------------------------


def test_backends_are_the_registry_names() -> None:
    assert tuple(DRIVER_CLASSES) == BACKENDS
    assert BACKENDS[0] == "thread"
    assert driver_class("thread") is ThreadDriver


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ArgumentError, match="backend") as info:
        create_driver("carrier-pigeon", host="127.0.0.1", port=0)
    assert isinstance(info.value, ValueError)
    for name in BACKENDS:
        assert repr(name) in str(info.value)
    with pytest.raises(ArgumentError, match="create_driver"):
        create_driver(object(), host="127.0.0.1", port=0)


class _EntryDriver(ThreadDriver):
    """Stands for a backend added by one registry entry."""


def test_a_backend_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dict(DRIVER_CLASSES, extra=f"{__name__}:_EntryDriver")
    monkeypatch.setattr(hyperdht.drivers, "DRIVER_CLASSES", MappingProxyType(entries))
    driver = create_driver("extra", host="127.0.0.1", port=0)
    try:
        assert type(driver) is _EntryDriver
    finally:
        driver.close()


# -- one shared implementation -------------------------------------------------------

SHARED = (
    "start",
    "flush",
    "close",
    "wait",
    "spawn",
    "send_datagrams",
    "_receive_loop",
    "_timer_loop",
    "_run_spawned",
)


def _backend_classes() -> list[type[SocketDriver]]:
    classes: list[type[SocketDriver]] = [ThreadDriver]
    if gevent is not None:
        classes.append(driver_class("gevent"))  # type: ignore[arg-type]
    return classes


@pytest.mark.parametrize("cls", _backend_classes(), ids=lambda c: c.__name__)
def test_backends_do_not_reimplement_the_shared_parts(cls: type[SocketDriver]) -> None:
    assert issubclass(cls, SocketDriver)
    for name in SHARED:
        assert name not in vars(cls), f"{cls.__name__} overrides {name}"


class _FakeSocket:
    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 9)

    def sendto(self, data: bytes, addr: Any) -> int:
        return len(data)

    def close(self) -> None:
        pass


class _Inline(SocketDriver):
    """A SocketDriver that starts no tasks (the test runs the receive loop
    itself) and whose clock counts its reads."""

    def __init__(self) -> None:
        import threading

        super().__init__(_FakeSocket(), owned=False, lock=threading.RLock())
        self.clock_reads = 0
        self.receive_loop: Callable[..., None] = lambda *a: None

    def now(self) -> float:
        self.clock_reads += 1
        return float(self.clock_reads)

    def new_event(self) -> Any:
        import threading

        return threading.Event()

    def _prepare_receiver(self) -> Any:
        return None, None

    def _launch(self, name: str, fn: Callable[..., object], *args: Any) -> None:
        if name.startswith("hyperdht-recv-"):
            self.receive_loop = fn  # type: ignore[assignment]

    def _spawn_task(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._run_spawned(fn, args)

    def _stop_tasks(self) -> None:
        pass


def test_a_batch_reads_the_clock_once_and_flushes_once() -> None:
    driver = _Inline()
    endpoint = Recorder()
    driver.start(endpoint)
    queued = [(b"%d" % i, ("127.0.0.2", 1000 + i)) for i in range(1, RECV_BATCH + 5)]
    firsts = [(b"0", ("127.0.0.2", 1000))]

    def first() -> tuple[bytes, Any] | None:
        if firsts:
            return firsts.pop()
        driver.close()  # after one batch
        return None

    def drain(bufsize: int) -> tuple[bytes, Any]:
        if not queued:
            raise BlockingIOError
        return queued.pop(0)

    flushes_before = endpoint.flushes
    reads_before = driver.clock_reads
    driver.receive_loop(endpoint, first, drain)
    assert [d for d, _, _ in endpoint.received] == [b"%d" % i for i in range(RECV_BATCH)]
    assert driver.clock_reads - reads_before == 1
    assert len({now for _, _, now in endpoint.received}) == 1
    assert endpoint.flushes - flushes_before == 1
    assert len(queued) == 5  # left for the next batch


def test_spawned_exception_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    driver = _Inline()

    def boom() -> None:
        raise ValueError("spawned failure")

    driver.spawn(boom)
    assert "spawned" in caplog.text and "spawned failure" in caplog.text


# -- exceptions -----------------------------------------------------------------------


def test_socket_driver_errors_are_library_errors() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(BindError) as info:
            ThreadDriver(host="127.0.0.1", port=taken.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE
        assert isinstance(info.value, OSError) and isinstance(info.value, HyperDHTError)
    finally:
        taken.close()
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    with pytest.raises(ArgumentError, match="socket"):
        ThreadDriver(socket=closed)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="socket"):
        ThreadDriver(socket=object())  # type: ignore[arg-type]
    driver = ThreadDriver(host="127.0.0.1")
    try:
        driver.start(Recorder())
        with pytest.raises(StateError, match="already started"):
            driver.start(Recorder())
    finally:
        driver.close()


def test_simulator_errors_are_library_errors() -> None:
    net = Network()
    host = net.host("198.18.0.1")
    host.create_driver(port=5000)
    with pytest.raises(BindError) as info:
        host.create_driver(port=5000)
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(ArgumentError, match="port"):
        host.create_driver(port=70000)
    with pytest.raises(ArgumentError, match="loss"):
        Network(loss=2.0)
    with pytest.raises(ArgumentError, match="mapping"):
        net.nat(mapping="cone")  # type: ignore[arg-type]
    driver = host.create_driver()
    driver.start(Recorder())
    with pytest.raises(StateError, match="already started"):
        driver.start(Recorder())
    with pytest.raises(StateError, match="deadlock"):
        driver.new_event().wait()


# -- the simulator ----------------------------------------------------------------------


def _private_reach_ins(path: Path) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` (dunders excepted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("module", ["network.py", "driver.py", "host.py", "nat.py"])
def test_simulator_modules_use_no_other_objects_privates(module: str) -> None:
    found = _private_reach_ins(TESTING / module)
    # ScheduledCall is defined in network.py itself: its handle is the module's own.
    allowed = {"network.py": ["call._fire"]}.get(module, [])
    assert [f for f in found if f.rsplit(": ", 1)[1] not in allowed] == []


def test_the_reach_in_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(driver):\n    return driver._endpoint\n")
    assert _private_reach_ins(bad) == ["bad.py:2: driver._endpoint"]


def test_send_options_travel_with_the_datagram_to_delivery() -> None:
    events: list[TraceEvent] = []
    net = Network(trace=events.append)
    nat = net.nat("198.18.0.9", filtering="full-cone")
    a = net.host("10.0.0.2", nat=nat).create_driver(port=1000)
    b_endpoint = Recorder()
    b = net.host("198.18.0.1").create_driver(port=2000)
    a_endpoint = Recorder()
    a.start(a_endpoint)
    b.start(b_endpoint)
    low = SendOptions(ttl=3)
    with a.locked():
        a_endpoint.out.append((b"low", Address("198.18.0.1", 2000), low))
        a_endpoint.out.append((b"plain", Address("198.18.0.1", 2000), None))
    net.run()
    assert [d for d, _, _ in b_endpoint.received] == [b"low", b"plain"]
    seen = [(e.kind, e.data, e.options) for e in events if e.kind in ("send", "deliver")]
    assert seen == [
        ("send", b"low", low),
        ("send", b"plain", None),
        ("deliver", b"low", low),
        ("deliver", b"plain", None),
    ]
