"""Checks of the measuring instrument itself (``pytest benchmarks``; the tox
``bench`` env runs them): the helpers that decide what a figure means, and
one short loadgen run against the echo server on loopback."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


suite = load("suite")


def common_prefix_bits(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return 256 - x.bit_length()


@pytest.mark.parametrize("depth", [0, 1, 3, 8, 200])
def test_crafted_id_falls_in_the_bucket_of_its_depth(depth: int) -> None:
    rng = random.Random(depth)
    own = rng.randbytes(32)
    for _ in range(50):
        assert common_prefix_bits(own, suite.crafted_id(rng, own, depth)) == depth


def test_ratios_pair_rounds_and_skip_missing_ones() -> None:
    rows = {"reference": [10.0, 20.0, None, 40.0], "thread": [20.0, 20.0, 5.0, None]}
    summary = suite.summarize(rows)
    assert summary["reference"] == {"median": 20.0, "ratio": None}
    assert summary["thread"]["median"] == 20.0
    assert summary["thread"]["ratio"] == 1.5  # median of 2.0 and 1.0
    assert suite.summarize(rows, ratios=False)["thread"]["ratio"] is None
    assert suite.summarize({"thread": [1.0]})["thread"]["ratio"] is None  # no reference


def fake_tree(root: Path) -> Path:
    for name in ("hyperdht", "dht-rpc"):
        (root / name).mkdir(parents=True)
        (root / name / "package.json").write_text(json.dumps({"version": "1.0.0"}))
    return root


def test_reference_tree_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "ROOT", tmp_path / "repo")
    monkeypatch.delenv("HYPERDHT_NODE_MODULES", raising=False)
    assert suite.reference_node_modules() is None
    fake_tree(tmp_path / "repo" / "tests" / "interop" / "node_modules")  # the old place
    assert suite.reference_node_modules() is None
    shared = fake_tree(tmp_path / "repo" / "reference" / "node_modules")
    assert suite.reference_node_modules() == shared
    env = fake_tree(tmp_path / "elsewhere")
    monkeypatch.setenv("HYPERDHT_NODE_MODULES", str(env))
    assert suite.reference_node_modules() == env
    assert suite.node_env(env)["NODE_PATH"] == str(env)


def test_missing_reference_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    monkeypatch.delenv("HYPERDHT_NODE_MODULES", raising=False)
    monkeypatch.setenv("CI", "true")
    assert suite.main(["--quick", "--json", str(tmp_path / "out.json")]) == 1
    assert not (tmp_path / "out.json").exists()


def test_pool_file_is_length_prefixed_requests(tmp_path: Path) -> None:
    from hyperdht import messages

    path = tmp_path / "pool"
    client = bytes(32)
    suite.write_pool(path, "_find_node", client, random.Random(1))
    data = path.read_bytes()
    pos, targets = 0, set()
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        req = messages.decode_request(data[pos + 2 : pos + 2 + n])
        assert req.command == "_find_node" and req.id == client
        targets.add(req.target)
        pos += 2 + n
    assert pos == len(data)
    assert len(targets) == suite.POOL_SIZE  # random targets, not one


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_loadgen_counts_answers_from_the_echo_server(tmp_path: Path) -> None:
    exe = suite.build_loadgen(tmp_path)
    suite.write_pool(tmp_path / "pool", "_ping", bytes(32), random.Random(1))
    server = suite.Server("echo", None, None)
    try:
        result = suite.run_loadgen(exe, server.port, tmp_path / "pool", 8, 0.05, 0.3, None)
    finally:
        server.stop()
    assert result["answers"] > 100
    assert result["inflight"] == 8 and result["pool"] == suite.POOL_SIZE
    assert 0 <= result["cpu_share"] <= 1.5
    # echo answers are the requests themselves (all _ping requests have one size)
    pool = (tmp_path / "pool").read_bytes()
    assert result["bytes"] / result["answers"] == 2 + int.from_bytes(pool[:2], "big")


def test_a_dht_server_takes_the_id_of_its_round() -> None:
    """Every server of a round gets the same id, so the seeded table and the
    answers are the same for every column: the server must really use it."""
    node_id = bytes(range(32))
    server = suite.Server("thread", None, None, node_id)
    try:
        seeded, answered_id = suite.seed_table(server.port, random.Random(1))
    finally:
        report = server.stop()
    assert answered_id == node_id
    assert seeded == report["table"] == suite.SEED_BUCKETS * suite.K


@pytest.mark.parametrize("argv", [["thread", "zz"], ["thread", "ab" * 31], ["nope"], []])
def test_servers_refuse_a_bad_command_line(argv: list[str]) -> None:
    assert load("servers").main(argv) == 2


soak = load("soak")


def test_soak_flatness_rule_passes_a_flat_series_and_fails_a_growing_one() -> None:
    assert soak.flat([100.0, 101.0, 99.0, 100.0, 102.0, 100.0], slack=0)[0]
    assert soak.flat([100.0, 100.0, 108.0, 109.0, 109.0, 109.0], slack=0)[0]  # within 10 %
    assert not soak.flat([100.0, 110.0, 120.0, 130.0, 140.0, 150.0], slack=8)[0]
    assert soak.flat([600.0, 600.0, 600.0, 662.0, 662.0, 662.0], slack=2)[0]  # 10 % + 2
    assert not soak.flat([600.0, 600.0, 600.0, 663.0, 663.0, 663.0], slack=2)[0]


def test_soak_quick_run_samples_everything_and_releases_it(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    soak.main(["--quick", "--json", str(out)])  # the flatness verdict needs minutes, not 30 s
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert len(samples) == 7  # at 0, 5, ..., 30 s
    assert all(s["rss_mb"] > 0 and s["threads"] > 0 and s["fds"] > 0 for s in samples)
    checks = result["checks"]
    assert checks["progress"]["ok"] and checks["found"]["ok"], checks
    assert checks["released"]["ok"], checks["released"]


def test_sim_scale_runs_and_finds_every_key(tmp_path: Path) -> None:
    """A tiny bench_sim_scale run: both bootstraps, the lookups, the JSON."""
    scale = load("bench_sim_scale")
    out = tmp_path / "scale.json"
    assert scale.main(["--small", "20", "--large", "40", "--keys", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["small"]["nodes"] == 20 and result["large"]["nodes"] == 40
    assert result["lookups"]["found"] == 3
    assert result["large"]["events"] > result["small"]["events"] > 0


def test_sim_scale_rounds_repeat_the_same_events_and_take_the_median(tmp_path: Path) -> None:
    """``--rounds 3``: three pairs of bootstraps on the same seed (so the
    same events), and the reported ratio is the median of theirs."""
    scale = load("bench_sim_scale")
    out = tmp_path / "scale.json"
    argv = ["--small", "10", "--large", "20", "--keys", "1", "--rounds", "3", "--json", str(out)]
    assert scale.main(argv) == 0
    result = json.loads(out.read_text())
    rounds = result["rounds"]
    assert len(rounds) == 3
    assert len({(r["small"]["events"], r["large"]["events"]) for r in rounds}) == 1
    ratios = sorted(r["wall_ratio"] for r in rounds)
    assert result["wall_ratio"] == ratios[1]
    assert result["large"] == rounds[-1]["large"]
    # memory per node only in the first round (later ones reuse freed memory)
    assert rounds[0]["small"]["rss_per_node_bytes"] is not None
    assert rounds[1]["small"]["rss_per_node_bytes"] is None
    with pytest.raises(SystemExit):
        scale.main(["--rounds", "0"])


def test_sim_scale_records_the_heap_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON says which heap-layout variables were set, so a figure
    taken with huge pages is never mistaken for a plain run."""
    scale = load("bench_sim_scale")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    out = tmp_path / "scale.json"
    assert scale.main(["--small", "10", "--large", "20", "--keys", "1", "--json", str(out)]) == 0
    env = json.loads(out.read_text())["machine"]["env"]
    assert env == {"PYTHONMALLOC": None, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_sim_scale_pause_gc_runs_the_same_events(tmp_path: Path) -> None:
    """``--pause-gc`` changes when the collector runs, not what happens:
    the same events and datagrams as without it."""
    scale = load("bench_sim_scale")
    results = []
    for flag in ([], ["--pause-gc"]):
        out = tmp_path / f"scale{len(flag)}.json"
        argv = ["--small", "20", "--large", "40", "--keys", "3", "--json", str(out), *flag]
        assert scale.main(argv) == 0
        results.append(json.loads(out.read_text()))
    plain, paused = results
    assert paused["pause_gc"] and not plain["pause_gc"]
    for size in ("small", "large"):
        assert paused[size]["events"] == plain[size]["events"]
        assert paused[size]["datagrams"] == plain[size]["datagrams"]
    assert paused["lookups"]["found"] == plain["lookups"]["found"] == 3


@pytest.mark.parametrize("backend", ["gevent", "gevent-private", "thread-private"])
def test_swarm_runs_on_every_backend_and_finds_the_keys(backend: str) -> None:
    pytest.importorskip("gevent")
    import subprocess

    opts = {"backend": backend, "nodes": 8, "announces": 2, "lookups": 2, "batch": 4}
    out = subprocess.run(
        [sys.executable, str(HERE / "swarm.py"), json.dumps(opts)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["impl"] == backend
    assert result["bootstrapped"] == 8
    assert result["lookup_found"] == 2


def test_swarm_targets_reject_an_unknown_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)  # reach the option check without Node.js too
    with pytest.raises(SystemExit, match="--swarm-targets: unknown nope"):
        suite.main(["--only", "swarm", "--swarm-targets", "thread,nope", "--rounds", "1"])
