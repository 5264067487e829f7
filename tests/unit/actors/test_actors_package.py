"""The actors package stands alone: no gateway import, Trio's clock only, a curated front door."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import actors
from actors import (
    Actor,
    Backoff,
    ChildSpec,
    Stoppable,
    Supervisor,
    SupervisorEscalation,
)

PACKAGE = Path(actors.__file__).parent


def test_importing_actors_never_imports_the_gateway():
    code = "import sys, actors; print(sorted(m for m in sys.modules if m.startswith('bessai')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=PACKAGE.parent)
    assert done.stdout.strip() == "[]"


def test_actors_source_never_reads_the_system_clock_or_imports_bessai():
    banned_calls = {("time", "time"), ("time", "monotonic"), ("time", "sleep")}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("bessai") for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("bessai"), path
                assert node.module != "time", path
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in banned_calls, (path, node.lineno)


def test_every_public_name_is_exported_and_documented():
    for name in actors.__all__:
        obj = getattr(actors, name)
        assert obj is not None
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_a_supervisor_is_itself_an_actor_that_can_be_asked_to_stop():
    sup = Supervisor()
    assert isinstance(sup, Actor)
    assert isinstance(sup, Stoppable)


async def test_a_single_exception_group_from_a_child_is_recorded_unwrapped(autojump_clock):
    async def fails_in_a_nursery(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raise_value_error)

    sup = Supervisor(children=[ChildSpec.from_function("n", fails_in_a_nursery)],
                     intensity=0, backoff=Backoff.none(), name="s")
    with pytest.raises(SupervisorEscalation) as caught:
        await sup.run()
    assert type(caught.value.last_exception) is ValueError
    assert sup.child_info("n").last_failure.exception_repr == "ValueError('deep')"


async def _raise_value_error():
    raise ValueError("deep")
