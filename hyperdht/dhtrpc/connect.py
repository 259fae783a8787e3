"""Reaching a peer whichever side is behind a NAT: :func:`start_connect`.

The flow (sans-I/O, on a :class:`~hyperdht.dhtrpc.core.DHTCore`; see
tests/netns/NAT-REPORT.md for the measurements behind each step):

1. Ping the referrer. Its answer says which address our datagrams come
   from; when that is our own socket's address we are public and step 2 is
   skipped (an opener from a public host could reach the far NAT).
2. Send the *opener*: one ``_ping`` datagram to the peer with a low IP TTL
   (``opener_ttl``, default the core's ``opener_ttl``: the blocking layer
   measures it with :mod:`hyperdht.dhtrpc.natprobe`, else
   :data:`DEFAULT_OPENER_TTL`). It opens our own
   NAT towards the peer's public address and expires in the core, before
   the peer's NAT. The peer's NAT has then never seen anything from us, so
   it keeps no unreplied entry that would make it remap the peer's answer
   (what Linux conntrack does). It is not tracked: should it reach a node
   after all, the node answers a harmless ping whose response we drop.
3. Ask the referrer to forward a ping to the peer (``holepunch``). The
   peer answers us directly: its NAT opens towards us, ours lets the answer
   in (step 2). The result is the address the answer came from.
4. Only if that fails, ping the peer directly at full TTL (a public peer
   whose referrer does not forward, say). Never before step 3: a datagram
   that reaches the peer's NAT first is exactly what breaks the punch.

Without a referrer only step 4 runs; so when the referrer is ourselves
(a lookup yields our own stored peers first, with our own address as the
node): the peer announced to us, so it has sent to us and a direct ping is
safe. The whole flow fails with
:class:`~hyperdht.errors.RequestTimeout` once ``timeout`` seconds have
passed, or with the error of the last step that failed; cancelling its
future (``Future.cancel``) withdraws the step's request in flight and fails
it with :class:`~hyperdht.errors.RequestCancelled`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import messages
from ..datagram import SendOptions
from ..errors import ArgumentError, DecodeError, RequestCancelled, RequestTimeout
from ..future import Future
from ..ipencoding import Address

if TYPE_CHECKING:
    # Annotations only: the core imports this module to run connect(), and
    # the flow here drives the core it is handed through its public members.
    from .core import DHTCore

__all__ = ["DEFAULT_OPENER_TTL", "WILDCARD_HOSTS", "start_connect", "opener_datagram"]

log = logging.getLogger(__name__)

#: The opener's IP TTL when none is given: it crosses a host's own NAT
#: (hop 1) and expires at the next router (hop 2), so it reaches no NAT
#: two or more routers beyond ours. Behind two NATs (a carrier-grade NAT)
#: pass ``opener_ttl=3`` or more.
DEFAULT_OPENER_TTL = 2

#: Bind addresses that say nothing about the host's own IP.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

_REQUEST_BIT = 0x8000


def opener_datagram(core: DHTCore, tid: int) -> bytes:
    """The opener's bytes: an ordinary ``_ping`` request (which every
    dht-rpc node, the reference included, accepts) with transaction id
    ``tid``, which no pending request uses for that address."""
    request = messages.RpcRequest(command="_ping", id=core.query_id)
    return (_REQUEST_BIT | (tid & 0x7FFF)).to_bytes(2, "big") + messages.encode_request(request)


def start_connect(
    core: DHTCore,
    peer: Address,
    referrer: Address | None,
    *,
    now: float,
    local: Address | None = None,
    opener_ttl: int | None = None,
    timeout: float | None = None,
) -> Future[Address]:
    """Start the connect flow (module docstring) at ``now``; the future
    resolves to the address the peer answered from.

    ``local`` is our socket's address with a concrete host (not a
    wildcard), default ``core.local_address``; when neither is known the
    opener is always sent.
    Raises ArgumentError for a bad ``opener_ttl`` or ``timeout``.
    """
    ttl = core.opener_ttl if opener_ttl is None else opener_ttl
    if local is None:
        local = core.local_address
    SendOptions(ttl=ttl)  # validates it
    if timeout is not None and not timeout > 0:
        raise ArgumentError(f"timeout: must be a positive number of seconds, got {timeout!r}")
    if referrer is not None and local is not None and referrer == local:
        referrer = None  # our own stored peer: it has sent to us
    flow = _Connect(core, peer, referrer, local, ttl, None if timeout is None else now + timeout)
    flow.start(now)
    return flow.future


def _ping(core: DHTCore) -> messages.RpcRequest:
    return messages.RpcRequest(command="_ping", id=core.query_id)


class _Connect:
    """One connect flow's state; its steps run from request callbacks."""

    __slots__ = ("core", "deadline", "future", "local", "peer", "pending", "referrer", "ttl")

    def __init__(
        self,
        core: DHTCore,
        peer: Address,
        referrer: Address | None,
        local: Address | None,
        ttl: int,
        deadline: float | None,
    ) -> None:
        self.core = core
        self.peer = peer
        self.referrer = referrer
        self.local = local
        self.ttl = ttl
        self.deadline = deadline
        self.future: Future[Address] = Future()
        # The one request in flight (each step starts the next): what
        # cancelling the future withdraws.
        self.pending: Callable[[], None] | None = None
        self.future.set_canceller(self._cancel)

    def start(self, now: float) -> None:
        if self.referrer is None:
            self._direct(now, None)
            return
        self.pending = self.core.request(
            _ping(self.core),
            self.referrer,
            lambda err, res, _s, t: self._on_referrer(err, res, t),
            now,
        )

    # -- steps -----------------------------------------------------------------

    def _on_referrer(self, err: BaseException | None, res: Any, now: float) -> None:
        if self._expired(now):
            return
        if err is not None:
            log.debug("connect %s: referrer %s silent (%s): direct", self.peer, self.referrer, err)
            self._direct(now, err)
            return
        seen: Address | None
        try:
            seen = self.core.peer_codec.decode(res.value or b"")
        except DecodeError:
            seen = None
        if seen is not None:
            self.core.observed = seen
        public = seen is not None and seen == self.local
        if not public:
            self.core.send_opener(self.peer, self.ttl)
        log.debug("connect %s: we are %s as %s", self.peer, "public" if public else "NATed", seen)
        assert self.referrer is not None
        self.pending = self.core.request(
            self.core.holepunch_request(self.peer),
            self.referrer,
            self._on_punch,
            now,
            any_source=True,
        )

    def _on_punch(self, err: BaseException | None, _res: Any, src: Address, now: float) -> None:
        if err is None:
            self._resolve(src)
            return
        if self._expired(now):
            return
        log.debug("connect %s: punch failed (%s): direct", self.peer, err)
        self._direct(now, err)

    def _direct(self, now: float, earlier: BaseException | None) -> None:
        def done(err: BaseException | None, _res: Any, src: Address, t: float) -> None:
            if err is None:
                self._resolve(src)
            elif not self._expired(t):
                self._fail(earlier if earlier is not None else err)

        self.pending = self.core.request(_ping(self.core), self.peer, done, now)

    # -- endings ---------------------------------------------------------------

    def _expired(self, now: float) -> bool:
        if self.future.done():
            return True
        if self.deadline is not None and now >= self.deadline:
            self._fail(RequestTimeout(f"connect to {self.peer.host}:{self.peer.port} timed out"))
            return True
        return False

    def _cancel(self) -> None:
        # Resolve first: the withdrawn request's callback then finds the
        # flow over and starts no further step.
        self._fail(RequestCancelled(f"connect to {self.peer.host}:{self.peer.port} cancelled"))
        pending, self.pending = self.pending, None
        if pending is not None:
            pending()

    def _resolve(self, addr: Address) -> None:
        if not self.future.done():
            self.future.set_result(addr)

    def _fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
