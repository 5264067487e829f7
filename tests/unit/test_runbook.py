"""The runbooks (English and Spanish) name every operator event, and every `bessai ...` command
they show is one the CLI accepts (parsed with the real parser, not run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bessai.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = [ROOT / "ops" / "RUNBOOK.md", ROOT / "ops" / "RUNBOOK.es.md"]
EVENTS = [
    "SAFETY_BLOCK", "SAFETY_CLEAR", "LINK_DOWN", "LINK_UP", "SPOOL_BUDGET_WARN", "SPOOL_GAP",
    "PUBSUB_CONFIG_FAULT", "PUBSUB_POISON_MESSAGE", "HEARTBEAT_LATE", "DEVICE_LINK_DOWN",
    "DEVICE_LINK_UP", "COMMAND_ACCEPTED", "COMMAND_REJECTED", "ACTOR_RESTARTED",
    "SUPERVISOR_ESCALATED",
]


def _after_bessai(words: list[str]) -> list[list[str]]:
    for i, word in enumerate(words):
        if (word == "bessai" or word.endswith("/bessai")) and i + 1 < len(words):
            return [words[i + 1:]] if not words[i + 1].startswith("-") else []
    return []


def _bessai_commands(text: str) -> list[list[str]]:
    """Argument lists of every `bessai ...` invocation inside fenced code blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            segment: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("&&", "||", "|", ";", ">", ">>", "<", "&"):
                    commands += _after_bessai(segment)
                    segment = []
                else:
                    segment.append(token)
    return commands


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_runbook_names_every_operator_event(runbook):
    text = runbook.read_text()
    missing = [event for event in EVENTS if f"`{event}`" not in text]
    assert missing == []


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_bessai_command_in_the_runbook_is_accepted_by_the_cli(runbook):
    commands = _bessai_commands(runbook.read_text())
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        if argv[0] == "sim":
            continue  # passed through to bessai-sim untouched
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{runbook.name}: `bessai {' '.join(argv)}` is not a valid command")


def test_both_runbooks_show_the_same_commands():
    english, spanish = (_bessai_commands(p.read_text()) for p in RUNBOOKS)
    assert english == spanish


def test_runbook_check_config_line_matches_the_cli_output_format():
    text = RUNBOOKS[0].read_text()
    assert "Site: X, IP: Y, devices: ..., profile: ..., uplink: emulator|cloud|off" in text
