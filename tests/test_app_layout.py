"""The dashboard's layers hold: views are pure, pages reach the engine only through
``dashboard``, importing the run panel starts no thread, and the views' doctests pass."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import dashboard.views

ROOT = Path(__file__).resolve().parents[1]
VIEWS = sorted(m.name for m in pkgutil.iter_modules(dashboard.views.__path__))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_views_import_neither_streamlit_nor_io_helpers():
    for name in VIEWS:
        imported = _imports(ROOT / "dashboard" / "views" / f"{name}.py")
        assert not {m for m in imported if m.split(".")[0] == "streamlit"}, name
        assert not imported & {"threading", "sqlite3", "pathlib"}, name
        assert "dashboard.ui" not in {m.rsplit(".", 1)[0] for m in imported} | imported, name


def test_pages_reach_the_engine_only_through_dashboard():
    for page in sorted((ROOT / "pages").glob("*.py")):
        engine = {m for m in _imports(page) if m.split(".")[0] == "bsq_engine"}
        assert not engine, f"{page.name} imports {engine}"


@pytest.mark.slow  # a fresh interpreter imports torch, Streamlit and Plotly: seconds
def test_importing_the_dashboard_starts_no_thread_and_loads_no_streamlit_for_views():
    code = (
        "import sys, threading\n"
        f"import {', '.join(f'dashboard.views.{v}' for v in VIEWS)}\n"
        "print('streamlit' in sys.modules)\n"
        "import dashboard.ui.run_panel\n"
        "print(threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()  # fmt: skip
    assert out == ["False", "1"]


@pytest.mark.parametrize("name", VIEWS)
def test_view_doctests(name):
    module = importlib.import_module(f"dashboard.views.{name}")
    assert doctest.testmod(module).failed == 0
