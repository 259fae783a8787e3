"""Withdrawing a request on the sans-I/O core (what cancelling an awaiting
asyncio task does): ``Future.cancel()`` on what ``ping``/``holepunch``
return, in flight or still queued behind the concurrency cap. Plain
datagrams and a fixed ``now``; no sockets, no loop."""

from __future__ import annotations

import random

from hyperdht import messages
from hyperdht.dhtrpc import DHTCore
from hyperdht.errors import RequestCancelled
from hyperdht.future import Future
from hyperdht.ipencoding import IPV4_PEER, Address

A = Address("198.18.0.10", 1000)
B = Address("198.18.0.11", 1000)


def make_core(**kw: object) -> DHTCore:
    rng = random.Random(1)
    return DHTCore(rng=rng, random_bytes=rng.randbytes, **kw)  # type: ignore[arg-type]


def sent_tids(core: DHTCore) -> list[int]:
    return [int.from_bytes(d[:2], "big") & 0x7FFF for d, _a, _o in core.datagrams_to_send()]


def test_cancelling_a_ping_in_flight_frees_it_and_a_late_answer_is_dropped() -> None:
    core = make_core()
    fut = core.ping(A, now=0.0)
    (tid,) = sent_tids(core)
    assert core.requests_in_flight == 1
    assert fut.cancel() is True
    assert isinstance(fut.exception(), RequestCancelled)
    assert core.requests_in_flight == 0
    assert fut.cancel() is False  # done: nothing to withdraw
    pong = messages.RpcResponse(id=None, value=IPV4_PEER.encode(B))
    core.receive_datagram(tid.to_bytes(2, "big") + messages.encode_response(pong), A, 0.1)
    assert core.stats.drops["unmatched_response"] == 1


def test_cancelling_a_queued_ping_removes_it_and_leaves_the_others() -> None:
    core = make_core(concurrency=1)
    first = core.ping(A, now=0.0)
    queued = core.ping(B, now=0.0)
    also_queued = core.ping(B, now=0.0)
    assert len(sent_tids(core)) == 1  # the cap: one in flight, two queued
    assert queued.cancel() is True
    assert isinstance(queued.exception(), RequestCancelled)
    assert not first.done() and not also_queued.done()
    assert first.cancel() is True  # frees the slot: the remaining one goes out
    assert len(sent_tids(core)) == 1
    assert not also_queued.done()
    assert also_queued.cancel() is True
    assert core.requests_in_flight == 0


def test_a_future_without_a_canceller_cannot_be_cancelled() -> None:
    fut: Future[int] = Future()
    assert fut.cancel() is False
    fut.set_canceller(lambda: fut.set_exception(RequestCancelled()))
    assert fut.cancel() is True
    assert isinstance(fut.exception(), RequestCancelled)
