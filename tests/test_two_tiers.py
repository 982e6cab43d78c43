"""Integration: real ring-0 worker processes, real shared memory, real ZeroMQ.

Each test builds a VM through the Python API, runs a small workload on its vCPU
workers and checks where the work ran, using the statistics and the devices' shared
state, which both tiers write.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import vm_config, workload

from shared.stats import G_DEFER_IOM_LOCK_BUSY, L_CONTENTION_R3
from shared.status import VINF_EM_OFF, VINF_SUCCESS
from slowpath.server import WorkerDied
from slowpath.vm import VM

NOP_VALUE = 0x64726962




def test_ring0_handled_access_sends_nothing_to_ring3() -> None:
    ops = workload("out 0x540 4 0x1\n" * 1000 + "in 0x540 4 = 0x64726962\n")
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
        state = vm.device("testdev").state
        assert state.ring0_accesses == 1001
        assert state.ring3_accesses == 0
        assert state.nop_writes == 1000
    assert result.ring0_handled == 1001
    assert sum(result.deferred.values()) == 0
    assert result.commits == 0
    assert result.per_vcpu[0]["messages"] == 2  # hello and done, nothing in between
    assert result.replay["reads_matched"] == 1


def test_deferred_write_is_committed_exactly_once_in_ring3() -> None:
    ops = workload("out 0x541 4 0x1\n" * 300)
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
        state = vm.device("testdev").state
        assert state.nop_writes == 300
        assert state.ring3_accesses == 300
        assert state.ring0_accesses == 0
    assert result.deferred["device_asked"] == 300
    assert result.commits == 300
    assert result.per_vcpu[0]["messages"] == 302
    testdev = next(r for r in result.regions if r["description"] == "TESTDEV")
    assert testdev["out_r0_to_r3"] == 300 and testdev["out_r3"] == 300


def test_deferred_read_returns_ring3_value() -> None:
    config = vm_config(
        """
