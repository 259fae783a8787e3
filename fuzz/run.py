"""Run the fuzz targets under atheris (libFuzzer) and summarise the runs.

::

    python fuzz/run.py --target all --minutes 10     # each target for 10 minutes
    python fuzz/run.py --target dhtrpc --seconds 30  # one target, briefly
    python fuzz/run.py --replay dhtrpc fuzz/artifacts/dhtrpc/crash-...  # no atheris needed
    python fuzz/run.py --minimize dhtrpc fuzz/artifacts/dhtrpc/crash-...

Each target runs in its own process (``nice -n 10``, one after another),
over ``fuzz/corpus/<target>/`` (the seeds are written there first; what
libFuzzer adds stays out of git), with artifacts (crashing inputs) in
``fuzz/artifacts/<target>/`` and libFuzzer's output in
``fuzz/artifacts/<target>/fuzz.log``. The summary gives per target the
executions, libFuzzer's coverage (``cov:`` edges and ``ft:`` features),
the corpus size and the findings. Needs ``pip install -e .[fuzz]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import re
import subprocess
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The targets, in the order ``--target all`` runs them (fuzz.seeds.TARGETS;
# not imported here: the worker must import hyperdht only once atheris
# instruments the imports).
TARGETS = ("udprequest", "dhtrpc", "discovery")

__all__ = ["main", "parse_log"]

_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/(\S+))?")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


def _entry(target: str) -> Callable[[bytes], None]:
    module = importlib.import_module(f"fuzz.target_{target}")
    run_one: Callable[[bytes], None] = module.run_one
    return run_one


def _worker(target: str, libfuzzer_args: list[str]) -> None:
    """Inside the fuzzing process: instrument hyperdht, hand over to libFuzzer."""
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    logging.disable(logging.CRITICAL)  # the cores log hostile input; libFuzzer's output is ours
    with atheris.instrument_imports(include=["hyperdht"]):
        run_one = _entry(target)

    def test_one_input(data: bytes) -> None:
        run_one(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


def parse_log(text: str) -> dict[str, object]:
    """The figures of one libFuzzer log: executions, cov, ft, corpus,
    findings (artifact paths)."""
    out: dict[str, object] = {"execs": 0, "cov": 0, "ft": 0, "corpus": 0, "findings": []}
    for line in text.splitlines():
        m = _STATUS.match(line)
        if m:
            out["execs"] = int(m.group(1))
            out["cov"] = int(m.group(3))
            out["ft"] = int(m.group(4))
            if m.group(5):
                out["corpus"] = int(m.group(5))
        m = _STAT.match(line)
        if m and m.group(1) == "number_of_executed_units":
            out["execs"] = int(m.group(2))
        m = _ARTIFACT.search(line)
        if m:
            findings = out["findings"]
            assert isinstance(findings, list)
            findings.append(m.group(1))
    return out


def _fuzz(target: str, seconds: int, extra: list[str]) -> dict[str, object]:
    corpus = HERE / "corpus" / target
    artifacts = HERE / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    from fuzz.seeds import write_corpus

    seeded = write_corpus(target, corpus)
    log_path = artifacts / "fuzz.log"
    cmd = [
        "nice", "-n", "10", sys.executable, str(Path(__file__).resolve()), "--worker", target,
        "--", str(corpus),
        f"-max_total_time={seconds}", "-print_final_stats=1", "-max_len=4096",
        "-timeout=20", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", *extra,
    ]  # fmt: skip
    print(f"== {target}: {seeded} seeds, {seconds} s, log {log_path}", flush=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    result = parse_log(log_path.read_text(errors="replace"))
    result.update(target=target, rc=rc, seconds=round(time.monotonic() - started))
    return result


def _replay(target: str, paths: list[str]) -> int:
    run_one = _entry(target)
    failed = 0
    for path in paths:
        try:
            run_one(Path(path).read_bytes())
        except Exception:
            failed += 1
            print(f"{path}: FAILS")
            traceback.print_exc()
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


#: The modules whose line coverage ``--line-coverage`` reports.
COVERED = (
    "udprequest/core.py",
    "dhtrpc/core.py",
    "dhtrpc/query.py",
    "dhtrpc/connect.py",
    "discovery/core.py",
    "discovery/store.py",
    "kbucket.py",
    "ipencoding.py",
    "messages/__init__.py",
)


def _function_lines(code: types.CodeType) -> set[int]:
    """The lines of the functions in ``code`` (not the module or class
    bodies, which run at import time)."""
    out: set[int] = set()
    if code.co_flags & inspect.CO_OPTIMIZED:
        out = {line for _, _, line in code.co_lines() if line}
        out.discard(code.co_firstlineno)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _function_lines(const)
    return out


def _line_coverage(target: str, paths: list[str]) -> int:
    """Plain Python line coverage of hyperdht's cores by a corpus (no
    atheris: the inputs run uninstrumented under ``sys.settrace``)."""
    logging.disable(logging.CRITICAL)
    run_one = _entry(target)
    inputs: list[bytes] = []
    for path in map(Path, paths or [str(HERE / "corpus" / target)]):
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        inputs += [f.read_bytes() for f in files if f.is_file() and f.name != "fuzz.log"]
    hit: set[tuple[str, int]] = set()

    def tracer(frame: types.FrameType, event: str, arg: object) -> object:
        hit.add((frame.f_code.co_filename, frame.f_lineno))
        return tracer

    def start(frame: types.FrameType, event: str, arg: object) -> object:
        return tracer if "/hyperdht/" in frame.f_code.co_filename else None

    sys.settrace(start)  # type: ignore[arg-type]
    try:
        for data in inputs:
            with contextlib.suppress(Exception):
                run_one(data)
    finally:
        sys.settrace(None)
    package = Path(importlib.import_module("hyperdht").__file__ or "").parent
    print(f"{target}: {len(inputs)} inputs")
    for name in COVERED:
        source = str(package / name)
        lines = _function_lines(compile(Path(source).read_text(), source, "exec"))
        got = {line for f, line in hit if f == source} & lines
        print(f"  {name:<22} {len(got):>4}/{len(lines):<4} {100 * len(got) / len(lines):5.1f}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--worker"]:
        _worker(args_in[1], args_in[3:] if args_in[2:3] == ["--"] else args_in[2:])
        return 0
    p = argparse.ArgumentParser(description="Run the hyperdht fuzz targets (atheris).")
    p.add_argument("--target", default="all", choices=(*TARGETS, "all"))
    time_group = p.add_mutually_exclusive_group()
    time_group.add_argument("--minutes", type=float, help="minutes per target (default 10)")
    time_group.add_argument("--seconds", type=int, help="seconds per target")
    p.add_argument("--replay", nargs="+", metavar=("TARGET", "FILE"), help="run inputs, no atheris")
    p.add_argument("--minimize", nargs=2, metavar=("TARGET", "FILE"), help="minimize a crash")
    p.add_argument(
        "--line-coverage",
        nargs="+",
        metavar=("TARGET", "DIR"),
        help="line coverage of the cores by a corpus (default fuzz/corpus/TARGET)",
    )
    p.add_argument("libfuzzer", nargs="*", help="more libFuzzer options (after --)")
    args = p.parse_args(args_in)
    if args.line_coverage:
        return _line_coverage(args.line_coverage[0], args.line_coverage[1:])
    if args.replay:
        return _replay(args.replay[0], args.replay[1:])
    if args.minimize:
        target, path = args.minimize
        out = HERE / "artifacts" / target / f"minimized-{Path(path).name}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", target, "--",
               "-minimize_crash=1", "-runs=20000", f"-exact_artifact_path={out}", path]  # fmt: skip
        rc = subprocess.call(cmd, cwd=ROOT)
        print(f"minimized: {out} ({out.stat().st_size if out.exists() else '?'} bytes)")
        return rc
    seconds = args.seconds if args.seconds is not None else int(60 * (args.minutes or 10))
    targets = TARGETS if args.target == "all" else (args.target,)
    results = [_fuzz(t, seconds, args.libfuzzer) for t in targets]
    print(f"{'target':<11} {'secs':>5} {'execs':>10} {'exec/s':>7} {'cov':>6} {'ft':>7} "
          f"{'corpus':>6}  findings")  # fmt: skip
    status = 0
    for r in results:
        secs = int(str(r["seconds"])) or 1
        execs = int(str(r["execs"]))
        findings = r["findings"]
        assert isinstance(findings, list)
        print(f"{r['target']:<11} {secs:>5} {execs:>10} {execs // secs:>7} {r['cov']:>6} "
              f"{r['ft']:>7} {r['corpus']:>6}  {', '.join(findings) or 'none'}")  # fmt: skip
        if findings or r["rc"] not in (0,):
            status = 1
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
