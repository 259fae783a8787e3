"""The seed corpus: the golden vectors and valid messages from our encoder,
wrapped in each target's program format (see :mod:`fuzz.harness`).

``seeds(target)`` returns ``{name: input}``; :func:`write_corpus` writes
them into ``fuzz/corpus/<target>/`` (``seed-<name>`` files), where libFuzzer
adds what it finds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hyperdht import messages

__all__ = ["GOLDEN", "TARGETS", "blob", "golden_messages", "seeds", "write_corpus"]

#: The golden vectors (recorded from the Node.js reference).
GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden" / "vectors.json"
#: The targets, in the order ``run.py --target all`` runs them.
TARGETS = ("udprequest", "dhtrpc", "discovery")


def blob(data: bytes) -> bytes:
    """``data`` as :meth:`fuzz.harness.Reader.blob` reads it."""
    if len(data) < 0xFF:
        return bytes([len(data)]) + data
    return b"\xff" + len(data).to_bytes(2, "big") + data


def golden_messages() -> dict[str, tuple[str, bytes]]:
    """``{vector name: (kind, encoded bytes)}`` for every golden vector."""
    with GOLDEN.open() as f:
        vectors = json.load(f)
    out: dict[str, tuple[str, bytes]] = {}
    for section in ("encode", "decode"):
        for v in vectors[section]:
            name = re.sub(r"[^a-z0-9]+", "-", f"{section} {v['name']}".lower()).strip("-")
            out[name] = (v["kind"], bytes.fromhex(v["hex"]))
    return out


def _built() -> dict[str, tuple[str, bytes]]:
    """Valid messages from our own encoder (what a conforming peer sends)."""
    key = bytes(range(32))
    peer = bytes([198, 18, 0, 2, 0xC2, 0x4A])
    node = key + peer
    req, res = "dht_rpc.Request", "dht_rpc.Response"
    preq, pres = "peers.Request", "peers.Response"
    return {
        "built-ping": (req, messages.encode_request(messages.RpcRequest("_ping", id=key))),
        "built-find-node": (
            req,
            messages.encode_request(messages.RpcRequest("_find_node", id=key, target=key)),
        ),
        "built-holepunch": (
            req,
            messages.encode_request(messages.RpcRequest("_ping", forward_request=peer)),
        ),
        "built-forwarded": (
            req,
            messages.encode_request(messages.RpcRequest("_ping", id=key, forward_response=peer)),
        ),
        "built-pong": (
            res,
            messages.encode_response(messages.RpcResponse(id=key, value=peer, roundtrip_token=key)),
        ),
        "built-nodes": (
            res,
            messages.encode_response(messages.RpcResponse(id=key, nodes=node * 3, value=b"")),
        ),
        "built-announce": (
            preq,
            messages.encode_peers_request(messages.PeersRequest(1, 8080, peer[:4] + b"\x1f\x90")),
        ),
        "built-peers": (
            pres,
            messages.encode_peers_response(messages.PeersResponse(peer * 4, b"\x00\x05\x1f\x90")),
        ),
    }


def _udprequest(kind: str, data: bytes) -> list[bytes]:
    # config 0; op 0: receive raw (with a request header, then a response
    # header); op 1: a local request to POOL4[0]; op 2: answer it.
    return [
        b"\x00" + b"\x00" + blob(b"\x80\x01" + data) + b"\x00" + b"\x00",
        b"\x04" + b"\x01" + blob(data) + b"\x00\x01\x00" + b"\x02\x00\x00\x01" + blob(data),
        b"\x00" + b"\x05\x12\x34" + blob(data) + b"\x03" + b"\x03\x05",
    ]


def _dht(kind: str, data: bytes, target: str) -> list[bytes]:
    out = []
    for config in (0x00, 0x20, 0x25, 0x3A):
        if kind == "dht_rpc.Response":
            # op 3: respond to the newest request sent, from its address,
            # with the raw payload (mode byte < 16).
            out.append(bytes([config, 3, 0, 0, 0]) + blob(data) + b"\x05\x08")
        elif kind == "dht_rpc.Request":
            # op 0: a raw datagram with a request header, from POOL[3].
            out.append(bytes([config, 0]) + blob(b"\x81\x02" + data) + b"\x03")
        else:
            # A peers value: in a request (with a valid token: an update)
            # and in a response to the newest request sent.
            token = b"\x00" * 32 if config & 1 else None
            req = messages.RpcRequest(_PEERS, target=bytes(32), value=data, roundtrip_token=token)
            raw = b"\x80\x07" + messages.encode_request(req)
            out.append(bytes([config, 0]) + blob(raw) + b"\x04")
            res = messages.encode_response(messages.RpcResponse(value=data))
            out.append(bytes([config, 3, 0, 0, 0]) + blob(res) + b"\x05\x08")
    return out


_PEERS = "peers"


def _programs(target: str) -> dict[str, bytes]:
    """Hand-written programs: bootstrap answered with nodes, queries, ...."""
    node_list = b"\x01\x05" + b"\x01\x01\x03" + b"\x01\x02\x04" + b"\x01\x03\x05"
    node_list += b"\x01\x04\x06" + b"\x00" + bytes(32) + b"\x07"
    answer = b"\x03\x00\x00\x20" + b"\x01\x01" + node_list + b"\x00" + b"\x01" + blob(bytes(32))
    progs = {
        "bootstrap-answered": b"\x20" + answer + answer + b"\x05\x07" + answer + b"\x05\x09",
        "natted-bootstrap": b"\x24" + answer + answer + b"\x05\x05" + answer + b"\x05\x0a",
        "query-values": b"\x20" + answer + b"\x06\x00\x00\x02\x00\x01\x00" + answer * 3,
        "ping-and-pong": b"\x00\x06\x01\x03" + b"\x03\x00\x00\x20\x01\x02\x00\x01\x02\x03",
        "connect": b"\x04\x06\x03\x03\x01\x04\x01" + answer + b"\x05\x06" + answer,
        "timers": b"\x20\x05\x09\x05\x0a\x05\x0b" + answer,
    }

    # A full bucket: bootstrap (unanswered), 22 pings from ids in the
    # farthest bucket, 20 s on (the contacts go stale), 4 more: re-pings.
    def ping(i: int) -> bytes:
        return bytes([1, i % 6, 0, i, 0, 2, 0x80 | i]) + bytes(31) + b"\x00\xff\xff\x00\x00"

    stale = b"\x05\x07" * 3 + b"".join(ping(i) for i in range(22)) + b"\x05\x08\x05\x08"
    progs["bucket-full"] = b"\x20" + stale + b"".join(ping(i) for i in range(22, 26)) + b"\x05\x06"
    progs["close"] = b"\x20" + answer + b"\x06\x01\x03\x06\x07\xc5" + answer + b"\x06\x00\x00"
    if target == "discovery":
        lookup = b"\x09\x01\x00\x01\x02\x07\x01"
        announce = b"\x09\x02\x01\x00\x03"
        # op 9, sub-op 0: a peers announce with a valid token, for each
        # key and each source address (more than the store's max_peers).
        puts = b"".join(
            bytes([9, 0, key, addr, 1, 0, 0, 1, 1, 1, 0]) for key in range(4) for addr in range(10)
        )
        # 160 announcers (distinct ports) under one key, then a lookup:
        # the answer stops at MAX_REPLY (with the big store).
        many = b"".join(
            bytes([9, 0, 0, i % 6, 1, i, 0, 1, 1, 6]) + (1000 + i).to_bytes(2, "big") + b"\x00"
            for i in range(160)
        )
        progs["full-reply"] = b"\x00" + many + b"\x09\x01\x00\x00" + lookup
        progs["announce-lookup"] = b"\x20" + answer + announce + answer * 2 + lookup + answer
        progs["served"] = b"\x00" + puts + b"\x05\x0a" + lookup + puts[:44]
    return progs


def seeds(target: str) -> dict[str, bytes]:
    """The seed inputs of ``target`` (one of :data:`TARGETS`)."""
    out: dict[str, bytes] = {}
    msgs = golden_messages()
    msgs.update(_built())
    for name, (kind, data) in msgs.items():
        made = _udprequest(kind, data) if target == "udprequest" else _dht(kind, data, target)
        for i, program in enumerate(made):
            out[f"{name}-{i}"] = program
    if target != "udprequest":
        out.update(_programs(target))
    if target == "discovery":
        # The discovery program's own configuration byte, after the DHT's:
        # a node address; the big store for the full-reply program.
        out = {
            k: v[:1] + (b"\x03" if k == "full-reply" else b"\x01") + v[1:] for k, v in out.items()
        }
    return out


def write_corpus(target: str, directory: Path) -> int:
    """Write ``target``'s seeds into ``directory``; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    made = seeds(target)
    for name, data in made.items():
        (directory / f"seed-{name}").write_bytes(data)
    return len(made)
