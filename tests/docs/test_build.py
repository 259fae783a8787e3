"""The docs build's checks fail when they should.

Each case builds a tiny Sphinx project that uses the docs' own extensions
(``docs/_ext``) with ``-W -n``, in a subprocess, and expects the failure
(and the success of the control case), so a check that silently stopped
working fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import DOCS, ROOT, has_module, require

CONF = """
import sys
sys.path.insert(0, {ext!r})
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
extensions = ["sphinx.ext.autodoc", "hyperdht_docs", "seqdiagram"]
hyperdht_api_modules = {modules!r}
hyperdht_cli_parsers = {{}}
hyperdht_stats_page = "stats.rst"
hyperdht_package_dir = {package!r}
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(int|str|bytes|None|float)")]
exclude_patterns = ["_build"]
"""

# Every name the real stats page explains, so the control build covers each
# counter and drop reason the source has, whatever gets added later.
STATS_ALL = "".join(
    f"``{name}``\n"
    for name in dict.fromkeys(
        re.findall(r"``([a-z_]+)``", (DOCS / "reference" / "stats.rst").read_text("utf-8"))
    )
)


@pytest.fixture(autouse=True)
def _sphinx() -> None:
    require(has_module("sphinx"), "Sphinx is not installed (pip install .[docs])")


def build(
    tmp_path: Path,
    index: str,
    *,
    modules: list[str] | None = None,
    stats: str | None = None,
    package: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Build a project whose index page is ``index``; return the process."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        CONF.format(
            ext=str(DOCS / "_ext"),
            root=str(ROOT),
            here=str(tmp_path),
            modules=modules or [],
            package=str(package or ROOT / "hyperdht"),
        ),
        encoding="utf-8",
    )
    toc = "\n\n.. toctree::\n\n   stats\n   reference/api/index\n   reference/cli\n"
    (src / "index.rst").write_text(
        "Index\n=====\n\n" + textwrap.dedent(index) + toc, encoding="utf-8"
    )
    (src / "stats.rst").write_text(
        "Stats\n=====\n\n" + (STATS_ALL if stats is None else stats), encoding="utf-8"
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-b",
            "html",
            str(src),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_control_builds(tmp_path: Path) -> None:
    """A correct page, a real reference and one API module build cleanly."""
    proc = build(
        tmp_path, "See :class:`hyperdht.errors.ArgumentError`.\n", modules=["hyperdht.errors"]
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "src" / "reference" / "api" / "hyperdht.errors.rst").is_file()


def test_broken_reference_fails(tmp_path: Path) -> None:
    """A reference to a hyperdht name that does not exist fails the build."""
    proc = build(
        tmp_path, "See :class:`hyperdht.errors.NoSuchError`.\n", modules=["hyperdht.errors"]
    )
    assert proc.returncode != 0
    assert "hyperdht.errors.NoSuchError" in proc.stderr


def test_bad_cross_link_fails(tmp_path: Path) -> None:
    """A link to a page that does not exist fails the build."""
    proc = build(tmp_path, "See :doc:`no-such-page`.\n")
    assert proc.returncode != 0
    assert "no-such-page" in proc.stderr


def test_missing_docstring_fails(tmp_path: Path) -> None:
    """A public function without a docstring fails the build."""
    (tmp_path / "undocumented_mod.py").write_text(
        '"""A module."""\n\n\ndef documented() -> None:\n    """Yes."""\n\n\n'
        "def bare() -> None:\n    pass\n\n\nclass Thing:\n"
        '    """A thing."""\n\n    def method(self) -> None:\n        pass\n',
        encoding="utf-8",
    )
    proc = build(tmp_path, "Text.\n", modules=["undocumented_mod"])
    assert proc.returncode != 0
    assert "public name without a docstring: undocumented_mod.bare" in proc.stderr
    assert "undocumented_mod.Thing.method" in proc.stderr
    assert "undocumented_mod.documented" not in proc.stderr


def test_unexplained_drop_reason_fails(tmp_path: Path) -> None:
    """A drop reason used in the source but not on the stats page fails."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "core.py").write_text('self._drop("brand_new_reason")\n', encoding="utf-8")
    proc = build(tmp_path, "Text.\n", package=package)
    assert proc.returncode != 0
    assert 'drops["brand_new_reason"] is not explained' in proc.stderr


def test_unexplained_counter_fails(tmp_path: Path) -> None:
    """A Stats counter missing from the stats page fails the build."""
    proc = build(tmp_path, "Text.\n", stats=STATS_ALL.replace("``forwarded``", "forwarded"))
    assert proc.returncode != 0
    assert "Stats.forwarded is not explained" in proc.stderr


def test_bad_diagram_fails(tmp_path: Path) -> None:
    """A sequence diagram that does not parse fails the build."""
    proc = build(
        tmp_path,
        """
        .. sequence-diagram::

           participant A
           A -> Nobody : hello
        """,
    )
    assert proc.returncode != 0
    assert "unknown participant 'Nobody'" in proc.stderr


def test_diagram_renders_svg(tmp_path: Path) -> None:
    """A diagram becomes inline SVG in the page (no script, no CDN)."""
    proc = build(
        tmp_path,
        """
        .. sequence-diagram::
           :caption: Two hosts.

           participant A "Host A"
           participant B
           A -> B : ping
           B --> A : pong
           A -x B : lost
           note A,B : both
           divider : later
        """,
    )
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 1 and "Host A" in page and "Two hosts." in page
    assert '<script src="http' not in page
