"""bench/CHAOS.md's chaos-net section: rows merged by scenario name, kept by `make chaos`.

The real-network rows take minutes to hours each and come from separate (and parallel) runs; a
later run of some scenarios, or of the virtual-time suite, must not erase the others.
"""

from __future__ import annotations

from bench.chaos import __main__ as chaos_main
from bench.chaos.rig import Result
from bench.chaos_net import MARKER, report
from bench.chaos_net.scenarios import NetFigures, NetResult, get


def _result(name: str, lost: int = 0) -> NetResult:
    r = Result(name, 1, produced=10, delivered=10, lost=lost, max_heartbeat_gap_s=10.0)
    r.check("zero loss", lost == 0, f"{lost} lost")
    return NetResult(get(name), r, NetFigures(cut="cloud black-holed 5 min", load_avg="1 1 1"))


def test_a_later_run_replaces_its_own_rows_and_keeps_the_others():
    text = report.merge("# Chaos suite\n\nvirtual rows\n", [_result("net-cloud-down-5min"),
                                                              _result("net-cpu-starved-5min")], 1)
    text = report.merge(text, [_result("net-cloud-down-5min", lost=3)], 1)
    rows = [line for line in text.splitlines() if line.startswith("| net-")]
    assert [r.split(" | ")[0] for r in rows] == ["| net-cloud-down-5min",
                                                 "| net-cpu-starved-5min"]
    assert "**FAIL**: zero loss (3 lost)" in rows[0]
    assert rows[1].endswith("| PASS |")
    assert text.startswith("# Chaos suite\n\nvirtual rows\n")
    assert text.count(MARKER) == 1


def test_scaled_rows_say_so():
    text = report.merge("", [_result("net-cloud-down-5min")], 0.1)
    assert "(scale 0.1)" in text


def test_make_chaos_rewrites_its_part_and_keeps_the_chaos_net_section(tmp_path, monkeypatch):
    out = tmp_path / "CHAOS.md"
    out.write_text(report.merge("# Chaos suite\n\nold virtual table\n",
                                [_result("net-cloud-down-5min")], 1))
    monkeypatch.setattr(chaos_main, "OUT", out)
    chaos_main.write_report("# Chaos suite\n\nnew virtual table\n")
    text = out.read_text()
    assert "new virtual table" in text
    assert "old virtual table" not in text
    assert "| net-cloud-down-5min |" in text


def test_each_run_adds_a_line_with_its_load_and_the_log_is_bounded():
    text = ""
    for i in range(report.RUNS_KEPT + 3):
        line = report.run_line(["net-cloud-down-5min"], 1, f"2026-12-04 20:{i:02d}", "7.9 5.9 3.5",
                               "4.4 5.9 6.0", "x86_64, 2 cores")
        text = report.merge(text, [_result("net-cloud-down-5min")], 1, [line])
    runs = [line for line in text.splitlines() if line.startswith("- run ")]
    assert len(runs) == report.RUNS_KEPT
    assert runs[-1].startswith(f"- run 2026-12-04 20:{report.RUNS_KEPT + 2:02d} UTC")
    assert "at the start 7.9 5.9 3.5, at the end 4.4 5.9 6.0" in runs[-1]
