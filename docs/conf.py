"""Sphinx configuration of the hyperdht documentation.

Build: ``tox -e docs``, or ``sphinx-build -W --keep-going -n -b html docs
docs/_build/html`` from the repository root. Warnings are errors: a broken
reference, a public name without a docstring or an unexplained stats
counter fails the build. Nothing loads from the network, at build time or
in the built site (the theme, its search and the diagrams are all local).
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(ROOT))

import hyperdht  # noqa: E402

project = "hyperdht"
author = "the hyperdht authors"
copyright = "the hyperdht authors, MIT License"
release = version = hyperdht.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinxarg.ext",
    "myst_parser",
    "hyperdht_docs",
    "seqdiagram",
    "benchresults",
]

# -- the one list of documented modules (re-point it after a move) ----------
#
# Each name gets a generated page under reference/api/. A module that is
# renamed or split is edited here and nowhere else.
hyperdht_api_modules = [
    "hyperdht",
    "hyperdht.errors",
    "hyperdht.ipencoding",
    "hyperdht.addressing",
    "hyperdht.datagram",
    "hyperdht.kbucket",
    "hyperdht.messages",
    "hyperdht.arguments",
    "hyperdht.udprequest",
    "hyperdht.udprequest.core",
    "hyperdht.udprequest.socket",
    "hyperdht.dhtrpc",
    "hyperdht.dhtrpc.core",
    "hyperdht.dhtrpc.query",
    "hyperdht.dhtrpc.reachability",
    "hyperdht.dhtrpc.stream",
    "hyperdht.dhtrpc.limits",
    "hyperdht.dhtrpc.tokens",
    "hyperdht.dhtrpc.types",
    "hyperdht.dhtrpc.node",
    "hyperdht.discovery",
    "hyperdht.discovery.core",
    "hyperdht.discovery.store",
    "hyperdht.discovery.node",
    "hyperdht.future",
    "hyperdht.drivers",
    "hyperdht.drivers.base",
    "hyperdht.drivers.socket",
    "hyperdht.drivers.thread",
    "hyperdht.drivers.hub",
    "hyperdht.drivers.gevent",
    "hyperdht.drivers.gevent_hub",
    "hyperdht.drivers.asyncio",
    "hyperdht.aio",
    "hyperdht.aio.node",
    "hyperdht.aio.discovery",
    "hyperdht.aio.stream",
    "hyperdht.aio.simulation",
    "hyperdht.testing",
    "hyperdht.testing.network",
    "hyperdht.testing.nat",
    "hyperdht.testing.host",
    "hyperdht.testing.driver",
    "hyperdht.testing.natsocket",
    "hyperdht.testing.faults",
    "hyperdht.cli",
    "hyperdht.cli.node",
    "hyperdht.cli.swarm",
    "hyperdht.cli.demo",
    "hyperdht.cli.options",
    "hyperdht.cli.runtime",
    "hyperdht.cli.output",
    "hyperdht.cli.errors",
]

# The commands: program name -> "module:function" returning its ArgumentParser.
hyperdht_cli_parsers = {
    "hyperdht": "hyperdht.cli.node:build_parser",
    "hyperdht-swarm": "hyperdht.cli.swarm:build_parser",
}
hyperdht_stats_page = "reference/stats.rst"
hyperdht_package_dir = str(ROOT / "hyperdht")

# -- sources ----------------------------------------------------------------

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "PROTOCOL-NOTES.md", "**/README.md"]
root_doc = "index"

# -- autodoc -------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = True
# No napoleon: the docstrings are reST prose, and napoleon reads an
# attribute docstring such as "Idle seconds after which ...: None" as a type.

# -- cross-references: every reference to a hyperdht name must resolve ---------
#
# There is no intersphinx (no network), so references to the standard library,
# builtins and third-party packages cannot resolve; those are the only ones
# ignored. Anything else that does not resolve (a hyperdht name, a typo) fails.
nitpicky = True
_OUTSIDE = sorted(
    set(sys.stdlib_module_names) | {"gevent", "google", "greenlet", "yaml", "typing_extensions"}
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_OUTSIDE)})(\..*)?"),
    (r"py:.*", rf"({'|'.join(n for n in dir(builtins) if not n.startswith('_'))})"),
    # Type variables and typing shorthands as autodoc renders them.
    (r"py:.*", r"(T|K|V|R|P|_T|Self|Any|Callable|Iterator|Iterable|Sequence|Mapping|Counter)"),
    (r"py:.*", r"(NoneType|None|Ellipsis|\.\.\.)"),
]

# -- HTML ----------------------------------------------------------------------

html_theme = "furo"
html_title = f"hyperdht {release}"
html_static_path = ["_static"]
html_css_files = ["hyperdht.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
