"""Request/response over UDP, sans-I/O (after mafintosh's ``udp-request``).

Every datagram is ``header (2 bytes, big-endian) || payload``. Bit ``0x8000``
of the header marks a request; the low 15 bits are the transaction id (tid).
A response echoes the request's tid with the request bit clear.

:class:`RequestCore` does the bookkeeping and nothing else: it never touches
a socket or a clock. Feed it datagrams with :meth:`RequestCore.receive`,
drain :attr:`RequestCore.outbox`, and call :meth:`RequestCore.handle_timer`
when :meth:`RequestCore.get_timer` says so. Payloads are opaque bytes here;
the DHT layer encodes and decodes them. :class:`~hyperdht.udprequest.UDPRequest`
runs the same core on a real socket (see :mod:`hyperdht.udprequest.socket`).

Timeouts follow the reference exactly: a tick every ``timeout / 4``; a new
request survives 5 ticks and fails on the 6th (1.25 to 1.5 timeouts). With
retries it is re-sent after 4, then 8, then 12 more ticks before it fails.
The tick only runs while requests are pending, so an idle node never wakes.

Response matching is stricter than the reference: a response must come from
the address the request was sent to, unless the request was sent with
``any_source=True`` (a hole-punch ping, whose answer comes from the peer
behind the referrer, not from the referrer itself).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..arguments import check_positive_number
from ..datagram import Datagram
from ..errors import RequestCancelled, RequestTimeout, StateError
from ..future import Future
from ..ipencoding import Address

__all__ = [
    "HEADER_SIZE",
    "MAX_TID",
    "RETRIES",
    "Response",
    "PendingRequest",
    "RequestCore",
    "OnRequest",
    "OnDrop",
]

HEADER_SIZE = 2
MAX_TID = 0x7FFF
REQUEST_BIT = 0x8000
#: Extra ticks a retried request waits before each re-send (then it fails).
RETRIES = (4, 8, 12)
#: Ticks a new request waits before its first retry or failure.
INITIAL_TICKS = 5


@dataclass(frozen=True, slots=True)
class Response:
    """A response payload and the address it actually came from."""

    payload: bytes
    address: Address


class PendingRequest(Future[Response]):
    """A request in flight: a :class:`~hyperdht.future.Future` that resolves
    to a :class:`Response`, or fails with :class:`RequestTimeout` or
    :class:`RequestCancelled`."""

    __slots__ = ("address", "any_source", "completed_at", "datagram", "ticks", "tid", "tries")

    def __init__(
        self,
        tid: int,
        datagram: bytes,
        address: Address,
        retry: bool,
        any_source: bool,
        now: float,
    ) -> None:
        super().__init__()
        self.tid = tid
        self.datagram = datagram
        self.address = address
        self.any_source = any_source
        self.ticks = INITIAL_TICKS
        self.tries = 0 if retry else len(RETRIES)
        #: The ``now`` of the call that resolved the request (the arrival
        #: of its response, or the timer tick that failed it); before that,
        #: and for a request cancelled by :meth:`RequestCore.close`, the
        #: ``now`` it was sent at. Callbacks that send follow-up requests use
        #: it, so time flows from the driver's call into them explicitly.
        self.completed_at = now


#: ``on_request(tid, payload, address, now)``.
OnRequest = Callable[[int, bytes, Address, float], None]
#: ``on_drop(reason)``.
OnDrop = Callable[[str], None]


class RequestCore:
    """The request/response state machine for one socket.

    ``on_request(tid, payload, address, now)`` is called for every incoming
    request; answer it with :meth:`respond`. ``on_drop(reason)`` is told of
    every datagram dropped here (``"short"``, ``"unmatched_response"``,
    ``"unexpected_source"``). Not thread-safe: the driver serialises calls.
    """

    def __init__(
        self,
        *,
        timeout: float = 1.0,
        retry: bool = False,
        rng: random.Random | None = None,
        on_request: OnRequest | None = None,
        on_drop: OnDrop | None = None,
    ) -> None:
        self.timeout = check_positive_number(timeout, "timeout")
        self.tick_interval = self.timeout / 4
        self.retry = retry
        self.on_request: OnRequest = on_request or _ignore_request
        self.on_drop: OnDrop = on_drop or _ignore_drop
        #: Datagrams waiting to be sent, as ``(data, address, options)``; the owner drains it.
        self.outbox: list[Datagram] = []
        self._rng = rng or random.Random()
        self._next_tid = self._rng.randrange(MAX_TID)
        self._pending: dict[int, PendingRequest] = {}
        self._next_tick: float | None = None
        self._closed = False
        #: Requests that failed with a timeout, since creation.
        self.timeouts = 0

    @property
    def inflight(self) -> int:
        """Number of requests waiting for a response."""
        return len(self._pending)

    # -- sending -----------------------------------------------------------

    def _allocate_tid(self) -> int:
        if len(self._pending) >= MAX_TID:
            raise StateError(f"all {MAX_TID} transaction ids are in flight")
        tid = self._next_tid
        while tid in self._pending:
            tid = tid + 1 if tid < MAX_TID - 1 else 0
        self._next_tid = tid + 1 if tid < MAX_TID - 1 else 0
        return tid

    def request(
        self,
        payload: bytes,
        address: Address,
        now: float,
        *,
        retry: bool | None = None,
        any_source: bool = False,
    ) -> PendingRequest:
        """Send a request; the returned future resolves with the response.

        ``retry`` overrides the core's default; ``any_source`` accepts the
        response from any address (needed for forwarded pings).
        """
        if self._closed:
            req = PendingRequest(0, b"", address, False, any_source, now)
            req.set_exception(RequestCancelled())
            return req
        tid = self._allocate_tid()
        datagram = (REQUEST_BIT | tid).to_bytes(2, "big") + payload
        req = PendingRequest(
            tid, datagram, address, self.retry if retry is None else retry, any_source, now
        )
        self._pending[tid] = req
        self.outbox.append((datagram, address, None))
        if self._next_tick is None:
            self._next_tick = now + self.tick_interval
        return req

    def respond(self, tid: int, payload: bytes, address: Address) -> None:
        """Send a response with ``tid`` to ``address`` (also how a forwarded
        request is answered to a third party)."""
        if not self._closed:
            self.outbox.append((tid.to_bytes(2, "big") + payload, address, None))

    forward_response = respond

    def forward_request(self, tid: int, payload: bytes, address: Address) -> None:
        """Send a request on someone else's ``tid`` (no state is kept: the
        answer goes straight to the original requester)."""
        if not self._closed:
            self.outbox.append(((REQUEST_BIT | tid).to_bytes(2, "big") + payload, address, None))

    def cancel(self, request: PendingRequest, exc: BaseException | None = None) -> None:
        """Fail a pending request (default :class:`RequestCancelled`)."""
        if self._pending.get(request.tid) is request:
            del self._pending[request.tid]
            request.set_exception(exc or RequestCancelled())

    def close(self) -> None:
        """Cancel every pending request and refuse new ones."""
        self._closed = True
        self._next_tick = None
        pending, self._pending = self._pending, {}
        for req in pending.values():
            req.set_exception(RequestCancelled())

    # -- receiving ---------------------------------------------------------

    def receive(self, data: bytes, address: Address, now: float) -> None:
        """Handle one datagram that arrived from ``address`` at ``now``."""
        if len(data) < HEADER_SIZE:
            self.on_drop("short")
            return
        header = (data[0] << 8) | data[1]
        tid = header & MAX_TID
        if header & REQUEST_BIT:
            self.on_request(tid, data[HEADER_SIZE:], address, now)
            return
        req = self._pending.get(tid)
        if req is None:
            self.on_drop("unmatched_response")
            return
        if not req.any_source and address != req.address:
            self.on_drop("unexpected_source")
            return
        del self._pending[tid]
        req.completed_at = now
        req.set_result(Response(data[HEADER_SIZE:], address))

    # -- the driver's Endpoint contract ---------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """:meth:`receive`, as a driver calls it."""
        self.receive(data, addr, now)

    def datagrams_to_send(self) -> list[Datagram]:
        """Drain :attr:`outbox`."""
        out = self.outbox
        if out:
            self.outbox = []
        return out

    # -- time --------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (None when idle)."""
        return self._next_tick

    def handle_timer(self, now: float) -> None:
        """Advance the timeout ticks that are due at ``now``."""
        while self._next_tick is not None and now >= self._next_tick:
            self._tick(now)
            if self._pending:
                self._next_tick += self.tick_interval
            else:
                self._next_tick = None

    def _tick(self, now: float) -> None:
        expired: list[PendingRequest] = []
        for req in self._pending.values():
            if req.ticks:
                req.ticks -= 1
            elif req.tries < len(RETRIES):
                req.ticks = RETRIES[req.tries]
                req.tries += 1
                self.outbox.append((req.datagram, req.address, None))
            else:
                expired.append(req)
        for req in expired:
            del self._pending[req.tid]
        self.timeouts += len(expired)
        for req in expired:
            req.completed_at = now
            req.set_exception(RequestTimeout())


def _ignore_request(tid: int, payload: bytes, address: Address, now: float) -> None:
    pass


def _ignore_drop(reason: str) -> None:
    pass
