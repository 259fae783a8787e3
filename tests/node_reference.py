"""Where the Node.js reference tree is: the one lookup every Python test uses.

``$HYPERDHT_NODE_MODULES`` if set (a ``node_modules`` directory: the one that
``npm ci --prefix DIR`` makes is ``DIR/node_modules``), else
``reference/node_modules`` at the repository root, which ``npm ci --prefix
reference`` installs from ``reference/package-lock.json`` (hyperdht@1.3.0,
dht-rpc@2.3.0, udp-request@1.4.0, protocol-buffers@3.2.1 and their locked
dependencies). ``reference/lookup.js`` applies the same rule in the Node.js
scripts; :func:`node_environ` hands them the directory resolved here, so a
relative ``$HYPERDHT_NODE_MODULES`` means the same on both sides whatever the
child's working directory.

Importable as ``node_reference`` from any test: pytest puts ``tests/`` on
``sys.path`` for ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

#: The environment variable that overrides the tree's location.
ENV_VAR = "HYPERDHT_NODE_MODULES"

#: The repository root.
ROOT = Path(__file__).resolve().parent.parent

#: The tree's location when ``$HYPERDHT_NODE_MODULES`` is not set.
DEFAULT_NODE_MODULES = ROOT / "reference" / "node_modules"

#: What a skip or failure tells the reader to run.
INSTALL_HINT = "run npm ci --prefix reference"


def node_modules_dir() -> Path:
    """The reference ``node_modules`` directory (it may not exist)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).resolve() if env else DEFAULT_NODE_MODULES


def install_hint() -> str:
    """How to get the tree where :func:`node_modules_dir` looks for it."""
    env = os.environ.get(ENV_VAR)
    if env:
        return f"{INSTALL_HINT}, or fix {ENV_VAR}={env}"
    return INSTALL_HINT


def node_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus the resolved tree for a ``node`` child.

    Sets ``HYPERDHT_NODE_MODULES`` (read by ``reference/lookup.js``) and
    ``NODE_PATH`` (for bare ``require()`` in inline scripts) to the absolute
    directory.
    """
    env = dict(os.environ if base is None else base)
    tree = str(node_modules_dir())
    env[ENV_VAR] = tree
    env["NODE_PATH"] = tree
    return env


def missing_packages(pinned: Mapping[str, str]) -> str | None:
    """None if every ``name: version`` of ``pinned`` is installed in the tree.

    Otherwise the reason, which starts with :func:`install_hint`. (This reads
    the top-level ``package.json`` files only; ``tests/interop/versions.js``
    asks Node.js what hyperdht really loads.)
    """
    tree = node_modules_dir()
    for name, want in pinned.items():
        pkg = tree / name / "package.json"
        if not pkg.is_file():
            return f"{install_hint()} ({name} is not installed in {tree})"
        try:
            have = json.loads(pkg.read_text(encoding="utf-8")).get("version")
        except (OSError, ValueError) as exc:
            return f"{install_hint()} ({pkg}: {exc})"
        if have != want:
            return f"{install_hint()} ({name}@{have} installed in {tree}, need {want})"
    return None
