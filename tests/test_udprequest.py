"""The request/response layer on its own: framing, tids, ticks, retries."""

from __future__ import annotations

import random

import pytest

from hyperdht.errors import RequestCancelled, RequestTimeout
from hyperdht.ipencoding import Address
from hyperdht.udprequest import MAX_TID, RequestCore, Response

A = Address("127.0.0.1", 1000)
B = Address("127.0.0.1", 2000)


def make(**kw: object) -> tuple[RequestCore, list[tuple[int, bytes, Address]], list[str]]:
    incoming: list[tuple[int, bytes, Address]] = []
    drops: list[str] = []
    core = RequestCore(
        rng=random.Random(1),
        on_request=lambda t, p, a, now: incoming.append((t, p, a)),
        on_drop=drops.append,
        **kw,  # type: ignore[arg-type]
    )
    return core, incoming, drops


def test_request_framing_and_response_matching() -> None:
    core, _, _ = make()
    req = core.request(b"hello", A, now=0.0)
    [(data, addr, _)] = core.outbox
    assert addr == A
    header = int.from_bytes(data[:2], "big")
    assert header & 0x8000 and header & 0x7FFF == req.tid
    assert data[2:] == b"hello"
    core.receive(req.tid.to_bytes(2, "big") + b"world", A, 0.0)
    assert req.result() == Response(b"world", A)
    assert core.inflight == 0


def test_incoming_request_and_response_framing() -> None:
    core, incoming, _ = make()
    core.receive(bytes([0x80 | 0x12, 0x34]) + b"q", B, 0.0)
    assert incoming == [(0x1234, b"q", B)]
    core.respond(0x1234, b"r", B)
    assert core.outbox[-1] == (bytes([0x12, 0x34]) + b"r", B, None)
    core.forward_request(0x1234, b"f", A)
    assert core.outbox[-1] == (bytes([0x92, 0x34]) + b"f", A, None)


def test_tids_start_random_wrap_and_skip_pending() -> None:
    starts = {RequestCore(rng=random.Random(seed))._next_tid for seed in range(20)}
    assert len(starts) > 10
    core, _, _ = make()
    core._next_tid = MAX_TID - 2
    tids = [core.request(b"", A, 0.0).tid for _ in range(4)]
    assert tids == [MAX_TID - 2, MAX_TID - 1, 0, 1]
    assert all(0 <= t <= MAX_TID for t in tids)
    core._next_tid = 0  # 0 and 1 are still pending: skipped
    assert core.request(b"", A, 0.0).tid == 2


def test_short_unmatched_and_spoofed_datagrams_dropped() -> None:
    core, incoming, drops = make()
    req = core.request(b"", A, 0.0)
    core.receive(b"\x80", A, 0.0)
    core.receive(((req.tid + 1) % MAX_TID).to_bytes(2, "big"), A, 0.0)
    core.receive(req.tid.to_bytes(2, "big"), B, 0.0)
    assert drops == ["short", "unmatched_response", "unexpected_source"]
    assert not req.done() and not incoming


def test_any_source_accepts_forwarded_answer() -> None:
    core, _, _ = make()
    req = core.request(b"", A, 0.0, any_source=True)
    core.receive(req.tid.to_bytes(2, "big") + b"x", B, 0.0)
    assert req.result().address == B


def run_ticks(core: RequestCore, until: float) -> None:
    while (t := core.get_timer()) is not None and t <= until:
        core.handle_timer(t)


def test_timeout_after_five_ticks_fails_on_sixth() -> None:
    core, _, _ = make(timeout=1.0)
    req = core.request(b"", A, 0.0)
    run_ticks(core, 1.25)  # ticks at .25 ... 1.25: five decrements
    assert not req.done()
    run_ticks(core, 1.5)
    assert isinstance(req.exception(), RequestTimeout)
    assert isinstance(req.exception(), TimeoutError)
    assert core.timeouts == 1 and core.get_timer() is None  # idle: no more ticks


