"""How `bessai-run` reports a tree that ended on its own, and what the actors runtime logs.

A real escalation (nested supervisors, a child that keeps crashing, wrapped by Trio's nurseries
the way `run_gateway` wraps it) must become one SUPERVISOR_ESCALATED line naming the child path
and the error, one line on stderr, exit 1, never an ExceptionGroup. The runtime's own
``child_failed`` warnings stay quiet (the tree's hook logs ACTOR_CRASHED instead), and what it
logs at ERROR reads ``event=<name> detail=...``, not a whole message in the event field.
"""

from __future__ import annotations

import io
import logging

import pytest
import trio
import trio.testing

from actors import ChildSpec, Supervisor, supervisor_spec
from bessai.cli.run import report_failure
from bessai.errors import ConfigError
from bessai.observe.logs import configure_logging, reset_logging


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, site_id="unit-site")
    yield stream
    reset_logging()


async def _crash(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep(1)
    raise RuntimeError("register map mismatch at 37765")


def escalate_like_the_gateway() -> BaseException:
    """Run gateway > site_inv1 > device_link (which keeps crashing) inside nurseries."""
    site = supervisor_spec("site_inv1", [ChildSpec.from_function("device_link", _crash)],
                           intensity=0, period_s=60.0)
    gateway = Supervisor(children=[site], intensity=0, period_s=60.0, name="gateway")

    async def main() -> None:
        async with trio.open_nursery() as outer, trio.open_nursery() as inner:
            outer.start_soon(trio.sleep_forever)
            await inner.start(gateway.run)

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    except BaseException as error:
        return error
    raise AssertionError("the supervisor did not escalate")


def test_escalation_is_one_supervisor_escalated_line_and_exit_1(log_lines, capsys):
    error = escalate_like_the_gateway()
    assert isinstance(error, BaseExceptionGroup)  # what main() used to print as-is
    assert report_failure(error) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "ExceptionGroup" not in err
    assert "site_inv1/device_link" in err
    assert "register map mismatch" in err
    lines = [line for line in log_lines.getvalue().splitlines() if "SUPERVISOR_ESCALATED" in line]
    assert len(lines) == 1, log_lines.getvalue()
    assert "level=CRITICAL event=SUPERVISOR_ESCALATED" in lines[0]
    assert "child=site_inv1/device_link" in lines[0]
    assert "register map mismatch at 37765" in lines[0]


def test_escalation_log_of_the_runtime_names_its_event(log_lines):
    escalate_like_the_gateway()
    text = log_lines.getvalue()
    assert "child_failed" not in text  # below ERROR: the tree's hook reports crashes
    escalated = [line for line in text.splitlines() if "logger=actors.supervisor" in line]
    assert escalated, text
    for line in escalated:
        assert "event=supervisor_escalated detail=" in line, line


def test_other_failure_is_one_line_naming_the_leaf_error(log_lines, capsys):
    group = ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)",
                           [OSError(98, "Address already in use")])
    assert report_failure(group) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Address already in use" in err
    assert "ExceptionGroup" not in err
    assert "event=GATEWAY_FAILED" in log_lines.getvalue()


def test_a_bessai_error_inside_the_group_is_rendered_with_its_exit_code(log_lines, capsys):
    group = ExceptionGroup("nursery", [ConfigError("SPOOL_PATH='/x' is not writable",
                                                   hint="fix it")])
    assert report_failure(group) == 2
    assert capsys.readouterr().err.startswith("error: SPOOL_PATH='/x' is not writable")


def test_actors_warnings_are_quiet_but_errors_pass(log_lines):
    logging.getLogger("actors.supervisor").warning("child_failed supervisor=g child=c error=x")
    logging.getLogger("actors.supervisor").error("supervisor_escalated supervisor=g child=c")
    text = log_lines.getvalue()
    assert "child_failed" not in text
    assert "level=ERROR event=supervisor_escalated detail=\"supervisor=g child=c\"" in text
