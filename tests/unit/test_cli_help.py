"""Help is read in a terminal: no RST markup, and numeric options say their range."""

from __future__ import annotations

import argparse

import pytest

from bessai.cli.main import build_parser
from bessai.cli.run import build_parser as run_parser
from bessai.sim.cli import build_parser as sim_parser


def every_parser(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from every_parser(sub)


def test_no_help_text_shows_rst_markup():
    for parser in every_parser(build_parser()):
        text = parser.format_help()
        assert "`" not in text, f"{parser.prog}:\n{text}"


def option_help(parser: argparse.ArgumentParser, command: list[str], option: str) -> str:
    for sub in every_parser(parser):
        if command and not sub.prog.endswith(" ".join(command)):
            continue
        for action in sub._actions:
            if option in action.option_strings:
                return action.help.replace("%%", "%")
    raise AssertionError(f"no {option} under {command}")


@pytest.mark.parametrize(("parser", "command", "option", "range_text"), [
    (build_parser, ["command"], "--ttl-s", "5-86400"),
    (build_parser, ["command"], "--power-w", "> 0"),
    (build_parser, ["probe"], "--port", "1-65535"),
    (build_parser, ["probe"], "--unit-id", "0-255"),
    (build_parser, ["health"], "--timeout-s", "> 0"),
    (run_parser, [], "--sim-soc", "0-100"),
    (sim_parser, [], "--soc", "0-100"),
    (sim_parser, [], "--start-hour", "0-24"),
])
def test_numeric_options_state_their_range(parser, command, option, range_text):
    assert range_text in option_help(parser(), command, option)
