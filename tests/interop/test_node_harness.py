"""Node-to-Node tests: prove the interop harness works before Python joins in.

Everything runs on 127.0.0.1 with ephemeral ports; every wait is a
request/response or a process event with a deadline, never a sleep.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodepeer import (
    PINNED,
    NodePeer,
    NodePeerError,
    NodePeerFactory,
    NodeProcess,
    NodeSwarm,
    read_capture,
    run_capture,
    start_proxy,
)

LOCALHOST = "127.0.0.1"


def enc_peer(host: str, port: int) -> str:
    """ipv4-peers encoding, hex."""
    return (socket.inet_aton(host) + struct.pack(">H", port)).hex()


def addr(d: dict[str, Any]) -> tuple[str, int]:
    return (d["host"], d["port"])


def peers_of(results: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {addr(p) for r in results for p in r["peers"]}


def events_for(peer: NodePeer, event: str, target: bytes) -> list[dict[str, Any]]:
    evs = peer.call("events", event=event)["events"]
    return [e for e in evs if e.get("target") == target.hex()]


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    """A bound UDP socket that never answers (a black hole for timeouts)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCALHOST, 0))
    try:
        yield s
    finally:
        s.close()


# -------------------------------------------------------------- the harness


def test_pinned_reference_versions(node_env: str) -> None:
    for name, version in PINNED.items():
        assert f"{name}@{version}" in node_env


def test_ready_line_and_address(node_peer: NodePeerFactory) -> None:
    node_id = os.urandom(32)
    p = node_peer(id=node_id)
    assert p.ready["event"] == "ready"
    assert p.host == LOCALHOST and p.port > 0
    assert p.id == node_id.hex()
    assert p.call("address") | {"seq": None} == {
        "seq": None,
        "ok": True,
        "host": LOCALHOST,
        "port": p.port,
        "id": node_id.hex(),
        "ephemeral": False,
    }
    eph = node_peer(ephemeral=True)
    assert eph.ready["ephemeral"] is True and len(eph.id) == 64


def test_errors_are_replies_not_crashes(
    node_peer: NodePeerFactory, udp_socket: socket.socket
) -> None:
    p = node_peer()
    with pytest.raises(NodePeerError, match="unknown command"):
        p.call("no_such_command")
    with pytest.raises(NodePeerError, match="32 bytes"):
        p.call("lookup", key=b"short")
    with pytest.raises(NodePeerError, match="kind must be"):
        p.call("handle", kind="other", command="x")
    with pytest.raises(NodePeerError, match="handled by hyperdht"):
        p.call("handle", kind="query", command="peers")
    # A lone node: nobody to ask.
    with pytest.raises(NodePeerError, match="No nodes responded") as info:
        p.call("lookup", key=os.urandom(32))
    assert info.value.reply["results"] == []
    # Nobody answers at that address: udp-request times out (~1.25-1.5 s).
    host, port = udp_socket.getsockname()
    with pytest.raises(NodePeerError, match="timed out"):
        p.call("ping", host=host, port=port)
    assert p.alive
    assert p.call("nodes")["nodes"] == []


def test_close_command_and_stdin_eof_stop_the_process(node_peer: NodePeerFactory) -> None:
    a = node_peer()
    assert a.call("close") == {"seq": 1, "ok": True}
    assert a.proc.wait(timeout=10) == 0
    b = node_peer()
    assert b.close(timeout=10) == 0  # closing stdin is enough


def test_malformed_datagram_is_recorded_not_fatal(
    node_peer: NodePeerFactory, udp_socket: socket.socket
) -> None:
    # The reference throws on a datagram shorter than its 2-byte header
    # (udp-request/index.js:156); peer.js records it and stays up.
    p = node_peer()
    udp_socket.sendto(b"\x80", p.addr)
    ev = p.next_event(timeout=10)
    assert ev["event"] == "uncaughtException"
    assert "outside buffer bounds" in ev["error"]
    assert p.call("events", event="uncaughtException")["events"]
    other = node_peer()
    assert addr(other.call("ping", **p.address)["address"]) == other.addr


def test_let_crash_shows_the_reference_crash(
    node_peer: NodePeerFactory, udp_socket: socket.socket
) -> None:
    p = node_peer(let_crash=True)
    udp_socket.sendto(b"", p.addr)
    assert p.proc.wait(timeout=10) != 0


# -------------------------------------------------------------- the swarm