def test_retries_resend_on_4_8_12_schedule() -> None:
    core, _, _ = make(timeout=1.0, retry=True)
    req = core.request(b"x", A, 0.0)
    core.outbox.clear()
    sent_at = []
    failed_at = None
    t = core.get_timer()
    while t is not None:
        core.handle_timer(t)
        if core.outbox:
            sent_at.append(round(t / 0.25))
            core.outbox.clear()
        if req.done() and failed_at is None:
            failed_at = round(t / 0.25)
        t = core.get_timer()
    assert sent_at == [6, 11, 20]  # re-sent after 5+1, then +4+1, +8+1 ticks
    assert failed_at == 33  # and fails 12+1 ticks after the last re-send
    assert isinstance(req.exception(), RequestTimeout)


def test_late_timer_runs_all_due_ticks() -> None:
    core, _, _ = make(timeout=1.0)
    req = core.request(b"", A, 0.0)
    core.handle_timer(10.0)
    assert isinstance(req.exception(), RequestTimeout)


def test_close_cancels_and_refuses() -> None:
    core, _, _ = make()
    req = core.request(b"", A, 0.0)
    core.close()
    assert isinstance(req.exception(), RequestCancelled)
    later = core.request(b"", A, 0.0)
    assert isinstance(later.exception(), RequestCancelled)
    core.respond(1, b"", A)
    core.forward_request(1, b"", A)
    assert core.outbox == [(req.datagram, A, None)]  # nothing queued after close
    assert core.get_timer() is None


def test_bad_timeout_rejected() -> None:
    with pytest.raises(ValueError, match="timeout"):
        RequestCore(timeout=0)


# -- the layer on its own socket (real UDP on 127.0.0.1, the suite's backend) --


def test_udprequest_blocking_and_async_round_trips(backend: str) -> None:
    from hyperdht.udprequest import UDPRequest

    with (
        UDPRequest("127.0.0.1", backend=backend) as server,
        UDPRequest("127.0.0.1", backend=backend) as client,
    ):
        server.on_request(lambda req: b"re:" + req.payload)
        assert client.request(b"ping", server.address) == b"re:ping"
        futures = [client.request_async(b"%d" % i, server.address) for i in range(50)]
        for i, fut in enumerate(futures):
            assert client._driver.wait(fut, 5.0)
            assert fut.result() == Response(b"re:%d" % i, server.address)


def test_udprequest_timeout_forwarding_and_close(backend: str) -> None:
    from hyperdht.udprequest import IncomingRequest, UDPRequest

    a = UDPRequest("127.0.0.1", backend=backend, timeout=0.2)
    r = UDPRequest("127.0.0.1", backend=backend)
    b = UDPRequest("127.0.0.1", backend=backend, timeout=0.2)
    try:
        # No handler on a: the request times out (RequestTimeout is a TimeoutError).
        with pytest.raises(TimeoutError):
            b.request(b"x", a.address)

        # r forwards b's request to a on b's tid; a answers b directly.
        def relay(req: IncomingRequest) -> None:
            r.forward_request(req.tid, req.payload, a.address)

        r.on_request(relay)
        seen: list[IncomingRequest] = []

        def answer_b(req: IncomingRequest) -> None:
            seen.append(req)
            a.forward_response(req.tid, b"from a", b.address)

        a.on_request(answer_b)
        fut = b.request_async(b"punch", r.address, any_source=True)
        assert b._driver.wait(fut, 5.0)
        assert fut.result() == Response(b"from a", a.address)
        assert seen[0].payload == b"punch" and seen[0].tid == fut.tid
        # Without any_source, an answer from another address than the one
        # asked does not complete the request: it times out.
        with pytest.raises(TimeoutError):
            b.request(b"punch", r.address)

        pending = b.request_async(b"never", ("127.0.0.1", 9))
        b.close()
        assert isinstance(pending.exception(), RequestCancelled)
        with pytest.raises(Exception, match="closed"):
            b.request(b"x", a.address)
    finally:
        for u in (a, r, b):
            u.close()


def test_a_request_completes_at_the_now_of_the_call_that_completed_it() -> None:
    core, _, _ = make()
    answered = core.request(b"a", A, now=0.0)
    silent = core.request(b"b", A, now=0.1)
    assert answered.completed_at == 0.0 and silent.completed_at == 0.1
    core.receive(answered.tid.to_bytes(2, "big"), A, 0.7)
    assert answered.completed_at == 0.7
    while not silent.done():
        deadline = core.get_timer()
        assert deadline is not None and deadline < 10
        core.handle_timer(deadline)
    assert isinstance(silent.exception(), RequestTimeout)
    assert silent.completed_at == deadline
