"""The project's imports form no cycle, counting imports inside functions (read with ast)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "jobs", "serve", "ui")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py") if (ROOT / pkg).is_dir() else ():
            if "migrations" in p.parts:
                continue
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports, wherever in it (``from a import b`` counts as an import
    of ``a.b`` when that is a module, else of ``a``)."""
    out: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):  # a package's own __init__
                    out[name].add(t)
                    break
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(edges(modules())) == []


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_layers_go_one_way():
    """cluster imports neither jobs nor serve (nor ui); jobs and serve never import each other."""
    graph = edges(modules())
    bad = [
        (m, t)
        for m, ts in graph.items()
        for t in ts
        if (m.startswith("cluster") and t.split(".")[0] in ("jobs", "serve", "ui"))
        or (m.startswith("jobs") and t.startswith("serve"))
        or (m.startswith("serve") and t.startswith("jobs"))
    ]
    assert bad == []
