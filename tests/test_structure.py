"""The package's shape: no import cycles (deferred imports included), leaf modules that stay leaves,
and command-line modules that `python -m` runs without warnings.

The import graph is read from the source with `ast`: every `import` / `from ... import` of a project
module, at module level or inside a function (a deferred import that would hide a cycle counts too),
except under `if TYPE_CHECKING:`. Importing a submodule needs its parent package first, which is
never a cycle of design and is not an edge; importing a *name* from a package is an edge to its
`__init__`, so `from core import X` inside `core/` shows up as the cycle it is.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "server")
LEAVES = ("core.errors", "core.hooks", "core.layout", "core.files")
"""Modules that import nothing of the project: everyone may import them."""
COMMANDS = ("core.evaluations", "core.formats", "server", "server.openapi")
"""Modules users run with `python -m` (each must start without a RuntimeWarning)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the project modules it imports}, from the source of every module."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        stack = list(ast.parse(path.read_text()).body)
        while stack:
            node = stack.pop()
            if _type_checking_block(node):
                stack.extend(node.orelse)
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_package, node.level, node.module)
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.append(child if child in modules else source)
            for target in targets:
                # the innermost project module that `target` names (a name of a module counts as the module)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.add(target)
            stack.extend(ast.iter_child_nodes(node))
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    modules = project_modules()
    assert len(modules) > 30 and "core.training" in modules
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_deferred_and_upward_imports(tmp_path):
    """The check itself: a deferred import inside a function and an import of the package's own
    __init__ are both cycles it reports."""
    graph = {"core.a": {"core.b"}, "core.b": set()}
    assert find_cycle(graph) is None
    modules = {"core": tmp_path / "core" / "__init__.py", "core.a": tmp_path / "core" / "a.py",
               "core.b": tmp_path / "core" / "b.py"}
    (tmp_path / "core").mkdir()
    modules["core"].write_text("from .a import f\n")
    modules["core.a"].write_text("from .b import g\n\ndef f():\n    pass\n")
    modules["core.b"].write_text("def g():\n    from .a import f  # deferred\n    return f\n")
    assert find_cycle(import_graph(modules)) == ["core.a", "core.b", "core.a"]
    modules["core.b"].write_text("from core import f\n")  # upward, through the package
    assert find_cycle(import_graph(modules)) == ["core", "core.a", "core.b", "core"]


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_of_the_project(leaf):
    modules = project_modules()
    assert import_graph({leaf: modules[leaf], **modules})[leaf] == set()


@pytest.mark.parametrize("command", COMMANDS)
def test_command_line_modules_run_without_warnings(command):
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", command, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
