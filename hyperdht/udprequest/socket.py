"""The request/response layer on its own UDP socket (after ``udp-request``).

:class:`UDPRequest` runs a :class:`~hyperdht.udprequest.core.RequestCore`
on a driver (thread, gevent or a simulator host), with a blocking
:meth:`UDPRequest.request` and a future-returning
:meth:`UDPRequest.request_async`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..drivers import create_driver
from ..errors import ArgumentError, ClosedError, RequestCancelled
from ..ipencoding import Address
from .core import PendingRequest, RequestCore

__all__ = ["IncomingRequest", "RequestHandler", "UDPRequest"]


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A request that reached a :class:`UDPRequest`: its transaction id,
    payload, and the address it came from."""

    tid: int
    payload: bytes
    address: Address


RequestHandler = Callable[[IncomingRequest], "bytes | None"]


class UDPRequest:
    """The request/response layer on its own socket, with a blocking API.

    ``UDPRequest(host, port, timeout=1.0, retry=False, backend="thread")``
    runs a :class:`RequestCore` on a driver. :meth:`request` blocks and
    returns the response payload; :meth:`request_async` returns the
    :class:`PendingRequest` future at once (its callbacks run on the
    receiver: keep them short). ``on_request(handler)`` answers incoming
    requests: ``handler(IncomingRequest)`` returns the response payload, or
    None to send nothing (e.g. after :meth:`forward_request`).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        timeout: float = 1.0,
        retry: bool = False,
        backend: Any = "thread",
        socket: Any = None,
        ipv6: bool = False,
    ) -> None:
        self._core = RequestCore(timeout=timeout, retry=retry, on_request=self._on_request)
        self._handler: RequestHandler | None = None
        self._driver = create_driver(backend, host=host, port=port, ipv6=ipv6, socket=socket)
        self._closed = False
        self._driver.start(self._core)

    @property
    def address(self) -> Address:
        """The local address the socket is bound to."""
        return self._driver.address

    def on_request(self, handler: RequestHandler | None) -> None:
        """Set (or with None remove) the handler of incoming requests."""
        if handler is not None and not callable(handler):
            raise ArgumentError(f"handler must be callable, got {handler!r}")
        self._handler = handler

    def _on_request(self, tid: int, payload: bytes, address: Address, now: float) -> None:
        handler = self._handler
        if handler is None:
            return
        response = handler(IncomingRequest(tid, payload, address))
        if response is not None:
            self._core.respond(tid, response, address)

    def request_async(
        self,
        payload: bytes,
        address: tuple[str, int],
        *,
        retry: bool | None = None,
        any_source: bool = False,
    ) -> PendingRequest:
        """Send a request; returns its future (a :class:`Response`).
        ``any_source`` accepts the answer from any address (a forwarded
        request is answered by the third party)."""
        if self._closed:
            raise ClosedError("the socket is closed")
        with self._driver.locked():
            return self._core.request(
                bytes(payload),
                Address(*address),
                self._driver.now(),
                retry=retry,
                any_source=any_source,
            )

    def request(
        self,
        payload: bytes,
        address: tuple[str, int],
        *,
        retry: bool | None = None,
        any_source: bool = False,
    ) -> bytes:
        """Send a request and wait for the response payload. Raises
        :class:`RequestTimeout`, or :class:`RequestCancelled` on close."""
        req = self.request_async(payload, address, retry=retry, any_source=any_source)
        self._driver.wait(req, None)
        if not req.done():  # the driver closed under us
            raise RequestCancelled()
        return req.result().payload

    def respond(self, tid: int, payload: bytes, address: tuple[str, int]) -> None:
        """Send a response on ``tid`` (also to a third party: forwarding)."""
        with self._driver.locked():
            self._core.respond(tid, bytes(payload), Address(*address))

    forward_response = respond

    def forward_request(self, tid: int, payload: bytes, address: tuple[str, int]) -> None:
        """Send a request on someone else's ``tid``."""
        with self._driver.locked():
            self._core.forward_request(tid, bytes(payload), Address(*address))

    def close(self) -> None:
        """Cancel pending requests, stop the driver, close the socket."""
        if self._closed:
            return
        self._closed = True
        with self._driver.locked():
            self._core.close()
        self._driver.close()

    def __enter__(self) -> UDPRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
