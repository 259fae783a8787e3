"""Python <-> Node.js interoperability through the asyncio API: the
scenarios of ``test_interop.py`` with :class:`hyperdht.aio.AsyncHyperDHT`
as the Python side, against the reference ``hyperdht@1.3.0``.

Each scenario runs in both directions where the blocking file does both.
The asyncio nodes live on the test's event loop, so everything that blocks
(every call to a Node.js peer, a peer's start-up, a bare-socket request)
runs in a worker thread (:func:`asyncio.to_thread`) while the loop keeps
serving the Python nodes. The helpers and constants are those of
``test_interop.py``; the ones here only dispatch on the kind of node.
Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from nodepeer import NodePeer, NodePeerFactory, RawUdp
from test_interop import (
    LOCALHOST,
    NODES,
    PEER_CODEC,
    Addr,
    Found,
    hex_id,
    holders,
    rpc,
    token_from,
    uncaught,
)
from test_interop import addr as _addr
from test_interop import announce as _announce
from test_interop import lookup as _lookup
from test_interop import table as _table
from test_interop import unannounce as _unannounce

from hyperdht import Address, messages
from hyperdht.aio import AsyncDHT, AsyncHyperDHT, collect_stream

if TYPE_CHECKING:  # the module named conftest at run time may be another directory's
    from conftest import AioNodeFactory

#: Only a broken run waits this long for one step.
TIMEOUT = 20.0

Node = NodePeer | AsyncHyperDHT


# ------------------------------------------------------------------ helpers


def addr(x: Any) -> Addr:
    """(host, port) of an AsyncDHT, or of anything ``test_interop.addr`` takes."""
    if isinstance(x, AsyncDHT):
        return (x.address.host, x.address.port)
    return _addr(x)


def dict_addr(x: Any) -> dict[str, Any]:
    host, port = addr(x)
    return {"host": host, "port": port}


async def call(n: NodePeer, cmd: str, **args: Any) -> dict[str, Any]:
    """``n.call(cmd, **args)`` in a worker thread: the loop keeps running."""
    return await asyncio.wait_for(asyncio.to_thread(n.call, cmd, **args), TIMEOUT + 10)


async def spawn(
    node_peer: NodePeerFactory, *, bootstrap: Iterable[Any] = (), **kw: Any
) -> NodePeer:
    """Start a Node.js peer (its bootstrap may be one of our asyncio nodes,
    which must answer while the peer starts: hence the thread)."""
    return await asyncio.to_thread(node_peer, bootstrap=[addr(b) for b in bootstrap], **kw)


async def table(x: Node) -> dict[str, Addr]:
    """A node's routing table: hex id -> address."""
    if isinstance(x, NodePeer):
        return await asyncio.to_thread(_table, x)
    return {n.id.hex(): addr(n.address) for n in x.nodes()}


async def wait_ready(nodes: Iterable[Node]) -> None:
    for n in nodes:
        if isinstance(n, NodePeer):
            await call(n, "ready", timeout=TIMEOUT)
        else:
            await asyncio.wait_for(n.ready(), TIMEOUT)


async def lookup(x: Node, key: bytes, local: tuple[str, int] | None = None) -> dict[Addr, Found]:
    """As ``test_interop.lookup``: answering node's address -> what it returned."""
    if isinstance(x, NodePeer):
        return await asyncio.to_thread(_lookup, x, key, local)
    out: dict[Addr, Found] = {}
    stream = x.lookup(key, local_address=local)
    for r in await asyncio.wait_for(collect_stream(stream), TIMEOUT):
        f = out.setdefault(addr(r.node), Found())
        f.peers |= {addr(p) for p in r.peers}
        f.local |= {addr(p) for p in r.local_peers}
    return out


async def announce(x: Node, key: bytes, **kw: Any) -> None:
    """Announce ``key`` from ``x`` (``port=``, ``local=(host, port)``)."""
    if isinstance(x, NodePeer):
        await asyncio.to_thread(_announce, x, key, **kw)
    else:
        local = kw.pop("local", None)
        await asyncio.wait_for(x.announce_discard(key, local_address=local, **kw), TIMEOUT)


