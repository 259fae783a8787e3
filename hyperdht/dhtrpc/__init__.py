"""The DHT RPC layer (after mafintosh's ``dht-rpc@2.3.0``).

* :class:`DHT`: the blocking node (thread or gevent backend).
* :class:`DHTCore`: the same node as a sans-I/O state machine.
* :class:`QueryStream` and the helpers :func:`collect_stream`,
  :func:`collect_values`, :func:`discard_stream`.
"""

from __future__ import annotations

from .core import APP_PREFIX, DEFER, DHTCore, RoutingNode
from .node import DHT, DatagramHandler, QueryHandler
from .query import Query
from .stream import QueryStream, collect_stream, collect_values, discard_stream
from .types import IncomingQuery, QueryResponse, RemoteNode, Stats

__all__ = [
    "DHT",
    "DHTCore",
    "Query",
    "QueryStream",
    "QueryResponse",
    "IncomingQuery",
    "RemoteNode",
    "RoutingNode",
    "Stats",
    "QueryHandler",
    "DatagramHandler",
    "APP_PREFIX",
    "DEFER",
    "collect_stream",
    "collect_values",
    "discard_stream",
]
