"""The layers of docs/architecture.md hold in the code: no module imports from a layer above
its own, no import cycles among the project's modules, and no module imports another's
private (underscore) names. Imports are read from the source (every ``import`` statement,
inside functions too); those under ``if TYPE_CHECKING:`` are left out, as they never run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("processing", "sessions", "dashboard")

#: Lowest first; a module may import from its own layer and the layers below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("processing.errors", "processing.abort", "processing.io", "processing.fourier", "processing.geometry",
     "processing.parallel", "processing.glibc_random", "processing.backend"),
    ("processing.extract", "processing.reconstruct", "processing.refine", "processing.simulate",
     "processing.select", "processing.maskcreate", "processing.postprocess"),
    ("processing.jobs", "processing.cli"),
    ("sessions",),
    ("dashboard",),
)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """Every import statement not inside an ``if TYPE_CHECKING:`` block."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip:
            yield node


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for each import of module ``name``."""
    path = MODULES[name]
    out = []
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        out.append((target, [alias.name for alias in node.names]))
    return out


def _owner(target: str) -> str | None:
    """The project module a dotted import path lands in (None: not ours)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        deps = set()
        for target, names in _imports(name):
            # "from package import module" imports the submodule; a module's own packages
            # (its ancestors, which Python imports first anyway) are not dependencies.
            for candidate in [target] + [f"{target}.{n}" for n in names]:
                owner = _owner(candidate)
                if owner and owner != name and not name.startswith(owner + "."):
                    deps.add(owner)
        edges[name] = deps
    return edges


def _layer(name: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if _layer(m) is None and m != "processing")
    assert not unplaced, f"add these to LAYERS (and docs/architecture.md): {unplaced}"


def test_nothing_imports_from_a_layer_above() -> None:
    upward = [f"{m} -> {d}" for m, deps in _edges().items() for d in deps
              if d != "processing" and _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_private_names_stay_in_their_module() -> None:
    leaks = []
    for name in MODULES:
        for target, names in _imports(name):
            owner = _owner(target)
            if owner and owner != name:
                leaks += [f"{name} imports {n} from {target}" for n in names
                          if n.startswith("_") and not n.startswith("__") and _owner(f"{target}.{n}") is None]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_checks_see_the_packages(package) -> None:
    # Guards the checks above against passing vacuously (a moved root, a renamed package).
    assert sum(m.startswith(package) for m in MODULES) >= 5
    assert any(_edges()[m] for m in MODULES if m.startswith(package))
