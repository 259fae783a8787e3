"""The fuzz harnesses stay alive: each target's entry function runs over
its seed corpus and a few thousand seeded random and mutated inputs
without error (no atheris needed), and the invariant checks do fire on a
core that breaks them. The fuzzing itself is `python fuzz/run.py` (see
fuzz/README.md), outside CI."""

from __future__ import annotations

import importlib
import logging
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz import seeds  # noqa: E402
from fuzz.harness import InvariantError, Reader  # noqa: E402
from fuzz.run import TARGETS, parse_log  # noqa: E402

#: Random and mutated inputs per target (about a second each on a quiet machine).
RANDOM_INPUTS = 1000


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    # The cores log every hostile datagram at debug/warning level.
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def entry(target: str) -> Callable[[bytes], None]:
    run_one: Callable[[bytes], None] = importlib.import_module(f"fuzz.target_{target}").run_one
    return run_one


def test_run_py_and_seeds_name_the_same_targets() -> None:
    assert TARGETS == seeds.TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_its_seed_corpus(target: str) -> None:
    run_one = entry(target)
    corpus = seeds.seeds(target)
    assert len(corpus) > 100
    for name, data in corpus.items():
        try:
            run_one(data)
        except Exception as exc:  # pragma: no cover - the message names the seed
            raise AssertionError(f"seed {name} of {target}: {exc!r}") from exc


@pytest.mark.parametrize("target", TARGETS)
def test_target_survives_random_and_mutated_inputs(target: str) -> None:
    run_one = entry(target)
    rng = random.Random(f"fuzz-{target}")
    corpus = list(seeds.seeds(target).values())
    for i in range(RANDOM_INPUTS):
        if i % 2:
            data = rng.randbytes(rng.randrange(600))
        else:
            buf = bytearray(rng.choice(corpus)[:2048])
            for _ in range(rng.randrange(1, 8)):
                if buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf)
        try:
            run_one(data)
        except Exception as exc:  # pragma: no cover - the message gives the input
            raise AssertionError(f"{target} input {data.hex()}: {exc!r}") from exc


def test_every_golden_vector_seeds_every_target() -> None:
    names = seeds.golden_messages()
    assert len(names) > 50
    for target in TARGETS:
        corpus = seeds.seeds(target)
        for name in names:
            assert f"{name}-0" in corpus


def test_the_udprequest_checks_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperdht.udprequest.core import RequestCore

    respond = RequestCore.respond

    def twice(self: RequestCore, tid: int, payload: bytes, address: object) -> None:
        respond(self, tid, payload, address)  # type: ignore[arg-type]
        respond(self, tid, payload, address)  # type: ignore[arg-type]

    monkeypatch.setattr(RequestCore, "respond", twice)
    with pytest.raises(InvariantError, match="datagrams out for one in"):
        for data in seeds.seeds("udprequest").values():
            entry("udprequest")(data)


def test_the_dht_checks_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperdht.dhtrpc.core import DHTCore

    def never_time_out(self: DHTCore, now: float) -> None:
        pass

    monkeypatch.setattr(DHTCore, "handle_timer", never_time_out)
    with pytest.raises(InvariantError, match="never completed"):
        entry("dhtrpc")(seeds.seeds("dhtrpc")["bootstrap-answered"])


def test_the_discovery_checks_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    from fuzz import target_discovery
    from hyperdht.discovery.core import DiscoveryCore

    def unbounded(core: object, **options: object) -> DiscoveryCore:
        return DiscoveryCore(core, **{**options, "max_peers": 10**6})  # type: ignore[arg-type]

    monkeypatch.setattr(target_discovery, "DiscoveryCore", unbounded)
    with pytest.raises(InvariantError, match="max_peers"):
        entry("discovery")(seeds.seeds("discovery")["served"])


def test_reader_reads_past_the_end_as_zeros() -> None:
    r = Reader(b"\x05ab")
    assert r.blob(10) == b"ab"
    assert (r.byte(), r.uint(2), r.take(3), r.blob(5), r.remaining()) == (0, 0, b"", b"", 0)
    assert Reader(b"\xff\x01\x00" + b"x" * 300).blob(1000) == b"x" * 256


def test_parse_log_reads_libfuzzer_figures() -> None:
    log = (
        "#271\tINITED cov: 90 ft: 400 corp: 60/100Kb exec/s: 0 rss: 50Mb\n"
        "#9000\tDONE   cov: 94 ft: 500 corp: 63/141Kb lim: 4096 exec/s: 111 rss: 52Mb\n"
        "Test unit written to fuzz/artifacts/x/crash-abc\n"
        "stat::number_of_executed_units: 9001\n"
    )
    assert parse_log(log) == {
        "execs": 9001,
        "cov": 94,
        "ft": 500,
        "corpus": 63,
        "findings": ["fuzz/artifacts/x/crash-abc"],
    }
