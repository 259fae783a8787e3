"""Peer discovery on the DHT (after mafintosh's ``hyperdht@1.3.0``).

Nodes announce that they listen on a 32-byte key; anyone can look the key
up and get the announcers' public addresses (and LAN addresses of peers in
the same /16). All of it travels as the DHT command ``peers`` (PROTOCOL.md
section 7): a lookup is a query, an announce a verbose update, an
unannounce an update.

* :mod:`.core`: :class:`DiscoveryCore`, the sans-I/O layer over a
  :class:`~hyperdht.dhtrpc.DHTCore`, and the :class:`PeerResponse` results.
* :mod:`.store`: :class:`PeerStore`, the bounded two-generation store.
* :mod:`.node`: :class:`HyperDHT`, the blocking node (a
  :class:`~hyperdht.dhtrpc.DHT` subclass).
"""

from __future__ import annotations

from .core import (
    COMMAND,
    EVENTS,
    MAX_REPLY,
    DiscoveryCore,
    Listener,
    PeerResponse,
    collect_peers,
    decode_local_peers,
    encode_local_address,
)
from .node import HyperDHT
from .store import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, PeerStore, StoredPeer

__all__ = [
    "HyperDHT",
    "DiscoveryCore",
    "PeerResponse",
    "PeerStore",
    "StoredPeer",
    "Listener",
    "COMMAND",
    "EVENTS",
    "MAX_REPLY",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_SIZE",
    "collect_peers",
    "encode_local_address",
    "decode_local_peers",
]
