"""Package structure: the torch-free modules stay torch-free, and no import cycle exists in ngp_ohem."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ngp_ohem import names

PACKAGE = Path(__file__).resolve().parents[1] / "ngp_ohem"
TORCH_FREE = ("ngp_ohem.config", "ngp_ohem.names", "ngp_ohem.report.tables", "ngp_ohem.report.aggregate",
              "ngp_ohem.report.readme")  # fmt: skip


def test_config_names_and_report_import_without_torch() -> None:
    code = f"import sys, {', '.join(TORCH_FREE)}; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ngp_ohem modules a file imports (at any depth: lazy imports close cycles too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # from package import module
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert "ngp_ohem.run.trainer" in graph and "ngp_ohem.run.checkpoint" in graph["ngp_ohem.run.trainer"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_names_printer(capsys) -> None:
    assert names.main(["table_names"]) == 0
    assert capsys.readouterr().out.split() == list(names.TABLE_NAMES)
    assert names.main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err
