"""The commands' building blocks, in process: options, config files, the
runtime's tasks and stop signal, exit statuses.

Tasks run on a driver's ``spawn``: on the simulator (virtual clock,
deterministic) for what they compute, and on real thread drivers where the
point is that work overlaps. Nothing sleeps: overlap is shown with a
barrier that only a broken bound never fills.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperdht.cli.errors import CommandError, UsageError
from hyperdht.cli.options import load_config, new_parser, parse_bootstrap, parse_key
from hyperdht.cli.runtime import StopSignal, Task, map_bounded, open_node, run_main
from hyperdht.drivers import Driver, create_driver
from hyperdht.errors import ArgumentError, HyperDHTError, StateError
from hyperdht.testing import Network

DEADLINE = 20.0  # only a broken run waits this long


@pytest.fixture
def sim_drivers() -> Iterator[list[Driver]]:
    net = Network(seed=1)
    drivers: list[Driver] = [net.host(f"198.18.0.{i}").create_driver() for i in (1, 2, 3)]
    yield drivers
    for d in drivers:
        d.close()


@pytest.fixture
def thread_drivers() -> Iterator[list[Driver]]:
    drivers = [create_driver("thread", host="127.0.0.1", port=0) for _ in range(2)]
    yield drivers
    for d in drivers:
        d.close()


def test_command_errors_are_hyperdht_errors() -> None:
    assert issubclass(UsageError, ArgumentError) and issubclass(UsageError, ValueError)
    assert issubclass(CommandError, HyperDHTError)


# -- options ---------------------------------------------------------------------


def test_parser_errors_are_raised_as_one_line() -> None:
    parser = new_parser("prog", "what it does")
    parser.add_argument("--n", type=int)
    with pytest.raises(UsageError, match="argument --n: invalid int value"):
        parser.parse_args(["--n", "x"])


def test_suppressed_defaults_leave_options_out() -> None:
    parser = new_parser("prog", "what it does", suppress_defaults=True)
    parser.add_argument("--host")
    assert vars(parser.parse_args([])) == {}
    assert vars(parser.parse_args(["--host", "h"])) == {"host": "h"}


def test_parse_key_and_bootstrap() -> None:
    assert parse_key("ab" * 32) == b"\xab" * 32
    with pytest.raises(UsageError, match=r"^--id: not hexadecimal"):
        parse_key("zz" * 32, "--id")
    assert parse_bootstrap(["127.0.0.1, 127.0.0.1:2", "h:3"]) == ("127.0.0.1", "127.0.0.1:2", "h:3")
    with pytest.raises(UsageError, match="--bootstrap"):
        parse_bootstrap(["127.0.0.1:0"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"n": true}', "'n' must be an integer, got True"),
        ('{"p": 65536}', "'p' must be 0-65535, got 65536"),
        ('{"c": 0}', "'c' must be at least 1, got 0"),
        ('{"b": "trio"}', "'b' must be one of ('thread', 'gevent', 'asyncio'), got 'trio'"),
        ('{"s": [1]}', "'s' must be a string or a list of strings, got [1]"),
        ('{"x": 1}', "unknown key 'x' (known: b, c, n, p, s)"),
    ],
)
def test_config_kinds(tmp_path: Path, data: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(data)
    kinds = {"n": "int", "p": "port", "c": "positive", "b": "backend", "s": "strs"}
    with pytest.raises(UsageError) as info:
        load_config(str(path), kinds)
    assert str(info.value) == f"config file {path}: {message}"


def test_config_string_becomes_a_list(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"s": "one", "p": 0}')
    assert load_config(str(path), {"s": "strs", "p": "port"}) == {"s": ["one"], "p": 0}


# -- tasks -------------------------------------------------------------------------


def test_task_runs_on_the_driver_and_can_be_joined(sim_drivers: list[Driver]) -> None:
    ran: list[int] = []
    task = Task(sim_drivers[0], ran.append, 7, name="t")
    assert task.is_alive()
    assert task.join(DEADLINE)
    assert ran == [7] and not task.is_alive()


def test_a_failing_task_is_logged_and_finishes(
    sim_drivers: list[Driver], caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise KeyError("x")

    with caplog.at_level(logging.ERROR, logger="hyperdht.cli.runtime"):
        task = Task(sim_drivers[0], boom, name="the-boom-task")
        assert task.join(DEADLINE)
    assert "the-boom-task failed" in caplog.text


def test_map_bounded_keeps_order_and_counts_errors_as_false(sim_drivers: list[Driver]) -> None:
    seen: list[int] = []

    def fn(x: int) -> bool:
        seen.append(x)
        if x == 4:
            raise ValueError("four")
        return x % 2 == 0

    assert map_bounded(fn, range(8), sim_drivers) == [
        True,
        False,
        True,
        False,
        False,
        False,
        True,
        False,
    ]
    assert sorted(seen) == list(range(8))  # each item exactly once
    assert map_bounded(fn, [], sim_drivers) == []
    with pytest.raises(ArgumentError, match=r"^drivers: "):
        map_bounded(fn, [1], [])


def test_map_bounded_runs_one_call_per_driver_at_once(thread_drivers: list[Driver]) -> None:
    # Two workers: the first two calls meet at the barrier (one worker alone
    # would break it at the deadline); no call ever sees a third running.
    barrier = threading.Barrier(2, timeout=DEADLINE)
    lock = threading.Lock()
    running = [0]
    most = [0]

    def fn(x: int) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            if x < 2:
                barrier.wait()
            return True
        finally:
            with lock:
                running[0] -= 1

    assert map_bounded(fn, range(6), thread_drivers) == [True] * 6
    assert most[0] == 2


# -- the stop signal -----------------------------------------------------------------


def test_stop_requested_before_attach_is_kept(sim_drivers: list[Driver]) -> None:
    with StopSignal("prog", "thread") as stop:
        with pytest.raises(StateError):
            stop.wait(0)
        stop.set()
        assert stop.is_set() and stop.signum is None
        stop.attach(sim_drivers[0])
        assert stop.wait(0)


def test_sigint_sets_the_stop_and_restore_puts_the_handler_back(
    thread_drivers: list[Driver],
) -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopSignal("prog", "thread") as stop:
        stop.attach(thread_drivers[0])
        assert not stop.wait(0)
        os.kill(os.getpid(), signal.SIGINT)  # handled in this (the main) thread
        assert stop.wait(DEADLINE)
        assert stop.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before


# -- exit statuses ---------------------------------------------------------------------


def test_run_main_turns_errors_into_one_line_and_a_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def raises(exc: BaseException) -> int:
        raise exc

    assert run_main("prog", lambda: 0) == 0
    assert run_main("prog", lambda: raises(UsageError("--x: bad"))) == 2
    assert capsys.readouterr().err == "prog: error: --x: bad\n"
    assert run_main("prog", lambda: raises(CommandError("no luck"))) == 1
    assert capsys.readouterr().err == "prog: error: no luck\n"
    assert run_main("prog", lambda: raises(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "prog: error: interrupted\n"


def test_open_node_maps_failures_to_command_errors() -> None:
    with pytest.raises(UsageError, match="bootstrap"):
        open_node(bootstrap=["127.0.0.1:0"], host="127.0.0.1", port=0)
    with open_node(host="127.0.0.1", port=0) as node:
        port = node.address.port
        with pytest.raises(CommandError, match="cannot bind UDP socket"):
            open_node(host="127.0.0.1", port=port)
