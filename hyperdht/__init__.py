"""hyperdht: peer discovery and UDP hole punching over a Kademlia DHT.

Wire-compatible with the Node.js ``hyperdht@1.3.0`` / ``dht-rpc@2.3.0``
packages. The layers, each usable alone:

* :mod:`hyperdht.ipencoding`: IPv4/IPv6 peer and node encodings.
* :mod:`hyperdht.kbucket`: the k-bucket routing table.
* :mod:`hyperdht.messages`: the protobuf messages.
* :mod:`hyperdht.udprequest`: request/response framing over UDP (sans-I/O).
* :mod:`hyperdht.dhtrpc`: the DHT RPC node (sans-I/O core + blocking API).
* :mod:`hyperdht.drivers`: thread and gevent drivers for the cores.
* :mod:`hyperdht.testing`: an in-memory network with a virtual clock.
"""

from __future__ import annotations

from .errors import (
    ClosedError,
    DecodeError,
    HyperDHTError,
    QueryError,
    RequestCancelled,
    RequestTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "HyperDHTError",
    "DecodeError",
    "RequestTimeout",
    "RequestCancelled",
    "QueryError",
    "ClosedError",
]
