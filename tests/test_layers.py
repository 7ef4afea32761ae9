"""The package's layers, read from its source: no import cycles, and no module reaching
into the private names of another subsystem's folder.

Imports are read statically, at module level and inside functions alike; those under
``if TYPE_CHECKING:`` are left out (they never run). A folder is one subsystem (``core``,
``runtime``, ``pool``, ``channels``, ``storage``, ``jobs``, ``bundle``); the modules directly in
``workerbridge/`` (the bridge, the dev server, the public re-exports) form one more.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "py" / "workerbridge"
# What each folder may import (besides itself): the layers below it.
LAYERS = ["core", "runtime", "pool", "channels", "storage", "jobs", "bundle", "fleet", "top"]


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def folder_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in LAYERS:  # a folder's own __init__
        return parts[1]
    return "top"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


class Module:
    def __init__(self, path: Path, pkg: Path = PKG) -> None:
        self.path = path
        self.name = module_name(path, pkg)
        self.folder = folder_of(self.name)
        self.tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(self.tree)
        self.imports: list[tuple[str, list[str], int]] = []  # (module, names, line)
        self.aliases: dict[str, str] = {}  # local name -> module it names
        for node in ast.walk(self.tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "workerbridge":
                names = [a.name for a in node.names]
                self.imports.append((node.module, names, node.lineno))
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if (pkg.parent / full.replace(".", "/")).with_suffix(".py").exists():
                        self.aliases[a.asname or a.name] = full
            elif isinstance(node, ast.ImportFrom) and node.level:
                self.imports.append(("<relative>", [a.name for a in node.names], node.lineno))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "workerbridge":
                        self.imports.append((a.name, [], node.lineno))
                        if a.asname:
                            self.aliases[a.asname] = a.name


def load(pkg: Path = PKG) -> dict[str, Module]:
    return {m.name: m for m in (Module(p, pkg) for p in sorted(pkg.rglob("*.py")))}


def resolve(target: str, names: list[str], modules: dict[str, Module]) -> list[str]:
    """The package modules an import statement loads."""
    out = []
    if target in modules:
        out.append(target)
    for n in names:
        if f"{target}.{n}" in modules:
            out.append(f"{target}.{n}")
    return out


def test_imports_are_absolute():
    relative = [f"{m.name}:{line}" for m in load().values()
                for target, _, line in m.imports if target == "<relative>"]
    assert relative == [], "imports inside the package name their module in full"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), or with a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for m in modules.values():
        for target, names, _ in m.imports:
            for dep in resolve(target, names, modules):
                if dep != m.name:
                    graph[m.name].add(dep)
        # A submodule import runs its package's __init__ first.
        for dep in list(graph[m.name]):
            parent = dep.rsplit(".", 1)[0]
            if parent in modules and parent != m.name and parent != "workerbridge" \
                    and not m.name.startswith(parent + "."):
                graph[m.name].add(parent)
    return graph


def test_no_import_cycles():
    cycles = find_cycles(import_graph(load()))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_find_cycles_names_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_each_folder_imports_only_the_layers_below_it():
    bad = []
    modules = load()
    for m in modules.values():
        for target, names, line in m.imports:
            for dep in resolve(target, names, modules):
                theirs = modules[dep].folder
                if LAYERS.index(theirs) > LAYERS.index(m.folder):
                    bad.append(f"{m.name}:{line} imports {dep} ({theirs} is above {m.folder})")
    assert bad == []


def private_names_by_folder(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Private attribute names each folder defines (methods, class attributes, self._x)."""
    defined: dict[str, set[str]] = defaultdict(set)
    for m in modules.values():
        for node in ast.walk(m.tree):
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.append(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.append(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.append(node.target.id)
            elif isinstance(node, ast.Assign):
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
            defined[m.folder].update(n for n in names if is_private(n))
    return defined


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reaches(modules: dict[str, Module]) -> list[str]:
    """Every place a module uses a private name that only another folder defines, or
    imports a private name from another folder."""
    defined = private_names_by_folder(modules)
    bad = []
    for m in modules.values():
        own = defined[m.folder]
        for target, names, line in m.imports:
            for dep in resolve(target, [], modules):
                if modules[dep].folder != m.folder:
                    bad += [f"{m.name}:{line} imports {dep}.{n}" for n in names
                            if is_private(n)]
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.Attribute) or not is_private(node.attr):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if isinstance(base, ast.Name) and base.id in m.aliases:
                dep = m.aliases[base.id]
                if dep in modules and modules[dep].folder != m.folder:
                    bad.append(f"{m.name}:{node.lineno} uses {dep}.{node.attr}")
                continue
            if node.attr not in own and any(node.attr in names for f, names in
                                             defined.items() if f != m.folder):
                bad.append(f"{m.name}:{node.lineno} reaches {ast.unparse(node)}")
    return bad


def test_no_module_reaches_into_another_folders_private_names():
    bad = reaches(load())
    assert bad == [], "\n".join(bad)


def test_reaches_finds_each_kind_of_reach(tmp_path: Path):
    pkg = tmp_path / "workerbridge"
    for folder, source in {
        "core": "class Pool:\n    def __init__(self):\n        self._closed = False\n"
                "def _hidden():\n    pass\n",
        "channels": "from workerbridge.core import mod\n"
                    "from workerbridge.core.mod import Pool, _hidden\n"
                    "def f(pool):\n    mod._hidden()\n    return pool._closed\n"
                    "class Mine:\n    def __init__(self):\n        self._own = 1\n"
                    "    def g(self, other):\n        return other._own\n",
    }.items():
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
        (pkg / folder / "mod.py").write_text(source)
    (pkg / "__init__.py").write_text("")
    assert sorted(reaches(load(pkg))) == [
        "workerbridge.channels.mod:2 imports workerbridge.core.mod._hidden",
        "workerbridge.channels.mod:4 uses workerbridge.core.mod._hidden",
        "workerbridge.channels.mod:5 reaches pool._closed",
    ]


@pytest.mark.parametrize("public", ["workerbridge.pool", "workerbridge.protocol",
                                    "workerbridge.shared"])
def test_the_old_public_module_paths_still_work(public):
    import importlib

    module = importlib.import_module(public)
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)
