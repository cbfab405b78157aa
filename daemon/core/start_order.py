"""startAfter: which domains start after which, and the config errors it can have. PURE.

`"startAfter": ["db"]` on web: web is started only while db runs (at boot, after a
crash, whenever nvirtd would start it), and when both are removed web is stopped
before db. The rules checked across files (a domain may name one declared elsewhere):
a name no file declares, a domain naming itself, and cycles, each reported on the
domain that names, with the whole cycle spelled out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping


def order_problems(start_after: Mapping[str, tuple[str, Iterable[str]]],
                   also_declared: Collection[str] = ()) -> list[tuple[str, str, str]]:
    """(file, domain, message) for each broken rule; `start_after`: domain -> (its file, the names);
    `also_declared`: domains of files held for another error (they exist, their order is not checked)."""
    problems = []
    graph: dict[str, list[str]] = {}
    for name, (file, after) in sorted(start_after.items()):
        deps = list(after)
        for dep in deps:
            if dep == name:
                problems.append((file, name, f"{name!r} names itself"))
            elif dep not in start_after and dep not in also_declared:
                problems.append((file, name, f"names {dep!r}, which no file declares"))
        graph[name] = [d for d in deps if d in start_after and d != name]
    for cycle in _cycles(graph):
        first = min(cycle)  # reported once, on the same domain whatever the order of files
        at = cycle.index(first)
        loop = cycle[at:] + cycle[:at] + [first]
        problems.append((start_after[first][0], first,
                         "a cycle: " + " -> ".join(loop) + " (each starts after the next)"))
    return problems


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Cycles found by one depth-first walk (linear: every edge once), each as its members in order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        state[root] = 1
        stack = [iter(graph.get(root, ()))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(nxt) == 1:
                found.append(path[path.index(nxt):])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return found


def dependents_of(start_after: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """domain -> the domains whose startAfter names it."""
    found: dict[str, list[str]] = {}
    for name, after in start_after.items():
        for dep in after:
            found.setdefault(dep, []).append(name)
    return {dep: tuple(sorted(names)) for dep, names in found.items()}
