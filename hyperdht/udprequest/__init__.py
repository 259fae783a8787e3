"""Request/response over UDP (after mafintosh's ``udp-request``).

* :mod:`.core`: :class:`RequestCore`, the sans-I/O state machine (tids,
  timeout ticks, retries, response matching).
* :mod:`.socket`: :class:`UDPRequest`, the same core on its own socket
  through a driver, with a blocking API.
"""

from __future__ import annotations

from .core import (
    HEADER_SIZE,
    MAX_TID,
    RETRIES,
    OnDrop,
    OnRequest,
    PendingRequest,
    RequestCore,
    Response,
)
from .socket import IncomingRequest, RequestHandler, UDPRequest

__all__ = [
    "HEADER_SIZE",
    "MAX_TID",
    "RETRIES",
    "Response",
    "PendingRequest",
    "RequestCore",
    "OnRequest",
    "OnDrop",
    "IncomingRequest",
    "RequestHandler",
    "UDPRequest",
]
