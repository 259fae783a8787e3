"""Measure hyperdht against the Node.js reference in one interleaved run.

``python benchmarks/suite.py [--quick] [--json FILE]`` prints a table and
writes every figure (each round's raw numbers, medians, ratios, the machine)
to a JSON file. See ``benchmarks/README.md`` for what each figure means.

1. **Serve rate**: one server pinned to one core, ``loadgen.c`` (compiled
   here with ``cc``) pinned to another, keeping 64 requests in flight from a
   pool of pre-encoded ``_ping`` / ``_find_node`` requests with random
   targets. The server's routing table is first seeded with 80 contacts
   (pings carrying crafted ids that fill 4 buckets of 20 without evicting
   anything), so every ``_find_node`` answer lists 20 nodes. Servers: the
   Node.js reference (``reference/serve.js``, dht-rpc@2.3.0), ours on the
   thread and on the gevent backend, a bare Python echo loop and a bare
   protobuf responder (``servers.py``).
2. **Many nodes per process**: 100 and 1,000 nodes in one process
   bootstrapping from one, announces, sequential lookups, RSS, idle CPU
   (``swarm.py`` for ours, ``reference/swarm.js`` for the reference).
3. Everything runs in interleaved rounds (A B C A B C ...); the table shows
   medians over the rounds, and each ratio is the median of the per-round
   ratios to the reference of the same round.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
REFERENCE = "reference"
SERVE_TARGETS = ("reference", "thread", "gevent", "echo", "protobuf")
#: Also accepted by ``--serve-targets``: a thread-backend node on private
#: receiver and timer threads instead of the process's shared hub.
EXTRA_SERVE_TARGETS = ("thread-private",)
SWARM_IMPLS = ("reference", "thread", "gevent")
#: Also accepted by ``--swarm-targets``: every node on private threads
#: (greenlets) instead of the process's shared hub.
EXTRA_SWARM_IMPLS = ("thread-private", "gevent-private")
COMMANDS = ("_ping", "_find_node")
#: Contacts seeded into each server's routing table: 4 buckets of k = 20.
SEED_BUCKETS = 4
K = 20
#: The load generator's id shares this many leading bits with the server's.
CLIENT_DEPTH = 8
POOL_SIZE = 4096

log = logging.getLogger("benchmarks.suite")


class SuiteError(Exception):
    """The suite cannot run (missing tool, a server that does not start)."""


# --------------------------------------------------------------- the reference


def reference_node_modules() -> Path | None:
    """Where the Node.js reference packages are, or None.

    ``$HYPERDHT_NODE_MODULES`` first, then ``reference/node_modules`` (the
    repository's one reference tree, the same rule as
    ``tests/node_reference.py`` and ``reference/lookup.js``); a candidate
    counts when it holds ``hyperdht`` and ``dht-rpc``.
    """
    env = os.environ.get("HYPERDHT_NODE_MODULES")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT / "reference" / "node_modules")
    for path in candidates:
        if (path / "hyperdht" / "package.json").is_file() and (
            path / "dht-rpc" / "package.json"
        ).is_file():
            return path
    return None


def reference_versions(modules: Path) -> dict[str, str]:
    """The versions of the reference packages in ``modules``."""
    out = {}
    for name in ("hyperdht", "dht-rpc", "udp-request"):
        try:
            out[name] = json.loads((modules / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            out[name] = "?"
    return out


def node_env(modules: Path) -> dict[str, str]:
    """The environment for a Node.js script of this suite."""
    env = dict(os.environ)
    env["NODE_PATH"] = str(modules)
    return env


# --------------------------------------------------------------- processes


def pinner(core: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and every thread it starts) to
    ``core``; None when not pinning."""
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def cpu_ticks(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_json_line(stream: IO[str], timeout: float, what: str) -> dict[str, Any]:
    """The next JSON line of a child's stdout, within ``timeout`` seconds."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise SuiteError(f"{what}: no answer within {timeout:g} s")
            line = stream.readline()
            if not line:
                raise SuiteError(f"{what}: exited without an answer")
            line = line.strip()
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result


class Server:
    """One server process of the serve-rate benchmark."""

    def __init__(
        self, target: str, modules: Path | None, core: int | None, node_id: bytes | None = None
    ) -> None:
        self.target = target
        if target == REFERENCE:
            assert modules is not None
            cmd = ["node", str(HERE / "reference" / "serve.js")]
            env = node_env(modules)
        else:
            cmd = [sys.executable, str(HERE / "servers.py"), target]
            env = dict(os.environ)
        if node_id is not None:
            cmd.append(node_id.hex())
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=pinner(core),
        )
        assert self.proc.stdout is not None
        try:
            hello = read_json_line(self.proc.stdout, 30, f"server {target}")
        except SuiteError:
            self.proc.kill()
            self.proc.wait()
            raise
        self.port: int = hello["port"]
        self.pid: int = hello["pid"]

    def stop(self) -> dict[str, Any]:
        """Ask it to stop; return its last report."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            report = read_json_line(self.proc.stdout, 30, f"server {self.target}")
        except (SuiteError, OSError) as exc:
            log.warning("%s", exc)
            report = {}
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return report


# --------------------------------------------------------------- serve rate


def crafted_id(rng: random.Random, own: bytes, depth: int) -> bytes:
    """An id sharing exactly ``depth`` leading bits with ``own``: it falls in
    the k-bucket ``depth`` levels down the tree from the root."""
    n = int.from_bytes(own, "big")
    bit = 255 - depth
    prefix = (n >> bit) ^ 1  # the first `depth` bits of own, then the other branch
    rest = rng.getrandbits(bit)
    return ((prefix << bit) | rest).to_bytes(32, "big")


def seed_table(port: int, rng: random.Random) -> tuple[int, bytes]:
    """Ping the server with ``SEED_BUCKETS * K`` crafted ids; return how many
    answered and the server's id. The ids fill the top buckets exactly, so
    nothing is evicted and the server pings nobody back."""
    from hyperdht import messages

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2.0)

        def ask(req: messages.RpcRequest, tid: int) -> messages.RpcResponse | None:
            sock.sendto(
                (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req), (HOST, port)
            )
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return None
                if len(data) >= 2 and not data[0] & 0x80 and data[1] == tid & 0xFF:
                    return messages.decode_response(data[2:])
            return None

        hello = ask(messages.RpcRequest("_ping"), 1)  # no id: we are not stored
        if hello is None or not hello.id:
            raise SuiteError("the server did not answer a ping")
        answered = 0
        for depth in range(SEED_BUCKETS):
            for i in range(K):
                req = messages.RpcRequest("_ping", id=crafted_id(rng, hello.id, depth))
                if ask(req, 2 + depth * K + i) is not None:
                    answered += 1
        return answered, hello.id


