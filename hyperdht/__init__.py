"""hyperdht: peer discovery and UDP hole punching over a Kademlia DHT.

Wire-compatible with the Node.js ``hyperdht@1.3.0`` / ``dht-rpc@2.3.0``
packages. The layers, each usable alone:

* :mod:`hyperdht.ipencoding`: IPv4/IPv6 peer and node encodings.
* :mod:`hyperdht.kbucket`: the k-bucket routing table.
* :mod:`hyperdht.messages`: the protobuf messages.
* :mod:`hyperdht.udprequest`: request/response framing over UDP (sans-I/O).
* :mod:`hyperdht.dhtrpc`: the DHT RPC node (sans-I/O core + blocking API).
* :mod:`hyperdht.drivers`: thread and gevent drivers for the cores.
* :mod:`hyperdht.discovery`: peer discovery (:class:`HyperDHT`).
* :mod:`hyperdht.testing`: an in-memory network with a virtual clock.

Quick start::

    from hyperdht import HyperDHT, collect_stream

    with HyperDHT(bootstrap=["127.0.0.1:49737"]) as dht:
        dht.announce_discard(key)              # key: 32 bytes
        for response in dht.lookup(key):
            print(response.node, response.peers)
"""

from __future__ import annotations

from .dhtrpc import DHT, QueryStream, collect_stream, collect_values, discard_stream
from .discovery import HyperDHT, PeerResponse
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    BackendUnavailable,
    BindError,
    ClosedError,
    DecodeError,
    HyperDHTError,
    QueryError,
    RequestCancelled,
    RequestTimeout,
    StateError,
)
from .ipencoding import Address, Node

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "HyperDHT",
    "PeerResponse",
    "DHT",
    "QueryStream",
    "Address",
    "Node",
    "collect_stream",
    "collect_values",
    "discard_stream",
    "HyperDHTError",
    "DecodeError",
    "RequestTimeout",
    "RequestCancelled",
    "QueryError",
    "ClosedError",
    "ArgumentError",
    "ArgumentTypeError",
    "StateError",
    "BindError",
    "BackendUnavailable",
]