def test_swarm_routing_tables(node_swarm: NodeSwarm) -> None:
    ids = {p.id for p in node_swarm.all}
    for p in node_swarm.all:
        table = p.call("nodes")["nodes"]
        assert {n["id"] for n in table} == ids - {p.id}
        for n in table:
            owner = next(q for q in node_swarm.all if q.id == n["id"])
            assert addr(n) == owner.addr


def test_ping_returns_our_address_as_seen_by_the_other_node(
    node_swarm: NodeSwarm, node_peer: NodePeerFactory
) -> None:
    a, b = node_swarm.peers[0], node_swarm.bootstrap
    r = a.call("ping", host=b.host, port=b.port)
    assert addr(r["address"]) == a.addr
    assert r["node"] == {"id": b.id, "host": b.host, "port": b.port}

    # An ephemeral node is answered but never stored; a normal one is.
    eph = node_peer(ephemeral=True)
    assert addr(eph.call("ping", **b.address)["address"]) == eph.addr
    newcomer = node_peer()
    newcomer.call("ping", **b.address)
    stored = {n["id"] for n in b.call("nodes")["nodes"]}
    assert newcomer.id in stored
    assert eph.id not in stored


def test_announce_lookup_unannounce(node_swarm: NodeSwarm) -> None:
    announcer, seeker, _other = node_swarm.peers
    key = os.urandom(32)
    announced = (LOCALHOST, 4242)

    announcer.call("announce", key=key, port=4242)
    storers = [p for p in node_swarm.all if p is not announcer]
    for p in storers:
        evs = events_for(p, "announce", key)
        assert [addr(e["peer"]) for e in evs] == [announced], p
    assert events_for(announcer, "announce", key) == []

    found = seeker.call("lookup", key=key)["results"]
    assert announced in peers_of(found)
    # The seeker stored the announce too: its own copy comes first, as if
    # from itself (hyperdht/index.js _processPeersLocal).
    assert found[0]["node"] == {"id": seeker.id, "host": LOCALHOST, "port": seeker.port}
    assert {r["node"]["id"] for r in found} == {p.id for p in storers}
    for p in storers:
        if p is not seeker:
            assert events_for(p, "lookup", key)

    res = announcer.call("unannounce", key=key, port=4242)["results"]
    assert {r["node"]["id"] for r in res} == {p.id for p in storers}
    assert all(r["value"] is None for r in res)
    for p in storers:
        assert [addr(e["peer"]) for e in events_for(p, "unannounce", key)] == [announced]
    assert seeker.call("lookup", key=key)["results"] == []


def test_announce_default_port_and_local_addresses(node_swarm: NodeSwarm) -> None:
    announcer, seeker, _ = node_swarm.peers
    key = os.urandom(32)
    lan = {"host": "192.168.1.5", "port": 9000}

    announced = announcer.call("announce", key=key, localAddress=lan)["results"]
    assert announced == []  # nobody had other peers to return yet

    same_lan = seeker.call("lookup", key=key, localAddress={"host": "192.168.7.7"})["results"]
    assert peers_of(same_lan) == {announcer.addr}  # no port given: the sender's port
    assert {addr(lp) for r in same_lan for lp in r["localPeers"]} == {addr(lan)}

    other_lan = seeker.call("lookup", key=key, localAddress={"host": "10.0.0.1", "port": 1})
    assert peers_of(other_lan["results"]) == {announcer.addr}
    assert all(r["localPeers"] == [] for r in other_lan["results"])
    no_lan = seeker.call("lookup", key=key)["results"]
    assert all(r["localPeers"] == [] for r in no_lan)

    # The announcer asks too: its own entry is skipped everywhere.
    assert announcer.call("lookup", key=key)["results"] == []


