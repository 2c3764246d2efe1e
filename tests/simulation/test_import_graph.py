"""The simulation package's modules import each other without a cycle, at module level only
(issue 14: entangled and runner used to import each other inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import qdnet.simulation

PACKAGE = Path(qdnet.simulation.__file__).resolve().parent


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(qdnet.simulation module imported, whether at module level) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qdnet.simulation."):
            found.append((str(node.module).rsplit(".", 1)[1], id(node) in top))
    return found


def test_no_import_cycle_and_no_deferred_imports_inside_the_package() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        edges = imports_of(path)
        deferred = [name for name, at_top in edges if not at_top]
        assert not deferred, f"{path.name} imports {deferred} inside a function or block"
        graph[path.stem] = {name for name, _ in edges}
    done: set[str] = set()

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, (*stack, node))
        done.add(node)

    for module in sorted(graph):
        visit(module, ())
