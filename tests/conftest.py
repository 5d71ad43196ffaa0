"""Shared pytest hooks: print the reliability figures (fault points exercised, fuzz inputs tried) at the end."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    import sys

    faults = sys.modules.get("faults")  # tests/faults.py, imported by the fault and fuzz tests that ran
    figures = getattr(faults, "FIGURES", None)
    if not figures:
        return
    terminalreporter.section("ckpt reliability figures")
    for name, value in sorted(figures.items()):
        terminalreporter.write_line(f"{name}: {value:,}")
