"""Explain mode and the timeline, from a real run with real workers."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from conftest import REPO, vm_config, workload

from slowpath.explain import explain_lines, timeline
from slowpath.vm import VM

OPS = """
out 0x540 4 0x1
out 0x541 4 0x1
in  0x541 4 = 0x64726962
in  0x2f8 1 = 0xff
out 0x543 1 0x0
"""


def _journalled_run(**kwargs: Any) -> tuple[list[str], dict[str, Any]]:
    with VM(vm_config(), journal_limit=100, **kwargs) as vm:
        vm.run(vm.split_workload(workload(OPS), "t"))
        return explain_lines(vm), timeline(vm)


def test_explain_tells_each_access_journey() -> None:
    lines, _ = _journalled_run()
    assert len(lines) == 5
    assert "testdev#0's ring-0 callback handled it -> VINF_SUCCESS" in lines[0]
    assert "asked for ring-3 -> VINF_IOM_R3_IOPORT_COMMIT_WRITE" in lines[1]
    assert "ring-3 committed the pending write on testdev#0" in lines[1]
    assert "ring-3 re-executed the IN on testdev#0" in lines[2] and "-> 0x64726962" in lines[2]
    assert "no device decodes it" in lines[3]
    assert ("merged VINF_IOM_R3_IOPORT_COMMIT_WRITE with VINF_EM_OFF into VINF_EM_OFF" in lines[4])
    assert all("ring-0 " in line and "µs" in line for line in lines)


def test_timeline_is_trace_events_with_ordered_tracks_and_flows() -> None:
    _, document = _journalled_run(vcpus=1)
    text = json.dumps(document)  # what the file holds
    events = json.loads(text)["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    for event in slices:
        assert {"name", "cat", "ts", "dur", "pid", "tid"} <= set(event)
        assert event["dur"] >= 0
    ring0 = [e for e in slices if e["cat"] == "ring0"]
    assert [e["args"]["access"] for e in ring0] == [0, 1, 2, 3, 4]
    assert all(a["ts"] <= b["ts"] for a, b in itertools.pairwise(ring0))
    flows: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event in events:
        if event["ph"] in ("s", "f"):
            flows[event["id"]][event["ph"]] = event
    assert len(flows) == 3  # the three deferrals
    waits = {e["args"]["request"]: e for e in slices if e["cat"] == "wait"}
    served = {e["args"]["request"]: e for e in slices if e["cat"] == "ring3"}
    for pair in flows.values():
        start, finish = pair["s"], pair["f"]
        assert (start["pid"], finish["pid"]) == (1, 2)
        assert finish["ts"] >= start["ts"]
    for request, wait in waits.items():
        work = served[request]
        # Ring-3's work lies inside the vCPU's wait for it.
        assert wait["ts"] <= work["ts"] and work["ts"] + work["dur"] <= wait["ts"] + wait["dur"] + 1


def test_cli_writes_a_timeline_file_and_explains(tmp_path: Path) -> None:
    path = tmp_path / "timeline.json"
    done = subprocess.run(
        [sys.executable, "-c", "from slowpath.cli import main; main()", "run", "--explain", "--limit", "3",
         "--timeline", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#0    vCPU0 ")
    assert sum(1 for line in done.stdout.splitlines() if line.startswith("#")) == 3
    assert json.loads(path.read_text())["traceEvents"]
