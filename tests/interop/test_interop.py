"""Python <-> Node.js interoperability: this package against the reference
``hyperdht@1.3.0`` / ``dht-rpc@2.3.0`` (driven through ``peer.js``).

Each scenario runs in both directions. Everything is on 127.0.0.1 with
ephemeral ports; every wait is a request/response (or a process event)
with a deadline, never a sleep. Python nodes come from the ``py_node``
fixture, Node.js peers from ``node_peer`` (both stopped at teardown).

The golden wire captures (scenario 7) are in ``test_golden_wire.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from nodepeer import NodePeer, NodePeerFactory, RawUdp

from hyperdht import Address, HyperDHT, collect_stream, messages
from hyperdht.ipencoding import node_codec, peer_codec

LOCALHOST = "127.0.0.1"
NODES = node_codec(False, 32)
PEER_CODEC = peer_codec(False)

Addr = tuple[str, int]


# ------------------------------------------------------------------ helpers


def addr(x: Any) -> Addr:
    """(host, port) of a NodePeer, a HyperDHT, an Address or a {host, port} dict."""
    if isinstance(x, NodePeer):
        return x.addr
    if isinstance(x, HyperDHT):
        return (x.address.host, x.address.port)
    if isinstance(x, Address):
        return (x.host, x.port)
    if isinstance(x, dict):
        return (x["host"], int(x["port"]))
    return (x[0], int(x[1]))


def dict_addr(x: Any) -> dict[str, Any]:
    host, port = addr(x)
    return {"host": host, "port": port}


def hex_id(x: NodePeer | HyperDHT) -> str:
    return x.id if isinstance(x, NodePeer) else x.id.hex()


def table(x: NodePeer | HyperDHT) -> dict[str, Addr]:
    """A node's routing table: hex id -> address."""
    if isinstance(x, NodePeer):
        return {n["id"]: addr(n) for n in x.call("nodes")["nodes"]}
    return {n.id.hex(): addr(n.address) for n in x.nodes()}


def wait_ready(nodes: Iterable[NodePeer | HyperDHT]) -> None:
    for n in nodes:
        if isinstance(n, NodePeer):
            n.call("ready", timeout=20)
        else:
            assert n.ready(20), n


@dataclass
class Found:
    """What one node answered to a lookup: public and LAN peers."""

    peers: set[Addr] = field(default_factory=set)
    local: set[Addr] = field(default_factory=set)


def lookup(
    x: NodePeer | HyperDHT, key: bytes, local: tuple[str, int] | None = None
) -> dict[Addr, Found]:
    """Run a lookup from ``x``; answering node's address -> what it returned.
    (A node's own stored peers come first, as from ``127.0.0.1:<own port>``.)"""
    out: dict[Addr, Found] = {}
    if isinstance(x, NodePeer):
        args: dict[str, Any] = {"key": key}
        if local is not None:
            args["localAddress"] = {"host": local[0], "port": local[1]}
        for r in x.call("lookup", **args)["results"]:
            f = out.setdefault(addr(r["node"]), Found())
            f.peers |= {addr(p) for p in r["peers"]}
            f.local |= {addr(p) for p in r["localPeers"]}
    else:
        for r in collect_stream(x.lookup(key, local_address=local)):
            f = out.setdefault(addr(r.node), Found())
            f.peers |= {addr(p) for p in r.peers}
            f.local |= {addr(p) for p in r.local_peers}
    return out


def announce(x: NodePeer | HyperDHT, key: bytes, **kw: Any) -> None:
    """Announce ``key`` from ``x`` (``port=``, ``local=(host, port)``)."""
    local = kw.pop("local", None)
    if isinstance(x, NodePeer):
        if local is not None:
            kw["localAddress"] = {"host": local[0], "port": local[1]}
        x.call("announce", key=key, **kw)
    else:
        x.announce_discard(key, local_address=local, **kw)


def unannounce(x: NodePeer | HyperDHT, key: bytes, **kw: Any) -> None:
    local = kw.pop("local", None)
    if isinstance(x, NodePeer):
        if local is not None:
            kw["localAddress"] = {"host": local[0], "port": local[1]}
        x.call("unannounce", key=key, **kw)
    else:
        x.unannounce(key, local_address=local, **kw)


