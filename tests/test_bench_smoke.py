"""Smoke test of the benchmark harness (benchmarks/bench.py): it runs end to end at a tiny size and writes its
Markdown table.  No timing is asserted: figures belong to `make bench`, not to the test suite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench.py")


@pytest.mark.slow
def test_bench_tiny_writes_table(tmp_path):
    out = tmp_path / "results"
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.run(
        [sys.executable, BENCH, "--size", "tiny", "--rounds", "1", "--libs", "raw,ckpt", "--out", str(out),
         "--workdir", str(data), "--cold", "fadvise", "--no-chart"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "latest.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| raw |") for line in rows), table
    assert any(line.startswith("| ckpt |") for line in rows), table
    for title in ("GPT-2-shaped state", "many small tensors", "one big tensor", "open + read one tensor"):
        assert title in table
    assert list(out.glob("bench-*-tiny.md")), "timestamped copy missing"
    assert os.listdir(data) == [], "benchmark data was not deleted"