def write_pool(path: Path, command: str, client_id: bytes, rng: random.Random) -> None:
    """``POOL_SIZE`` pre-encoded requests of ``command`` from ``client_id``
    (random targets for ``_find_node``), each prefixed by a 2-byte length, for
    loadgen."""
    from hyperdht import messages

    with open(path, "wb") as f:
        for _ in range(POOL_SIZE):
            target = rng.randbytes(32) if command == "_find_node" else None
            payload = messages.encode_request(
                messages.RpcRequest(command, id=client_id, target=target)
            )
            f.write(len(payload).to_bytes(2, "big") + payload)


def build_loadgen(tmp: Path) -> Path:
    """Compile ``loadgen.c`` with the system's ``cc`` into ``tmp``."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise SuiteError("no C compiler: install cc (gcc or clang), or set CC")
    exe = tmp / "loadgen"
    built = subprocess.run(
        [cc, "-O2", "-o", str(exe), str(HERE / "loadgen.c")], capture_output=True, text=True
    )
    if built.returncode != 0:
        raise SuiteError(f"cannot compile loadgen.c: {built.stderr.strip()}")
    return exe


def run_loadgen(
    exe: Path, port: int, pool: Path, inflight: int, warmup: float, seconds: float, core: int | None
) -> dict[str, Any]:
    """One loadgen run; its JSON report."""
    out = subprocess.run(
        [str(exe), HOST, str(port), str(pool), str(inflight), str(warmup), str(seconds)],
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 30,
        preexec_fn=pinner(core),
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def serve_round(
    target: str,
    modules: Path | None,
    exe: Path,
    tmp: Path,
    args: argparse.Namespace,
    round_seed: int,
) -> dict[str, Any]:
    """Start ``target``, seed it, run loadgen for each command, stop it.

    Everything random comes from ``round_seed``, which every target of a
    round shares: the same server id, the same 80 seeded contacts, the same
    client id and the same ``_find_node`` targets, so the columns of a
    round differ only in the server. The load comes from one client node
    whose id falls in a k-bucket that is not full (``CLIENT_DEPTH`` levels
    down), so it joins the table once and every request then only
    refreshes it: no evictions, no pings."""
    rng = random.Random(round_seed)
    server_id = rng.randbytes(32)
    server = Server(target, modules, args.server_core, server_id)
    result: dict[str, Any] = {}
    seeded = None
    try:
        if target in ("echo", "protobuf"):
            client_id = rng.randbytes(32)
        else:
            seeded, answered_id = seed_table(server.port, rng)
            if answered_id != server_id:
                raise SuiteError(f"server {target} did not take the id it was given")
            client_id = crafted_id(rng, server_id, CLIENT_DEPTH)
        pools = {c: tmp / f"{c}.pool" for c in COMMANDS}
        for c, path in pools.items():
            write_pool(path, c, client_id, rng)
        for command in COMMANDS:
            c0 = cpu_ticks(server.pid)
            lg = run_loadgen(
                exe,
                server.port,
                pools[command],
                args.inflight,
                args.warmup,
                args.serve_seconds,
                args.loadgen_core,
            )
            server_cpu = cpu_ticks(server.pid) - c0
            result[command] = {
                "rate": lg["rate"],
                "lost": lg["lost"],
                "bytes_per_answer": lg["bytes"] / lg["answers"] if lg["answers"] else None,
                "loadgen_cpu_pct": 100 * lg["cpu_share"],
                # over warm-up + window: the server was loaded all along
                "server_cpu_pct": 100 * server_cpu / (args.warmup + lg["seconds"]),
                # robust to a shared core: answers per CPU-second the server got
                "per_cpu_second": (
                    lg["rate"] * (args.warmup + lg["seconds"]) / server_cpu if server_cpu else None
                ),
            }
    finally:
        report = server.stop()
    result["seeded"] = seeded
    result["table"] = report.get("table")
    result["server_id"] = server_id.hex()
    return result


# --------------------------------------------------------------- many nodes


def swarm_round(
    impl: str, size: int, modules: Path | None, args: argparse.Namespace, seed: int
) -> dict[str, Any] | None:
    """One many-nodes run in a fresh process; its figures, or None."""
    opts = {
        "backend": impl,
        "nodes": size,
        "announces": args.announces,
        "lookups": args.lookups,
        "idle": args.idle_seconds,
        "batch": 50,
        "seed": seed,
    }
    if impl == REFERENCE:
        assert modules is not None
        cmd = ["node", str(HERE / "reference" / "swarm.js"), json.dumps(opts)]
        env = node_env(modules)
    else:
        cmd = [sys.executable, str(HERE / "swarm.py"), json.dumps(opts)]
        env = dict(os.environ)
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=args.swarm_timeout,
            preexec_fn=pinner(args.server_core),
        )
    except subprocess.TimeoutExpired:
        log.warning("%s, %d nodes: no result within %g s", impl, size, args.swarm_timeout)
        return None
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    log.warning("%s, %d nodes failed: %s", impl, size, out.stderr.strip()[-500:])
    return None


# --------------------------------------------------------------- summary

#: (key, label, unit, higher is better)
SERVE_METRICS = [
    ("rate", "answers/s", "{:,.0f}", True),
    ("per_cpu_second", "answers/server CPU-s", "{:,.0f}", True),
    ("server_cpu_pct", "server CPU %", "{:.0f}", None),
    ("loadgen_cpu_pct", "loadgen CPU %", "{:.0f}", None),
    ("bytes_per_answer", "bytes/answer", "{:.0f}", None),
]
SWARM_METRICS = [
    ("bootstrap_s", "bootstrap s", "{:.2f}", False),
    ("announce_s", "announces s (all)", "{:.2f}", False),
    ("announce_ok", "announces ok", "{:.0f}", None),
    ("lookup_p50_ms", "lookup p50 ms", "{:.1f}", False),
    ("lookup_p90_ms", "lookup p90 ms", "{:.1f}", False),
    ("lookup_found", "lookups found", "{:.0f}", None),
    ("rss_mb", "RSS MiB", "{:.0f}", False),
    ("idle_cpu_pct", "idle CPU %", "{:.2f}", False),
    ("table_median", "table median", "{:.0f}", None),
]


def median(values: Sequence[float | None]) -> float | None:
    """Median of the non-None values, or None."""
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def paired_ratio(values: Sequence[float | None], refs: Sequence[float | None]) -> float | None:
    """Median over rounds of value / reference of the same round."""
    xs = [v / r for v, r in zip(values, refs, strict=True) if v is not None and r]
    return statistics.median(xs) if xs else None


def summarize(
    rows: dict[str, list[float | None]], ratios: bool = True
) -> dict[str, dict[str, float | None]]:
    """Medians per column and (with ``ratios``) ratios to the ``reference``
    column."""
    refs = rows.get(REFERENCE) if ratios else None
    out = {}
    for name, values in rows.items():
        out[name] = {
            "median": median(values),
            "ratio": paired_ratio(values, refs) if refs and name != REFERENCE else None,
        }
    return out


def fmt(fmt_spec: str, value: float | None) -> str:
    """``value`` formatted, or ``-`` when there is none."""
    return "-" if value is None else fmt_spec.format(value)


def print_table(
    title: str, columns: Sequence[str], lines: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """One table: a line per metric, a column per implementation, each cell
    ``median (ratio x)``."""
    width = 20
    print(f"\n{title}")
    print(f"{'':<24}" + "".join(f"{c:>{width}}" for c in columns))
    for label, spec, summary in lines:
        cells = []
        for c in columns:
            s = summary.get(c, {})
            cell = fmt(spec, s.get("median"))
            if s.get("ratio") is not None:
                cell += f" ({s['ratio']:.2f}x)"
            cells.append(f"{cell:>{width}}")
        print(f"{label:<24}" + "".join(cells))


# --------------------------------------------------------------- main


def choose_cores(requested: str | None) -> tuple[int | None, int | None]:
    """(server core, loadgen core); None, None when there are not two."""
    cores = sorted(os.sched_getaffinity(0))
    if requested:
        a, b = (int(x) for x in requested.split(","))
        return a, b
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def git_commit() -> str | None:
    """The checkout's commit (``-dirty`` with local changes), for the docs page
    that renders the results; None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ("" where it is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        return ""


def machine_info(modules: Path | None) -> dict[str, Any]:
    """What ran the benchmark."""
    model = cpu_model()
    node = None
    if shutil.which("node"):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "node": node,
        "reference": reference_versions(modules) if modules else None,
        "reference_path": str(modules) if modules else None,
    }


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (defaults of None come from the profile)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: short items (< 2 min)")
    p.add_argument("--json", type=Path, default=Path("bench-results.json"), metavar="FILE")
    p.add_argument("--rounds", type=int, help="interleaved rounds (3)")
    p.add_argument("--only", choices=("serve", "swarm"), help="run one part only")
    p.add_argument(
        "--serve-targets",
        help=(
            "serve columns, comma-separated (default: "
            + ",".join(SERVE_TARGETS)
            + "; also: "
            + ",".join(EXTRA_SERVE_TARGETS)
            + ")"
        ),
    )
    p.add_argument("--serve-seconds", type=float, help="loadgen window per command (4)")
    p.add_argument("--warmup", type=float, help="loadgen warm-up before the window (0.5)")
    p.add_argument("--inflight", type=int, default=64, help="requests in flight (64)")
    p.add_argument(
        "--swarm-targets",
        help=(
            "swarm columns, comma-separated (default: "
            + ",".join(SWARM_IMPLS)
            + "; also: "
            + ",".join(EXTRA_SWARM_IMPLS)
            + ")"
        ),
    )
    p.add_argument("--sizes", help="swarm sizes, comma-separated (100,1000)")
    p.add_argument("--announces", type=int, help="announces per swarm (50)")
    p.add_argument("--lookups", type=int, help="sequential lookups per swarm (50)")
    p.add_argument(
        "--idle-seconds",
        type=float,
        help="idle-CPU window per swarm round (20; 60 s over 3 rounds)",
    )
    p.add_argument("--swarm-timeout", type=float, default=300.0, help="per swarm run (300 s)")
    p.add_argument("--cores", help="SERVER,LOADGEN cores to pin to (default: the first two)")
    p.add_argument("--seed", type=int, default=1)
    return p


