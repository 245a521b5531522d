"""Import cycles among the repository's modules (used by tests/test_layering.py), over the imports that
tests/layering.py reads with `ast` (nothing is imported).

Cycle rule (`import_cycles`): no cycle among module-level imports, i.e. those executed when the module is
first imported: the module body, including top-level `if` / `try` / `with` blocks and class bodies, but not
function bodies and not `if TYPE_CHECKING:` blocks (never executed). Edges:
  * `import a.b.c` / `from a.b import c` give one edge to the resolved module (`a.b.c`). The `__init__`s of
    the parent packages `a` and `a.b` also run, but those edges are NOT counted: counting them would report
    every `from .x import y` inside a package whose `__init__` imports x, which Python handles fine
    (the package is already in sys.modules, partially initialised, and the submodule does not read it).
  * An edge from a submodule to its OWN package IS counted when it takes names from the package's
    `__init__` (`from . import name`, `from na_deploy.ir import Node` inside na_deploy/ir/): that reads the
    half-initialised `__init__` and is a real cycle when the `__init__` imports the submodule.

`import_cycles(sources, lazy=True)` builds the graph from every import instead, lazy ones included: the
"hidden circles" of issue 8 (ir <-> ir_h5, loihi2.target -> lava_backend -> loihi2 TARGET) went through
imports inside functions, so they show only there.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from layering import Import, all_imports, module_name


def import_graph(sources: Mapping[str, str], lazy: bool = False) -> dict[str, dict[str, Import]]:
    """{module: {imported module: the first statement making that edge}} over our modules: import-time
    statements only, or with `lazy` also those inside functions and under TYPE_CHECKING."""
    found, _ = all_imports(sources)
    known = {module_name(p) for p in sources}
    graph: dict[str, dict[str, Import]] = {m: {} for m in sorted(known)}
    for imp in found:
        if (imp.at_import or lazy) and imp.target in known:
            graph[imp.module].setdefault(imp.target, imp)
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, components in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycle_through(start: str, members: set[str], graph: Mapping[str, Iterable[str]]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component (BFS)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{start} is in no cycle")  # not reached for a real component


def import_cycles(sources: Mapping[str, str], lazy: bool = False) -> list[str]:
    """One message per import cycle (strongly connected component of the module-level import graph, or with
    `lazy` of the graph of all imports), showing one concrete cycle with the statement behind each edge."""
    graph = import_graph(sources, lazy)
    messages = []
    for component in strongly_connected(graph):
        start = component[0]
        if len(component) == 1 and start not in graph[start]:
            continue
        cycle = _cycle_through(start, set(component), graph)
        edges = "; ".join(graph[a][b].where() for a, b in zip(cycle, cycle[1:]))
        others = f" (component of {len(component)} modules: {', '.join(component)})" \
            if len(component) > len(cycle) - 1 else ""
        messages.append(f"import cycle {' -> '.join(cycle)}{others}: {edges}")
    return messages
