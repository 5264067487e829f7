"""After a rolling update an operator can confirm what runs: both commands say their version,
read from the installed package's metadata (pyproject.toml is the one place it is written)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bessai

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_version_is_pyprojects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert bessai.__version__ == project["version"]


@pytest.mark.parametrize(("module", "prog"), [("bessai.cli.main", "bessai"),
                                              ("bessai.cli.run", "bessai-run")])
def test_version_option_prints_the_version_and_exits_0(module, prog):
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f" {bessai.__version__}")
