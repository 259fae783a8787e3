"""Wire messages: golden vectors from the Node.js reference, round trips, errors.

tests/fixtures/golden/vectors.json comes from scripts/golden/make_vectors.js
(protocol-buffers@3.2.1, as resolved by hyperdht@1.3.0 / dht-rpc@2.3.0).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.internal import api_implementation  # type: ignore[import-untyped]
from hypothesis import example, given, settings
from hypothesis import strategies as st
from node_reference import missing_packages, node_environ

from hyperdht.errors import DecodeError
from hyperdht.messages import (
    ANNOUNCE,
    LOOKUP,
    UNANNOUNCE,
    PeersRequest,
    PeersResponse,
    RpcRequest,
    RpcResponse,
    decode_peers_request,
    decode_peers_response,
    decode_request,
    decode_response,
    encode_peers_request,
    encode_peers_response,
    encode_request,
    encode_response,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "fixtures" / "golden" / "vectors.json").read_text("utf-8"))
GOLDEN_DIR = ROOT / "scripts" / "golden"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The pure-Python protobuf backend rejects a proto2 string that is not UTF-8;
# upb (the default) hands it out as bytes, which we decode like the reference.
PURE_PYTHON_PROTOBUF = api_implementation.Type() == "python"

Message = RpcRequest | RpcResponse | PeersRequest | PeersResponse

# kind -> (dataclass, encode, decode, {reference field name: our attribute})
Kind = tuple[type[Any], Callable[[Any], bytes], Callable[[bytes], Any], dict[str, str]]
KINDS: dict[str, Kind] = {
    "dht_rpc.Request": (
        RpcRequest,
        encode_request,
        decode_request,
        {
            "command": "command",
            "id": "id",
            "target": "target",
            "forwardRequest": "forward_request",
            "forwardResponse": "forward_response",
            "roundtripToken": "roundtrip_token",
            "value": "value",
        },
    ),
    "dht_rpc.Response": (
        RpcResponse,
        encode_response,
        decode_response,
        {"id": "id", "nodes": "nodes", "value": "value", "roundtripToken": "roundtrip_token"},
    ),
    "peers.Request": (
        PeersRequest,
        encode_peers_request,
        decode_peers_request,
        {"type": "type", "port": "port", "localAddress": "local_address"},
    ),
    "peers.Response": (
        PeersResponse,
        encode_peers_response,
        decode_peers_response,
        {"peers": "peers", "localPeers": "local_peers"},
    ),
}
STRING_FIELDS = {"command"}
INT_FIELDS = {"type", "port"}


def from_json(kind: str, obj: dict[str, Any]) -> Message:
    """The reference's JSON input (bytes as hex, null/missing = unset) as our dataclass."""
    cls, _, _, names = KINDS[kind]
    kwargs: dict[str, Any] = {}
    for js_name, attr in names.items():
        v = obj.get(js_name)
        if v is not None and js_name not in STRING_FIELDS | INT_FIELDS:
            v = bytes.fromhex(v)
        kwargs[attr] = v
    msg: Message = cls(**kwargs)
    return msg


def matches_reference_decode(kind: str, ours: Message, ref: dict[str, Any]) -> bool:
    """Whether our decoded message equals the reference's decode() output.

    The reference reports an absent bytes field as null (we: None) and an absent
    uint32 as 0 (we: None).
    """
    for js_name, attr in KINDS[kind][3].items():
        mine = getattr(ours, attr)
        theirs = ref[js_name]
        if isinstance(mine, bytes):
            mine = mine.hex()
        if mine is None and js_name in INT_FIELDS:
            mine = 0
        if mine != theirs:
            return False
    return True


def vector_id(v: dict[str, Any]) -> str:
    return f"{v['kind']}: {v['name']}"


def test_vectors_come_from_the_pinned_reference() -> None:
    assert VECTORS["reference"]["protocol-buffers"] == "3.2.1"
    assert VECTORS["reference"]["dht-rpc"] == "2.3.0"
    assert VECTORS["reference"]["hyperdht"] == "1.3.0"
    assert {v["kind"] for v in VECTORS["encode"]} == set(KINDS)


# --- golden encodings --------------------------------------------------------


@pytest.mark.parametrize("vec", VECTORS["encode"], ids=vector_id)
def test_encode_matches_reference(vec: dict[str, Any]) -> None:
    _, encode, _, _ = KINDS[vec["kind"]]
    assert encode(from_json(vec["kind"], vec["input"])).hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS["encode"], ids=vector_id)
def test_decode_reference_encoding(vec: dict[str, Any]) -> None:
    kind = vec["kind"]
    _, _, decode, _ = KINDS[kind]
    decoded = decode(bytes.fromhex(vec["hex"]))
    assert decoded == from_json(kind, vec["input"])
    assert matches_reference_decode(kind, decoded, vec["decoded"])


# --- the reference's decoder on odd inputs -----------------------------------

