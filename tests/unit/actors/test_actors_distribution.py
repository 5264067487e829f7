"""The `actors` distribution installs alone: a fresh venv gets it with trio and attrs only.

This is what an embedder runs (``pip install ./actors``); pip fetches trio and attrs from the
package index. The copy to a temporary directory keeps the in-tree build's files (``build/``,
``*.egg-info``) out of the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# What the venv may hold besides the closure of actors' requirements: the installer itself.
INSTALLER = {"pip", "setuptools", "wheel"}

CLOSURE = textwrap.dedent('''
    import json, pathlib, re
    from importlib import metadata

    def key(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    def closure(name, seen):
        if key(name) in seen:
            return
        seen.add(key(name))
        for req in metadata.requires(name) or []:
            if "extra ==" in req:
                continue  # optional extras are not installed by a plain install
            dep = re.split(r"[ ;<>=!~[(]", req, maxsplit=1)[0]
            try:
                metadata.version(dep)
            except metadata.PackageNotFoundError:
                continue  # its marker excludes this platform or Python
            closure(dep, seen)

    needed = set()
    closure("bessai-actors", needed)
    installed = {key(d.metadata["Name"]) for d in metadata.distributions()}
    import actors
    typed = (pathlib.Path(actors.__file__).parent / "py.typed").exists()
    print(json.dumps({"needed": sorted(needed), "installed": sorted(installed),
                      "requires": metadata.requires("bessai-actors"), "typed": typed,
                      "all": len(actors.__all__)}))
''')


@pytest.mark.slow
def test_the_actors_distribution_installs_alone_with_only_trio_and_attrs(tmp_path):
    source = tmp_path / "actors"
    shutil.copytree(ROOT / "actors", source,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(source)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    report = subprocess.run([str(python), "-c", CLOSURE], capture_output=True, text=True,
                            check=True, cwd=tmp_path)
    found = json.loads(report.stdout)
    assert sorted(r.split(">")[0].split("=")[0] for r in found["requires"]) == ["attrs", "trio"]
    extra = set(found["installed"]) - set(found["needed"]) - INSTALLER
    assert extra == set(), f"installed beyond trio, attrs and their own dependencies: {extra}"
    assert {"bessai-actors", "trio", "attrs"} <= set(found["installed"])
    assert found["typed"]
    assert found["all"] > 20
