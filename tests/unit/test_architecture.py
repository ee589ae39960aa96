"""The shape of the code, as tests: no import cycle, singletons only in the composition
root, a README with its rule in every layer, every documented import works, and no module
grows long without saying why. The layers themselves are ``lint-imports``'s contract
(``pyproject.toml``)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("messages", "store", "broker", "worker", "events", "security", "loop", "schedules",
          "ops", "gateway")
#: Where process-wide instances may be built: the composition root and the Celery glue.
ROOTS = ("integration/app.py", "tasks/")
#: Longer than this, a module says at its top why it is one module.
LONG = 400


def python_files() -> list[Path]:
    return sorted(p for package in ("integration", "tasks") for p in (ROOT / package).rglob("*.py"))


def test_no_import_cycle() -> None:
    """Counting function-local and TYPE_CHECKING imports (grimp sees them all), no group of
    modules imports itself through the others."""
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph("integration", "tasks")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported))
    assert not cycles, f"import cycles through: {cycles[:10]}"


def _singletons(path: Path) -> list[str]:
    """Functions without parameters whose result is cached: one instance per process."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and not node.args.args and any(
                (isinstance(d, ast.Name) and d.id in ("cache", "lru_cache")) or
                (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "lru_cache")
                for d in node.decorator_list):
            found.append(f"{path.relative_to(ROOT)}:{node.name}")
    return found


def test_process_wide_instances_live_in_the_composition_root() -> None:
    """Nothing below the composition root keeps a process-wide instance of its own."""
    outside = [name for path in python_files()
               if not str(path.relative_to(ROOT)).startswith(ROOTS)
               for name in _singletons(path)]
    assert not outside, outside


def test_every_layer_says_its_rule() -> None:
    """Each layer folder has a README stating what it is and what it may import."""
    for layer in LAYERS:
        readme = ROOT / "integration" / layer / "README.md"
        assert readme.exists(), layer
        assert "Rule:" in readme.read_text(), layer


def test_every_import_the_docs_show_works() -> None:
    """Each ``from integration... import ...`` line of the README and the docs imports."""
    sys.path.insert(0, str(ROOT))
    pattern = re.compile(r"^\s*from (integration[\w.]*) import ([\w, ]+)$", re.M)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    shown = {(m.group(1), name.strip()) for page in pages
             for m in pattern.finditer(page.read_text()) for name in m.group(2).split(",")}
    assert shown
    for module, name in sorted(shown):
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_importing_the_tasks_changes_nothing_process_wide() -> None:
    """A service that imports ``tasks`` to send them keeps its own metrics: only a starting
    worker switches prometheus_client to shared files."""
    probe = ("import os, tasks, prometheus_client.values as v; "
             "print(os.environ.get('PROMETHEUS_MULTIPROC_DIR'), v.ValueClass.__name__)")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "MutexValue"]


def test_unit_tests_mirror_the_package_tree() -> None:
    """``tests/unit/<layer>/`` for each layer's tests; only whole-tree checks and the
    top-level modules' tests (``logs``, ``mistakes``, ``tracing``, ``settings`` and
    ``sources``) sit at the top."""
    folders = {p.name for p in (ROOT / "tests" / "unit").iterdir()
               if p.is_dir() and p.name != "__pycache__"}
    assert folders <= {*LAYERS, "tasks", "bench"}, folders
    top = {p.name for p in (ROOT / "tests" / "unit").glob("test_*.py")}
    assert top <= {"test_architecture.py", "test_dependencies.py", "test_docs.py",
                   "test_logs.py", "test_mistakes.py", "test_tracing.py",
                   "test_settings.py"}, top


def test_a_long_module_says_why() -> None:
    """A module longer than LONG lines says at its top why it is one module."""
    for path in python_files():
        text = path.read_text()
        if text.count("\n") > LONG:
            head = "\n".join(text.splitlines()[:25])
            assert "One module because" in head, f"{path.relative_to(ROOT)} is long: split it " \
                "or say at its top why it is one module"
