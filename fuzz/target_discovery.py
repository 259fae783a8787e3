"""Fuzz target: peer discovery (:class:`hyperdht.discovery.core.DiscoveryCore`).

The DHT program of :mod:`fuzz.dht_program` on a core that serves ``peers``,
with ``peers`` requests built field by field (lookup, announce and
unannounce, any type, port and local address, with or without a valid
token), ``peers`` responses to the node's own lookups and announces, and
those local operations. The peer store is small (``MAX_PEERS``), so that
generations turn over, or (by the second configuration byte) large enough
for an answer to fill ``MAX_REPLY``.

Invariants, besides the DHT program's: the store never holds more than
about twice ``max_peers`` items, and a ``peers`` answer never lists more
peers than fit in :data:`~hyperdht.discovery.core.MAX_REPLY` bytes plus one.
"""

from __future__ import annotations

from hyperdht import messages
from hyperdht.discovery.core import COMMAND, MAX_REPLY, DiscoveryCore
from hyperdht.ipencoding import Address

from .dht_program import DHTProgram
from .harness import ID_POOL, check

__all__ = ["NAME", "MAX_PEERS", "BIG_STORE", "run_one"]

#: The target's name (``run.py --target``).
NAME = "discovery"
#: The store's ``max_peers`` (small, so that generations turn over).
MAX_PEERS = 24
#: The other ``max_peers`` (a full answer needs 150 peers under one key).
BIG_STORE = 400
_KEYS = ID_POOL[:4]


class DiscoveryProgram(DHTProgram):
    """The DHT program with peer discovery on top."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        flags = self.r.byte()
        #: Small, so that generations turn over; or large enough for a
        #: ``peers`` answer to reach MAX_REPLY.
        self.max_peers = MAX_PEERS if not flags & 2 else BIG_STORE
        self.discovery = DiscoveryCore(
            self.core,
            max_peers=self.max_peers,
            max_age=120.0,
            address=self.pool[0] if flags & 1 else None,
        )
        self.discovery.add_listener("announce", self.listener)
        self.discovery.add_listener("lookup", self.listener)

    def listener(self, key: bytes, origin: Address | None = None) -> None:
        """A listener that raises for announcers on port 1 (it must be
        contained)."""
        if origin is not None and origin.port == 1:
            raise RuntimeError("listener failure")

    def peers_request(self) -> bytes:
        """A ``peers`` value built field by field."""
        r = self.r
        kind = r.byte()
        kind = kind % 3 if kind < 240 else r.uint(4)
        port = r.pick((None, 0, 0, 1, 65535, 70000, -1))
        if port == -1:
            port = r.uint(2)
        mode = r.byte() % 4
        local: bytes | None = None
        if mode == 1:
            local = bytes([10, 0, r.byte() % 4, r.byte()]) + r.take(2)
        elif mode == 2:
            local = r.blob(8)
        try:
            return messages.encode_peers_request(messages.PeersRequest(kind, port, local))
        except ValueError:
            return b""

    def request_value(self, command: str) -> bytes | None:
        """``peers`` values for ``peers`` requests, else the DHT program's."""
        if command == COMMAND and self.r.byte() < 224:
            return self.peers_request()
        return super().request_value(command)

    def response_value(self, command: str) -> bytes | None:
        """``peers`` values for responses to ``peers`` queries."""
        r = self.r
        if command != COMMAND or r.byte() >= 224:
            return super().response_value(command)
        peers = b""
        for _ in range(r.byte() % 8):
            try:
                peers += self.core.peer_codec.encode(self.addr())
            except ValueError:
                peers += r.take(3)
        local = r.maybe(lambda: r.blob(40))
        return messages.encode_peers_response(
            messages.PeersResponse(peers if r.byte() < 240 else None, local)
        )

    def extra_step(self, op: int) -> None:
        """A ``peers`` request with a valid token, or a local lookup,
        announce or unannounce."""
        r = self.r
        op %= 4
        key = r.pick(_KEYS)
        if op == 0:
            addr = self.addr()
            tid = r.uint(2) | 0x8000
            req = messages.RpcRequest(
                command=COMMAND,
                id=self.some_id(),
                target=key,
                roundtrip_token=self.core.tokens.issue(addr.host) if r.byte() < 200 else None,
                value=self.peers_request(),
            )
            self.receive(tid.to_bytes(2, "big") + messages.encode_request(req), addr)
            return
        local = (f"10.0.{r.byte() % 4}.{r.byte()}", r.uint(2)) if r.flag() else None
        port = r.pick((0, 0, 1, 8080, 65535))
        if op == 1:
            self.queries.append(self.discovery.lookup(key, now=self.now, local_address=local))
        elif op == 2:
            q = self.discovery.announce(key, now=self.now, port=port, local_address=local)
            self.queries.append(q)
        else:
            q = self.discovery.unannounce(key, now=self.now, port=port, local_address=local)
            self.queries.append(q)
        self.drain_local()

    def read_results(self) -> None:
        """Check the lookups' and announces' answers, then take them."""
        limit = MAX_REPLY // self.core.peer_codec.size + 1
        for q in self.queries:
            for item in q.results:
                peers = getattr(item, "peers", None)
                check(peers is None or len(peers) <= limit, "a peers answer too long")
        super().read_results()

    def check_state(self) -> None:
        """The DHT program's bounds, and the peer store's."""
        super().check_state()
        store = self.discovery.store
        check(len(store) <= self.max_peers, "the current generation outgrew max_peers")
        total = sum(len(e) + 1 for e in store._current.values())
        total += sum(len(e) + 1 for e in store._previous.values())
        check(total <= 2 * (self.max_peers + 1), f"the store holds {total} items")
        check(len(store._current) + len(store._previous) <= 2 * self.max_peers, "too many keys")


def run_one(data: bytes) -> None:
    """Run one fuzz input as a program on a fresh DHT core with discovery."""
    DiscoveryProgram(data).run()
