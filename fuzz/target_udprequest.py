"""Fuzz target: the request layer (:class:`hyperdht.udprequest.core.RequestCore`).

A program mixes local requests (with and without retries, any-source
ones), incoming datagrams (raw bytes, or responses built on the tid of a
request in flight, from its address or another), cancels, time steps and
a final close. The incoming requests are answered (or forwarded to a third
party) by an ``on_request`` that the input steers too.

Invariants: nothing escapes ``receive``/``handle_timer``; at most one
datagram goes out per datagram in; a timer tick only re-sends datagrams of
requests in flight, each at most ``len(RETRIES)`` times; ``inflight``
counts exactly the futures not done; every request completes once the
clock runs ``RETRY_HORIZON`` seconds on (no request is ever stuck).
"""

from __future__ import annotations

import random

from hyperdht.errors import RequestCancelled, RequestTimeout
from hyperdht.ipencoding import Address
from hyperdht.udprequest.core import MAX_TID, REQUEST_BIT, RETRIES, PendingRequest, RequestCore

from .harness import POOL4, T0, Reader, check

__all__ = ["NAME", "run_one", "TIME_STEPS", "RETRY_HORIZON"]

#: The target's name (``run.py --target``).
NAME = "udprequest"
#: Seconds a time step may advance the clock by (picked by one byte).
TIME_STEPS = (0.0, 0.01, 0.25, 0.26, 0.5, 1.0, 1.25, 1.5, 2.0, 5.0, 30.0, 1000.0)
#: Seconds after which any request (even with every retry) has completed.
RETRY_HORIZON = 60.0


class _State:
    def __init__(self, r: Reader) -> None:
        self.r = r
        flags = r.byte()
        self.core = RequestCore(
            timeout=(0.5, 1.0, 2.0, 0.001)[flags & 3],
            retry=bool(flags & 4),
            rng=random.Random(flags),
            on_request=self.on_request,
        )
        self.now = T0
        self.requests: list[PendingRequest] = []
        self.resends: dict[int, int] = {}

    def on_request(self, tid: int, payload: bytes, address: Address, now: float) -> None:
        check(now == self.now, "on_request got another now than the receive call")
        mode = self.r.byte() % 4
        if mode == 0:
            self.core.respond(tid, payload[:64], address)
        elif mode == 1:
            self.core.forward_request(tid, payload, self.r.pick(POOL4))
        elif mode == 2:
            self.core.forward_response(tid, payload, self.r.pick(POOL4))
        # mode 3: no answer

    def pending(self) -> list[PendingRequest]:
        return [q for q in self.requests if not q.done()]

    def check_state(self) -> None:
        live = self.pending()
        check(self.core.inflight == len(live), f"inflight {self.core.inflight} != {len(live)}")
        check(self.core.inflight <= MAX_TID, "more requests in flight than tids")

    def receive(self, data: bytes, addr: Address) -> None:
        self.core.receive_datagram(data, addr, self.now)
        out = self.core.datagrams_to_send()
        check(len(out) <= 1, f"{len(out)} datagrams out for one in")
        for payload, _, options in out:
            check(options is None, "the request layer sets no send options")
            check(len(payload) <= max(len(data), 66), "answer larger than the request")

    def advance(self, dt: float) -> None:
        target = self.now + dt
        for _ in range(64):
            due = self.core.get_timer()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.timer()
        self.now = target
        self.timer()

    def timer(self) -> None:
        live = {q.datagram: q for q in self.pending()}
        self.core.handle_timer(self.now)
        for payload, addr, _ in self.core.datagrams_to_send():
            q = live.get(payload)
            check(q is not None and q.address == addr, "a tick sent something not in flight")
            assert q is not None
            self.resends[q.tid] = self.resends.get(q.tid, 0) + 1
            check(self.resends[q.tid] <= len(RETRIES), "re-sent more often than RETRIES allows")
        for q in self.requests:
            if q.done():
                exc = q.exception()
                check(
                    exc is None or isinstance(exc, (RequestTimeout, RequestCancelled)),
                    f"request failed with {exc!r}",
                )

    def local_request(self) -> None:
        r = self.r
        payload = r.blob(256)
        addr = r.pick(POOL4)
        retry = (None, False, True)[r.byte() % 3]
        q = self.core.request(payload, addr, self.now, retry=retry, any_source=r.flag())
        out = self.core.datagrams_to_send()
        if not self.core_closed:
            check(len(out) == 1 and out[0][1] == addr, "a request sends one datagram")
            check(out[0][0][2:] == payload, "the request datagram carries the payload")
            self.resends.pop(q.tid, None)
        self.requests.append(q)

    core_closed = False

    def respond_to_pending(self) -> None:
        r = self.r
        live = self.pending()
        if not live:
            return
        q = r.pick(live)
        tid = q.tid ^ (1 if r.byte() == 0 else 0)
        addr = q.address if r.flag() else r.pick(POOL4)
        before = q.done()
        self.receive(tid.to_bytes(2, "big") + r.blob(512), addr)
        if q.done() and not before:
            check(addr == q.address or q.any_source, "a response from elsewhere matched")


def run_one(data: bytes) -> None:
    """Run one fuzz input as a program on a fresh :class:`RequestCore`."""
    r = Reader(data)
    s = _State(r)
    steps = 0
    while r.remaining() and steps < 200:
        steps += 1
        op = r.byte() % 7
        if op == 0:
            s.receive(r.blob(1500), r.pick(POOL4))
        elif op == 1:
            s.local_request()
        elif op == 2:
            s.respond_to_pending()
        elif op == 3:
            s.advance(r.pick(TIME_STEPS))
        elif op == 4:
            live = s.pending()
            if live:
                s.core.cancel(r.pick(live))
        elif op == 5:
            tid = r.uint(2) & MAX_TID
            s.receive((REQUEST_BIT | tid).to_bytes(2, "big") + r.blob(1500), r.pick(POOL4))
        elif op == 6 and r.byte() == 0xC5:
            s.core.close()
            s.core_closed = True
        s.check_state()
    horizon = s.now + RETRY_HORIZON * max(1.0, s.core.timeout)
    while s.pending() and s.now < horizon:
        s.advance(5.0)
    s.advance(5.0)
    check(not s.pending(), "a request never completed")
    check(s.core.get_timer() is None, "an idle request layer keeps a timer")
    s.check_state()
