"""A ``benchmark-results`` directive: the benchmark suite's JSON as tables.

``python benchmarks/suite.py --json benchmarks/results/suite.json`` writes
every figure of a run; the benchmarks page renders it with::

    .. benchmark-results:: benchmarks/results/suite.json

(the path is relative to the repository root). The page then shows the
machine, the date, the commit and load of the run, the command that
reproduces it, and one table per part of the suite (``serve _ping``,
``serve _find_node``, each swarm size): a row per metric, a column per
implementation, each cell ``median (ratio x)`` exactly as the suite prints
it. Row labels and number formats are the suite's own
(``SERVE_METRICS`` / ``SWARM_METRICS`` in ``benchmarks/suite.py``), so the
page and the suite's stdout cannot disagree. A ``--quick`` run is flagged
on the page as a smoke run whose figures mean nothing. Committing a fresh
JSON is all it takes to update the page; a missing or malformed file fails
the build.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suite.py"

#: Suite settings that are not options of its command line.
_DERIVED = {"server_core", "loadgen_core"}


class ResultsError(ValueError):
    """A results file that cannot be rendered."""


def load_suite() -> ModuleType:
    """``benchmarks/suite.py`` as a module (for its metric lists and defaults)."""
    spec = importlib.util.spec_from_file_location("_hyperdht_bench_suite", SUITE)
    if spec is None or spec.loader is None:
        raise ResultsError(f"cannot load {SUITE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command_for(settings: dict[str, Any], json_path: str, suite: ModuleType) -> str:
    """The ``suite.py`` command line that reproduces ``settings``: the options
    that differ from a plain ``--quick`` or full run's defaults."""
    args = ["python", "benchmarks/suite.py"]
    quick = bool(settings.get("quick"))
    if quick:
        args.append("--quick")
    parsed = suite.build_parser().parse_args(["--quick"] if quick else [])
    suite.apply_defaults(parsed)
    defaults = vars(parsed)
    for key, value in settings.items():
        if key in _DERIVED or key in ("quick", "json") or value == defaults.get(key):
            continue
        if value is None:
            continue
        args += [f"--{key.replace('_', '-')}", str(value)]
    args += ["--json", json_path]
    return shlex.join(args)


def cell(spec: str, summary: dict[str, Any] | None) -> str:
    """``median (ratio x)`` as the suite prints it, ``-`` for no value."""
    if not summary or summary.get("median") is None:
        return "-"
    text: str = spec.format(summary["median"])
    if summary.get("ratio") is not None:
        text += f" ({summary['ratio']:.2f}x)"
    return text


def table(
    title: str, columns: list[str], metrics: list[tuple[str, str, str, Any]], data: dict[str, Any]
) -> nodes.table:
    """One docutils table: a row per metric, a column per implementation."""
    tbl = nodes.table(classes=["benchmark-results"])
    tbl += nodes.title(text=title)
    group = nodes.tgroup(cols=len(columns) + 1)
    tbl += group
    for _ in range(len(columns) + 1):
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    head += _row(["", *columns])
    body = nodes.tbody()
    group += body
    for key, label, spec, _better in metrics:
        if key not in data:
            continue
        body += _row([label, *(cell(spec, data[key].get(c)) for c in columns)])
    return tbl


def _row(texts: list[str]) -> nodes.row:
    row = nodes.row()
    for text in texts:
        entry = nodes.entry()
        entry += nodes.paragraph(text=text)
        row += entry
    return row


def render(results: dict[str, Any], json_path: str, suite: ModuleType) -> list[nodes.Node]:
    """The nodes for one results file (see the module docstring)."""
    try:
        machine, settings = results["machine"], results["settings"]
    except (KeyError, TypeError) as exc:
        raise ResultsError(f"{json_path}: no machine/settings ({exc})") from exc
    out: list[nodes.Node] = []
    if settings.get("quick"):
        warn = nodes.warning()
        para = nodes.paragraph()
        para += nodes.Text("These figures come from a ")
        para += nodes.literal(text="--quick")
        para += nodes.Text(
            " run: a smoke run of a few seconds per item, made to check that the suite "
            "works. They are not measurements; a full run replaces them."
        )
        warn += para
        out.append(warn)
    ref = machine.get("reference") or {}
    versions = ", ".join(f"{k}@{v}" for k, v in ref.items()) or "not run (no reference tree)"
    load = machine.get("loadavg") or [None]
    load_end = machine.get("loadavg_end") or [None]
    facts = [
        ("date", machine.get("date", "?")),
        ("commit", machine.get("commit") or "not recorded in the results file"),
        ("machine", f"{machine.get('cpus', '?')} CPUs, {machine.get('cpu_model') or '?'}"),
        ("load average (1 min)", f"{_num(load[0])} at the start, {_num(load_end[0])} at the end"),
        ("Python / Node.js", f"{machine.get('python', '?')} / {machine.get('node') or '-'}"),
        ("reference", versions),
        ("rounds", str(settings.get("rounds", "?"))),
        ("wall time", f"{_num(results.get('elapsed_s'))} s"),
    ]
    fields = nodes.field_list()
    for name, value in facts:
        field = nodes.field()
        field += nodes.field_name(text=name)
        body = nodes.field_body()
        body += nodes.paragraph(text=value)
        field += body
        fields += field
    out.append(fields)
    para = nodes.paragraph(text="Reproduce (from the repository root):")
    out.append(para)
    cmd = command_for(settings, json_path, suite)
    out.append(nodes.literal_block(cmd, cmd, language="sh"))

    serve = results.get("serve") or {}
    for command in suite.COMMANDS:
        if command not in serve.get("summary", {}):
            continue
        out.append(
            table(
                f"serve {command}: {settings.get('inflight')} requests in flight, "
                f"{_num(settings.get('serve_seconds'))} s window",
                list(serve["rounds"]),
                suite.SERVE_METRICS,
                serve["summary"][command],
            )
        )
    for size, data in (results.get("swarm") or {}).items():
        out.append(
            table(
                f"{size} nodes in one process: {settings.get('announces')} announces, "
                f"{settings.get('lookups')} lookups, idle window "
                f"{_num(settings.get('idle_seconds'))} s",
                list(data["rounds"]),
                suite.SWARM_METRICS,
                data["summary"],
            )
        )
    return out


def _num(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.2f}" if isinstance(value, float) and value < 100 else f"{value:.0f}"
    return "?"


class BenchmarkResults(Directive):
    """``.. benchmark-results:: PATH``: render a ``suite.py`` JSON file."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        """Read the file (a dependency of the page) and render it."""
        rel = self.arguments[0]
        path = ROOT / rel
        env = self.state.document.settings.env
        env.note_dependency(str(path))
        env.note_dependency(str(SUITE))
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            return render(results, rel, load_suite())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise self.error(f"benchmark-results: {rel}: {exc}") from exc


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("benchmark-results", BenchmarkResults)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
