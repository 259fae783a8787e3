"""The sans-I/O cores stay free of I/O, and the layers import downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hyperdht

ROOT = Path(hyperdht.__file__).parent

CORES = [
    "udprequest/core.py",
    "dhtrpc/core.py",
    "dhtrpc/query.py",
    "dhtrpc/tokens.py",
    "dhtrpc/types.py",
    "discovery/core.py",
    "discovery/store.py",
]
#: Modules a core never imports: sockets, threads, clocks, drivers.
IO = {"threading", "time", "selectors", "gevent", "asyncio"}


def imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports at run time (imports
    under ``if TYPE_CHECKING:`` are left out)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("hyperdht", *path.relative_to(ROOT).parent.parts))
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")
                if child.level:
                    base = base[: len(base) - child.level + 1]
                    name = ".".join([*base, child.module] if child.module else base)
                else:
                    name = child.module or ""
                out.add(name)
                out.update(f"{name}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return out


@pytest.mark.parametrize("module", CORES)
def test_cores_do_no_io(module: str) -> None:
    names = imports(ROOT / module)
    assert not {n for n in names if n.split(".")[0] in IO}
    assert not {n for n in names if n.startswith("hyperdht.drivers")}


def test_query_does_not_import_the_core() -> None:
    assert not {
        n for n in imports(ROOT / "dhtrpc/query.py") if n.startswith("hyperdht.dhtrpc.core")
    }


def test_lower_layers_do_not_import_higher_ones() -> None:
    order = ["udprequest", "dhtrpc", "discovery"]
    for i, layer in enumerate(order):
        above = order[i + 1 :]
        for path in (ROOT / layer).glob("*.py"):
            names = imports(path)
            for higher in above:
                assert not {n for n in names if n.startswith(f"hyperdht.{higher}")}, path