# Inputs on which we knowingly differ from the reference's decoder (documented
# in hyperdht/messages/__init__.py); no conforming peer sends any of them.
# name -> what we do instead.
KNOWN_DIFFERENCES = {
    "truncated bytes field": "error",  # reference clamps to the buffer end
    "truncated command": "error",
    "truncated fixed64 unknown field": "error",
    "field number 0": "error",  # reference skips it
    "command with varint wire type": "error",  # reference ignores wire types
    "port 11-byte varint": "error",  # reference reads any length
    "unknown group": "ok",  # reference throws on groups
    "port above uint32": "ok",  # we keep the low 32 bits
    "type above uint32": "ok",
}
if PURE_PYTHON_PROTOBUF:
    KNOWN_DIFFERENCES.update(
        {
            "command invalid utf-8": "error",
            "command utf-16 surrogate in utf-8": "error",
            "command cut 4-byte sequence": "error",
            "command overlong encoding": "error",
        }
    )


@pytest.mark.parametrize("vec", VECTORS["decode"], ids=vector_id)
def test_decoder_agrees_with_reference(vec: dict[str, Any]) -> None:
    kind = vec["kind"]
    _, _, decode, _ = KINDS[kind]
    try:
        decoded = decode(bytes.fromhex(vec["hex"]))
    except DecodeError:
        outcome = "error"
        same = not vec["ok"]
    else:
        outcome = "ok"
        same = vec["ok"] and matches_reference_decode(kind, decoded, vec["decoded"])
    if vec["name"] in KNOWN_DIFFERENCES:
        assert not same, "now agrees with the reference: update KNOWN_DIFFERENCES and the docs"
        assert outcome == KNOWN_DIFFERENCES[vec["name"]]
    else:
        assert same, f"{outcome}, reference: {vec.get('decoded', vec.get('error'))}"


@pytest.mark.skipif(PURE_PYTHON_PROTOBUF, reason="pure-Python protobuf rejects it")
def test_invalid_utf8_command_is_replaced_like_the_reference() -> None:
    assert decode_request(bytes.fromhex("0a0461f09f98")).command == "a\ufffd"


# --- presence ----------------------------------------------------------------


def test_none_is_absent_and_empty_is_present() -> None:
    assert encode_request(RpcRequest("x")) == b"\x0a\x01x"
    assert encode_request(RpcRequest("x", value=b"")) == b"\x0a\x01x\x3a\x00"
    assert decode_request(b"\x0a\x01x").value is None
    assert decode_request(b"\x0a\x01x\x3a\x00").value == b""
    assert encode_response(RpcResponse()) == b""
    assert decode_response(b"") == RpcResponse()
    assert encode_peers_request(PeersRequest(LOOKUP)) == b"\x08\x00"
    assert encode_peers_request(PeersRequest(LOOKUP, port=0)) == b"\x08\x00\x10\x00"
    assert decode_peers_request(b"\x08\x00").port is None
    assert decode_peers_request(b"\x08\x00\x10\x00").port == 0
    assert (LOOKUP, ANNOUNCE, UNANNOUNCE) == (0, 1, 2)


# --- round trips and a model of the reference encoder --------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def model_encode(kind: str, msg: Message) -> bytes:
    """protocol-buffers@3's encoder, for our schemas: every non-null field in
    declaration (= field-number) order, bytes/strings length-prefixed."""
    out = bytearray()
    for number, (js_name, attr) in enumerate(KINDS[kind][3].items(), start=1):
        v = getattr(msg, attr)
        if v is None:
            continue
        if js_name in INT_FIELDS:
            out += _varint(number << 3) + _varint(v)
        else:
            data = v.encode("utf-8") if isinstance(v, str) else v
            out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


opt_bytes = st.none() | st.binary(max_size=300)
command = st.text(st.characters(codec="utf-8"), max_size=40)
uint32 = st.integers(0, 2**32 - 1)

MESSAGES = st.one_of(
    st.tuples(
        st.just("dht_rpc.Request"),
        st.builds(RpcRequest, command, *[opt_bytes] * 6),
    ),
    st.tuples(
        st.just("dht_rpc.Response"),
        st.builds(RpcResponse, opt_bytes, opt_bytes, opt_bytes, opt_bytes),
    ),
    st.tuples(
        st.just("peers.Request"),
        st.builds(PeersRequest, uint32, st.none() | uint32, opt_bytes),
    ),
    st.tuples(st.just("peers.Response"), st.builds(PeersResponse, opt_bytes, opt_bytes)),
)


@given(MESSAGES)
def test_round_trip_and_model(kind_msg: tuple[str, Message]) -> None:
    kind, msg = kind_msg
    _, encode, decode, _ = KINDS[kind]
    buf = encode(msg)
    assert buf == model_encode(kind, msg)
    assert decode(buf) == msg


# --- errors -------------------------------------------------------------------

DECODERS = [decode_request, decode_response, decode_peers_request, decode_peers_response]