def test_custom_query_and_update_handlers(node_swarm: NodeSwarm) -> None:
    asker, _, handler = node_swarm.peers
    key = os.urandom(32)
    handler.call("handle", kind="query", command="echo", echo=True)
    handler.call("handle", kind="update", command="echo", reply=b"\xca\xfe")

    results = asker.call("query", command="echo", target=key, value=b"\xbe\xef")["results"]
    values = {r["node"]["id"]: r["value"] for r in results}
    assert values.pop(handler.id) == "beef"
    assert set(values) == {node_swarm.bootstrap.id, node_swarm.peers[1].id}
    assert set(values.values()) == {None}  # no handler: an empty answer

    calls = handler.call("calls", command="echo", clear=True)["calls"]
    assert [(c["kind"], c["value"], c["roundtripToken"]) for c in calls] == [
        ("query", "beef", False)
    ]
    assert calls[0]["node"] == {"id": asker.id, "host": asker.host, "port": asker.port}
    assert calls[0]["target"] == key.hex()

    # An update: a query phase, then the commit with the token.
    results = asker.call("update", command="echo", target=key, value=b"\x01")["results"]
    values = {r["node"]["id"]: r["value"] for r in results}
    assert values.pop(handler.id) == "cafe"
    assert set(values.values()) == {None}
    calls = handler.call("calls", command="echo", clear=True)["calls"]
    assert [(c["kind"], c["value"], c["roundtripToken"]) for c in calls] == [
        ("query", "01", False),
        ("update", "01", True),
    ]

    # An explicit node list: exactly those nodes, no walk.
    only = asker.call("query", command="echo", target=key, nodes=[handler.address])["results"]
    assert only == [
        {"node": {"id": handler.id, "host": handler.host, "port": handler.port}, "value": None}
    ]
    assert handler.call("calls", command="echo")["calls"][0]["value"] is None


def test_dropping_handler_sends_no_response(node_swarm: NodeSwarm) -> None:
    asker, _, handler = node_swarm.peers
    handler.call("handle", kind="query", command="silent", drop=True)
    with pytest.raises(NodePeerError, match="No nodes responded"):
        asker.call("query", command="silent", target=os.urandom(32), nodes=[handler.address])
    assert len(handler.call("calls", command="silent")["calls"]) == 1


def test_holepunch_via_referrer(node_swarm: NodeSwarm) -> None:
    a, b, _ = node_swarm.peers
    referrer = node_swarm.bootstrap
    r = a.call("holepunch", peer=b.address, referrer=referrer.address)
    # The answer comes from b itself, with b's view of a's address (the
    # address the referrer saw, passed on in forwardResponse).
    assert addr(r["from"]) == b.addr
    assert r["node"]["id"] == b.id
    assert addr(r["address"]) == a.addr
    evs = referrer.call("events", event="holepunch")["events"]
    assert [(addr(e["from"]), addr(e["to"])) for e in evs] == [(a.addr, b.addr)]


# -------------------------------------------------------------- captures


