"""The import graph of ``fh_utils``, read with ``ast`` (no module is imported): who imports whom, module by module.

Every ``import`` statement counts, at module level and inside functions (a function-level import is an arrow
too: it runs when the function does). ``from pkg import name`` is an arrow to ``pkg.name`` when that is a
module, else to ``pkg`` (and, when ``pkg/__init__.py`` exports ``name`` lazily through
:func:`fh_utils._lazy.lazy_exports`, to the submodule it loads). Importing ``a.b.c`` also runs ``a`` and
``a.b``: :func:`closure` adds every parent package of a module it reaches.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "fh_utils"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``{"fh_utils.data.reader": path, "fh_utils.data": .../data/__init__.py, ...}`` for every ``.py`` file."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if "__pycache__" not in parts:
            out[".".join(parts)] = path
    return out


@cache
def _lazy_exports(path: Path) -> dict[str, str]:
    """The ``{name: submodule}`` dict a package's ``__init__.py`` hands to ``lazy_exports`` (empty if none)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports" and len(node.args) == 2:
            exports = ast.literal_eval(node.args[1])
            return {str(k): str(v) for k, v in exports.items()}
    return {}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: they never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports_of(module: str, files: dict[str, Path] | None = None, runtime_only: bool = False) -> set[str]:
    """The ``fh_utils`` modules ``module`` imports (module- and function-level), by their dotted names.

    ``runtime_only`` leaves out the imports under ``if TYPE_CHECKING:``.
    """
    files = files or module_files()
    path = files[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if name in files:
                    found.add(name)
                    continue
                found.add(base)
                lazy = _lazy_exports(files[base]) if base in files else {}
                if alias.name in lazy:
                    found.add(f"{base}.{lazy[alias.name]}")
    return {m for m in found if m in files and m != module}


def graph(files: dict[str, Path] | None = None, runtime_only: bool = False) -> dict[str, set[str]]:
    """``{module: the fh_utils modules it imports}`` for every module of the package (see :func:`imports_of`)."""
    files = files or module_files()
    return {m: imports_of(m, files, runtime_only) for m in files}


def parents(module: str) -> list[str]:
    """``fh_utils.a.b`` -> ``["fh_utils", "fh_utils.a"]``: the packages importing it runs first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(start: str, edges: dict[str, set[str]] | None = None) -> set[str]:
    """Every module that importing ``start`` can load (its imports, theirs, and every parent package)."""
    edges = edges or graph()
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [*edges.get(module, ()), *(p for p in parents(module) if p in edges)]
    return seen


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each an import circle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
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
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)
