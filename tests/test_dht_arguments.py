"""Bad arguments to the public API raise ValueError naming the argument,
before anything is bound or started (so nothing leaks)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hyperdht import DHT, HyperDHT
from hyperdht.dhtrpc import DHTCore
from hyperdht.dhtrpc.query import QueryOptions
from hyperdht.errors import ArgumentError, HyperDHTError
from hyperdht.ipencoding import Address, Node
from hyperdht.testing import Network
from hyperdht.udprequest import RequestCore


def driver_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("hyperdht-")]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"id": b"short"}, "id"),
        ({"id": "x" * 32}, "id"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"timeout": 0}, "timeout"),
        ({"bootstrap": ["127.0.0.1:0"]}, "bootstrap"),
        ({"bootstrap": ["127.0.0.1:http"]}, "bootstrap"),
        ({"nodes": [Node(b"x" * 31, Address("127.0.0.1", 5))]}, "nodes"),
        ({"nodes": [(b"x" * 32, "no port")]}, "nodes"),
        ({"backend": "trio"}, "backend"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], named: str) -> None:
    before = driver_threads()
    with pytest.raises(ValueError, match=named):
        DHT(host="127.0.0.1", **kwargs)
    assert driver_threads() == before


def test_hyperdht_rejects_bad_store_options_and_closes_its_node() -> None:
    net = Network(seed=3)
    host = net.host("198.18.0.1")
    with pytest.raises(ValueError, match="max_age"):
        HyperDHT(backend=host, port=1000, max_age=0)
    # The node it created was closed: the port is free again.
    HyperDHT(backend=host, port=1000).close()


def test_operations_reject_bad_arguments() -> None:
    net = Network(seed=4)
    with HyperDHT(backend=net.host("198.18.0.1")) as dht:
        with pytest.raises(ValueError, match="target"):
            dht.query("cmd", b"short")
        with pytest.raises(ValueError, match="command"):
            dht.query("", bytes(32))
        with pytest.raises(ValueError, match="value"):
            dht.update("cmd", bytes(32), "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="concurrency"):
            dht.query("cmd", bytes(32), concurrency=0)
        with pytest.raises(ValueError, match="addr"):
            dht.ping("198.18.0.2")  # no port
        with pytest.raises(ValueError, match="peer"):
            dht.holepunch("nonsense:1:2", "198.18.0.2:1")
        with pytest.raises(ValueError, match="key"):
            dht.lookup(b"short")
        with pytest.raises(ValueError, match="port"):
            dht.announce(bytes(32), port=65536)
        with pytest.raises(ValueError, match="local_address"):
            dht.lookup(bytes(32), local_address=("::1", 5))
        with pytest.raises(ValueError, match="handler"):
            dht.on_query("cmd", "not callable")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="built in"):
            dht.on_query("_ping", lambda node, query: None)
        with pytest.raises(ValueError, match="reserved"):
            dht.on_update("peers", lambda node, query: None)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"id": b"short"}, "id"),
    ],
)
def test_every_layer_agrees_on_the_shared_arguments(kwargs: dict[str, Any], named: str) -> None:
    """DHT, HyperDHT, DHTCore and RequestCore validate with the same
    functions, so a value one rejects, all reject, with ArgumentError."""
    net = Network(seed=4)
    makers: list[Any] = [
        lambda: DHT(backend=net.host(), **kwargs),
        lambda: HyperDHT(backend=net.host(), **kwargs),
        lambda: DHTCore(**kwargs),
    ]
    if "timeout" in kwargs:
        makers.append(lambda: RequestCore(**kwargs))
    for make in makers:
        with pytest.raises(ArgumentError, match=named):
            make()


def test_query_options_are_checked_once_for_core_and_node() -> None:
    net = Network(seed=5)
    with DHT(backend=net.host()) as dht:
        with pytest.raises(ArgumentError, match="concurrency"):
            dht.query("x", bytes(32), concurrency=True)
        with dht.driver.locked(), pytest.raises(ArgumentError, match="concurrency"):
            dht.core.query("x", bytes(32), now=dht.driver.now(), concurrency=True)
    with pytest.raises(ArgumentError, match="concurrency"):
        QueryOptions(concurrency=0)


def test_configuration_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        DHT(None, ["127.0.0.1:1"])  # type: ignore[misc]
    with pytest.raises(TypeError):
        HyperDHT(None)  # type: ignore[misc]


def test_every_error_raised_derives_from_hyperdht_error() -> None:
    with pytest.raises(HyperDHTError):
        DHT(port=70000)
    with pytest.raises(HyperDHTError):
        RequestCore(timeout=-1)


def test_a_command_that_cannot_be_encoded_is_refused_before_the_query_starts() -> None:
    net = Network(seed=6)
    with DHT(backend=net.host()) as dht:
        with pytest.raises(ArgumentError, match="command"):
            dht.query("bad\udc80", bytes(32))
        assert dht.core.inflight_queries == 0
