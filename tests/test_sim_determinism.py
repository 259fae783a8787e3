"""A seeded simulation replays exactly: the same seed gives the same
datagrams, byte for byte, in the same order (ids, tids, probes and the
announce store's shuffles all draw from the network's seed)."""

from __future__ import annotations

from hyperdht import HyperDHT, collect_stream
from hyperdht.testing import Network, TraceEvent

BOOT = ("198.18.0.1", 49737)


def run(
    seed: int,
) -> tuple[list[tuple[float, str, tuple[str, int], tuple[str, int], bytes]], list[bytes]]:
    """Bootstrap a small swarm, announce one key from several nodes and look
    it up: every send on the wire, and the ids of the nodes."""
    trace: list[TraceEvent] = []
    net = Network(seed=seed, latency=0.01, jitter=0.005, trace=trace.append)
    boot = HyperDHT(backend=net.host(BOOT[0]), port=BOOT[1], ephemeral=True)
    nodes = [HyperDHT(backend=net.host(), bootstrap=[BOOT]) for _ in range(12)]
    try:
        for node in nodes:
            assert node.ready(timeout=60)
        key = bytes(range(32))
        for node in nodes[:4]:
            node.announce_discard(key)
        # Several announcers of one key: each lookup answer lists them in
        # the order of the serving node's store shuffle.
        for node in nodes[4:7]:
            responses = collect_stream(node.lookup(key))
            assert any(r.peers for r in responses)
        sends = [(e.time, e.kind, e.src, e.dst, e.data) for e in trace if e.kind == "send"]
        return sends, [node.id for node in nodes]
    finally:
        for node in [*nodes, boot]:
            node.close()


def test_the_same_seed_replays_the_same_run() -> None:
    first, first_ids = run(7)
    assert len(first) > 100
    again, again_ids = run(7)
    assert again_ids == first_ids
    assert again == first
    other, other_ids = run(8)
    assert other_ids != first_ids
    assert other != first


def test_nodes_share_the_networks_generator() -> None:
    net = Network(seed=3)
    a, b = net.host(), net.host()
    from hyperdht.ipencoding import Address

    rng = net.node_rng(Address(a.ip, 1))
    assert net.node_rng(Address(b.ip, 2)) is rng
    # Seeded apart from the links' stream, and from the seed alone.
    assert rng.random() == Network(seed=3).node_rng(Address(a.ip, 1)).random()
