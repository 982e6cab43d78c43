"""Integration: MMIO through real ring-0 workers, real shared memory and real ZeroMQ."""

from __future__ import annotations

import threading
import time

from conftest import vm_config, workload

from shared.trace import parse_text
from slowpath.vm import VM

TESTDEV_MMIO = 0xFEB00000
NOP, NOP_R3 = TESTDEV_MMIO, TESTDEV_MMIO + 8
NOP_VALUE = 0x64726962


def test_ring0_handled_mmio_write_sends_nothing_to_ring3() -> None:
    ops = workload(f"wr {NOP:#x} 4 0x1\n" * 500 + f"rd {NOP:#x} 4 = {NOP_VALUE:#x}\n")
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
        state = vm.device("testdev").state
        assert (state.mmio_writes, state.ring0_accesses, state.ring3_accesses) == (500, 500, 0)
    assert result.per_vcpu[0]["messages"] == 2
    assert result.ring0_handled == 501
    assert result.replay["reads_matched"] == 1


def test_pending_mmio_write_is_committed_exactly_once_through_its_region_hint() -> None:
    ops = workload("".join(f"wr {NOP_R3:#x} 4 {n:#x}\n" for n in range(300)))
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
        state = vm.device("testdev").state
        assert (state.mmio_writes, state.mmio_last_value, state.ring3_accesses) == (300, 299, 300)
    assert result.deferred["device_asked"] == 300
    assert result.mmio["commits"] == result.mmio["commits_direct"] == 300
    assert result.mmio["commits_pgm"] == 0


def test_deferred_mmio_read_returns_ring3_value_and_edu_factorial_runs_in_ring3() -> None:
    ops = workload(
        f"rd {NOP_R3:#x} 4 = {NOP_VALUE:#x}\n"
        "wr 0xfea00020 4 0x80\n"  # raise an interrupt when the factorial is done
        "wr 0xfea00008 4 0xa\n"
        "rd 0xfea00008 4 = 0x375f00\n"  # 10! = 3628800
        "rd 0xfea00024 4 = 0x1\n"  # the factorial's interrupt
        "wr 0xfea00064 4 0x1\n"  # acknowledge
        "rd 0xfea00024 4 = 0x0\n"
    )
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"))
    assert result.replay["reads_checked"] == result.replay["reads_matched"] == 4, result.replay["mismatches"]
    edu = next(r for r in result.regions if r["description"] == "EDU")
    assert (edu["write_r0_to_r3"], edu["write_r3"]) == (1, 1)  # only the factorial went to ring-3


def test_edu_keeps_working_after_its_bar_moves() -> None:
    check = "rd {base:#x} 4 = 0x010000ed\nwr {base:#x} 4 0x0\nwr {live:#x} 4 0xf0\nrd {live:#x} 4 = 0xffffff0f\n"
    old, new = 0xFEA00000, 0xE0000000
    with VM(vm_config()) as vm:
        first = vm.run(vm.split_workload(workload(check.format(base=old, live=old + 4)), "t"))
        vm.device("edu").ring3.move(new)
        second = vm.run(vm.split_workload(workload(check.format(base=new, live=new + 4)), "t"))
        third = vm.run(vm.split_workload(workload(f"rd {old:#x} 4 = 0xffffffff\n"), "t"))
    assert first.replay["reads_matched"] == second.replay["reads_matched"] == 2
    assert third.replay["reads_matched"] == 1 and third.unassigned == 1


def test_remap_while_accesses_are_in_flight_on_another_vcpu_loses_nothing() -> None:
    writes_per_vcpu = 3000
    text = f"wr {NOP:#x} 4 0x1\n" * writes_per_vcpu + f"@1 wr {NOP_R3:#x} 4 0x1\n" * writes_per_vcpu
    with VM(vm_config(), vcpus=2) as vm:
        handle = vm.device("testdev").state.mmio_handle
        stop = threading.Event()
        moves = [0]

        def keep_moving_the_region() -> None:
            addresses = (TESTDEV_MMIO + 0x10000, TESTDEV_MMIO)
            while not stop.is_set():
                vm.remap_mmio(handle, addresses[moves[0] % 2])
                moves[0] += 1
                time.sleep(0.002)

        mover = threading.Thread(target=keep_moving_the_region)
        mover.start()
        try:
            result = vm.run(vm.split_workload(parse_text(text, "t"), "t"))
        finally:
            stop.set()
            mover.join()
        written = vm.device("testdev").state.mmio_writes
    assert moves[0] > 10
    # Every write reached the device once, or found no region there (moved away), or
    # found its region moved between lookup and call in ring-3, where a stale access is
    # dropped (ring-0 hands its stale accesses to ring-3): never twice, never lost.
    assert written + result.unassigned + result.mmio["stale_dropped_in_ring3"] == 2 * writes_per_vcpu
    assert result.ring0_handled + sum(result.deferred.values()) == 2 * writes_per_vcpu
