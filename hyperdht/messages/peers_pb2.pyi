from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Request(_message.Message):
    __slots__ = ("type", "port", "localAddress")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LOCALADDRESS_FIELD_NUMBER: _ClassVar[int]
    type: int
    port: int
    localAddress: bytes
    def __init__(self, type: _Optional[int] = ..., port: _Optional[int] = ..., localAddress: _Optional[bytes] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("peers", "localPeers")
    PEERS_FIELD_NUMBER: _ClassVar[int]
    LOCALPEERS_FIELD_NUMBER: _ClassVar[int]
    peers: bytes
    localPeers: bytes
    def __init__(self, peers: _Optional[bytes] = ..., localPeers: _Optional[bytes] = ...) -> None: ...
