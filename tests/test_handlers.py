"""Handlers that block: with ``inline_handlers=False`` a query handler may
itself make blocking DHT calls (it runs off the receive path), on both
backends; real sockets on 127.0.0.1."""

from __future__ import annotations

from hyperdht import DHT, collect_stream

LOCAL = "127.0.0.1"


def test_off_receiver_handler_may_call_the_dht(backend: str) -> None:
    with (
        DHT(host=LOCAL, backend=backend) as a,
        DHT(host=LOCAL, backend=backend, inline_handlers=False) as b,
    ):

        def nested(node: object, query: object) -> bytes:
            seen = b.ping((LOCAL, a.address.port))  # blocks until a answers
            return f"{seen.host}:{seen.port}".encode()

        b.on_query("nested", nested)
        b.on_update("nested", lambda node, query: 1 / 0)  # type: ignore[arg-type,return-value]
        results = collect_stream(a.query("nested", bytes(32), nodes=[(LOCAL, b.address.port)]))
        assert [r.value for r in results] == [f"{LOCAL}:{b.address.port}".encode()]
        # A raising handler sends nothing: the update's commit gets no answer.
        stream = a.update("nested", bytes(32), nodes=[(LOCAL, b.address.port)])
        assert list(stream) == []
        assert stream.error is not None and "No close nodes" in str(stream.error)
        assert b.stats.handler_errors == 1
