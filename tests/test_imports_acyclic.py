"""No import cycle among the capabilities' services and rules.

The graph is the one import-linter reads (grimp), cut down to the modules named
``perkflow.<capability>.service`` or ``perkflow.<capability>.rules`` and their submodules,
with the imports between them. A cycle in it fails the test and is named module by module.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping

import grimp

PART = re.compile(r"^perkflow\.[a-z_]+\.(service|rules)(\.|$)")


def service_rules_imports(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Each service or rules module and the service or rules modules it imports directly."""
    nodes = {m for m in graph.modules if PART.match(m)}
    return {m: graph.find_modules_directly_imported_by(m) & nodes for m in nodes}


def _components(edges: Mapping[str, set[str]]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(component)
    return found


def _cycle_through(start: str, component: set[str], edges: Mapping[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside its component."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges.get(node, ())):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child in component and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in no cycle")


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per tangle of modules importing each other, as a path ending where it began."""
    return [_cycle_through(min(c), c, edges) for c in _components(edges)]


def test_services_and_rules_import_no_cycle() -> None:
    edges = service_rules_imports(grimp.build_graph("perkflow"))
    assert edges, "no service or rules module found"
    found = cycles(edges)
    assert not found, "import cycles among services and rules:\n" + "\n".join(
        " -> ".join(cycle) for cycle in found
    )


def test_a_planted_cycle_is_named() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [
        ("perkflow.a.service", "perkflow.b.service.parts"),
        ("perkflow.b.service.parts", "perkflow.c.rules"),
        ("perkflow.c.rules", "perkflow.a.service"),
        ("perkflow.a.service", "perkflow.a.repository"),
        ("perkflow.a.repository", "perkflow.a.service"),  # outside services and rules
        ("perkflow.d.service", "perkflow.c.rules"),
    ]:
        graph.add_import(importer=importer, imported=imported)
    assert cycles(service_rules_imports(graph)) == [
        ["perkflow.a.service", "perkflow.b.service.parts", "perkflow.c.rules", "perkflow.a.service"]
    ]


def test_a_module_importing_itself_is_a_cycle() -> None:
    assert cycles({"perkflow.a.rules": {"perkflow.a.rules"}}) == [
        ["perkflow.a.rules", "perkflow.a.rules"]
    ]


def test_a_tree_has_no_cycle() -> None:
    edges = {
        "perkflow.a.service": {"perkflow.b.service", "perkflow.a.rules"},
        "perkflow.b.service": {"perkflow.a.rules"},
        "perkflow.a.rules": set(),
    }
    assert cycles(edges) == []
