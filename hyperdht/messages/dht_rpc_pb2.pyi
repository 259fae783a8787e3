from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Request(_message.Message):
    __slots__ = ("command", "id", "target", "forwardRequest", "forwardResponse", "roundtripToken", "value")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FORWARDREQUEST_FIELD_NUMBER: _ClassVar[int]
    FORWARDRESPONSE_FIELD_NUMBER: _ClassVar[int]
    ROUNDTRIPTOKEN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    command: str
    id: bytes
    target: bytes
    forwardRequest: bytes
    forwardResponse: bytes
    roundtripToken: bytes
    value: bytes
    def __init__(self, command: _Optional[str] = ..., id: _Optional[bytes] = ..., target: _Optional[bytes] = ..., forwardRequest: _Optional[bytes] = ..., forwardResponse: _Optional[bytes] = ..., roundtripToken: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("id", "nodes", "value", "roundtripToken")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ROUNDTRIPTOKEN_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    nodes: bytes
    value: bytes
    roundtripToken: bytes
    def __init__(self, id: _Optional[bytes] = ..., nodes: _Optional[bytes] = ..., value: _Optional[bytes] = ..., roundtripToken: _Optional[bytes] = ...) -> None: ...