[Devices.serial.0]
[Devices.serial.0."LUN#0"]
Driver = "memory"
[Devices.serial.0."LUN#0".Config]
Input = "ZY"
[Devices.testdev.0]
"""
    )
    # NOP_R3 is answered only in ring-3.  The UART's received bytes wait in the ring-3
    # driver: ring-0 sees data ready (LSR.DR), but must defer each RBR read so that
    # ring-3 fetches the byte; the values come from ring-3.
    ops = workload("in 0x541 4 = 0x64726962\nin 0x3fd 1 = 0x61\nin 0x3f8 1 = 0x5a\nin 0x3f8 1 = 0x59\n")
    with VM(config) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
    assert result.replay["reads_matched"] == 4, result.replay["mismatches"]
    assert result.deferred["device_asked"] == 3
    serial = next(r for r in result.regions if r["description"] == "SERIAL")
    assert (serial["in_r0"], serial["in_r0_to_r3"], serial["in_r3"]) == (1, 2, 2)
    assert result.ring3_accesses >= 2


def test_device_lock_held_by_ring3_makes_ring0_defer_and_is_counted() -> None:
    ops = workload("out 0x540 4 0x1\n" * 200)
    with VM(vm_config()) as vm:
        testdev = vm.device("testdev")
        ring3_row = vm.stats.row_base(0, ring3=True)
        ring3_waits = vm.stats.lock_base(ring3_row, testdev.index) + L_CONTENTION_R3
        released = threading.Event()

        def hold_lock_until_ring3_waits_for_it() -> None:
            # Ring-0 finds the lock busy and defers; ring-3's commit must then wait
            # for this holder, which lets go only once that wait has been counted.
            with testdev.lock:
                deadline = time.monotonic() + 30
                while vm.counters[ring3_waits] == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
            released.set()

        holder = threading.Thread(target=hold_lock_until_ring3_waits_for_it)
        holder.start()
        result = vm.run(vm.split_workload(ops, "t"))
        holder.join()
        assert released.is_set()
        state = testdev.state
        assert state.nop_writes == 200  # nothing lost, nothing done twice
    assert result.deferred["device_lock_busy"] >= 1
    assert result.locks["testdev#0"]["busy_r0"] >= 1
    assert result.locks["testdev#0"]["contention_r3"] >= 1  # ring-3's commit waited for the holder
    assert result.commits == result.deferred["device_lock_busy"]


def test_iom_lock_held_by_ring3_makes_ring0_defer() -> None:
    ops = workload("out 0x540 4 0x1\n" * 100)
    with VM(vm_config()) as vm:
        busy_counter = vm.stats.row_base(0, ring3=False) + G_DEFER_IOM_LOCK_BUSY

        def hold_iom_lock() -> None:
            with vm.iom.exclusive():
                deadline = time.monotonic() + 30
                while vm.counters[busy_counter] == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)

        holder = threading.Thread(target=hold_iom_lock)
        holder.start()
        result = vm.run(vm.split_workload(ops, "t"))
        holder.join()
        assert vm.device("testdev").state.nop_writes == 100
    assert result.deferred["iom_lock_busy"] >= 1
    assert result.commits == result.deferred["iom_lock_busy"]


def test_builtin_program_powers_off_through_merged_em_status() -> None:
    from slowpath.workloads import load_workload

    source, ops = load_workload(None)
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, source))
    assert result.final_status == {"rc": VINF_EM_OFF, "name": "VINF_EM_OFF"}
    assert result.replay["reads_checked"] == result.replay["reads_matched"] > 0
    assert {"before": "VINF_IOM_R3_IOPORT_COMMIT_WRITE", "commit": "VINF_EM_OFF", "merged": "VINF_EM_OFF",
            "vcpu": 0} in result.merges
    assert result.console["serial#0/LUN#0"] == "Hello from the ringsim guest on COM1\r\n"
    assert result.console["debugcon#0/LUN#0"] == "ringsim: hello from the guest\n"
    assert result.ring0_handled > 0 and result.commits > 0


def test_reset_status_resets_devices() -> None:
    ops = workload("out 0x544 4 0x1234\nout 0x543 1 0x1\nin 0x544 4 = 0x0\n")
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
    assert result.resets == 1
    assert result.replay["reads_matched"] == 1
    assert result.final_status["rc"] == VINF_SUCCESS


def test_isa_debug_exit_sets_exit_status() -> None:
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(workload("out 0xf4 4 0x10\nout 0x540 4 0x1\n"), "t"))
        assert vm.device("testdev").state.nop_writes == 0  # the vCPU stopped at power-off
    assert result.exit_status == (0x10 << 1) | 1
    assert result.final_status["name"] == "VINF_EM_OFF"


def test_each_vcpu_runs_its_share_with_its_own_statistics_row() -> None:
    ops = workload("out 0x540 4 0x1\n" * 50 + "@1 out 0x541 4 0x1\n" * 20)
    with VM(vm_config(), vcpus=2) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
        assert vm.device("testdev").state.nop_writes == 70
    assert [v["executed"] for v in result.per_vcpu] == [50, 20]
    # The two vCPUs contend for testdev's lock: an access that finds it taken is
    # deferred as "device lock busy" instead of finishing in ring-0 (vCPU 0) or being
    # deferred by the device itself (vCPU 1).  Either way each write lands once.
    assert result.ring0_handled + sum(result.deferred.values()) == 70
    assert result.ring0_handled <= 50
    assert result.deferred["device_asked"] + result.deferred["device_lock_busy"] >= 20
    assert result.commits == sum(result.deferred.values())


def test_tcp_transport_binds_loopback_and_works() -> None:
    with VM(vm_config(), transport="tcp") as vm:
        assert vm.endpoint.startswith("tcp://127.0.0.1:")
        result = vm.run(vm.split_workload(workload("in 0x541 4 = 0x64726962\n"), "t"))
    assert result.replay["reads_matched"] == 1


def test_ipc_endpoint_is_in_a_private_directory() -> None:
    with VM(vm_config()) as vm:
        directory = os.path.dirname(vm.endpoint.removeprefix("ipc://"))
        assert os.stat(directory).st_mode & 0o777 == 0o700
    assert not os.path.exists(directory)


def test_killed_worker_ends_run_with_clear_error_within_5_seconds() -> None:
    ops = workload("out 0x541 4 0x1\n" * 200_000)  # minutes of round trips: it will not finish
    with VM(vm_config()) as vm:
        segment_names = [segment.name for segment in vm.segments]
        killed_at: list[float] = []

        def kill_worker_once_running() -> None:
            deadline = time.monotonic() + 30
            while vm.device("testdev").state.nop_writes < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            killed_at.append(time.monotonic())
            os.kill(vm.workers[0].process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_worker_once_running)
        killer.start()
        with pytest.raises(WorkerDied, match=r"vCPU 0 worker .* killed by SIGKILL"):
            vm.run(vm.split_workload(ops, "t"))
        noticed = time.monotonic() - killed_at[0]
        killer.join()
        process = vm.workers[0].process
    assert noticed < 5.0
    assert process.exitcode == -signal.SIGKILL
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in segment_names)


def test_tcp_listens_on_every_interface_only_when_asked_and_warns() -> None:
    with pytest.warns(UserWarning, match="every interface"), VM(vm_config(), transport="tcp", listen_any=True) as vm:
        assert vm.endpoint.startswith("tcp://0.0.0.0:")


NOBODY_PYTHON = "/usr/bin/python3"  # an interpreter another user may run (the venv's lives under /root)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(NOBODY_PYTHON), reason="needs root and a system python")
def test_another_user_cannot_reach_the_ipc_endpoint() -> None:
    import subprocess

    with VM(vm_config()) as vm:
        socket_path = vm.endpoint.removeprefix("ipc://")
        # The directory's mode, not the socket's own, must stop it: even finding the socket fails.
        probe = (
            "import os, sys\n"
            f"try:\n    os.stat({socket_path!r})\nexcept PermissionError:\n    sys.exit(13)\nsys.exit(0)\n"
        )
        done = subprocess.run(
            [NOBODY_PYTHON, "-I", "-c", probe], preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)), timeout=30
        )
    assert done.returncode == 13  # the private 0700 directory refuses "nobody"
