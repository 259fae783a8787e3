"""Print hyperdht's import graph: who imports whom, and any cycles.

    python scripts/import_graph.py            # package level (hyperdht.X -> hyperdht.Y)
    python scripts/import_graph.py --modules  # module level
    python scripts/import_graph.py --dot > deps.dot

Imports under ``if TYPE_CHECKING:`` are left out (they are not run), as in
the import-linter contracts in ``.importlinter``, which the lint env checks.
Exits 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp


def _collapse(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def edges(graph: grimp.ImportGraph, depth: int | None) -> set[tuple[str, str]]:
    """(importer, imported) pairs inside hyperdht, collapsed to ``depth``
    dotted parts (None: full module names)."""
    out = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith("hyperdht"):
                continue
            a, b = module, imported
            if depth is not None:
                a, b = _collapse(a, depth), _collapse(b, depth)
            if a != b:
                out.add((a, b))
    return out


def cycles(pairs: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    succ: dict[str, list[str]] = {}
    for a, b in pairs:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="module level, not package level")
    parser.add_argument("--dot", action="store_true", help="Graphviz output")
    parser.add_argument(
        "--with-type-checking",
        action="store_true",
        help="count imports under `if TYPE_CHECKING:` too",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    graph = grimp.build_graph(
        "hyperdht", exclude_type_checking_imports=not args.with_type_checking, cache_dir=None
    )
    pairs = edges(graph, None if args.modules else 2)
    found = cycles(edges(graph, None)) + cycles(edges(graph, 2))
    if args.dot:
        print("digraph hyperdht {")
        for a, b in sorted(pairs):
            print(f'  "{a}" -> "{b}";')
        print("}")
    else:
        importers: dict[str, list[str]] = {}
        for a, b in sorted(pairs):
            importers.setdefault(a, []).append(b)
        for a in sorted(importers):
            print(f"{a} -> {', '.join(importers[a])}")
        if found:
            print()
    for comp in found:
        print("cycle: " + " <-> ".join(comp), file=sys.stderr if args.dot else sys.stdout)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
