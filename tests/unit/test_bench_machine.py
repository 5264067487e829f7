"""bench._machine: the one machine description and results writer every benchmark uses."""

from __future__ import annotations

import os
import platform
import re

from bench._machine import cpu_model, machine_description, utc_now, write_results


def test_machine_description_names_arch_core_count_and_cpu_model() -> None:
    assert machine_description() == f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}"
    assert cpu_model().strip()


def test_utc_now_is_a_minute_stamp_in_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", utc_now())


def test_write_results_creates_the_results_folder(tmp_path) -> None:
    target = tmp_path / "results" / "x.md"
    write_results(target, "# x\n")
    assert target.read_text() == "# x\n"
