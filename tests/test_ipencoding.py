"""Tests for hyperdht.ipencoding: known vectors, round trips, strict errors."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperdht.errors import DecodeError
from hyperdht.ipencoding import (
    IPV4_NODE,
    IPV4_PEER,
    IPV6_NODE,
    IPV6_PEER,
    Address,
    Node,
    NodeCodec,
    PeerCodec,
    node_codec,
    peer_codec,
)

ports = st.integers(1, 65535)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed))
ids = st.binary(min_size=32, max_size=32)


# -- known vectors -----------------------------------------------------------


def test_known_ipv4_peer_vectors() -> None:
    assert IPV4_PEER.encode(("127.0.0.1", 80)) == bytes.fromhex("7f0000010050")
    assert IPV4_PEER.encode(("255.255.255.255", 65535)) == bytes.fromhex("ffffffffffff")
    assert IPV4_PEER.encode(("10.1.2.3", 49737)) == bytes.fromhex("0a010203c249")
    assert IPV4_PEER.decode(bytes.fromhex("7f0000010050")) == Address("127.0.0.1", 80)
    assert IPV4_PEER.decode(bytes.fromhex("000000000001")) == ("0.0.0.0", 1)


def test_known_ipv6_peer_vectors() -> None:
    assert IPV6_PEER.encode(("::1", 443)) == bytes(15) + b"\x01\x01\xbb"
    assert IPV6_PEER.decode(bytes(15) + b"\x01\x01\xbb") == Address("::1", 443)
    mapped = bytes(10) + b"\xff\xff\x01\x02\x03\x04\x00\x50"
    assert IPV6_PEER.encode(("::ffff:1.2.3.4", 80)) == mapped
    assert IPV6_PEER.decode(mapped) == Address("::ffff:1.2.3.4", 80)
    # Decoded hosts come out compressed.
    full = IPV6_PEER.encode(("2001:0db8:0000:0000:0000:0000:0000:0001", 1))
    assert IPV6_PEER.decode(full).host == "2001:db8::1"


def test_known_node_vector() -> None:
    node = Node(bytes(range(32)), Address("127.0.0.1", 80))
    encoded = bytes(range(32)) + bytes.fromhex("7f0000010050")
    assert IPV4_NODE.encode(node) == encoded
    assert IPV4_NODE.decode(encoded) == node
    assert IPV4_NODE.decode_list(encoded * 2) == [node, node]
    assert IPV6_NODE.encode(Node(bytes(32), Address("::1", 2))) == bytes(47) + b"\x01\x00\x02"


def test_sizes_and_factories() -> None:
    assert (IPV4_PEER.size, IPV6_PEER.size) == (6, 18)
    assert (IPV4_NODE.size, IPV6_NODE.size) == (38, 50)
    assert IPV4_NODE.id_length == IPV6_NODE.id_length == 32
    assert not IPV4_PEER.ipv6 and IPV6_PEER.ipv6 and not IPV4_NODE.ipv6 and IPV6_NODE.ipv6
    assert peer_codec(False) is IPV4_PEER and peer_codec(True) is IPV6_PEER
    assert node_codec(False) is IPV4_NODE and node_codec(True) is IPV6_NODE
    small = node_codec(False, id_length=20)
    assert (small.size, small.id_length) == (26, 20)
    assert NodeCodec(4, ipv6=True).size == 22
    assert PeerCodec().size == 6


def test_node_properties_and_address_is_a_tuple() -> None:
    node = Node(b"x" * 32, Address("1.2.3.4", 5))
    assert (node.host, node.port) == ("1.2.3.4", 5)
    assert node.address == ("1.2.3.4", 5)
    host, port = node.address
    assert (host, port) == ("1.2.3.4", 5)


def test_empty_lists() -> None:
    for codec in (IPV4_PEER, IPV6_PEER):
        assert codec.encode_list([]) == b""
        assert codec.decode_list(b"") == []
    for ncodec in (IPV4_NODE, IPV6_NODE):
        assert ncodec.encode_list([]) == b""
        assert ncodec.decode_list(b"") == []


def test_decode_accepts_bytes_like() -> None:
    raw = bytes.fromhex("7f0000010050")
    assert IPV4_PEER.decode_list(bytearray(raw * 2)) == [Address("127.0.0.1", 80)] * 2
    assert IPV4_PEER.decode(memoryview(raw)) == Address("127.0.0.1", 80)
    node = IPV4_NODE.decode(memoryview(b"i" * 32 + raw))
    assert type(node.id) is bytes


# -- round trips -------------------------------------------------------------


@given(st.lists(st.tuples(ipv4_hosts, ports), max_size=30))
def test_ipv4_peer_round_trip(addrs: list[tuple[str, int]]) -> None:
    buf = IPV4_PEER.encode_list(addrs)
    assert len(buf) == 6 * len(addrs)
    assert IPV4_PEER.decode_list(buf) == addrs
    for a in addrs:
        assert IPV4_PEER.decode(IPV4_PEER.encode(a)) == a


@given(st.lists(st.tuples(ipv6_hosts, ports), max_size=30))
def test_ipv6_peer_round_trip(addrs: list[tuple[str, int]]) -> None:
    buf = IPV6_PEER.encode_list(addrs)
    assert len(buf) == 18 * len(addrs)
    assert IPV6_PEER.decode_list(buf) == addrs
    for a in addrs:
        assert IPV6_PEER.decode(IPV6_PEER.encode(a)) == a


@given(st.lists(st.builds(Node, ids, st.builds(Address, ipv4_hosts, ports)), max_size=25))
def test_ipv4_node_round_trip(nodes: list[Node]) -> None:
    buf = IPV4_NODE.encode_list(nodes)
    assert len(buf) == 38 * len(nodes)
    decoded = IPV4_NODE.decode_list(buf)
    assert decoded == nodes
    assert all(type(n.address) is Address for n in decoded)


@given(st.lists(st.builds(Node, ids, st.builds(Address, ipv6_hosts, ports)), max_size=25))
def test_ipv6_node_round_trip(nodes: list[Node]) -> None:
    buf = IPV6_NODE.encode_list(nodes)
    assert IPV6_NODE.decode_list(buf) == nodes
    for n in nodes:
        assert IPV6_NODE.decode(IPV6_NODE.encode(n)) == n


@given(st.binary(max_size=200))
def test_decode_list_never_crashes_unexpectedly(buf: bytes) -> None:
    for codec in (IPV4_PEER, IPV6_PEER, IPV4_NODE, IPV6_NODE):
        try:
            out: list[Any] = list(codec.decode_list(buf))
        except DecodeError:
            continue
        assert len(out) * codec.size == len(buf)
        assert codec.encode_list(out) == buf


# -- strict decoding ---------------------------------------------------------


@pytest.mark.parametrize("length", [1, 5, 7, 11, 13])
def test_peer_list_bad_length(length: int) -> None:
    with pytest.raises(DecodeError, match="not a whole number of 6-byte"):
        IPV4_PEER.decode_list(bytes([1]) * length)


@pytest.mark.parametrize("length", [0, 5, 7, 12])
def test_single_peer_bad_length(length: int) -> None:
    with pytest.raises(DecodeError, match="must be 6 bytes"):
        IPV4_PEER.decode(bytes([1]) * length)


def test_node_bad_lengths() -> None:
    with pytest.raises(DecodeError, match="38-byte"):
        IPV4_NODE.decode_list(bytes([1]) * 39)
    with pytest.raises(DecodeError, match="50-byte"):
        IPV6_NODE.decode_list(bytes([1]) * 38)
    with pytest.raises(DecodeError, match="must be 38 bytes"):
        IPV4_NODE.decode(bytes([1]) * 76)
    with pytest.raises(ValueError):  # DecodeError is a ValueError
        IPV6_PEER.decode_list(bytes(6))


def test_port_zero_is_rejected() -> None:
    good = bytes.fromhex("7f0000010050")
    zero = bytes.fromhex("7f0000010000")
    with pytest.raises(DecodeError, match="entry 1 has port 0"):
        IPV4_PEER.decode_list(good + zero)
    with pytest.raises(DecodeError, match="port 0"):
        IPV4_PEER.decode(zero)
    with pytest.raises(DecodeError, match="port 0"):
        IPV6_PEER.decode(bytes(18))
    with pytest.raises(DecodeError, match="entry 2 has port 0"):
        IPV4_NODE.decode_list((bytes(32) + good) * 2 + bytes(32) + zero)
    with pytest.raises(DecodeError, match="port 0"):
        IPV6_NODE.decode_list(bytes(50))
    with pytest.raises(DecodeError, match="port 0"):
        IPV4_NODE.decode(bytes(38))


# -- strict encoding ---------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["::1", "::ffff:1.2.3.4", "127.1", "01.2.3.4", "1.2.3.4 ", "256.0.0.1", "localhost", ""],
)
def test_ipv4_codec_rejects_non_ipv4(host: str) -> None:
    with pytest.raises(ValueError, match="not an IPv4 address"):
        IPV4_PEER.encode((host, 1))


@pytest.mark.parametrize("host", ["1.2.3.4", "fe80::1%eth0", "[::1]", "::g", "localhost"])
def test_ipv6_codec_rejects_non_ipv6(host: str) -> None:
    with pytest.raises(ValueError, match="not an IPv6 address"):
        IPV6_PEER.encode((host, 1))


def test_ipv6_codec_suggests_mapped_form() -> None:
    with pytest.raises(ValueError, match=r"::ffff:1\.2\.3\.4"):
        IPV6_PEER.encode(("1.2.3.4", 1))


@pytest.mark.parametrize("port", [0, -1, 65536, 80.0, "80", True, None])
def test_bad_ports(port: Any) -> None:
    with pytest.raises(ValueError, match="port must be an int in 1-65535"):
        IPV4_PEER.encode(("1.2.3.4", port))
    with pytest.raises(ValueError, match="port"):
        IPV6_NODE.encode(Node(bytes(32), Address("::1", port)))


@pytest.mark.parametrize("addr", [("1.2.3.4",), "1.2.3.4:80", None, ("1.2.3.4", 1, 2)])
def test_bad_address_shape(addr: Any) -> None:
    with pytest.raises(ValueError, match="address must be a"):
        IPV4_PEER.encode(addr)


def test_non_str_host() -> None:
    with pytest.raises(ValueError, match="host must be a str"):
        IPV4_PEER.encode((b"1.2.3.4", 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("node_id", [bytes(31), bytes(33), b""])
def test_bad_id_length(node_id: bytes) -> None:
    with pytest.raises(ValueError, match="node id must be 32 bytes"):
        IPV4_NODE.encode(Node(node_id, Address("1.2.3.4", 1)))


def test_bad_id_type() -> None:
    with pytest.raises(ValueError, match="node id must be bytes"):
        IPV4_NODE.encode(Node("a" * 32, Address("1.2.3.4", 1)))  # type: ignore[arg-type]


def test_encode_list_reports_the_bad_entry() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        IPV4_PEER.encode_list([("1.2.3.4", 1), ("nope", 2)])


@pytest.mark.parametrize("id_length", [0, -1, 2.0])
def test_bad_id_length_argument(id_length: Any) -> None:
    with pytest.raises(ValueError, match="id_length"):
        NodeCodec(id_length)
    with pytest.raises(ValueError, match="id_length"):
        node_codec(False, id_length)


def test_decode_raw_matches_decode_list_and_its_errors() -> None:
    for codec, host in ((IPV4_NODE, "10.1.2.3"), (IPV6_NODE, "2001:db8::7")):
        nodes = [Node(bytes([i]) * 32, Address(host, 1000 + i)) for i in range(3)]
        buf = codec.encode_list(nodes)
        raw = codec.decode_raw(buf)
        assert [Node(i, Address(codec.host(ip), p)) for i, ip, p in raw] == nodes
        with pytest.raises(DecodeError):
            codec.decode_raw(buf[:-1])
        zero_port = buf[: codec.size - 2] + b"\x00\x00" + buf[codec.size :]
        with pytest.raises(DecodeError):
            codec.decode_raw(zero_port)
        assert codec.decode_raw(b"") == []