def apply_defaults(args: argparse.Namespace) -> None:
    """Fill what the user left out from the quick or the full profile."""
    quick = {
        "rounds": 3,
        "serve_seconds": 0.5,
        "warmup": 0.2,
        "sizes": "100",
        "announces": 10,
        "lookups": 10,
        "idle_seconds": 1.0,
    }
    full = {
        "rounds": 3,
        "serve_seconds": 4.0,
        "warmup": 0.5,
        "sizes": "100,1000",
        "announces": 50,
        "lookups": 50,
        "idle_seconds": 20.0,
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def main(argv: list[str] | None = None) -> int:
    """Run the suite; 0 when it ran, 1 when it could not, 2 on bad options."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return run(args)
    except SuiteError as exc:
        log.error("suite: %s", exc)
        return 1


def run(args: argparse.Namespace) -> int:
    """The body of :func:`main`."""
    apply_defaults(args)
    if args.rounds < 1 or args.serve_seconds <= 0 or not 1 <= args.inflight <= 4096:
        log.error("--rounds, --serve-seconds and --inflight (1..4096) must be positive")
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s]
    args.server_core, args.loadgen_core = choose_cores(args.cores)
    if args.server_core is None:
        log.warning("fewer than 2 CPUs: server and load generator are NOT pinned")

    modules = reference_node_modules() if shutil.which("node") else None
    if modules is None:
        reason = (
            "node not found"
            if not shutil.which("node")
            else "no reference tree (set HYPERDHT_NODE_MODULES, or run npm ci --prefix reference)"
        )
        if os.environ.get("CI", "").lower() == "true":
            log.error("the Node.js reference is required under CI=true: %s", reason)
            return 1
        log.warning("skipping the reference columns: %s", reason)

    rng = random.Random(args.seed)
    results: dict[str, Any] = {
        "machine": machine_info(modules),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "serve": {},
        "swarm": {},
    }
    started = time.monotonic()
    log.info(
        "suite: %d round(s), cores server=%s loadgen=%s, reference %s",
        args.rounds,
        args.server_core,
        args.loadgen_core,
        modules or "skipped",
    )

    if args.only in (None, "serve"):
        chosen = args.serve_targets.split(",") if args.serve_targets else list(SERVE_TARGETS)
        unknown = [t for t in chosen if t not in SERVE_TARGETS + EXTRA_SERVE_TARGETS]
        if unknown:
            raise SystemExit(f"--serve-targets: unknown {', '.join(unknown)}")
        targets = [t for t in chosen if t != REFERENCE or modules]
        raw: dict[str, list[dict[str, Any] | None]] = {t: [] for t in targets}
        with tempfile.TemporaryDirectory(prefix="hyperdht-bench-") as tmp_name:
            tmp = Path(tmp_name)
            exe = build_loadgen(tmp)
            for r in range(args.rounds):
                round_seed = rng.getrandbits(64)
                for target in targets:
                    try:
                        res: dict[str, Any] | None = serve_round(
                            target, modules, exe, tmp, args, round_seed
                        )
                    except (SuiteError, subprocess.SubprocessError, OSError) as exc:
                        log.warning("serve %s round %d failed: %s", target, r + 1, exc)
                        res = None
                    raw[target].append(res)
                    if res:
                        log.info(
                            "serve round %d/%d %-9s _ping %8.0f/s  _find_node %8.0f/s  table %s",
                            r + 1,
                            args.rounds,
                            target,
                            res["_ping"]["rate"],
                            res["_find_node"]["rate"],
                            res["table"],
                        )
        serve_summary: dict[str, Any] = {}
        for command in COMMANDS:
            serve_summary[command] = {}
            for key, _, _, better in SERVE_METRICS:
                rows = {t: [rr[command][key] if rr else None for rr in raw[t]] for t in targets}
                serve_summary[command][key] = summarize(rows, better is not None)
        results["serve"] = {"rounds": raw, "summary": serve_summary}

    if args.only in (None, "swarm"):
        chosen = args.swarm_targets.split(",") if args.swarm_targets else list(SWARM_IMPLS)
        unknown = [t for t in chosen if t not in SWARM_IMPLS + EXTRA_SWARM_IMPLS]
        if unknown:
            raise SystemExit(f"--swarm-targets: unknown {', '.join(unknown)}")
        impls = [i for i in chosen if i != REFERENCE or modules]
        for size in sizes:
            sraw: dict[str, list[dict[str, Any] | None]] = {i: [] for i in impls}
            for r in range(args.rounds):
                for impl in impls:
                    res = swarm_round(impl, size, modules, args, args.seed + r)
                    sraw[impl].append(res)
                    if res:
                        log.info(
                            "swarm %d nodes round %d/%d %-9s bootstrap %.2f s, lookups %d/%d, "
                            "RSS %.0f MiB, idle CPU %.2f%%",
                            size,
                            r + 1,
                            args.rounds,
                            impl,
                            res["bootstrap_s"],
                            res["lookup_found"],
                            res["lookups"],
                            res["rss_mb"],
                            res["idle_cpu_pct"] or 0,
                        )
            ssum = {}
            for key, _, _, better in SWARM_METRICS:
                rows = {i: [rr.get(key) if rr else None for rr in sraw[i]] for i in impls}
                ssum[key] = summarize(rows, better is not None)
            results["swarm"][str(size)] = {"rounds": sraw, "summary": ssum}

    results["elapsed_s"] = time.monotonic() - started
    results["machine"]["loadavg_end"] = os.getloadavg()
    report(results, args)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json} ({results['elapsed_s']:.0f} s)")
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The tables on stdout."""
    m = results["machine"]
    ref = m["reference"]
    versions = "reference " + json.dumps(ref) if ref else "no reference"
    print(
        f"hyperdht vs the Node.js reference ({versions}"
        f", node {m['node']}, python {m['python']}); {m['cpus']} CPUs, load {m['loadavg'][0]:.2f}"
    )
    print(
        f"{args.rounds} interleaved round(s); cells: median (median per-round ratio to reference)"
    )
    if results["serve"]:
        summary = results["serve"]["summary"]
        columns = list(results["serve"]["rounds"])
        for command in COMMANDS:
            lines = [(label, spec, summary[command][key]) for key, label, spec, _ in SERVE_METRICS]
            print_table(
                f"serve {command}: {args.inflight} in flight for {args.serve_seconds:g} s, "
                f"server on core {args.server_core}, loadgen on core {args.loadgen_core}",
                columns,
                lines,
            )
    for size, data in results["swarm"].items():
        columns = list(data["rounds"])
        lines = [(label, spec, data["summary"][key]) for key, label, spec, _ in SWARM_METRICS]
        print_table(
            f"{size} nodes in one process: {args.announces} announces, {args.lookups} lookups, "
            f"idle window {args.idle_seconds:g} s",
            columns,
            lines,
        )


if __name__ == "__main__":
    sys.exit(main())
