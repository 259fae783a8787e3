"""The program the DHT and discovery targets run on a :class:`DHTCore`.

An input starts with a configuration byte (ephemeral, IPv6, behind a NAT,
concurrency), then a sequence of steps: raw datagrams, requests built
field by field (with a valid round-trip token when the input asks),
responses on the tid of a request the core sent (so that responses match
and queries go on), application datagrams, local operations (queries,
pings, hole punches, connects, bootstraps), cancels and time steps. The
discovery target adds ``peers`` requests and responses and its own local
operations through :meth:`DHTProgram.extra_step`.

Invariants checked after every step: nothing escapes the core; one request
in gives at most one answer out (a response or a forwarded ping: third-party
sends included), plus at most one re-ping of a routing-table contact when
the sender lands in a full bucket; no answer exceeds :data:`ANSWER_LIMIT`
bytes or the request's size plus :data:`FORWARD_SLACK`; a response gives
at most :data:`RESPONSE_FANOUT` datagrams out; requests in flight never
exceed the concurrency; the routing table, the table's bookkeeping and the
token cache stay bounded; and at the end, with the clock run on, every query, ping and connect
completes.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

from hyperdht import messages
from hyperdht.dhtrpc.core import DEFER, DHTCore, K
from hyperdht.dhtrpc.query import Query
from hyperdht.dhtrpc.types import IncomingQuery
from hyperdht.errors import HyperDHTError
from hyperdht.future import Future
from hyperdht.ipencoding import Address, Node

from .harness import ID_POOL, POOL4, POOL6, T0, InvariantError, Reader, check, counter_bytes

__all__ = [
    "ANSWER_LIMIT",
    "FORWARD_SLACK",
    "RESPONSE_FANOUT",
    "TIME_STEPS",
    "DHTProgram",
]

#: Bytes an answer to one request may take at most (20 IPv6 nodes, a
#: full ``peers`` value, id and token, with room to spare).
ANSWER_LIMIT = 2400
#: A forwarded ping may exceed its request by this many bytes (the
#: ``forwardResponse`` the forwarder adds, and its tag).
FORWARD_SLACK = 24
#: Datagrams one response may cause, as a multiple of the concurrency
#: (the query's next requests, a NAT opener per new node, re-pings).
RESPONSE_FANOUT = 3
#: Seconds a time step may advance the clock by (picked by one byte).
TIME_STEPS = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0, 40.0, 300.0, 3600.0)
#: Rounds of ten virtual seconds the final phase runs for at most.
FINAL_ROUNDS = 400
_COMMANDS = ("_ping", "_find_node", "values", "peers", "", "_unknown")


class DHTProgram:
    """One fuzz input, run on a fresh :class:`DHTCore`."""

    def __init__(self, data: bytes) -> None:
        self.r = r = Reader(data)
        flags = r.byte()
        self.ipv6 = bool(flags & 2)
        self.pool = POOL6 if self.ipv6 else POOL4
        self.now = T0
        self.core = DHTCore(
            id=ID_POOL[0],
            ephemeral=bool(flags & 1),
            ipv6=self.ipv6,
            concurrency=(1, 2, 4, 16)[(flags >> 3) & 3],
            bootstrap=self.pool[1:3],
            timeout=1.0,
            now=self.now,
            rng=random.Random(flags),
            random_bytes=counter_bytes(b"fuzz"),
        )
        if flags & 4:
            # Behind a NAT: first contacts go through referrers, with openers.
            self.core.local_address = Address(self.pool[0].host, self.pool[0].port)
            self.core.observed = self.pool[5]
        self.core.on_request("values", self.on_values, update=False)
        self.core.on_request("values", self.on_values, update=True)
        self.core.on_datagram = lambda data, addr: None
        self.core.on_holepunch = lambda requester, target: None
        self.core.on_node_added = self.core.on_node_removed = lambda node: None
        self.deferred: list[IncomingQuery] = []
        self.queries: list[Query] = []
        self.futures: list[Future[Address]] = []
        #: Requests the core sent, newest last: (tid, address, command).
        self.sent: list[tuple[int, Address, str]] = []
        self.steps = 0
        if flags & 0x20:
            self.queries.append(self.core.bootstrap(now=self.now))
        self.drain_local()

    # -- the program's handlers ---------------------------------------------

    def on_values(self, query: IncomingQuery) -> Any:
        """The ``values`` handler: answers, defers, returns junk or raises,
        as the input says."""
        check(query.now == self.now, "a handler got another now than the datagram's")
        mode = self.r.byte() % 6
        if mode == 0:
            return query.value
        if mode == 1:
            self.deferred.append(query)
            return DEFER
        if mode == 2:
            return "not bytes"
        if mode == 3:
            raise ValueError("handler failure")
        if mode == 4:
            return bytearray(self.r.blob(600))
        return None

    # -- datagrams ------------------------------------------------------------

    def record(self, out: list[Any]) -> None:
        """Remember the requests among datagrams the core sent."""
        for payload, addr, _ in out:
            if len(payload) > 2 and payload[0] & 0x80 and payload[2] != 0xFF:
                try:
                    command = messages.decode_request(payload[2:]).command
                except HyperDHTError as exc:
                    raise InvariantError(f"the core sent an undecodable request: {exc}") from exc
                self.sent.append((((payload[0] << 8) | payload[1]) & 0x7FFF, addr, command))
        del self.sent[:-64]

    def drain_local(self) -> list[Any]:
        """Drain after a local operation or a timer: anything goes (bounded
        by the caller's operation), but it must be well-formed."""
        out = self.core.datagrams_to_send()
        self.record(out)
        return out

    def receive(self, data: bytes, addr: Address) -> None:
        """Feed one datagram and check what it made the core send."""
        self.core.receive_datagram(data, addr, self.now)
        out = self.core.datagrams_to_send()
        self.record(out)
        if len(data) < 2 or (len(data) > 2 and data[2] == 0xFF):
            check(not out, "a short or application datagram made the core send")
        elif data[0] & 0x80:
            # One answer (a response, or the forward of a hole-punch ping,
            # to whatever address), and at most one re-ping of a contact of
            # the routing table when the sender joins a full bucket.
            answers = [d for d in out if d[0][:2] == data[:2] or not d[0][0] & 0x80]
            repings = [d for d in out if d not in answers]
            check(len(answers) <= 1, f"one request made the core answer {len(answers)} times")
            check(len(repings) <= 1, f"one request made the core send {len(repings)} pings")
            for payload, to, _ in repings:
                ping = messages.decode_request(payload[2:])
                check(ping.command == "_ping" and not ping.forward_request, "not a re-ping")
                check(any(c.address == to for c in self.core.table), "re-ping off the table")
            for payload, _, _ in answers:
                limit = max(ANSWER_LIMIT, len(data) + FORWARD_SLACK)
                check(len(payload) <= limit, f"a {len(data)}-byte request got {len(payload)} out")
        else:
            fanout = RESPONSE_FANOUT * self.core.concurrency + 2
            check(len(out) <= fanout, f"one response made the core send {len(out)} datagrams")

    def advance(self, dt: float) -> None:
        """Run the clock ``dt`` seconds on, waking at the core's timers
        (at most 64 wake-ups; then once, late, like a loaded machine)."""
        target = self.now + dt
        for _ in range(64):
            due = self.core.get_timer()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.core.handle_timer(self.now)
            self.drain_local()
        self.now = target
        self.core.handle_timer(self.now)
        self.drain_local()

    # -- building messages ----------------------------------------------------

    def addr(self) -> Address:
        return self.r.pick(self.pool)

    def some_id(self) -> bytes | None:
        r = self.r
        mode = r.byte() % 5
        if mode == 0:
            return None
        if mode == 1:
            return r.pick(ID_POOL)
        if mode == 2:
            return r.take(32).ljust(32, b"\0")
        if mode == 3:
            return self.core.id
        return r.blob(40)

    def some_peer(self) -> bytes | None:
        r = self.r
        mode = r.byte() % 4
        if mode == 0:
            return None
        if mode in (1, 2):
            a = self.addr()
            try:
                return self.core.peer_codec.encode(a)
            except ValueError:
                return b""
        return r.blob(20)

    def nodes_field(self) -> bytes | None:
        r = self.r
        mode = r.byte() % 4
        if mode == 0:
            return None
        if mode == 3:
            return r.blob(1200)
        parts = []
        for _ in range(r.byte() % (K + 2)):
            node = Node(
                r.pick(ID_POOL[1:]) if r.flag() else r.take(32).ljust(32, b"\1"), self.addr()
            )
            with contextlib.suppress(ValueError):
                parts.append(self.core.node_codec.encode(node))
        return b"".join(parts)

    def token_for(self, addr: Address) -> bytes | None:
        r = self.r
        mode = r.byte() % 4
        if mode == 0:
            return None
        if mode in (1, 2):
            return self.core.tokens.issue(addr.host)
        return r.blob(40)

    def request_bytes(self, addr: Address, command: str | None = None) -> bytes:
        """A request datagram built field by field."""
        r = self.r
        tid = r.uint(2) | 0x8000
        if command is None:
            command = r.pick(_COMMANDS)
            if command == "_unknown":
                command = r.blob(16).decode("utf-8", "replace")
        req = messages.RpcRequest(
            command=command,
            id=self.some_id(),
            target=self.some_id(),
            forward_request=self.some_peer() if r.byte() < 48 else None,
            forward_response=self.some_peer() if r.byte() < 48 else None,
            roundtrip_token=self.token_for(addr),
            value=self.request_value(command),
        )
        try:
            payload = messages.encode_request(req)
        except ValueError:
            payload = b""
        return tid.to_bytes(2, "big") + payload

    def request_value(self, command: str) -> bytes | None:
        """The ``value`` of a built request (the discovery target builds
        ``peers`` values)."""
        return self.r.maybe(lambda: self.r.blob(1000))

    def response_value(self, command: str) -> bytes | None:
        """The ``value`` of a built response to ``command``."""
        r = self.r
        if command == "_ping" and r.byte() < 200:
            return self.some_peer()
        return r.maybe(lambda: r.blob(1000))

    def respond(self) -> None:
        """A response on the tid of a request the core sent."""
        r = self.r
        if not self.sent:
            self.receive(r.blob(600), self.addr())
            return
        tid, to, command = self.sent[-1 - r.byte() % len(self.sent)]
        src = to if r.byte() < 224 else self.addr()
        if r.byte() < 16:
            payload = r.blob(1500)
        else:
            res = messages.RpcResponse(
                id=self.some_id(),
                nodes=self.nodes_field(),
                value=self.response_value(command),
                roundtrip_token=r.maybe(lambda: r.blob(40)),
            )
            payload = messages.encode_response(res)
        self.receive(tid.to_bytes(2, "big") + payload, src)

    # -- local operations -----------------------------------------------------

    def local(self) -> None:
        """A local operation: a query, ping, hole punch, connect, bootstrap,
        reply to a deferred query, or application datagram."""
        r = self.r
        core = self.core
        op = r.byte() % 8
        now = self.now
        if op == 0:
            command = r.pick(("values", "_find_node", "peers"))
            target = r.pick(ID_POOL)
            nodes = [self.addr() for _ in range(r.byte() % 3)] if r.flag() else None
            self.queries.append(
                core.query(
                    command,
                    target,
                    r.maybe(lambda: r.blob(100)),
                    now=now,
                    nodes=nodes,
                    update=r.flag(),
                    holepunching=r.flag(),
                    verbose=r.flag(),
                )
            )
        elif op == 1:
            self.futures.append(core.ping(self.addr(), now=now))
        elif op == 2:
            self.futures.append(core.holepunch(self.addr(), self.addr(), now=now))
        elif op == 3:
            self.futures.append(
                core.connect(
                    self.addr(),
                    self.addr() if r.flag() else None,
                    now=now,
                    timeout=r.pick((None, 0.5, 5.0)),
                )
            )
        elif op == 4:
            self.queries.append(core.bootstrap(now=now))
        elif op == 5 and self.deferred:
            query = self.deferred.pop(r.byte() % len(self.deferred))
            core.reply(query, r.maybe(lambda: r.blob(300)))
        elif op == 6:
            core.send_datagram(r.blob(100), self.addr())
        elif op == 7 and r.byte() == 0xC5:
            core.close()
        self.drain_local()

    def cancel(self) -> None:
        """Destroy a query or cancel a ping/connect."""
        r = self.r
        if r.flag() and self.queries:
            r.pick(self.queries).destroy()
        elif self.futures:
            r.pick(self.futures).cancel()
        self.drain_local()

    # -- the program ----------------------------------------------------------

    def extra_step(self, op: int) -> None:
        """Steps a subclass adds (``op`` from 0 up)."""

    def step(self) -> None:
        """One step of the program."""
        r = self.r
        op = r.byte() % 10
        if op == 0:
            self.receive(r.blob(1500), self.addr())
        elif op in (1, 2):
            addr = self.addr()
            self.receive(self.request_bytes(addr), addr)
        elif op in (3, 4):
            self.respond()
        elif op == 5:
            self.advance(r.pick(TIME_STEPS))
        elif op == 6:
            self.local()
        elif op == 7:
            self.cancel()
        elif op == 8:
            self.receive(r.take(2) + b"\xff\xff\xff" + r.blob(100), self.addr())
        else:
            self.extra_step(r.byte())
        self.read_results()
        self.check_state()

    def read_results(self) -> None:
        """Take what queries yielded (as a reader would)."""
        for q in self.queries:
            q.results.clear()

    def check_state(self) -> None:
        """Bounded state."""
        core = self.core
        check(core.udp.inflight <= core.concurrency, "more requests in flight than concurrency")
        check(len(core.table) <= K * 257, "routing table larger than its buckets")
        check(len(core._seen) == len(core.table), "seen contacts differ from the table")
        check(len(core._repinging) <= len(core.table), "re-pinging contacts not in the table")
        check(len(core.tokens._cache) <= 4097, "token cache unbounded")
        check(core.inflight_queries >= 0, "negative query count")

    def run(self) -> None:
        """Run the whole program, then let the clock run until everything
        completed (and check it did)."""
        while self.r.remaining() and self.steps < 200:
            self.steps += 1
            self.step()
        for _ in range(FINAL_ROUNDS):
            if all(q.done for q in self.queries) and all(f.done() for f in self.futures):
                break
            self.advance(10.0)
            self.read_results()
        check(all(q.done for q in self.queries), "a query never completed")
        check(all(f.done() for f in self.futures), "a ping or connect never completed")
        self.check_state()
        check(
            not self.core._queue or self.core.closed or self.core.udp.inflight > 0,
            "requests queued with nothing in flight",
        )
