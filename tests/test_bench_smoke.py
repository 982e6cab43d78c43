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


def test_ringsim_bench_quick_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-c", "from slowpath.cli import main; main()", "bench", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    for name in ("ring0_vs_direct", "strict_vs_raw", "posted_vs_strict_throughput", "lookup_4096_vs_1"):
        assert results["ratios"][name] > 0
        assert isinstance(results["targets"][name]["met"], bool)
    for name in ("deferred_read", "strict_write", "posted_write", "doorbell_write"):
        latency = results["deferrals"][name]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert [len(points) for points in results["contention"].values()] == [3, 3]
    assert results["deferrals"]["placement"]["pin"] == "none"
    assert "| target | value | met |" in (out / "results.md").read_text()
    for plot in ("contention.png", "latency.png", "lookup.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
