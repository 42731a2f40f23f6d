"""The /proc readings of ``benchmarks/classroom_server.py``: a browser's process tree and
its CPU, on stand-in processes (no browser, no server)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "classroom_server.py"
_spec = importlib.util.spec_from_file_location("classroom_server_bench", _PATH)
classroom_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(classroom_server)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# a parent that starts a busy child, both named like a browser (``comm`` is the file's name)
_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.argv[1], "-c", "import time\\nend = time.process_time() + 0.4\\n"
                          "while time.process_time() < end: pass\\ntime.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def fake_browser(tmp_path):
    """A process tree named ``chromium-fake``: (parent pid, child pid); killed afterwards."""
    exe = tmp_path / "chromium-fake"
    shutil.copy(sys.executable, exe)
    before = classroom_server.pids_now()
    parent = subprocess.Popen([str(exe), "-c", _PARENT, str(exe)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    child = int(parent.stdout.readline())
    yield before, parent.pid, child
    for pid in (child, parent.pid):
        subprocess.run(["kill", "-9", str(pid)], check=False)
    parent.wait(timeout=10)


def test_a_browser_is_found_by_its_root_and_its_tree_cpu_counted(fake_browser):
    before, parent, child = fake_browser
    assert classroom_server.chromium_roots(before) == [parent]  # the child is not a root
    assert classroom_server.chromium_roots(classroom_server.pids_now()) == []
    deadline = time.monotonic() + 30
    while classroom_server.tree_cpu([child]) < 0.35 and time.monotonic() < deadline:
        time.sleep(0.1)  # the child's busy loop: 0.4 s of CPU
    spent = classroom_server.tree_cpu([parent])
    assert spent >= classroom_server.tree_cpu([child]) >= 0.35  # the tree holds the child
    assert classroom_server.tree_cpu([]) == 0.0


# a parent whose busy child ends and is reaped (``wait``), as a closed tab's renderer is
_REAPING_PARENT = """
import subprocess, sys, time
subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.4\\n"
                "while time.process_time() < end: pass"], check=True)
print("reaped", flush=True)
time.sleep(60)
"""


def test_a_tree_keeps_the_seconds_of_a_child_that_ended():
    parent = subprocess.Popen([sys.executable, "-c", _REAPING_PARENT], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert parent.stdout.readline().strip() == "reaped"
        assert classroom_server._tree(parent.pid) == [parent.pid]  # the child is gone
        assert classroom_server.tree_cpu([parent.pid]) >= 0.35
    finally:
        parent.kill()
        parent.wait(timeout=10)
