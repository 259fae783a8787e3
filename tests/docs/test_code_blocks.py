"""Every Python code block of the docs and the README runs (see
:mod:`codeblocks` for the marker that exempts one, with a reason).

Each file's blocks run in a fresh interpreter, in order, in one namespace,
with a generous timeout; the examples use the simulator or loopback only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .codeblocks import Block, blocks_of, md_blocks, rst_blocks, script_for
from .conftest import DOCS, ROOT

TIMEOUT = 120.0


def doc_files() -> list[Path]:
    """Every page of the docs (reST and MyST Markdown), and the README."""
    pages = sorted(
        p for pattern in ("*.rst", "*.md") for p in DOCS.rglob(pattern) if "_build" not in p.parts
    )
    return [*pages, ROOT / "README.md"]


def file_blocks(path: Path) -> list[Block]:
    """The blocks of one file."""
    return blocks_of(path)


def run_blocks(blocks: list[Block], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the runnable blocks in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", script_for(blocks)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


FILES = [p for p in doc_files() if any(b.skip_reason is None for b in file_blocks(p))]


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_code_blocks_run(path: Path, tmp_path: Path) -> None:
    """The runnable blocks of one file run without an error."""
    proc = run_blocks(file_blocks(path), tmp_path)
    assert proc.returncode == 0, f"{path.relative_to(ROOT)}:\n{proc.stderr}"


def test_docs_have_runnable_examples() -> None:
    """The runner finds the examples (a parser that finds none proves nothing)."""
    names = {p.relative_to(DOCS).as_posix() for p in FILES if p.parent != ROOT}
    assert {"tutorial.rst", "reference/stats.rst", "overview.md"} <= names
    assert len([b for b in file_blocks(DOCS / "tutorial.rst") if b.skip_reason is None]) >= 3


def test_every_exemption_has_a_reason() -> None:
    """A not-runnable marker must say why."""
    for path in doc_files():
        for block in file_blocks(path):
            assert block.skip_reason != "", f"{path}:{block.line}: not-runnable without a reason"


def test_runner_reports_a_failing_block(tmp_path: Path) -> None:
    """A failing block fails the run, and the traceback names its line."""
    page = tmp_path / "page.rst"
    page.write_text(
        "Title\n=====\n\n.. code-block:: python\n\n   x = 1\n\n"
        ".. not-runnable: shows a fragment\n\n.. code-block:: python\n\n   undefined_name\n\n"
        ".. code-block:: python\n   :caption: options are skipped\n\n   assert x == 2\n",
        encoding="utf-8",
    )
    blocks = rst_blocks(page)
    assert [b.line for b in blocks] == [6, 12, 17]
    assert [b.skip_reason for b in blocks] == [None, "shows a fragment", None]
    proc = run_blocks(blocks, tmp_path)
    assert proc.returncode != 0
    assert f'File "{page}", line 17' in proc.stderr
    assert "undefined_name" not in proc.stderr  # the marked block did not run


def test_markdown_blocks_and_markers(tmp_path: Path) -> None:
    """Fences tagged python are found; the HTML-comment marker exempts one."""
    page = tmp_path / "README.md"
    page.write_text(
        "# T\n\n```python\ny = 3\n```\n\n<!-- not-runnable: needs the Internet -->\n"
        "```python\nimport nowhere\n```\n\n```sh\nexit 1\n```\n\n```python\nassert y == 3\n```\n",
        encoding="utf-8",
    )
    blocks = md_blocks(page)
    assert [(b.line, b.skip_reason) for b in blocks] == [
        (4, None),
        (9, "needs the Internet"),
        (17, None),
    ]
    assert run_blocks(blocks, tmp_path).returncode == 0
