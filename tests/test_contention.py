"""Contention injection: lock holders and region movers on real VMs with real ring-0 workers.

Assertions are about what must hold whatever the machine's speed: every access is
applied once, deferrals match commits, a held lock is counted, a moved region reads as
its device or as nothing, and everything is put back at the end.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from shared.stats import G_FAILED
from shared.trace import parse_text
from slowpath.config import VmConfig, parse_config
from slowpath.contention import (
    ContentionError,
    ContentionInjector,
    LockHold,
    Remap,
    lock_report,
    parse_contention,
)
from slowpath.vm import VM

EDU_ID = 0x010000ED
EDU_BASE = 0xFEA00000
EDU_SIZE = 0x100000
TESTDEV_NOP = 0x64726962

# testdev's MMIO page sits by default right above edu (0xfeb00000), where edu's default
# second place is; this config keeps that place free.
CONFIG = """
[Devices.testdev.0]
[Devices.testdev.0.Config]
MMIOBase = 0xfe000000
[Devices.edu.0]
"""


def config(text: str = CONFIG) -> VmConfig:
    return parse_config(text, "t.toml")


def nop_writes(count: int) -> str:
    return "out 0x540 4 0x1\n" * count


def lock_is_free(vm: VM, device: str) -> bool:
    lock = vm.device(device).lock
    if lock.acquire(False):
        lock.release()
        return True
    return False


def mmio_mapping(vm: VM, handle: int) -> int | None:
    entry = vm.iom.table.mmio_entries[handle]
    return int(entry.mapping) if entry.mapped else None


def no_injector_threads() -> bool:
    return not any(thread.name.startswith("ringsim-") for thread in threading.enumerate())


# -- lock holding ----------------------------------------------------------------------------
def test_held_device_lock_makes_ring0_defer_and_every_write_lands_once() -> None:
    writes = 5000
    with VM(config()) as vm:
        shares = vm.split_workload(parse_text(nop_writes(writes), "t.trace"), "t")
        with ContentionInjector(vm, [LockHold("testdev#0", 0.5, 0.001)]) as injector:
            result = vm.run(shares)
        assert vm.device("testdev").state.nop_writes == writes
        assert lock_is_free(vm, "testdev")
    report = injector.report()["locks"]["testdev#0"]
    busy = result.deferred["device_lock_busy"]
    assert busy >= 1
    assert report["busy_r0"] == busy == result.commits
    assert result.ring0_handled + busy == writes
    # Each deferral's commit waited in ring-3 for the injected hold to end, and with one
    # vCPU in strict mode a deferral needs a hold of its own.
    assert report["contention_r3"] >= 1 and report["wait_r3_ns"] > 0
    assert busy <= report["holds"]
    assert result.errors == []


def test_zero_duty_never_takes_the_lock() -> None:
    writes = 2000
    with VM(config()) as vm:
        shares = vm.split_workload(parse_text(nop_writes(writes), "t.trace"), "t")
        with ContentionInjector(vm, [LockHold("testdev#0", 0.0, 0.001)]) as injector:
            result = vm.run(shares)
        assert vm.device("testdev").state.nop_writes == writes
    report = injector.report()["locks"]["testdev#0"]
    assert report["holds"] == report["hold_ns"] == 0
    assert report["duty_measured"] == 0.0
    assert report["busy_r0"] == report["contention_r3"] == 0
    assert result.deferred["device_lock_busy"] == 0
    assert result.ring0_handled == writes


def test_measured_duty_cycle_is_nonzero_and_held_less_than_the_run() -> None:
    with VM(config()) as vm:
        shares = vm.split_workload(parse_text(nop_writes(2000), "t.trace"), "t")
        started = time.perf_counter_ns()
        with ContentionInjector(vm, [LockHold("testdev#0", 0.5, 0.002)]) as injector:
            vm.run(shares)
        around_run_ns = time.perf_counter_ns() - started
    report = injector.report()["locks"]["testdev#0"]
    assert report["holds"] > 0
    assert 0 < report["hold_ns"] < report["elapsed_ns"] <= around_run_ns
    assert 0.1 < report["duty_measured"] < 0.9  # asked 0.5; a wide band, not a speed check
    assert report["period_ns"] == 2_000_000


def test_report_is_json_ready_and_lock_report_sums_every_row() -> None:
    with VM(config(CONFIG.replace("[Devices.edu.0]", "[Devices.edu.0]\n[Devices.serial.0]")), vcpus=2) as vm:
        ops = parse_text(nop_writes(300) + "@1 out 0x540 4 0x1\n" * 300, "t.trace")
        with ContentionInjector(
            vm, [LockHold("testdev#0", 0.5, 0.001)], [Remap("edu#0", 100.0)]
        ) as injector:
            result = vm.run(vm.split_workload(ops, "t"))
        counters = lock_report(vm)
        assert vm.device("testdev").state.nop_writes == 600
    assert set(counters) == {"testdev#0", "edu#0", "serial#0"}
    assert counters["testdev#0"]["enters_r0"] == result.locks["testdev#0"]["enters_r0"]
    assert counters["testdev#0"]["busy_r0"] == result.deferred["device_lock_busy"]
    assert counters["serial#0"]["enters_r0"] == counters["serial#0"]["busy_r0"] == 0
    report = json.loads(json.dumps(injector.report()))
    assert set(report["locks"]) == {"testdev#0"}
    assert set(report["remaps"]) == {"edu#0/EDU"}
    assert report["remaps"]["edu#0/EDU"]["addresses"] == [EDU_BASE, EDU_BASE + EDU_SIZE]


# -- moving regions ----------------------------------------------------------------------------
def test_moving_edu_reads_its_id_or_all_ones_and_it_ends_where_it_started() -> None:
    reads = 4000
    with VM(config(), journal_limit=reads) as vm:
        handle = vm.device("edu").state.mmio_handle
        shares = vm.split_workload(parse_text(f"rd {EDU_BASE:#x} 4\n" * reads, "t.trace"), "t")
        with ContentionInjector(vm, remaps=[Remap("edu#0", 1000.0)]) as injector:
            result = vm.run(shares)
        assert mmio_mapping(vm, handle) == EDU_BASE
        failed = vm.counters[vm.stats.row_base(0, ring3=False) + G_FAILED]
    values = [entry[10] for entry in vm.journals[0]]
    statuses = {entry[9] for entry in vm.journals[0]}
    assert len(values) == reads
    assert set(values) == {EDU_ID, 0xFFFFFFFF}  # at home, or elsewhere: nothing is there
    assert all(status >= 0 for status in statuses)
    assert failed == 0 and result.errors == []
    assert result.per_vcpu[0]["failures"] == 0
    assert injector.report()["remaps"]["edu#0/EDU"]["moves"] >= 2


def test_moving_an_io_port_region_reads_the_device_or_all_ones() -> None:
    reads = 2000
    with VM(config(), journal_limit=reads) as vm:
        shares = vm.split_workload(parse_text("in 0x540 4\n" * reads, "t.trace"), "t")
        remap = Remap("testdev#0", 1000.0, kind="ioport", which="TESTDEV", addresses=(0x540, 0x560))
        with ContentionInjector(vm, remaps=[remap]) as injector:
            vm.run(shares)
        entry = vm.iom.table.entries[vm.device("testdev").state.io_handle]
        assert (entry.mapped, entry.port) == (1, 0x540)
    assert {entry[10] for entry in vm.journals[0]} <= {TESTDEV_NOP, 0xFFFFFFFF}
    assert all(entry[9] >= 0 for entry in vm.journals[0])
    assert injector.report()["remaps"]["testdev#0/TESTDEV"]["moves"] >= 1


def test_leaving_with_an_error_releases_the_lock_and_puts_the_region_back() -> None:
    with VM(config()) as vm:
        handle = vm.device("edu").state.mmio_handle
        with pytest.raises(RuntimeError, match="interrupted"):
            with ContentionInjector(vm, [LockHold("testdev#0", 0.95, 0.05)], [Remap("edu#0", 2000.0)]):
                deadline = time.monotonic() + 10
                while mmio_mapping(vm, handle) == EDU_BASE and time.monotonic() < deadline:
                    time.sleep(0.001)
                while lock_is_free(vm, "testdev") and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert mmio_mapping(vm, handle) != EDU_BASE
                assert not lock_is_free(vm, "testdev")
                raise RuntimeError("interrupted")
        assert lock_is_free(vm, "testdev")
        assert mmio_mapping(vm, handle) == EDU_BASE
        assert no_injector_threads()


def test_a_failed_move_is_raised_and_the_region_still_goes_home() -> None:
    with VM(config()) as vm:
        edu = vm.device("edu").state.mmio_handle
        testdev = vm.device("testdev").state.mmio_handle
        injector = ContentionInjector(vm, remaps=[Remap("edu#0", 1000.0)])
        vm.remap_mmio(testdev, EDU_BASE + EDU_SIZE)  # takes edu's second place after the check
        with pytest.raises(ContentionError, match=r"remap-edu#0/EDU failed: .*overlaps"):
            with injector:
                deadline = time.monotonic() + 10  # the first move unmaps edu, then cannot map it
                while mmio_mapping(vm, edu) is not None and time.monotonic() < deadline:
                    time.sleep(0.001)
        assert mmio_mapping(vm, edu) == EDU_BASE
        assert no_injector_threads()


# -- checking specs against the VM ---------------------------------------------------------------
def test_default_second_place_must_be_free() -> None:
    with VM(config("[Devices.testdev.0]\n[Devices.edu.0]\n")) as vm:  # testdev's page at 0xfeb00000
        with pytest.raises(ContentionError, match=r"0xfeb00000-0xfebfffff is not free: testdev#0/TESTDEV MMIO"):
            ContentionInjector(vm, remaps=[Remap("edu#0", 100.0)])
        ContentionInjector(vm, remaps=[Remap("edu#0", 100.0, addresses=(EDU_BASE, 0xFE800000))])


@pytest.mark.parametrize(
    ("holds", "remaps", "message"),
    [
        ([LockHold("nosuch#0", 0.5)], [], r"no device instance 'nosuch#0' \(the VM has .*testdev#0"),
        ([LockHold("testdev#0", 0.5), LockHold("testdev#0", 0.2)], [], "held by another spec"),
        ([], [Remap("edu#0", 10.0, addresses=(EDU_BASE + 1, EDU_BASE))], "not a page-aligned address"),
        ([], [Remap(99, 10.0)], "no mmio region with handle 99"),
        ([], [Remap("edu#0", 10.0, kind="ioport")], r"it has 0 ioport region\(s\)"),
        ([], [Remap("testdev#0", 10.0, kind="ioport", which="NOPE")], "no ioport region 'NOPE'"),
        (
            [],
            [Remap("testdev#0", 10.0, kind="ioport", which="TESTDEV")],
            "0x548-0x54f is not free: testdev#0/TESTDEV R3",
        ),
        ([], [Remap("testdev#0", 10.0, kind="ioport", addresses=(0x540, 0xFFFC))], "run past 0xffff"),
        ([], [Remap("edu#0", 10.0), Remap("edu#0", 5.0, addresses=(EDU_BASE, 0xFE800000))], "another spec"),
        (
            [],
            [Remap("edu#0", 10.0), Remap("testdev#0", 10.0, addresses=(0xFE000000, EDU_BASE + EDU_SIZE))],
            "would collide with the moves of edu#0/EDU",
        ),
    ],
)
def test_specs_the_vm_cannot_take_are_refused(holds: list[LockHold], remaps: list[Remap], message: str) -> None:
    with VM(config()) as vm:
        with pytest.raises(ContentionError, match=message):
            ContentionInjector(vm, holds, remaps)


def test_a_region_that_is_not_mapped_cannot_be_moved() -> None:
    with VM(config()) as vm:
        edu = vm.device("edu")
        vm.iom.mmio_unmap(edu.index, edu.state.mmio_handle)
        with pytest.raises(ContentionError, match="edu#0/EDU: the region is not mapped"):
            ContentionInjector(vm, remaps=[Remap("edu#0", 10.0)])


def test_spec_values_out_of_range_are_refused() -> None:
    with pytest.raises(ContentionError, match=r"duty 0.96 is not in 0..0.95"):
        LockHold("testdev#0", 0.96)
    with pytest.raises(ContentionError, match="period 0 s"):
        LockHold("testdev#0", 0.5, 0.0)
    with pytest.raises(ContentionError, match=r"period 1.5 s is not in \(0, 1\]"):
        LockHold("testdev#0", 0.5, 1.5)
    with pytest.raises(ContentionError, match="rate 0"):
        Remap("edu#0", 0.0)
    with pytest.raises(ContentionError, match="kind 'pci'"):
        Remap("edu#0", 1.0, kind="pci")
    with pytest.raises(ContentionError, match="two different places"):
        Remap("edu#0", 1.0, addresses=(EDU_BASE, EDU_BASE))


# -- the CLI's spec strings ------------------------------------------------------------------------
def test_parse_contention_reads_holds_and_remaps() -> None:
    holds, remaps = parse_contention(
        [
            "hold:testdev#0:duty=0.5:period=2ms",
            "hold:edu#0:duty=0.25",
            "hold:serial#1:period=500us:duty=0.1",
            "remap:edu#0:rate=200",
            "remap:testdev#0/TESTDEV:kind=ioport:rate=50:at=0x540,0x560",
            "remap:3:rate=10",
            "remap:testdev#0/1:kind=ioport:rate=1.5",
        ]
    )
    assert holds == [
        LockHold("testdev#0", 0.5, 0.002),
        LockHold("edu#0", 0.25, 0.002),
        LockHold("serial#1", 0.1, 0.0005),
    ]
    assert remaps == [
        Remap("edu#0", 200.0),
        Remap("testdev#0", 50.0, kind="ioport", which="TESTDEV", addresses=(0x540, 0x560)),
        Remap(3, 10.0),
        Remap("testdev#0", 1.5, kind="ioport", which=1),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lock:testdev#0:duty=0.5", "'lock' is not hold or remap"),
        ("hold", "hold needs a device instance"),
        ("hold:testdev:duty=0.5", "'testdev' is not a device instance"),
        ("hold:testdev#0", "duty= is required"),
        ("hold:testdev#0:duty=half", "duty='half' is not a number"),
        ("hold:testdev#0:duty=0.99", r"duty 0.99 is not in 0..0.95"),
        ("hold:testdev#0:duty=0.5:period=2 fortnights", "period='2 fortnights' is not a duration"),
        ("hold:testdev#0:duty=0.5:period=0ms", "period 0 s"),
        ("hold:testdev#0:duty=0.5:rate=3", "unknown option 'rate' .*takes duty, period"),
        ("hold:testdev#0:duty=0.5:duty=0.2", "duty= given twice"),
        ("hold:testdev#0:duty", "'duty' is not key=value"),
        ("remap", "remap needs a region"),
        ("remap:edu#0", "rate= is required"),
        ("remap:edu#0:rate=-5", "rate -5 moves/s"),
        ("remap:edu#0:rate=200:kind=pci", "kind 'pci'"),
        ("remap:edu#0:rate=200:at=0xfea00000", "is not two addresses"),
        ("remap:edu#0:rate=200:at=0xfea00000,fish", "address 'fish' is not a number"),
        ("remap:edu:rate=200", "'edu' is not a device instance .* or a region handle"),
        ("remap:3/EDU:rate=200", "'/EDU' only follows a device instance"),
    ],
)
def test_parse_contention_names_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ContentionError, match=message) as caught:
        parse_contention([spec])
    assert repr(spec) in str(caught.value)

