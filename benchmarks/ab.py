"""Before/after: the same benchmarks on two revisions of the library, interleaved.

    python benchmarks/ab.py --base REV [--rounds 5] [--quick]

Exports ``REV`` (``git archive``) into a temporary directory and runs, for
each round, A then B (then B then A the next round, so neither side always
goes first on a machine that warms up or gets busier):

* ``bench_rpc.py`` of *this* tree, once per backend (thread, gevent), with
  the library of each side on ``PYTHONPATH``: the served rate and, steadier
  on a noisy machine, the server's CPU time per request;
* ``bench_sim_bootstrap.py`` of this tree on each side's library: the wall
  time of a simulated bootstrap of ``--nodes`` nodes (single-threaded, no
  sockets: CPU-bound protocol work).

Only the library comes from ``REV``; the measuring scripts are this tree's,
so both sides are measured alike (they use the public API only). Prints
each round, then the medians and the ratio head/base per figure (for rates
above 1 is faster; for CPU per request and wall time below 1 is faster).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_RATE = re.compile(r"^(_ping|_find_node)\s+(?:\w+\s+)?median\s+([\d,]+) answered/s", re.M)
_CPU = re.compile(r"([\d.]+) us of CPU per request")
_WALL = re.compile(r"^wall time:\s+([\d.]+) s", re.M)


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` under ``into`` (its ``hyperdht`` package is what
    goes on PYTHONPATH)."""
    archive = into / "base.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev, "hyperdht"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def run(script: str, args: list[str], libdir: Path) -> str:
    """Run a benchmark script of this tree with ``libdir`` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(libdir))
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        env=env,
        cwd=libdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def measure(libdir: Path, args: argparse.Namespace) -> dict[str, float]:
    """One round of every figure on the library in ``libdir``."""
    out: dict[str, float] = {}
    for backend in ("thread", "gevent"):
        text = run(
            "bench_rpc.py",
            ["--backend", backend, "--rounds", "1", "--seconds", str(args.seconds)],
            libdir,
        )
        for command, rate in _RATE.findall(text):
            out[f"{backend} {command}/s"] = float(rate.replace(",", ""))
        cpu = _CPU.search(text)
        if cpu:
            out[f"{backend} CPU us/request"] = float(cpu.group(1))
    text = run("bench_sim_bootstrap.py", ["--nodes", str(args.nodes)], libdir)
    wall = _WALL.search(text)
    if wall:
        out[f"sim bootstrap {args.nodes} nodes, s"] = float(wall.group(1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="bench_rpc round length (2)")
    parser.add_argument("--nodes", type=int, default=500, help="simulated nodes (500)")
    parser.add_argument("--quick", action="store_true", help="1 round, short, 100 nodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.nodes = 1, 0.3, 100
    with tempfile.TemporaryDirectory(prefix="hyperdht-ab-") as tmp:
        sides = {"base": export(args.base, Path(tmp)), "head": ROOT}
        results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
        for n in range(args.rounds):
            order = ["base", "head"] if n % 2 == 0 else ["head", "base"]
            for side in order:
                for key, value in measure(sides[side], args).items():
                    results[side].setdefault(key, []).append(value)
                    print(f"round {n + 1} {side:4} {key:32} {value:12,.1f}", flush=True)
    print(f"\nmedians of {args.rounds} interleaved round(s); base = {args.base}")
    print(f"{'figure':32} {'base':>12} {'head':>12} {'head/base':>10}")
    for key in results["head"]:
        if key not in results["base"]:
            continue
        base = statistics.median(results["base"][key])
        head = statistics.median(results["head"][key])
        print(f"{key:32} {base:12,.1f} {head:12,.1f} {head / base:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
