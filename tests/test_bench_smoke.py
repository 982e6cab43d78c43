"""The benchmark still runs and says what it measured (never how fast: that is bench/'s job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_bench_core_runs_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "bench/bench_core.py", "--n", "200", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    for key in ("ring0_out_ns", "direct_callback_ns", "mmio_ring0_write_ns", "mmio_complicated_read_ns"):
        assert figures["fast_path"][key] > 0
    for key in ("deferred_out_ns", "deferred_mmio_write_ns", "raw_round_trip_ns"):
        assert figures[key] > 0
    assert "ratio deferred / raw" in done.stdout
