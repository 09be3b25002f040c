"""The house's floors: attrib's packages import downward only (DESIGN.md, Layout), at most
three upward imports each marked `# upward` with its reason, and no import cycle among
modules (imports inside functions count; `if TYPE_CHECKING` blocks do not run)."""

from __future__ import annotations

import ast
from pathlib import Path

ATTRIB = Path(__file__).resolve().parents[1] / "attrib"
# Bottom to top; a package may import those before it.
FLOORS = """__version__ errors eigh jsonio log atomic progress distributed sharding execution
outputs options memory option_groups hub data tasks store report methods featurize index score
weights training perturb evaluate generate integrations examples summary demo""".split()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ATTRIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(line, imported module) of every import that runs, at any depth."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attrib"):
            for alias in node.names:
                yield node.lineno, node.module, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("attrib."):
                    yield node.lineno, alias.name, alias.name


def _sources():
    return {_module_name(p): p for p in sorted(ATTRIB.rglob("*.py"))}


def test_packages_import_downward_except_three_marked_ones():
    rank = {name: i for i, name in enumerate(FLOORS)}
    upward, unplaced = [], set()
    for name, path in _sources().items():
        lines = path.read_text().splitlines()
        source = name.split(".")[1] if "." in name else name
        for line, module, _ in _imports(path):
            target = module.split(".")[1] if "." in module else None
            if target is None or target == source:
                continue
            unplaced |= {p for p in (source, target) if p not in rank}
            if rank.get(target, -1) > rank.get(source, len(rank)):
                upward.append((f"{path.relative_to(ATTRIB)}:{line}", lines[line - 1]))
    assert not unplaced, f"give {sorted(unplaced)} a floor in FLOORS (and DESIGN.md's layout)"
    unmarked = [where for where, text in upward if "# upward" not in text]
    assert unmarked == [], f"upward imports without a `# upward` reason: {unmarked}"
    assert len(upward) <= 3, f"more than 3 upward imports: {[w for w, _ in upward]}"


def test_no_import_cycle_among_modules():
    sources = _sources()
    graph = {name: set() for name in sources}
    for name, path in sources.items():
        for _, module, member in _imports(path):
            # `from pkg import x` runs pkg/__init__.py, and pkg/x.py when x is a module.
            graph[name] |= {t for t in (module, member) if t in sources and t != name}
    cycles = _strongly_connected(graph)
    assert cycles == [], f"import cycles: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found