async def unannounce(x: Node, key: bytes, **kw: Any) -> None:
    if isinstance(x, NodePeer):
        await asyncio.to_thread(_unannounce, x, key, **kw)
    else:
        local = kw.pop("local", None)
        await asyncio.wait_for(x.unannounce(key, local_address=local, **kw), TIMEOUT)


async def arpc(raw: RawUdp, to: Any, req: messages.RpcRequest) -> messages.RpcResponse:
    return await asyncio.to_thread(rpc, raw, addr(to), req)


async def atoken_from(raw: RawUdp, node: Any) -> bytes:
    return await asyncio.to_thread(token_from, raw, addr(node))


async def start(kind: str, node_peer: NodePeerFactory, aio_node: AioNodeFactory, **kw: Any) -> Node:
    if kind == "node":
        return await spawn(node_peer, **kw)
    return aio_node(**kw)


# ------------------------------------------------------------- 1. _ping


async def test_ping_returns_the_public_address_both_ways(
    node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    n = await spawn(node_peer)
    p = aio_node()

    # asyncio Python -> Node.js: the pong carries our address as Node saw it.
    assert addr(await asyncio.wait_for(p.ping(n.addr), TIMEOUT)) == addr(p)
    # Node.js -> asyncio Python.
    r = await call(n, "ping", **dict_addr(p))
    assert addr(r["address"]) == n.addr
    assert r["node"] == {"id": p.id.hex(), "host": LOCALHOST, "port": addr(p)[1]}

    # Ephemeral on either side.
    pe = aio_node(ephemeral=True)
    assert addr(await asyncio.wait_for(pe.ping(n.addr), TIMEOUT)) == addr(pe)
    ne = await spawn(node_peer, ephemeral=True)
    r = await call(ne, "ping", **dict_addr(p))
    assert addr(r["address"]) == ne.addr
    r = await call(n, "ping", **dict_addr(pe))
    assert addr(r["address"]) == n.addr
    assert r["node"]["id"] is None

    assert await table(n) == {p.id.hex(): addr(p)}
    assert await table(p) == {n.id: n.addr}
    assert await table(pe) == {n.id: n.addr}
    assert await table(ne) == {p.id.hex(): addr(p)}


# ---------------------------------------------------------- 2. _find_node


async def test_find_node_fills_routing_tables_both_ways(
    node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    a = await spawn(node_peer)
    b = aio_node(bootstrap=[a])
    c = aio_node()
    d = await spawn(node_peer, bootstrap=[c])
    await wait_ready([b, d])
    assert await table(a) == {hex_id(b): addr(b)}
    assert await table(b) == {a.id: a.addr}
    assert await table(c) == {d.id: d.addr}
    assert await table(d) == {hex_id(c): addr(c)}

    # e (Node.js) hears of d from c (asyncio), f (asyncio) of b from a (Node.js).
    e = await spawn(node_peer, bootstrap=[c])
    f = aio_node(bootstrap=[a])
    await wait_ready([e, f])
    assert await table(e) == {hex_id(c): addr(c), d.id: d.addr}
    assert await table(f) == {a.id: a.addr, hex_id(b): addr(b)}
    assert (await table(d))[e.id] == e.addr
    assert (await table(b))[hex_id(f)] == addr(f)

    # Ephemeral nodes walk the DHT but nobody stores them.
    pe = aio_node(bootstrap=[a], ephemeral=True)
    ne = await spawn(node_peer, bootstrap=[c], ephemeral=True)
    await wait_ready([pe, ne])
    assert set(await table(pe)) == {a.id, hex_id(b), hex_id(f)}
    assert set(await table(ne)) == {hex_id(c), d.id, e.id}
    for x in (a, b, c, d, e, f):
        t = await table(x)
        assert hex_id(pe) not in t and hex_id(ne) not in t, x

    # The raw responses list the responder's table, 38 bytes an entry.
    target = os.urandom(32)
    with RawUdp() as raw:
        for x in (a, b, c, d, e, f):
            req = messages.RpcRequest(command="_find_node", target=target)
            res = await arpc(raw, x, req)
            assert res.id is not None and res.id.hex() == hex_id(x)
            assert res.nodes is not None and len(res.nodes) % 38 == 0
            listed = {n.id.hex(): addr(n.address) for n in NODES.decode_list(res.nodes)}
            assert listed == await table(x), x


# --------------------------------------------------------- 3. mixed network


@dataclass
class Mixed:
    bootstrap: Node
    node: list[NodePeer]
    py: list[AsyncHyperDHT]
    #: asyncio nodes' peer-discovery events: (event, key, address).
    py_events: dict[int, list[tuple[str, bytes, Addr]]]

    @property
    def all(self) -> list[Node]:
        return [self.bootstrap, *self.node, *self.py]

    @property
    def node_all(self) -> list[NodePeer]:
        return [x for x in self.all if isinstance(x, NodePeer)]

    async def events(self, x: Node, event: str, key: bytes) -> list[Addr]:
        if isinstance(x, NodePeer):
            evs = (await call(x, "events", event=event))["events"]
            return [addr(e["peer"]) for e in evs if e["target"] == key.hex()]
        return [a for ev, k, a in self.py_events[id(x)] if ev == event and k == key]


@pytest.fixture(params=["node", "python"], ids=["node-bootstrap", "python-bootstrap"])
async def mixed(
    request: pytest.FixtureRequest, node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> Mixed:
    """A bootstrap node (Node.js or asyncio Python) plus 5 Node.js and 5
    asyncio Python nodes."""
    boot: Node = await spawn(node_peer) if request.param == "node" else aio_node()
    node = [NodePeer.spawn(bootstrap=[addr(boot)]) for _ in range(5)]
    node_peer.started.extend(node)
    py = [aio_node(bootstrap=[boot]) for _ in range(5)]
    for n in node:
        await asyncio.to_thread(n.wait_ready)
    net = Mixed(boot, node, py, {})
    for x in net.all:
        if isinstance(x, AsyncHyperDHT):
            evs: list[tuple[str, bytes, Addr]] = []
            net.py_events[id(x)] = evs
            for name in ("announce", "unannounce"):
                x.add_listener(
                    name, lambda k, a, name=name, evs=evs: evs.append((name, k, addr(a)))
                )
    await wait_ready(net.all)
    return net


async def test_mixed_network_announce_lookup_unannounce(mixed: Mixed) -> None:
    everyone = mixed.all
    py_key, node_key = os.urandom(32), os.urandom(32)
    py_ann, node_ann = mixed.py[0], mixed.node[0]

    # An asyncio node announces; a Node.js node finds it, from every other node.
    await announce(py_ann, py_key)
    found = await lookup(mixed.node[1], py_key)
    assert holders(found, addr(py_ann)) == {addr(x) for x in everyone if x is not py_ann}
    for x in everyone:
        expected = [] if x is py_ann else [addr(py_ann)]
        assert await mixed.events(x, "announce", py_key) == expected, x

    # A Node.js node announces; an asyncio node finds it, from every other node.
    await announce(node_ann, node_key)
    found = await lookup(mixed.py[1], node_key)
    assert holders(found, node_ann.addr) == {addr(x) for x in everyone if x is not node_ann}
    for x in everyone:
        expected = [] if x is node_ann else [node_ann.addr]
        assert await mixed.events(x, "announce", node_key) == expected, x

    # Unannounced: no node returns them any more, whoever asks.
    await unannounce(py_ann, py_key)
    await unannounce(node_ann, node_key)
    for x in everyone:
        if x is not py_ann:
            assert await mixed.events(x, "unannounce", py_key) == [addr(py_ann)], x
        if x is not node_ann:
            assert await mixed.events(x, "unannounce", node_key) == [node_ann.addr], x
    for x in everyone:
        assert await lookup(x, py_key) == {}, x
        assert await lookup(x, node_key) == {}, x

    assert await asyncio.to_thread(uncaught, mixed.node_all) == {}
    for p in mixed.py:
        bad = {k: v for k, v in p.stats.drops.items() if k != "unmatched_response"}
        assert bad == {}, p


async def test_node_peers_survive_everything_python_sends(
    mixed: Mixed, aio_node: AioNodeFactory
) -> None:
    """asyncio nodes use every feature against the mixed network; no Node.js
    peer throws, and no asyncio node drops anything a Node.js peer sent as
    undecodable."""
    key = os.urandom(32)

    async def drain(stream: Any) -> None:
        await asyncio.wait_for(collect_stream(stream), TIMEOUT)

    for n in mixed.node:
        await call(n, "handle", kind="query", command="echo", echo=True)
        await call(n, "handle", kind="update", command="echo", reply=b"")
    for i, p in enumerate(mixed.py):
        await asyncio.wait_for(p.bootstrap(), TIMEOUT)
        for n in mixed.node_all:
            await asyncio.wait_for(p.ping(n.addr), TIMEOUT)
        await announce(p, key, port=3000 + i, local=(f"10.1.{i}.1", 4000 + i))
        await lookup(p, key, local=("10.1.200.200", 0))
        await drain(p.query("echo", key, b"\x00" * i))
        await drain(p.update("echo", key, bytes(range(i))))
        await drain(p.query("nobody-handles-this", os.urandom(32)))
        await drain(p.query("_find_node", os.urandom(32)))
    # Hole punches through every Node.js peer to an asyncio node.
    a, b = mixed.py[0], mixed.py[1]
    for n in mixed.node_all:
        assert addr(await asyncio.wait_for(a.holepunch(addr(b), n.addr), TIMEOUT)) == addr(b)
    eph = aio_node(bootstrap=[mixed.bootstrap], ephemeral=True)
    await wait_ready([eph])
    await lookup(eph, key)
    for i, p in enumerate(mixed.py):
        await unannounce(p, key, port=3000 + i, local=(f"10.1.{i}.1", 4000 + i))

    assert await asyncio.to_thread(uncaught, mixed.node_all) == {}
    for p in [*mixed.py, eph]:
        bad = {k: v for k, v in p.stats.drops.items() if k != "unmatched_response"}
        assert bad == {}, p


# ------------------------------------------------- 4. port and localAddress


@pytest.mark.parametrize("storer_kind", ["python", "node"])
async def test_announce_port_and_local_address(
    storer_kind: str, node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    storer = await start(storer_kind, node_peer, aio_node)
    p = aio_node(bootstrap=[storer])
    await wait_ready([p])
    n = await spawn(node_peer, bootstrap=[storer])
    await wait_ready([n])
    await asyncio.wait_for(p.bootstrap(), TIMEOUT)  # p and n know each other now
    assert n.id in await table(p) and hex_id(p) in await table(n)
    S, P, N = addr(storer), addr(p), addr(n)

    key = os.urandom(32)
    p_pub, p_lan = (LOCALHOST, 4001), ("192.168.1.5", 9000)
    n_pub, n_lan = (LOCALHOST, 4002), ("192.168.1.6", 9001)
    await announce(p, key, port=p_pub[1], local=p_lan)  # stored by the storer and n
    await announce(n, key, port=n_pub[1], local=n_lan)  # stored by the storer and p
    python_answers = storer_kind == "python"

    # Another LAN in the same /16: the explicit ports are the public peers,
    # the LAN addresses come back as localPeers.
    assert await lookup(n, key, local=("192.168.77.1", 0)) == {
        N: Found({p_pub}, {p_lan}),
        S: Found({p_pub, n_pub}, {p_lan, n_lan}),
        P: Found({n_pub}, {n_lan}),
    }
    assert await lookup(p, key, local=("192.168.77.1", 0)) == {
        P: Found({n_pub}, {n_lan}),
        S: Found({p_pub, n_pub}, {p_lan, n_lan}),
        N: Found({p_pub}, {p_lan}),
    }

    # Asking with our own LAN address: a Python node never returns it, the
    # reference does (test_interop.py, REFERENCE_NOTES 24).
    got = await lookup(n, key, local=n_lan)
    assert got[P] == Found({n_pub}, set())
    assert got[S] == Found({p_pub, n_pub}, {p_lan} if python_answers else {p_lan, n_lan})
    assert got[N] == Found({p_pub}, {p_lan})
    got = await lookup(p, key, local=p_lan)
    assert got[N] == Found({p_pub}, {p_lan})
    assert got[S] == Found({p_pub, n_pub}, {n_lan} if python_answers else {p_lan, n_lan})
    assert got[P] == Found({n_pub}, {n_lan})

    # Another /16, or no local address: no localPeers at all.
    for asker in (p, n):
        for local in (("10.0.0.1", 1), None):
            got = await lookup(asker, key, local=local)
            assert {a: f.peers for a, f in got.items()} == {
                S: {p_pub, n_pub},
                P: {n_pub},
                N: {p_pub},
            }
            assert all(f.local == set() for f in got.values()), (asker, local)

    # No port: the announced peer is the sender's own address, and the
    # requester's own public entry is skipped.
    key2 = os.urandom(32)
    await announce(p, key2)
    assert await lookup(n, key2) == {S: Found({P}), N: Found({P})}
    assert await lookup(p, key2) == {}
    await announce(n, key2)
    assert await lookup(p, key2) == {P: Found({N}), S: Found({N})}
    assert await lookup(n, key2) == {N: Found({P}), S: Found({P})}

    await unannounce(p, key, port=p_pub[1], local=p_lan)
    await unannounce(n, key, port=n_pub[1], local=n_lan)
    assert await lookup(p, key) == {} and await lookup(n, key) == {}


# ------------------------------------------------------- 5. custom commands


async def test_custom_query_and_update_python_to_node(
    node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    n = await spawn(node_peer)
    p = aio_node(bootstrap=[n])
    await wait_ready([p])
    await call(n, "handle", kind="query", command="echo", echo=True)
    await call(n, "handle", kind="update", command="echo", reply=b"\xca\xfe")
    key = os.urandom(32)

    async def collect(stream: Any) -> list[Any]:
        return await asyncio.wait_for(collect_stream(stream), TIMEOUT)

    res = await collect(p.query("echo", key, b"\xbe\xef"))
    assert [(r.node.id.hex(), addr(r.node.address), r.value) for r in res] == [
        (n.id, n.addr, b"\xbe\xef")
    ]
    calls = (await call(n, "calls", command="echo", clear=True))["calls"]
    assert [(c["kind"], c["value"], c["roundtripToken"]) for c in calls] == [
        ("query", "beef", False)
    ]
    assert calls[0]["node"] == {"id": p.id.hex(), "host": LOCALHOST, "port": addr(p)[1]}
    assert calls[0]["target"] == key.hex()

    # An update: the query phase, then the commit with n's token.
    res = await collect(p.update("echo", key, b"\x01"))
    assert [(r.node.id.hex(), r.value) for r in res] == [(n.id, b"\xca\xfe")]
    calls = (await call(n, "calls", command="echo", clear=True))["calls"]
    assert [(c["kind"], c["value"], c["roundtripToken"]) for c in calls] == [
        ("query", "01", False),
        ("update", "01", True),
    ]

    # Value presence survives both ways: an empty value is not "no value".
    await call(n, "handle", kind="query", command="echo", reply=b"")
    assert [r.value for r in await collect(p.query("echo", key))] == [b""]
    await call(n, "handle", kind="query", command="echo", reply=None)
    assert [r.value for r in await collect(p.query("echo", key, b"x"))] == [None]
    calls = (await call(n, "calls", command="echo", clear=True))["calls"]
    assert [c["value"] for c in calls] == [None, "78"]


@pytest.mark.parametrize("handler_kind", ["plain", "async"])
async def test_custom_query_and_update_node_to_python(
    handler_kind: str, node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    """Node.js queries and updates an asyncio node, whose handlers are plain
    functions or ``async def`` (answered when they return)."""
    p = aio_node()
    seen: list[Any] = []

    def on_query(node: Any, q: Any) -> bytes | None:
        seen.append(q)
        return None if q.value == b"none" else b"Q" + (q.value or b"")

    def on_update(node: Any, q: Any) -> bytes:
        seen.append(q)
        return b"U" + (q.value or b"")

    if handler_kind == "async":
        gate = asyncio.Event()

        async def aquery(node: Any, q: Any) -> bytes | None:
            await gate.wait()  # yields to the loop before answering
            return on_query(node, q)

        async def aupdate(node: Any, q: Any) -> bytes:
            await gate.wait()
            return on_update(node, q)

        gate.set()
        p.on_query("echo", aquery)
        p.on_update("echo", aupdate)
    else:
        p.on_query("echo", on_query)
        p.on_update("echo", on_update)
    n = await spawn(node_peer, bootstrap=[p])
    await call(n, "ready")
    key = os.urandom(32)
    me = {"id": p.id.hex(), "host": LOCALHOST, "port": addr(p)[1]}

    res = (await call(n, "query", command="echo", target=key, value=b"\x05"))["results"]
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

    res = (await call(n, "update", command="echo", target=key, value=b"\x06"))["results"]
    assert res == [{"node": me, "value": "5506"}]
    assert [(q.is_update, q.value) for q in seen] == [(False, b"\x06"), (True, b"\x06")]
    assert seen[1].roundtrip_token is not None and len(seen[1].roundtrip_token) == 32
    seen.clear()

    # No value in, none out; an empty value in, an empty (present) value out.
    res = await call(n, "query", command="echo", target=key, value=b"none", nodes=[me])
    assert res["results"] == [{"node": me, "value": None}]
    p.on_query("echo", lambda node, q: b"")
    res = await call(n, "query", command="echo", target=key, nodes=[me])
    assert res["results"] == [{"node": me, "value": ""}]


@pytest.mark.parametrize("receiver_kind", ["python", "node"])
async def test_update_with_a_foreign_token_is_a_query(
    receiver_kind: str, node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    """As in test_interop.py: tokens issued to 127.0.0.1 by other nodes (an
    asyncio one, a Node.js one), a forged one and malformed ones make a
    plain query at the receiver; only its own makes an update."""
    key = os.urandom(32)
    seen: list[tuple[bool, bytes | None]] = []
    receiver: Node
    if receiver_kind == "node":
        receiver = await spawn(node_peer)
        await call(receiver, "handle", kind="query", command="store", reply=b"q")
        await call(receiver, "handle", kind="update", command="store", reply=b"u")
    else:
        receiver = aio_node()
        receiver.on_query("store", lambda node, q: seen.append((False, q.roundtrip_token)) or b"q")
        receiver.on_update("store", lambda node, q: seen.append((True, q.roundtrip_token)) or b"u")
    other_py, other_node = aio_node(), await spawn(node_peer)

    with RawUdp() as raw:
        own = await atoken_from(raw, receiver)
        tokens = {
            "python": await atoken_from(raw, other_py),
            "node": await atoken_from(raw, other_node),
            "forged": os.urandom(32),
            "own-truncated": own[:31],
            "own-extended": own + b"\x00",
            "empty": b"",
        }
        assert len({own, *tokens.values()}) == len(tokens) + 1

        async def store(token: bytes) -> bytes | None:
            req = messages.RpcRequest(
                command="store", target=key, value=b"v", roundtrip_token=token
            )
            res = await arpc(raw, receiver, req)
            assert res.roundtrip_token == own
            return res.value

        for name, tok in tokens.items():
            assert await store(tok) == b"q", name
        assert await store(own) == b"u"

    if isinstance(receiver, NodePeer):
        calls = (await call(receiver, "calls", command="store"))["calls"]
        assert [(c["kind"], c["roundtripToken"]) for c in calls] == [
            *[("query", False)] * len(tokens),
            ("update", True),
        ]
    else:
        assert seen == [*[(False, None)] * len(tokens), (True, own)]


# ------------------------------------------------------- 6. hole punching


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
async def test_holepunch_through_a_referrer(
    requester_kind: str,
    referrer_kind: str,
    target_kind: str,
    node_peer: NodePeerFactory,
    aio_node: AioNodeFactory,
) -> None:
    referrer = await start(referrer_kind, node_peer, aio_node)
    target = await start(target_kind, node_peer, aio_node, bootstrap=[referrer])
    requester = await start(requester_kind, node_peer, aio_node, bootstrap=[referrer])
    await wait_ready([target, requester])
    served = target.stats.requests_served["_ping"] if isinstance(target, AsyncDHT) else 0
    forwarded = referrer.stats.forwarded if isinstance(referrer, AsyncDHT) else 0

    if isinstance(requester, NodePeer):
        r = await call(requester, "holepunch", peer=dict_addr(target), referrer=dict_addr(referrer))
        assert addr(r["from"]) == addr(target)
        assert r["node"]["id"] == hex_id(target)
        assert addr(r["address"]) == addr(requester)
    else:
        punched = await asyncio.wait_for(requester.holepunch(addr(target), addr(referrer)), TIMEOUT)
        assert addr(punched) == addr(target)

    if isinstance(referrer, NodePeer):
        evs = (await call(referrer, "events", event="holepunch"))["events"]
        assert [(addr(e["from"]), addr(e["to"])) for e in evs] == [(addr(requester), addr(target))]
    else:
        assert referrer.stats.forwarded == forwarded + 1
    if isinstance(target, AsyncDHT):
        assert target.stats.requests_served["_ping"] == served + 1
        # The forwarded request did not map the requester's id to the referrer.
        assert (await table(target)).get(hex_id(requester), addr(requester)) == addr(requester)
    else:
        # The reference does (REFERENCE_NOTES 11).
        assert (await table(target))[hex_id(requester)] == addr(referrer)


@pytest.mark.parametrize("referrer_kind", ["python", "node"])
async def test_forwarded_ping_keeps_only_a_valid_token(
    referrer_kind: str, node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    """As in test_interop.py, with an asyncio referrer: a forged token is
    stripped from the forwarded ping, the referrer's own passed on."""
    referrer = await start(referrer_kind, node_peer, aio_node)
    requester_id = os.urandom(32)
    with RawUdp() as a, RawUdp() as b:
        own = await atoken_from(a, referrer)
        for token, passed_on in ((os.urandom(32), None), (own, own), (b"", None)):
            tid = int.from_bytes(os.urandom(2), "big") & 0x7FFF
            req = messages.RpcRequest(
                command="_ping",
                id=requester_id,
                forward_request=PEER_CODEC.encode(Address(*b.addr)),
                roundtrip_token=token,
            )
            a.send((0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req), addr(referrer))
            data, src = await asyncio.to_thread(b.wait_for, tid, request=True)
            assert src == addr(referrer)
            assert messages.decode_request(data[2:]) == messages.RpcRequest(
                command="_ping",
                id=requester_id,
                forward_response=PEER_CODEC.encode(Address(*a.addr)),
                roundtrip_token=passed_on,
            ), token.hex()


# ------------------------------------------------------------ 7. connect()


@pytest.mark.parametrize(("referrer_kind", "target_kind"), [("node", "python"), ("python", "node")])
async def test_connect_through_a_referrer(
    referrer_kind: str, target_kind: str, node_peer: NodePeerFactory, aio_node: AioNodeFactory
) -> None:
    """``await AsyncDHT.connect(peer, referrer)``, as test_connect_interop.py
    does it blocking: on loopback we are public, so no opener, one punch
    through the referrer, and the answer comes from the target itself."""
    referrer = await start(referrer_kind, node_peer, aio_node)
    target = await start(target_kind, node_peer, aio_node, bootstrap=[referrer])
    requester = aio_node(bootstrap=[referrer])
    await wait_ready([target, requester])
    got = await asyncio.wait_for(requester.connect(addr(target), addr(referrer)), TIMEOUT)
    assert addr(got) == addr(target)
    assert requester.core.natted is False
    if isinstance(referrer, NodePeer):
        assert len((await call(referrer, "events", event="holepunch"))["events"]) == 1
    else:
        assert referrer.stats.forwarded == 1
