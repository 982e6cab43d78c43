"""Faults: a device callback that raises, ring-3 killed under its workers, a worker killed mid-string."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, vm_config, workload

from shared.devapi import (
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    DeviceRegistration,
    Ring3DeviceHelpers,
)
from shared.segments import SEGMENT_PREFIX
from slowpath.pdm import builtin_registry
from slowpath.server import WorkerDied
from slowpath.vm import VM


class RaiserState(ctypes.Structure):
    _fields_ = [("io_handle", ctypes.c_uint16)]


class RaiserRing3:
    """A broken device: every write to its port raises."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: RaiserState, config: Mapping[str, Any]) -> None:
        state.io_handle = hlp.ioport_create_and_map(0x700, 1, description="RAISER", out=self.io_out)

    def io_out(self, offset: int, value: int, size: int) -> int:
        raise RuntimeError("boom")


RAISER = DeviceRegistration(
    name="raiser", description="raises", device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_NEW_STYLE, max_instances=1,
    shared_state=RaiserState, ring3=RaiserRing3,
)


def _raiser_run(on_device_error: str) -> tuple[Any, int]:
    registry = builtin_registry()
    registry.register(RAISER, __name__)
    config = vm_config(f'OnDeviceError = "{on_device_error}"\n' + vm_config().text + "[Devices.raiser.0]\n")
    with VM(config, registry=registry) as vm:
        result = vm.run(vm.split_workload(workload("out 0x700 1 0x1\nout 0x540 4 0x1\n"), "t"))
        return result, vm.device("testdev").state.nop_writes


def test_a_raising_callback_fails_the_access_is_reported_and_the_vm_goes_on() -> None:
    result, nop_writes = _raiser_run("continue")
    assert nop_writes == 1
    assert any("raiser#0 port 0x0700: RuntimeError: boom" in error for error in result.errors)
    assert result.per_vcpu[0]["failures"] == 1
    assert result.final_status["name"] == "VINF_SUCCESS"


def test_a_raising_callback_powers_the_vm_off_when_the_config_says_so() -> None:
    result, nop_writes = _raiser_run("poweroff")
    assert nop_writes == 0
    assert any("RuntimeError: boom" in error for error in result.errors)
    assert result.final_status["name"] == "VINF_EM_OFF"


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ring3_killed_every_worker_notices_within_5s_and_the_segments_go(tmp_path: Path) -> None:
    trace = tmp_path / "long.trace"
    trace.write_text("out 0x541 4 0x1\n" * 300_000)
    scratch = tmp_path / "tmp"  # ring-3's private directory is made here
    scratch.mkdir()
    ring3 = subprocess.Popen([sys.executable, "-c", "from slowpath.cli import main; main()", "run", "--vcpus", "2",
                              "--workload", str(trace)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = _children(ring3.pid)
        time.sleep(0.05)
    assert len(workers) == 2
    time.sleep(0.5)
    ring3.kill()
    killed = time.monotonic()
    ring3.communicate(timeout=10)
    while any(_running(pid) for pid in workers) and time.monotonic() < killed + 10:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in workers)
    assert time.monotonic() - killed < 5.0
    # The last process out (the resource tracker, once every worker is gone) unlinks the segments.
    while time.monotonic() < killed + 10:
        if not [n for n in os.listdir("/dev/shm") if n.startswith(f"{SEGMENT_PREFIX}{ring3.pid}_")]:
            break
        time.sleep(0.1)
    assert [n for n in os.listdir("/dev/shm") if n.startswith(f"{SEGMENT_PREFIX}{ring3.pid}_")] == []
    # The workers take ring-3's private directory (socket, workload, reports) with them.
    assert list(scratch.iterdir()) == []


def test_worker_killed_during_a_string_access_ends_the_run_cleanly() -> None:
    # REP OUTS on NOP_R3: ring-0 defers, ring-3 does each unit; long enough to be caught in it.
    ops = workload(("outs 0x541 1 " + "00" * 4096 + "\n") * 200)
    with VM(vm_config()) as vm:
        names = [segment.name for segment in vm.segments]

        def kill_soon() -> None:
            deadline = time.monotonic() + 30
            while vm.device("testdev").state.nop_writes < 5000 and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(vm.workers[0].process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        with pytest.raises(WorkerDied, match="killed by SIGKILL"):
            vm.run(vm.split_workload(ops, "t"), timeout_s=60)
        killer.join()
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in names)