def pairs(datagrams: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(request, response) pairs by tid, in request order."""
    out = []
    for req in (d for d in datagrams if d["request"]):
        resp = [d for d in datagrams if not d["request"] and d["tid"] == req["tid"]]
        assert resp, req
        out.append((req, resp[0]))
    return out


def test_capture_client_records_each_exchange(node_peer: NodePeerFactory, tmp_path: Path) -> None:
    target_file = tmp_path / "target.jsonl"
    target = node_peer(capture=target_file)
    target.call("capture_label", label="server")
    target.call("handle", kind="query", command="echo", echo=True)
    target.call("handle", kind="update", command="echo", reply=b"\x01\x02")
    key = os.urandom(32)

    run = run_capture(
        target,
        tmp_path / "client.jsonl",
        key=key,
        value=b"\xca\xfe\xba\xbe",
        announce_port=5555,
        local_address=("10.1.2.3", 4000),
    )
    assert run.returncode == 0, run.stderr
    assert all(s["ok"] for s in run.steps.values()), run.steps
    assert list(run.steps) == [
        "ping",
        "find_node",
        "query",
        "update",
        "holepunch",
        "announce",
        "lookup",
        "unannounce",
    ]
    me = (run.done["host"], run.done["port"])
    assert len(run.datagrams) == run.done["datagrams"]
    for d in run.datagrams:
        header = int(d["hex"][:4], 16)
        assert d["request"] == bool(header & 0x8000) and d["tid"] == header & 0x7FFF
        assert d["message"] is not None

    ping = run.step_datagrams("ping")
    assert [(d["dir"], d["request"]) for d in ping] == [("out", True), ("in", False)]
    assert ping[0]["message"]["command"] == "_ping"
    assert ping[1]["message"]["value"] == enc_peer(*me)
    assert ping[1]["tid"] == ping[0]["tid"]

    ((fn_req, fn_resp),) = pairs(run.step_datagrams("find_node"))
    assert fn_req["message"]["command"] == "_find_node"
    assert fn_req["message"]["target"] == key.hex()
    assert fn_resp["message"]["id"] == target.id

    ((q_req, q_resp),) = pairs(run.step_datagrams("query"))
    assert q_req["message"]["roundtripToken"] is None
    assert q_resp["message"]["value"] == "cafebabe"

    (u_query, u_query_resp), (u_commit, u_commit_resp) = pairs(run.step_datagrams("update"))
    assert u_query["message"]["roundtripToken"] is None
    assert u_commit["message"]["roundtripToken"] == u_query_resp["message"]["roundtripToken"]
    assert u_commit_resp["message"]["value"] == "0102"

    hp = run.step_datagrams("holepunch")
    assert [(d["dir"], d["request"], addr(d["remote"])) for d in hp] == [
        ("out", True, target.addr),  # to the referrer, forwardRequest = us
        ("in", True, target.addr),  # forwarded back to us, forwardResponse = us
        ("out", False, me),  # we answer the original sender (ourselves)
        ("in", False, me),
    ]
    assert len({d["tid"] for d in hp}) == 1
    assert hp[0]["message"]["forwardRequest"] == enc_peer(*me)
    assert hp[1]["message"]["forwardResponse"] == enc_peer(*me)
    assert hp[1]["message"]["forwardRequest"] is None

    (a_query, _), (a_commit, _) = pairs(run.step_datagrams("announce"))
    assert a_query["peers"] == {"type": 1, "port": 5555, "localAddress": enc_peer("10.1.2.3", 4000)}
    assert a_commit["message"]["roundtripToken"]
    ((l_req, l_resp),) = pairs(run.step_datagrams("lookup"))
    assert l_req["peers"]["type"] == 0
    assert run.steps["lookup"]["result"]["results"][0]["peers"]["peers"] == [
        {"host": LOCALHOST, "port": 5555}
    ]
    # hyperdht Response{peers = 127.0.0.1:5555, localPeers = 2.3 + port 4000}
    assert l_resp["message"]["value"] == "0a06" + enc_peer(LOCALHOST, 5555) + "1204" + "02030fa0"

    # The target's own capture saw exactly the same bytes, mirrored.
    server = read_capture(target_file)
    assert {d["step"] for d in server} == {"server"}
    client_to_target = [d["hex"] for d in run.datagrams if addr(d["remote"]) == target.addr]
    server_to_client = [d["hex"] for d in server if addr(d["remote"]) == me]
    assert len(client_to_target) == len(server_to_client) == len(server)
    flip = {"in": "out", "out": "in"}
    assert [(flip[d["dir"]], d["hex"]) for d in run.datagrams if addr(d["remote"]) != me] == [
        (d["dir"], d["hex"]) for d in server
    ]


def test_capture_ephemeral_client_sends_no_id(node_peer: NodePeerFactory, tmp_path: Path) -> None:
    target = node_peer()
    run = run_capture(target, tmp_path / "eph.jsonl", steps=["ping", "find_node"], ephemeral=True)
    assert run.returncode == 0, run.stderr
    out = [d for d in run.datagrams if d["dir"] == "out"]
    assert out and all(d["message"]["id"] is None for d in out)
    # Nobody in the target's table: an empty (present, zero-length) nodes field.
    ((_, resp),) = pairs(run.step_datagrams("find_node"))
    assert resp["message"]["nodes"] == ""
    assert "1200" in resp["hex"]


def test_proxy_records_both_directions(
    node_peer: NodePeerFactory, node_processes: list[NodeProcess], tmp_path: Path
) -> None:
    upstream = node_peer()
    client = node_peer()
    proxy = start_proxy(upstream, tmp_path / "proxy.jsonl")
    node_processes.append(proxy)
    via_port = proxy.ready["port"]

    r = client.call("ping", host=LOCALHOST, port=via_port)
    assert r["node"]["id"] == upstream.id
    assert addr(r["node"]) == (LOCALHOST, via_port)
    stats = proxy.call("stats")
    assert stats["datagrams"] == 2
    (entry,) = stats["clients"]
    assert addr(entry["client"]) == client.addr
    # the upstream saw the proxy's upstream-facing socket
    assert addr(r["address"]) == addr(entry["via"])

    lines = read_capture(tmp_path / "proxy.jsonl")
    assert [(d["dir"], d["request"]) for d in lines] == [
        ("to_upstream", True),
        ("to_client", False),
    ]
    assert lines[0]["message"]["command"] == "_ping"
    assert lines[1]["message"]["value"] == enc_peer(*addr(entry["via"]))
    assert proxy.close() == 0
