"""ablate's import graph, and whether it has a circle: `python scripts/import_graph.py [--edges]`.

Every `import` and `from ... import` of an ablate module, at the top of a file or inside a
function (a lazy import closes a circle as surely as a top-level one), read with `ast`
without importing anything. It checks two graphs: the modules (`ablate.config.check`), and
the packages and top-level modules they belong to (`ablate.config`, `ablate.job`), so that
two packages do not lean on each other through different modules. Prints each circle found
and exits 1, else one line; `--edges` also prints every module's imports.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ablate"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The ablate modules `path` imports (`from . import x` names module x when it is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """`ablate.config.check` -> `ablate.config`; a top-level module is its own."""
    return ".".join(module.split(".")[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every module's imports")
    args = parser.parse_args()
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports(f, modules) for f in files}
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package_of(module), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(module))
    if args.edges:
        for module, targets in sorted(graph.items()):
            print(f"{module} -> {', '.join(sorted(targets)) or '-'}")
    found = [("modules", c) for c in circles(graph)] + [("packages", c)
                                                         for c in circles(packages)]
    for kind, circle in found:
        print(f"circle among {kind}: {' <-> '.join(circle)}")
    if found:
        sys.exit(1)
    print(f"no circle: {len(graph)} modules, {sum(map(len, graph.values()))} imports; "
          f"{len(packages)} packages and top-level modules")


if __name__ == "__main__":
    main()
