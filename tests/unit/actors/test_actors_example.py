"""The embedding example runs to completion on its own, as the docs promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "embed_in_trio_app.py"


@pytest.mark.e2e
def test_embedding_example_runs_to_completion_by_itself_in_a_few_seconds():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "supervisor demo: sensor exited failed (OSError(" in out
    assert "supervisor demo: sensor restarted" in out
    assert out.index("reporter exited stopped\nsupervisor demo: sensor exited stopped") > 0
    assert "app: reading v" in out
    assert "app: child sensor: stopped, restarts=1" in out
    assert out.rstrip().endswith("app: done")
