"""Fixtures for tests that run against the Node.js reference (hyperdht@1.3.0).

Every Node.js fixture here depends on ``node_env``: without Node.js or
without the pinned packages (``npm ci --prefix reference``) the test is
skipped locally and fails under ``CI=true``. ``py_node`` starts Python
nodes (:class:`hyperdht.HyperDHT` on 127.0.0.1, thread backend: the tests
block on Node.js replies in ordinary threads) and closes them at teardown;
``aio_node`` does the same for :class:`hyperdht.aio.AsyncHyperDHT` nodes
(``test_interop_aio.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest
from nodepeer import NodePeer, NodePeerFactory, NodeProcess, NodeSwarm, node_available

from hyperdht import HyperDHT
from hyperdht.aio import AsyncDHT, AsyncHyperDHT

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def node_env() -> str:
    """Require node + the pinned reference packages; returns a version summary."""
    ok, reason = node_available()
    if not ok:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return reason


@pytest.fixture
def node_peer(node_env: str) -> Iterator[NodePeerFactory]:
    """Factory for Node.js peers (:class:`NodePeerFactory`); all stopped at teardown."""
    factory = NodePeerFactory()
    yield factory
    factory.close_all()


@pytest.fixture
def node_processes(node_env: str) -> Iterator[list[NodeProcess]]:
    """A list to append other Node processes to (e.g. proxies); closed at teardown."""
    procs: list[NodeProcess] = []
    yield procs
    for p in reversed(procs):
        p.close()


@pytest.fixture
def node_bootstrap(node_peer: NodePeerFactory) -> NodePeer:
    """A lone Node.js node to bootstrap from."""
    return node_peer()


@pytest.fixture
def node_swarm(node_peer: NodePeerFactory, node_bootstrap: NodePeer) -> NodeSwarm:
    """A Node.js bootstrap node plus 3 Node.js peers that know each other."""
    peers = node_peer.many(3, bootstrap=[node_bootstrap])
    for peer in peers:
        peer.call("ready")  # the initial bootstrap query has finished
    # The bootstrap node now knows every peer: one more round from each peer
    # reaches all the others, and each request adds its sender there.
    for peer in peers:
        peer.call("bootstrap")
    return NodeSwarm(node_bootstrap, peers)


class PyNodeFactory:
    """``factory(bootstrap=[...], **kw)`` starts a :class:`HyperDHT` on
    127.0.0.1; bootstrap entries may be NodePeers, HyperDHTs, ``(host,
    port)`` or ``"host:port"``. Other keywords go to :class:`HyperDHT`.
    Every node started is closed at teardown."""

    def __init__(self) -> None:
        self.started: list[HyperDHT] = []

    @staticmethod
    def address_of(b: Any) -> Any:
        if isinstance(b, NodePeer):
            return b.addr
        if isinstance(b, HyperDHT):
            return (b.address.host, b.address.port)
        return b

    def __call__(self, *, bootstrap: Iterable[Any] = (), **kwargs: Any) -> HyperDHT:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("backend", "thread")
        node = HyperDHT(bootstrap=[self.address_of(b) for b in bootstrap], **kwargs)
        self.started.append(node)
        return node

    def close_all(self) -> None:
        for node in reversed(self.started):
            node.close()


@pytest.fixture
def py_node() -> Iterator[PyNodeFactory]:
    """Factory for Python nodes (:class:`PyNodeFactory`); all closed at teardown."""
    factory = PyNodeFactory()
    yield factory
    factory.close_all()


class AioNodeFactory:
    """``factory(bootstrap=[...], **kw)`` starts a
    :class:`hyperdht.aio.AsyncHyperDHT` on 127.0.0.1 on the running event
    loop (call it inside the test's coroutine); bootstrap entries as for
    :class:`PyNodeFactory`, AsyncDHTs too. Every node started is closed at
    teardown."""

    def __init__(self) -> None:
        self.started: list[AsyncDHT] = []

    @staticmethod
    def address_of(b: Any) -> Any:
        if isinstance(b, AsyncDHT):
            return (b.address.host, b.address.port)
        return PyNodeFactory.address_of(b)

    def __call__(self, *, bootstrap: Iterable[Any] = (), **kwargs: Any) -> AsyncHyperDHT:
        kwargs.setdefault("host", "127.0.0.1")
        node = AsyncHyperDHT(bootstrap=[self.address_of(b) for b in bootstrap], **kwargs)
        self.started.append(node)
        return node

    async def close_all(self) -> None:
        for node in reversed(self.started):
            await node.close()


@pytest.fixture
async def aio_node() -> AsyncIterator[AioNodeFactory]:
    """Factory for asyncio Python nodes (:class:`AioNodeFactory`); all closed
    at teardown, in the test's event loop."""
    factory = AioNodeFactory()
    yield factory
    await factory.close_all()
