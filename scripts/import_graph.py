#!/usr/bin/env python3
"""The import graph of bids_harmonize between its subpackages, held to a declared layer order.

Every ``import`` of the package, module-level or inside a function (a lazy import is still a
dependency), is read with ``ast`` (nothing is imported) and mapped to the unit it lives in: a
subpackage (``bids``, ``workflows``, ...) or a top-level module (``config``, ``utils``, ...).
A unit may import units of its own layer or of a lower one; an import of a higher layer is an
*upward* edge. Units of one layer may import each other, but no set of units may import each
other round in a circle.

    python scripts/import_graph.py            # the graph, upward edges and cycles; exit 1 on either
    python scripts/import_graph.py --dot      # the same graph for Graphviz

Exit status: 0 when the graph points one way, 1 on an upward edge or a cycle, 2 on a unit that
is in no layer (add it to LAYERS).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "bids_harmonize"
ROOT = Path(__file__).resolve().parent.parent

# Lowest first. "__init__" is the package's own __init__.py (version, code URL).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "utils", "console", "config", "runtime"),
    ("templates", "bids", "model", "preproc", "qc", "sites", "simulate"),
    ("interfaces",),
    ("workflows",),
    ("reports",),
    ("levels",),
    ("cli",),
    ("demo",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

Edges = dict[tuple[str, str], list[str]]  # (from unit, to unit) -> "module:line" of each import


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def unit_of(module: str, package_dir: Path) -> str:
    """The unit of a dotted module of the package: its first component below the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(module)
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(tree: ast.AST, module: str, is_package: bool, package_dir: Path) -> list[tuple[str, int]]:
    """Every module of the package that `module` imports, with the line of the import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            if source == PACKAGE:  # `from bids_harmonize import sites` names a subpackage or module
                for alias in node.names:
                    candidate = package_dir / alias.name
                    is_unit = candidate.is_dir() or candidate.with_suffix(".py").is_file()
                    found.append((f"{PACKAGE}.{alias.name}" if is_unit else PACKAGE, node.lineno))
            else:
                found.append((source, node.lineno))
    return found


def import_edges(package_dir: Path) -> tuple[Edges, set[str]]:
    edges: Edges = defaultdict(list)
    units: set[str] = set()
    for path in sorted(package_dir.rglob("*.py")):
        module = module_name(path, package_dir)
        unit = unit_of(module, package_dir)
        units.add(unit)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in imported_modules(tree, module, path.name == "__init__.py", package_dir):
            other = unit_of(target, package_dir)
            if other != unit:
                edges[(unit, other)].append(f"{module}:{line}")
    return dict(edges), units


def cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {b for _, b in edges}):
        if node not in index:
            visit(node)
    return sorted(found)


def report(edges: Edges, units: set[str]) -> int:
    unknown = sorted(u for u in units | {b for _, b in edges} if u not in RANK)
    upward = {(a, b): where for (a, b), where in edges.items() if a in RANK and b in RANK and RANK[b] > RANK[a]}
    circles = cycles(edges)
    print("layers (lowest first): " + " < ".join("/".join(layer) for layer in LAYERS))
    print(f"\nimports between units ({len(edges)} edges):")
    for unit in sorted(units, key=lambda u: (RANK.get(u, -1), u)):
        targets = sorted((b for a, b in edges if a == unit), key=lambda u: (RANK.get(u, -1), u))
        print(f"  {unit:<11} -> {', '.join(targets) if targets else '-'}")
    print(f"\nupward imports: {len(upward)}")
    for (a, b), where in sorted(upward.items()):
        print(f"  {a} -> {b}: {', '.join(where)}")
    print(f"cycles: {len(circles)}")
    for circle in circles:
        inside = [f"{a}->{b}" for (a, b) in sorted(edges) if a in circle and b in circle]
        print(f"  {{{', '.join(circle)}}}: {', '.join(inside)}")
    if unknown:
        print(f"units in no layer: {', '.join(unknown)} (declare them in LAYERS)")
        return 2
    return 1 if upward or circles else 0


def dot(edges: Edges) -> str:
    lines = ["digraph imports {", "  rankdir=BT;"]
    lines += [f'  "{a}" -> "{b}";' for a, b in sorted(edges)]
    return "\n".join([*lines, "}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package-dir", type=Path, default=ROOT / PACKAGE)
    parser.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of the report")
    args = parser.parse_args(argv)
    edges, units = import_edges(args.package_dir)
    if args.dot:
        print(dot(edges))
        return 0
    return report(edges, units)


if __name__ == "__main__":
    sys.exit(main())