@pytest.mark.parametrize("decode", DECODERS)
@given(buf=st.binary(max_size=64))
def test_garbage_raises_decode_error_only(decode: Callable[[bytes], Any], buf: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(buf)


@pytest.mark.parametrize("vec", [v for v in VECTORS["encode"] if v["hex"]], ids=vector_id)
def test_truncated_input_raises(vec: dict[str, Any]) -> None:
    _, _, decode, _ = KINDS[vec["kind"]]
    buf = bytes.fromhex(vec["hex"])
    with pytest.raises(DecodeError):
        decode(buf[:-1])  # cuts into the last field
    for cut in range(1, len(buf)):
        with contextlib.suppress(DecodeError):
            decode(buf[:cut])


@pytest.mark.parametrize(
    ("decode", "buf"),
    [
        (decode_request, b""),
        (decode_request, b"\x12\x02id\x1a\x00"),
        (decode_peers_request, b""),
        (decode_peers_request, b"\x10\x50\x1a\x06abcdef"),
    ],
)
def test_missing_required_field_raises(decode: Callable[[bytes], Any], buf: bytes) -> None:
    with pytest.raises(DecodeError, match="missing required field"):
        decode(buf)


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_response(b"\xff")


def test_encode_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        encode_request(RpcRequest("\ud800"))
    with pytest.raises(TypeError):
        encode_request(RpcRequest("x", id=bytearray(b"ab")))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_peers_request(PeersRequest(-1))
    with pytest.raises(ValueError):
        encode_peers_request(PeersRequest(ANNOUNCE, port=2**32))


# --- generated code freshness -------------------------------------------------


def _require(condition: bool, reason: str) -> None:
    """Skip locally when a tool is missing, but fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def test_generated_code_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    _require(proc.returncode != 2, proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr


# --- the live reference (only where `npm ci --prefix reference` was run) -------
# .ci/run installs it before tox; under CI=true, or with HYPERDHT_REQUIRE_NODE=1
# (the tox `interop` env), a missing reference fails instead of skipping.
REQUIRE_NODE = IN_CI or os.environ.get("HYPERDHT_REQUIRE_NODE") == "1"
#: What make_vectors.js loads from the tree (node_reference.py finds it).
GOLDEN_PINNED = {"protocol-buffers": "3.2.1", "dht-rpc": "2.3.0", "hyperdht": "1.3.0"}


def _node_golden(*args: str) -> list[str]:
    node = shutil.which("node")
    missing = missing_packages(GOLDEN_PINNED)
    if node is None or missing is not None:
        reason = (
            f"needs node and the reference tree: {missing or 'node not found'}"
            " (CI installs it; the tox interop env requires this test)"
        )
        if REQUIRE_NODE:
            pytest.fail(f"CI=true or HYPERDHT_REQUIRE_NODE=1 but {reason}")
        pytest.skip(reason)
        raise AssertionError("unreachable")
    proc = subprocess.run(
        [node, str(GOLDEN_DIR / "make_vectors.js"), *args],
        env=node_environ(),
        capture_output=True,
        encoding="utf-8",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # One JSON document a line; JSON strings may hold U+2028 etc., so no splitlines().
    return proc.stdout.split("\n")[:-1]


def test_golden_vectors_are_up_to_date() -> None:
    _node_golden("--check")


@settings(max_examples=10, deadline=None)
@given(st.lists(MESSAGES, min_size=1, max_size=50))
def test_reference_decodes_our_encoding(batch: list[tuple[str, Message]]) -> None:
    args = [a for kind, msg in batch for a in (kind, KINDS[kind][1](msg).hex())]
    lines = _node_golden("decode", *args)
    for (kind, msg), line in zip(batch, lines, strict=True):
        res = json.loads(line)
        assert res["ok"], res
        assert matches_reference_decode(kind, msg, res["value"])


_OPTIONAL_BYTES = st.none() | st.binary(max_size=300)


@given(_OPTIONAL_BYTES, _OPTIONAL_BYTES, _OPTIONAL_BYTES, _OPTIONAL_BYTES)
@example(b"i" * 32, bytes(760), None, b"t" * 32)  # a _find_node answer
@example(None, b"", bytes(20000), b"")  # a three-byte varint
@settings(max_examples=300)
def test_response_fields_write_what_protobuf_writes(
    id: bytes | None, nodes: bytes | None, value: bytes | None, token: bytes | None
) -> None:
    # The node writes its responses with response_field; the generated
    # message is the oracle, lengths of 128 and more (two-byte varints) included.
    from hyperdht.messages import dht_rpc_pb2, response_field

    m = dht_rpc_pb2.Response()
    for name, v in (("id", id), ("nodes", nodes), ("value", value), ("roundtripToken", token)):
        if v is not None:
            setattr(m, name, v)
    fields = (id, nodes, value, token)
    written = b"".join(response_field(n, v) for n, v in enumerate(fields, 1) if v is not None)
    assert written == m.SerializeToString() == encode_response(RpcResponse(*fields))


def test_response_field_is_one_field_of_encode_response() -> None:
    from hyperdht.messages import response_field

    nodes = bytes(range(200)) * 4
    assert response_field(1, b"i" * 32) + response_field(2, nodes) == encode_response(
        RpcResponse(id=b"i" * 32, nodes=nodes)
    )
    assert response_field(3, b"") == b"\x1a\x00"
    with pytest.raises(TypeError, match="field 2 must be bytes"):
        response_field(2, bytearray(b"x"))  # type: ignore[arg-type]
