"""What the docs tests need, and when a missing tool skips or fails.

The code-block runner needs nothing beyond the library. The build and site
tests need Sphinx (``pip install .[docs]``), and the site test also
Debian's ``chromium`` and ``chromium-driver``. When those are missing the
tests skip, saying why; under ``tox -e docs`` (which sets
``HYPERDHT_DOCS=1``) with ``CI=true`` they fail instead. The other tox envs
do not install the docs tools, so there these tests skip even in CI: the
docs env is where they run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DOCS_ENV = os.environ.get("HYPERDHT_DOCS") == "1"
CHROMIUM = os.environ.get("HYPERDHT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HYPERDHT_CHROMEDRIVER", "/usr/bin/chromedriver")


def require(condition: bool, reason: str) -> None:
    """Skip when a docs tool is missing; fail if the docs env under CI=true
    is missing it (see the module docstring)."""
    if condition:
        return
    if IN_CI and DOCS_ENV:
        pytest.fail(f"CI=true and HYPERDHT_DOCS=1 but {reason}")
    where = "" if DOCS_ENV else " (`tox -e docs` runs this test)"
    pytest.skip(reason + where)


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


def chromium_missing() -> str | None:
    """Why the headless-browser test cannot run here, or None."""
    if not has_module("selenium"):
        return "selenium is not installed (pip install .[docs])"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{path} is missing (apt-get install {package})"
    return None


def build_site(out: Path) -> None:
    """Build the site into ``out`` with warnings as errors (incremental)."""
    from sphinx.cmd.build import build_main

    args = ["-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(out)]
    status = build_main(args)
    assert status == 0, f"sphinx-build {' '.join(args)} failed with {status}"


@pytest.fixture(scope="session")
def built_site() -> Path:
    """The built HTML site: ``HYPERDHT_DOCS_SITE`` if set (tox builds it
    first), else built here into ``docs/_build/html``."""
    require(has_module("sphinx"), "Sphinx is not installed (pip install .[docs])")
    given = os.environ.get("HYPERDHT_DOCS_SITE")
    site = Path(given) if given else DOCS / "_build" / "html"
    if not given:
        build_site(site)
    assert (site / "index.html").is_file(), f"no built site in {site}"
    return site


def chromium_available() -> None:
    """Skip or fail (see :func:`require`) unless the browser can run."""
    reason = chromium_missing()
    require(reason is None, reason or "")
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()