def holders(found: dict[Addr, Found], peer: Addr) -> set[Addr]:
    """The answering nodes whose answer listed ``peer``."""
    return {a for a, f in found.items() if peer in f.peers}


def rpc(raw: RawUdp, to: Any, req: messages.RpcRequest) -> messages.RpcResponse:
    """One request from a bare socket, decoded with our codec."""
    data, src = raw.request(messages.encode_request(req), addr(to))
    assert src == addr(to)
    return messages.decode_response(data[2:])


def token_from(raw: RawUdp, node: Any) -> bytes:
    """The round-trip token ``node`` issues to 127.0.0.1 (an ephemeral _ping)."""
    res = rpc(raw, node, messages.RpcRequest(command="_ping"))
    assert res.roundtrip_token is not None and len(res.roundtrip_token) == 32
    return res.roundtrip_token


def uncaught(peers: Iterable[NodePeer]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for p in peers:
        assert p.alive, p
        evs = p.call("events", event="uncaughtException")["events"]
        if evs:
            out[repr(p)] = evs
    return out


# ------------------------------------------------------------- 1. _ping


def test_ping_returns_the_public_address_both_ways(
    node_peer: NodePeerFactory, py_node: Any
) -> None:
    n = node_peer()
    p = py_node()

    # Python -> Node.js: the pong carries our address as the Node peer saw it.
    assert addr(p.ping(n.addr)) == addr(p)
    # Node.js -> Python.
    r = n.call("ping", **dict_addr(p))
    assert addr(r["address"]) == n.addr
    assert r["node"] == {"id": p.id.hex(), "host": LOCALHOST, "port": addr(p)[1]}

    # Ephemeral on either side: still answered, with the right address.
    pe = py_node(ephemeral=True)
    assert addr(pe.ping(n.addr)) == addr(pe)
    ne = node_peer(ephemeral=True)
    r = ne.call("ping", **dict_addr(p))
    assert addr(r["address"]) == ne.addr
    # An ephemeral Python node answers without an id.
    r = n.call("ping", **dict_addr(pe))
    assert addr(r["address"]) == n.addr
    assert r["node"]["id"] is None

    # The pings also filled the routing tables, with the addresses seen,
    # but never with an ephemeral node.
    assert table(n) == {p.id.hex(): addr(p)}
    assert table(p) == {n.id: n.addr}
    assert table(pe) == {n.id: n.addr}
    assert table(ne) == {p.id.hex(): addr(p)}


# ---------------------------------------------------------- 2. _find_node


def test_find_node_fills_routing_tables_both_ways(node_peer: NodePeerFactory, py_node: Any) -> None:
    # Python bootstraps from a lone Node.js node, and the other way round.
    a = node_peer()
    b = py_node(bootstrap=[a])
    c = py_node()
    d = node_peer(bootstrap=[c])
    wait_ready([b, d])
    assert table(a) == {hex_id(b): addr(b)}
    assert table(b) == {a.id: a.addr}
    assert table(c) == {d.id: d.addr}
    assert table(d) == {hex_id(c): addr(c)}

    # Newcomers learn of nodes that only the other side's `nodes` listed:
    # e (Node.js) hears of d from c (Python), f (Python) of b from a (Node.js).
    e = node_peer(bootstrap=[c])
    f = py_node(bootstrap=[a])
    wait_ready([e, f])
    assert table(e) == {hex_id(c): addr(c), d.id: d.addr}
    assert table(f) == {a.id: a.addr, hex_id(b): addr(b)}
    # ... and the nodes they then contacted stored them.
    assert table(d)[e.id] == e.addr
    assert table(b)[hex_id(f)] == addr(f)

    # Ephemeral nodes walk the DHT but nobody stores them.
    pe = py_node(bootstrap=[a], ephemeral=True)
    ne = node_peer(bootstrap=[c], ephemeral=True)
    wait_ready([pe, ne])
    assert set(table(pe)) == {a.id, hex_id(b), hex_id(f)}
    assert set(table(ne)) == {hex_id(c), d.id, e.id}
    for x in (a, b, c, d, e, f):
        t = table(x)
        assert hex_id(pe) not in t and hex_id(ne) not in t, x

    # The raw responses: `nodes` decodes to 38-byte entries, listing the
    # responder's table (nobody lists itself; a raw ephemeral asker is absent).
    target = os.urandom(32)
    with RawUdp() as raw:
        for x in (a, b, c, d, e, f):
            res = rpc(raw, x, messages.RpcRequest(command="_find_node", target=target))
            assert res.id is not None and res.id.hex() == hex_id(x)
            assert res.nodes is not None and len(res.nodes) % 38 == 0
            listed = {n.id.hex(): addr(n.address) for n in NODES.decode_list(res.nodes)}
            assert listed == table(x), x


# --------------------------------------------------------- 3. mixed network


@dataclass
class Mixed:
    bootstrap: NodePeer | HyperDHT
    node: list[NodePeer]
    py: list[HyperDHT]
    #: Python nodes' peer-discovery events: (event, key, address).
    py_events: dict[int, list[tuple[str, bytes, Addr]]]

    @property
    def all(self) -> list[NodePeer | HyperDHT]:
        return [self.bootstrap, *self.node, *self.py]

    @property
    def node_all(self) -> list[NodePeer]:
        return [x for x in self.all if isinstance(x, NodePeer)]

    def events(self, x: NodePeer | HyperDHT, event: str, key: bytes) -> list[Addr]:
        if isinstance(x, NodePeer):
            evs = x.call("events", event=event)["events"]
            return [addr(e["peer"]) for e in evs if e["target"] == key.hex()]
        return [a for ev, k, a in self.py_events[id(x)] if ev == event and k == key]


@pytest.fixture(params=["node", "python"], ids=["node-bootstrap", "python-bootstrap"])
def mixed(request: pytest.FixtureRequest, node_peer: NodePeerFactory, py_node: Any) -> Mixed:
    """A bootstrap node (Node.js or Python) plus 5 Node.js and 5 Python nodes."""
    boot: NodePeer | HyperDHT = node_peer() if request.param == "node" else py_node()
    node = [NodePeer.spawn(bootstrap=[addr(boot)]) for _ in range(5)]
    node_peer.started.extend(node)
    py = [py_node(bootstrap=[boot]) for _ in range(5)]
    for n in node:
        n.wait_ready()
    net = Mixed(boot, node, py, {})
    for x in net.all:
        if isinstance(x, HyperDHT):
            evs: list[tuple[str, bytes, Addr]] = []
            net.py_events[id(x)] = evs
            for name in ("announce", "unannounce"):
                x.add_listener(
                    name, lambda k, a, name=name, evs=evs: evs.append((name, k, addr(a)))
                )
    wait_ready(net.all)
    return net


def test_mixed_network_announce_lookup_unannounce(mixed: Mixed) -> None:
    everyone = mixed.all
    py_key, node_key = os.urandom(32), os.urandom(32)
    py_ann, node_ann = mixed.py[0], mixed.node[0]

    # A Python node announces; a Node.js node finds it, from every other node.
    announce(py_ann, py_key)
    found = lookup(mixed.node[1], py_key)
    expected = {addr(x) for x in everyone if x is not py_ann}
    assert holders(found, addr(py_ann)) == expected
    for x in everyone:
        assert mixed.events(x, "announce", py_key) == ([] if x is py_ann else [addr(py_ann)])

    # A Node.js node announces; a Python node finds it, from every other node.
    announce(node_ann, node_key)
    found = lookup(mixed.py[1], node_key)
    assert holders(found, node_ann.addr) == {addr(x) for x in everyone if x is not node_ann}
    for x in everyone:
        assert mixed.events(x, "announce", node_key) == ([] if x is node_ann else [node_ann.addr])

    # Unannounced: no node returns them any more, whoever asks.
    unannounce(py_ann, py_key)
    unannounce(node_ann, node_key)
    for x in everyone:
        if x is not py_ann:
            assert mixed.events(x, "unannounce", py_key) == [addr(py_ann)], x
        if x is not node_ann:
            assert mixed.events(x, "unannounce", node_key) == [node_ann.addr], x
    for x in everyone:
        assert lookup(x, py_key) == {}, x
        assert lookup(x, node_key) == {}, x

    assert uncaught(mixed.node_all) == {}


def test_node_peers_survive_everything_python_sends(mixed: Mixed, py_node: Any) -> None:
    """Python nodes use every feature against the mixed network; no Node.js
    peer throws (peer.js records uncaught exceptions instead of dying), and
    no Python node drops anything a Node.js peer sent as undecodable."""
    boot = mixed.bootstrap
    key = os.urandom(32)
    for n in mixed.node:
        n.call("handle", kind="query", command="echo", echo=True)
        n.call("handle", kind="update", command="echo", reply=b"")
    for i, p in enumerate(mixed.py):
        p.bootstrap()
        for n in mixed.node_all:
            p.ping(n.addr)
        announce(p, key, port=3000 + i, local=(f"10.1.{i}.1", 4000 + i))
        lookup(p, key, local=("10.1.200.200", 0))
        collect_stream(p.query("echo", key, b"\x00" * i))
        collect_stream(p.update("echo", key, bytes(range(i))))
        collect_stream(p.query("nobody-handles-this", os.urandom(32)))
        collect_stream(p.query("_find_node", os.urandom(32)))
    # Hole punches through every Node.js peer, and a Python node that has to
    # be punched to (forwarded requests reach it from a Node.js referrer).
    a, b = mixed.py[0], mixed.py[1]
    for n in mixed.node_all:
        assert addr(a.holepunch(addr(b), n.addr)) == addr(b)
    # An ephemeral Python node joins and queries.
    eph = py_node(bootstrap=[boot], ephemeral=True)
    assert eph.ready(20)
    lookup(eph, key)
    for i, p in enumerate(mixed.py):
        unannounce(p, key, port=3000 + i, local=(f"10.1.{i}.1", 4000 + i))

    assert uncaught(mixed.node_all) == {}
    for p in [*mixed.py, eph]:
        bad = {k: v for k, v in p.stats.drops.items() if k not in ("unmatched_response",)}
        assert bad == {}, p


# ------------------------------------------------- 4. port and localAddress


@pytest.mark.parametrize("storer_kind", ["python", "node"])
def test_announce_port_and_local_address(
    storer_kind: str, node_peer: NodePeerFactory, py_node: Any
) -> None:
    storer: NodePeer | HyperDHT = py_node() if storer_kind == "python" else node_peer()
    p = py_node(bootstrap=[storer])
    wait_ready([p])
    n = node_peer(bootstrap=[storer])
    wait_ready([n])
    p.bootstrap()  # p and n know each other now (n's bootstrap reached p)
    assert n.id in table(p) and hex_id(p) in table(n)
    S, P, N = addr(storer), addr(p), addr(n)

    key = os.urandom(32)
    p_pub, p_lan = (LOCALHOST, 4001), ("192.168.1.5", 9000)
    n_pub, n_lan = (LOCALHOST, 4002), ("192.168.1.6", 9001)
    announce(p, key, port=p_pub[1], local=p_lan)  # stored by the storer and n
    announce(n, key, port=n_pub[1], local=n_lan)  # stored by the storer and p
    python_answers = storer_kind == "python"

    # Another LAN in the same /16: the explicit ports are the public peers,
    # the LAN addresses come back as localPeers (a.b from our own address).
    got = lookup(n, key, local=("192.168.77.1", 0))
    assert got == {
        N: Found({p_pub}, {p_lan}),  # n's own store first
        S: Found({p_pub, n_pub}, {p_lan, n_lan}),
        P: Found({n_pub}, {n_lan}),
    }
    got = lookup(p, key, local=("192.168.77.1", 0))
    assert got == {
        P: Found({n_pub}, {n_lan}),
        S: Found({p_pub, n_pub}, {p_lan, n_lan}),
        N: Found({p_pub}, {p_lan}),
    }

    # Asking with our own LAN address. A Python node never returns the
    # requester's own LAN address. The reference does (REFERENCE_NOTES 24:
    # it compares the stored 4-byte local peer with the 6-byte
    # localAddress), so where a Node.js node answers it is there.
    # The public entries: a lookup has port 0, so "own" means the source
    # port, not the announced 4001/4002, and both implementations return
    # the requester's public entry (REFERENCE_NOTES 24).
    got = lookup(n, key, local=n_lan)
    assert got[P] == Found({n_pub}, set())  # Python answering: not its own
    assert got[S] == Found({p_pub, n_pub}, {p_lan} if python_answers else {p_lan, n_lan})
    assert got[N] == Found({p_pub}, {p_lan})
    got = lookup(p, key, local=p_lan)
    assert got[N] == Found({p_pub}, {p_lan})  # the reference echoes p's own
    assert got[S] == Found({p_pub, n_pub}, {n_lan} if python_answers else {p_lan, n_lan})
    assert got[P] == Found({n_pub}, {n_lan})

    # Another /16, or no local address: no localPeers at all.
    for asker in (p, n):
        for local in (("10.0.0.1", 1), None):
            got = lookup(asker, key, local=local)
            assert {a: f.peers for a, f in got.items()} == {
                S: {p_pub, n_pub},
                P: {n_pub},
                N: {p_pub},
            }
            assert all(f.local == set() for f in got.values()), (asker, local)

    # No port: the announced peer is the sender's own address, and then the
    # requester's own public entry is skipped (by either implementation).
    key2 = os.urandom(32)
    announce(p, key2)
    assert lookup(n, key2) == {S: Found({P}), N: Found({P})}
    assert lookup(p, key2) == {}
    announce(n, key2)
    assert lookup(p, key2) == {P: Found({N}), S: Found({N})}
    assert lookup(n, key2) == {N: Found({P}), S: Found({P})}

    # Unannounce with the same port: gone everywhere.
    unannounce(p, key, port=p_pub[1], local=p_lan)
    unannounce(n, key, port=n_pub[1], local=n_lan)
    assert lookup(p, key) == {} and lookup(n, key) == {}


# ------------------------------------------------------- 5. custom commands


def test_custom_query_and_update_python_to_node(node_peer: NodePeerFactory, py_node: Any) -> None:
    n = node_peer()
    p = py_node(bootstrap=[n])
    wait_ready([p])
    n.call("handle", kind="query", command="echo", echo=True)
    n.call("handle", kind="update", command="echo", reply=b"\xca\xfe")
    key = os.urandom(32)

    res = collect_stream(p.query("echo", key, b"\xbe\xef"))
    assert [(r.node.id.hex(), addr(r.node.address), r.value) for r in res] == [
        (n.id, n.addr, b"\xbe\xef")
    ]
    calls = n.call("calls", command="echo", clear=True)["calls"]
    assert [(c["kind"], c["value"], c["roundtripToken"]) for c in calls] == [
        ("query", "beef", False)
    ]
    assert calls[0]["node"] == {"id": p.id.hex(), "host": LOCALHOST, "port": addr(p)[1]}
    assert calls[0]["target"] == key.hex()

    # An update: the query phase, then the commit with n's token.
    res = collect_stream(p.update("echo", key, b"\x01"))
    assert [(r.node.id.hex(), r.value) for r in res] == [(n.id, b"\xca\xfe")]
    calls = n.call("calls", command="echo", clear=True)["calls"]
    assert [(c["kind"], c["value"], c["roundtripToken"]) for c in calls] == [
        ("query", "01", False),
        ("update", "01", True),
    ]

    # Value presence survives both ways: an empty value is not "no value".
    n.call("handle", kind="query", command="echo", reply=b"")
    assert [r.value for r in collect_stream(p.query("echo", key))] == [b""]
    n.call("handle", kind="query", command="echo", reply=None)
    assert [r.value for r in collect_stream(p.query("echo", key, b"x"))] == [None]
    calls = n.call("calls", command="echo", clear=True)["calls"]
    assert [c["value"] for c in calls] == [None, "78"]


def test_custom_query_and_update_node_to_python(node_peer: NodePeerFactory, py_node: Any) -> None:
    p = py_node()
    seen: list[Any] = []

    def on_query(node: Any, q: Any) -> bytes | None:
        seen.append(q)
        return None if q.value == b"none" else b"Q" + (q.value or b"")

    def on_update(node: Any, q: Any) -> bytes:
        seen.append(q)
        return b"U" + (q.value or b"")

    p.on_query("echo", on_query)
    p.on_update("echo", on_update)
    n = node_peer(bootstrap=[p])
    n.call("ready")
    key = os.urandom(32)
    me = {"id": p.id.hex(), "host": LOCALHOST, "port": addr(p)[1]}

    res = n.call("query", command="echo", target=key, value=b"\x05")["results"]
    assert res == [{"node": me, "value": "5105"}]
    (q,) = seen
    assert (q.command, q.target, q.value, q.is_update, q.roundtrip_token) == (
        "echo",
        key,
        b"\x05",
        False,
        None,
    )
    assert q.node.id.hex() == n.id and addr(q.node.address) == n.addr
    seen.clear()

    res = n.call("update", command="echo", target=key, value=b"\x06")["results"]
    assert res == [{"node": me, "value": "5506"}]
    assert [(q.is_update, q.value) for q in seen] == [(False, b"\x06"), (True, b"\x06")]
    assert seen[1].roundtrip_token is not None and len(seen[1].roundtrip_token) == 32
    seen.clear()

    # No value in, none out; an empty value in, an empty (present) value out.
    res = n.call("query", command="echo", target=key, value=b"none", nodes=[me])
    assert res["results"] == [{"node": me, "value": None}]
    p.on_query("echo", lambda node, q: b"")
    res = n.call("query", command="echo", target=key, nodes=[me])
    assert res["results"] == [{"node": me, "value": ""}]


@pytest.mark.parametrize("receiver_kind", ["python", "node"])
def test_update_with_a_foreign_token_is_a_query(
    receiver_kind: str, node_peer: NodePeerFactory, py_node: Any
) -> None:
    """Tokens are sha256(secret || host) in the reference: everything here is
    on 127.0.0.1, so a token issued to another *host* cannot be obtained.
    Instead the update carries tokens issued to 127.0.0.1 by *other nodes*
    (one Python, one Node.js), a forged one, and malformed ones; the
    receiver must treat each as a plain query. Its own token makes an
    update (the control)."""
    key = os.urandom(32)
    seen: list[tuple[bool, bytes | None]] = []
    receiver: NodePeer | HyperDHT
    if receiver_kind == "node":
        receiver = node_peer()
        receiver.call("handle", kind="query", command="store", reply=b"q")
        receiver.call("handle", kind="update", command="store", reply=b"u")
    else:
        receiver = py_node()
        receiver.on_query("store", lambda node, q: seen.append((False, q.roundtrip_token)) or b"q")
        receiver.on_update("store", lambda node, q: seen.append((True, q.roundtrip_token)) or b"u")
    other_py, other_node = py_node(), node_peer()

    with RawUdp() as raw:
        own = token_from(raw, receiver)
        tokens = {
            "python": token_from(raw, other_py),
            "node": token_from(raw, other_node),
            "forged": os.urandom(32),
            "own-truncated": own[:31],
            "own-extended": own + b"\x00",
            "empty": b"",
        }
        assert len({own, *tokens.values()}) == len(tokens) + 1

        def store(token: bytes) -> bytes | None:
            req = messages.RpcRequest(
                command="store", target=key, value=b"v", roundtrip_token=token
            )
            res = rpc(raw, receiver, req)
            # Whatever the token, the response carries the receiver's own.
            assert res.roundtrip_token == own
            return res.value

        for name, tok in tokens.items():
            assert store(tok) == b"q", name
        assert store(own) == b"u"

    if isinstance(receiver, NodePeer):
        calls = receiver.call("calls", command="store")["calls"]
        assert [(c["kind"], c["roundtripToken"]) for c in calls] == [
            *[("query", False)] * len(tokens),
            ("update", True),
        ]
    else:
        assert seen == [*[(False, None)] * len(tokens), (True, own)]


# ------------------------------------------------------- 6. hole punching


def _start(kind: str, node_peer: NodePeerFactory, py_node: Any, **kw: Any) -> Any:
    return node_peer(**kw) if kind == "node" else py_node(**kw)


@pytest.mark.parametrize(
    "requester_kind, referrer_kind, target_kind",
    [
        ("python", "node", "python"),
        ("node", "python", "node"),
        ("python", "python", "node"),
        ("node", "node", "python"),
        ("python", "node", "node"),
        ("node", "python", "python"),
    ],
)
def test_holepunch_through_a_referrer(
    requester_kind: str,
    referrer_kind: str,
    target_kind: str,
    node_peer: NodePeerFactory,
    py_node: Any,
) -> None:
    referrer = _start(referrer_kind, node_peer, py_node)
    target = _start(target_kind, node_peer, py_node, bootstrap=[addr(referrer)])
    requester = _start(requester_kind, node_peer, py_node, bootstrap=[addr(referrer)])
    wait_ready([target, requester])
    served = target.stats.requests_served["_ping"] if isinstance(target, HyperDHT) else 0
    forwarded = referrer.stats.forwarded if isinstance(referrer, HyperDHT) else 0

    if isinstance(requester, NodePeer):
        r = requester.call("holepunch", peer=dict_addr(target), referrer=dict_addr(referrer))
        # The answer came from the target itself, with its view of us.
        assert addr(r["from"]) == addr(target)
        assert r["node"]["id"] == hex_id(target)
        assert addr(r["address"]) == addr(requester)
    else:
        assert addr(requester.holepunch(addr(target), addr(referrer))) == addr(target)

    if isinstance(referrer, NodePeer):
        evs = referrer.call("events", event="holepunch")["events"]
        assert [(addr(e["from"]), addr(e["to"])) for e in evs] == [(addr(requester), addr(target))]
    else:
        assert referrer.stats.forwarded == forwarded + 1
    if isinstance(target, HyperDHT):
        assert target.stats.requests_served["_ping"] == served + 1
        # The forwarded request did not map the requester's id to the
        # referrer's address (docs/PROTOCOL-NOTES.md).
        assert table(target).get(hex_id(requester), addr(requester)) == addr(requester)
    else:
        # The reference does (REFERENCE_NOTES 11): the requester's id now
        # points at the referrer.
        assert table(target)[hex_id(requester)] == addr(referrer)


@pytest.mark.parametrize("referrer_kind", ["python", "node"])
def test_forwarded_ping_keeps_only_a_valid_token(
    referrer_kind: str, node_peer: NodePeerFactory, py_node: Any
) -> None:
    """A referrer checks the token of every request, the forwarded ping
    included, and passes it on only if it issued it (dht-rpc/index.js:207-213
    then :256-259); a forged token is stripped. The rest of the request is
    passed on as it came (same tid, id, command), with forwardResponse set to
    the requester's address and forwardRequest cleared."""
    referrer = _start(referrer_kind, node_peer, py_node)
    requester_id = os.urandom(32)
    with RawUdp() as a, RawUdp() as b:
        own = token_from(a, referrer)
        for token, passed_on in ((os.urandom(32), None), (own, own), (b"", None)):
            tid = int.from_bytes(os.urandom(2), "big") & 0x7FFF
            req = messages.RpcRequest(
                command="_ping",
                id=requester_id,
                forward_request=PEER_CODEC.encode(Address(*b.addr)),
                roundtrip_token=token,
            )
            a.send((0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req), addr(referrer))
            data, src = b.wait_for(tid, request=True)
            assert src == addr(referrer)
            fwd = messages.decode_request(data[2:])
            assert fwd == messages.RpcRequest(
                command="_ping",
                id=requester_id,
                forward_response=PEER_CODEC.encode(Address(*a.addr)),
                roundtrip_token=passed_on,
            ), token.hex()
