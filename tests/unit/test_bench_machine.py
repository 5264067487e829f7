"""bench._machine: the one machine description and results writer every benchmark uses."""

from __future__ import annotations

import os
import platform
import re

from bench._machine import (
    cell,
    cpu_model,
    machine_description,
    publish_table,
    utc_now,
    write_results,
)


def test_machine_description_names_arch_core_count_and_cpu_model() -> None:
    assert machine_description() == f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}"
    assert cpu_model().strip()


def test_utc_now_is_a_minute_stamp_in_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", utc_now())


def test_write_results_creates_the_results_folder(tmp_path) -> None:
    target = tmp_path / "results" / "x.md"
    write_results(target, "# x\n")
    assert target.read_text() == "# x\n"


def test_publish_table_prints_and_writes_the_table_ending_with_its_run_command(
        tmp_path, capsys) -> None:
    target = tmp_path / "results" / "device.md"
    text = publish_table(target, ["# Device", "| a |"], run="bench.device_bench")
    assert text == "# Device\n| a |\n\nRun: `/work/venv/bin/python -m bench.device_bench`.\n"
    assert target.read_text() == text
    assert capsys.readouterr().out == text + "\n"
    assert publish_table(target, ["# Sim"]) == "# Sim\n"  # no run line asked for


def test_a_table_cell_shows_none_as_a_dash_and_floats_in_their_shortest_form() -> None:
    assert [cell(None), cell(0.5), cell(2.0), cell(1e-7), cell(3), cell("up")] == [
        "-", "0.5", "2", "1e-07", "3", "up"]
