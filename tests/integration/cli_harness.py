"""Run the ``bessai`` CLI as a real subprocess, the way the tests/integration/test_cli_*.py use it.

The child gets a minimal environment (PATH, HOME=/tmp, plus what the test passes), so no setting
leaks in from the developer's shell; cwd is the worktree root, so the worktree's code is run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """PATH and HOME=/tmp, overridden and extended by ``extra``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", **extra}


def run_bessai(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m bessai.cli.main *args`` with ``cli_env(**env)``; output captured, 60 s cap."""
    return subprocess.run([sys.executable, "-m", "bessai.cli.main", *args], cwd=ROOT,
                          env=cli_env(**env), capture_output=True, text=True, timeout=60)


def topic_with_subscription(emulator_host: str, project: str) -> tuple[str, str, str]:
    """A fresh topic and a subscription on it in the emulator: (topic, subscription, the
    project's REST base URL), for a CLI test that publishes and pulls back."""
    import uuid

    import httpx

    topic, sub = f"cmd-{uuid.uuid4().hex[:8]}", f"sub-{uuid.uuid4().hex[:8]}"
    base = f"http://{emulator_host}/v1/projects/{project}"
    assert httpx.put(f"{base}/topics/{topic}", timeout=10).status_code == 200
    assert httpx.put(f"{base}/subscriptions/{sub}", timeout=10,
                     json={"topic": f"projects/{project}/topics/{topic}"}).status_code == 200
    return topic, sub, base
