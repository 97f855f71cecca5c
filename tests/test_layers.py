"""The house: fusion/'s rooms import only the rooms below them (.importlinter, checked with
import-linter), no two modules import each other round a cycle, and an import placed inside a
function says why (it keeps a start-up light), instead of dodging a cycle."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from fusion.core.settings import REPO_ROOT

FUSION = REPO_ROOT / "fusion"
ENTRY_POINTS = ("cli", "bench")   # commands load only what the command asked for: every import is lazy


def test_the_rooms_keep_their_layer_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_no_module_imports_itself_round_a_cycle():
    import grimp

    graph = grimp.build_graph("fusion")
    cycles = [(a, b) for a in sorted(graph.modules) for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)]
    assert cycles == []


def test_an_import_inside_a_function_says_why():
    unexplained = []
    for path in FUSION.rglob("*.py"):
        room = path.relative_to(FUSION).parts[0]
        if room in ENTRY_POINTS or "migrations" in path.parts:
            continue
        lines = path.read_text().splitlines()
        inside = sorted(node.lineno for node in ast.walk(ast.parse("\n".join(lines)))
                        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fusion")
                        and node.col_offset > 0)
        for n in inside:
            if n - 1 not in inside and "#" not in lines[n - 1]:   # the first of a run says why for all
                unexplained.append(f"{path.relative_to(REPO_ROOT)}:{n}")
    assert unexplained == []


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers.py (and the fixtures in conftest.py)."""
    tests = REPO_ROOT / "tests"
    found = [f"{path.name}: {node.module or node.names[0].name}" for path in sorted(tests.glob("test_*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, (ast.Import, ast.ImportFrom))
             and ((node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name).startswith("test_")]
    assert found == []
