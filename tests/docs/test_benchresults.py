"""The benchmarks page's ``benchmark-results`` directive
(``docs/_ext/benchresults.py``): it renders the committed results file,
flags a ``--quick`` run, and fails on a file it cannot read."""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import pytest

from .conftest import DOCS, ROOT, has_module, require

RESULTS = ROOT / "benchmarks" / "results" / "suite.json"


@pytest.fixture(scope="module")
def ext() -> Any:
    """The extension module (needs docutils, from Sphinx)."""
    require(has_module("sphinx"), "Sphinx is not installed (pip install .[docs])")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import benchresults
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return benchresults


def text_of(nodes_: list[Any]) -> str:
    """All the text of the rendered nodes."""
    return "\n".join(n.astext() for n in nodes_)


def test_the_committed_results_render(ext: Any) -> None:
    """The page's file renders: machine facts, the command, every table."""
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    out = text_of(ext.render(results, "benchmarks/results/suite.json", ext.load_suite()))
    assert results["machine"]["date"] in out
    assert "python benchmarks/suite.py" in out and "--json benchmarks/results/suite.json" in out
    for command in results["serve"]["summary"]:
        assert f"serve {command}" in out
    for size in results["swarm"]:
        assert f"{size} nodes in one process" in out
    assert ("--quick" in out.split("Reproduce")[0]) == bool(results["settings"]["quick"])


def test_a_full_run_has_no_warning_and_its_command(ext: Any) -> None:
    """Without --quick: no smoke-run warning, the full command, and a cell
    formatted as the suite prints it (median and ratio)."""
    results = copy.deepcopy(json.loads(RESULTS.read_text(encoding="utf-8")))
    suite = ext.load_suite()
    full = suite.build_parser().parse_args([])
    suite.apply_defaults(full)
    results["settings"] = {k: v for k, v in vars(full).items() if k != "json"} | {"rounds": 5}
    summary = results["serve"]["summary"]["_ping"]["rate"]
    summary["thread"] = {"median": 12345.6, "ratio": 1.5}
    rendered = ext.render(results, "r.json", suite)
    out = text_of(rendered)
    assert "smoke run" not in out
    assert "python benchmarks/suite.py --rounds 5 --json r.json" in out
    assert "12,346 (1.50x)" in out


def test_a_broken_file_is_an_error(ext: Any) -> None:
    """No machine/settings: a ResultsError, which the directive turns into
    a build error."""
    with pytest.raises(ext.ResultsError):
        ext.render({"serve": {}}, "bad.json", ext.load_suite())
