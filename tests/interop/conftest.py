"""Fixtures for tests that run against the Node.js reference (hyperdht@1.3.0).

Every fixture here depends on ``node_env``: without Node.js or without the
pinned packages (``npm ci --prefix tests/interop``) the test is skipped
locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from nodepeer import NodePeer, NodePeerFactory, NodeProcess, NodeSwarm, node_available

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
