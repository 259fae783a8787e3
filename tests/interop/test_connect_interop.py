"""connect() and its NAT opener against the Node.js reference (hyperdht@1.3.0).

On loopback nobody is behind a NAT, so connect() finds itself public and
punches through the referrer; the opener (an untracked ``_ping`` with a low
TTL) is checked on its own: when it does reach a reference node, the node
answers it like any ping and nothing else happens.
"""

from __future__ import annotations

from typing import Any

import pytest
from nodepeer import NodePeer, NodePeerFactory

from hyperdht import Address, HyperDHT


def _addr(x: Any) -> tuple[str, int]:
    if isinstance(x, NodePeer):
        return x.addr
    if isinstance(x, HyperDHT):
        return (x.address.host, x.address.port)
    return (x[0], int(x[1]))


@pytest.mark.parametrize(("referrer_kind", "target_kind"), [("node", "python"), ("python", "node")])
def test_connect_through_a_referrer(
    referrer_kind: str, target_kind: str, node_peer: NodePeerFactory, py_node: Any
) -> None:
    referrer = node_peer() if referrer_kind == "node" else py_node()
    boot = [_addr(referrer)]
    target = node_peer(bootstrap=boot) if target_kind == "node" else py_node(bootstrap=boot)
    requester = py_node(bootstrap=boot)
    for n in (target, requester):
        if isinstance(n, NodePeer):
            n.call("ready", timeout=20)
        else:
            assert n.ready(20)
    got = requester.connect(_addr(target), _addr(referrer))
    assert (got.host, got.port) == _addr(target)
    assert requester.core.natted is False  # loopback: we are public, no opener
    if isinstance(referrer, NodePeer):
        evs = referrer.call("events", event="holepunch")["events"]
        assert len(evs) == 1
    else:
        assert referrer.stats.forwarded == 1


def test_the_opener_is_a_ping_the_reference_answers(
    node_peer: NodePeerFactory, py_node: Any
) -> None:
    n = node_peer()
    p = py_node()
    assert p.ready(20)
    before = p.stats.drops["unmatched_response"]
    with p.driver.locked():
        # A TTL that does reach it; a tid no request of ours uses.
        p.core.send_opener(Address(*n.addr), 64)
    # The node answers the opener (first: same path, in order), then our
    # ping; the opener's answer matches no request and is dropped.
    assert _addr(p.ping(n.addr)) == _addr(p)
    assert p.stats.drops["unmatched_response"] == before + 1
    assert n.alive
    assert n.call("events", event="uncaughtException")["events"] == []
