"""Hostile-guest fuzzing (slowpath.fuzz): ringsim's invariants hold whatever the guest does, and the checkers
catch an invariant that is broken."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.pci import CONFIG_ADDRESS_ENABLE, CONFIG_ADDRESS_PORT, CONFIG_DATA_PORT
from devices.piix import PIIX4_PM, PMBA, PMREGMISC
from shared.iomtable import NIL_GCPHYS, IomTable
from shared.trace import IN, INS, MAX_STRING_UNITS, MMIO_READ, MMIO_WRITE, OUT, OUTS, TraceOp
from shared.vcpu import VmShared
from slowpath import api
from slowpath.fuzz import (
    DEVICE_CALLBACK,
    FILTER_DEBUG_EXIT,
    FILTER_KBD_COMMAND,
    FILTER_KBD_OUTPUT_PORT,
    FILTER_PORT92,
    FILTER_RESET_CONTROL,
    FILTER_SLEEP,
    FILTER_TESTDEV_EM,
    INTERESTING_VALUES,
    INVALID_MMIO_SIZES,
    INVALID_PORT_SIZES,
    PCI_FUNCTIONS,
    RULE_ACCESSES,
    RULE_COMMITS,
    RULE_PENDING,
    RULE_REJECTED,
    RULE_TABLES,
    VALID_MMIO_SIZES,
    VALID_PORT_SIZES,
    ChunkOutcome,
    PowerGuard,
    Window,
    check_accesses,
    check_errors,
    check_pending,
    check_statistics,
    check_tables,
    first_fatal_access,
    fuzz_guest,
    main,
    open_fuzz_vm,
    run_chunk,
    windows_of,
)
from slowpath.vm import VM

MAX_DRAWS = 60  # accesses drawn per example (a PCI poke is up to four): one VM run each


def access(kind: int, address: int, size: int, value: int = 0, data: bytes = b"") -> TraceOp:
    return TraceOp(kind, 0, address, size, value, data, None, 0)


class FuzzTarget:
    """One VM for many examples, and the guard that has seen every write it ran, in order.

    A run that kills the worker leaves the VM unable to run again; the next run gets a
    new VM (and a new guard, as device state starts over).
    """

    def __init__(self) -> None:
        self.vm: VM | None = None
        self.open()

    def open(self) -> None:
        self.vm = open_fuzz_vm(chunk=4 * MAX_DRAWS + 16).__enter__()
        self.guard = PowerGuard(self.vm)
        self.windows = windows_of(self.vm)

    def close(self) -> None:
        vm, self.vm = self.vm, None
        if vm is not None:
            vm.__exit__(None, None, None)

    def run(self, ops: list[TraceOp]) -> ChunkOutcome:
        assert self.vm is not None
        outcome = run_chunk(self.vm, self.guard.sanitize(ops))
        if outcome.died:
            self.close()
            self.open()
        return outcome


@pytest.fixture(scope="module")
def target() -> Iterator[FuzzTarget]:
    holder = FuzzTarget()
    try:
        yield holder
    finally:
        holder.close()


# --- Strategies that mirror GuestFuzzer ---------------------------------------------------
def _all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


PORT_SIZES = st.sampled_from(VALID_PORT_SIZES + INVALID_PORT_SIZES)
MMIO_SIZES = st.sampled_from(VALID_MMIO_SIZES + INVALID_MMIO_SIZES)


def values(size: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 0xFF).map(lambda v: v & _all_ones(size)),
        st.sampled_from(INTERESTING_VALUES).map(lambda v: v & _all_ones(size)),
        st.integers(0, _all_ones(size)),
    )


@st.composite
def port_access(draw: st.DrawFn, ports: st.SearchStrategy[int]) -> list[TraceOp]:
    port, size = draw(ports), draw(PORT_SIZES)
    if draw(st.booleans()):
        return [access(IN, port, size)]
    return [access(OUT, port, size, draw(values(size)))]


@st.composite
def string_access(draw: st.DrawFn, ports: st.SearchStrategy[int]) -> list[TraceOp]:
    port, size = draw(ports), draw(PORT_SIZES)
    count = draw(st.one_of(st.integers(1, 16), st.integers(1, MAX_STRING_UNITS)))
    if draw(st.booleans()):
        return [access(INS, port, size, count)]
    data = random.Random(draw(st.integers(0, 2**32 - 1))).randbytes(count * max(size, 1))  # too big to draw
    return [access(OUTS, port, size, data=data)]


@st.composite
def mmio_access(draw: st.DrawFn, windows: list[Window]) -> list[TraceOp]:
    window = draw(st.sampled_from(windows))
    offset = draw(st.one_of(
        st.integers(0, min(window.size, 0x100) - 1),  # the registers
        st.integers(window.size - 16, window.size - 1),  # running past the end
        st.integers(-15, -1),  # starting before the region
        st.integers(0, window.size - 1),
    ))
    address, size = min(max(window.first + offset, 0), NIL_GCPHYS), draw(MMIO_SIZES)
    if draw(st.booleans()):
        return [access(MMIO_READ, address, size)]
    return [access(MMIO_WRITE, address, size, draw(values(size)))]


@st.composite
def unassigned_mmio(draw: st.DrawFn) -> list[TraceOp]:
    address = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, NIL_GCPHYS),
                             st.integers(NIL_GCPHYS - 15, NIL_GCPHYS)))
    size = draw(MMIO_SIZES)
    if draw(st.booleans()):
        return [access(MMIO_READ, address, size)]
    return [access(MMIO_WRITE, address, size, draw(values(size)))]


@st.composite
def pci_poke(draw: st.DrawFn) -> list[TraceOp]:
    """CONFIG_ADDRESS at 0xCF8, then one to three data-port accesses at 0xCFC-0xCFF."""
    layout = draw(st.one_of(st.sampled_from(PCI_FUNCTIONS), st.none()))
    bus, devfn = (0, layout.devfn) if layout is not None else (draw(st.sampled_from((0, 1, 255))),
                                                                 draw(st.integers(0, 255)))
    enable = CONFIG_ADDRESS_ENABLE if draw(st.sampled_from((True, False))) else 0
    ops = [access(OUT, CONFIG_ADDRESS_PORT, 4, enable | bus << 16 | devfn << 8 | draw(st.integers(0, 63)) * 4)]
    for lane, size, write in draw(st.lists(st.tuples(st.integers(0, 3), PORT_SIZES, st.booleans()), min_size=1,
                                           max_size=3)):
        if write:
            value = draw(st.one_of(st.sampled_from((0xFFFFFFFF, 0, 1, 7)), values(size)))
            ops.append(access(OUT, CONFIG_DATA_PORT + lane, size, value & _all_ones(size)))
        else:
            ops.append(access(IN, CONFIG_DATA_PORT + lane, size))
    return ops


def guest_accesses(windows: list[Window]) -> st.SearchStrategy[list[TraceOp]]:
    port_windows = [w for w in windows if not w.mmio]
    ports = st.one_of(
        st.sampled_from(port_windows).flatmap(lambda w: st.integers(w.first, w.first + w.size - 1)),
        st.integers(0, 0xFFFF),
    )
    one = st.one_of(port_access(ports), mmio_access([w for w in windows if w.mmio]), pci_poke(),
                    string_access(ports), unassigned_mmio())
    return st.lists(one, min_size=1, max_size=MAX_DRAWS).map(lambda draws: [op for ops in draws for op in ops])


# --- The properties -------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_invariant_holds_whatever_the_guest_does(target: FuzzTarget, data: st.DataObject) -> None:
    ops = data.draw(guest_accesses(target.windows), label="accesses")
    outcome = target.run(ops)
    assert outcome.findings == []
    assert outcome.executed == len(ops)


def test_a_fuzzing_session_finds_nothing_and_the_seed_reproduces_it() -> None:
    first = fuzz_guest(3000, seed=1)
    second = fuzz_guest(3000, seed=1)
    assert first.violations == 0 and first.ok, first.render()
    assert first.accesses == 3000 and first.chunks == 1
    assert first.per_device == second.per_device
    assert (first.statuses, first.filtered) == (second.statuses, second.filtered)
    assert {"piix#0", "testdev#0", "hpet#0", "edu#0", "unassigned"} <= set(first.per_device)
    assert json.loads(json.dumps(first.to_json()))["findings"] == []


def test_with_power_offs_allowed_a_chunk_goes_on_after_the_guest_powers_off() -> None:
    report = fuzz_guest(300, seed=1, allow_power_off=True)
    assert report.power_offs >= 1 and report.resets >= 1
    assert report.accesses == 300 and report.chunks > report.power_offs
    assert report.violations == 0, report.render()
    assert report.filtered == {}


def test_the_guard_changes_only_the_writes_that_end_the_run(target: FuzzTarget) -> None:
    assert target.vm is not None
    guard = PowerGuard(target.vm)
    pm_function = PIIX4_PM.devfn << 8
    ops = [
        access(OUT, 0xF4, 1, 0x1),  # isa-debug-exit
        access(OUT, 0x543, 1, 0x0),  # testdev EM: power off
        access(OUT, 0x543, 4, 0x1),  # testdev EM: reset
        access(OUT, 0x64, 1, 0xFE),  # i8042: pulse the reset line
        access(OUT, 0x64, 1, 0xD1),  # i8042: write the output port ...
        access(OUT, 0x60, 1, 0x00),  # ... with the reset line low
        access(OUT, 0x92, 1, 0x03),  # fast reset
        access(OUT, 0xCF9, 1, 0x06),  # RCPU
        access(OUT, CONFIG_ADDRESS_PORT, 4, CONFIG_ADDRESS_ENABLE | pm_function | PMBA),
        access(OUT, CONFIG_DATA_PORT, 4, 0x601),  # PM block at 0x600 ...
        access(OUT, CONFIG_ADDRESS_PORT, 4, CONFIG_ADDRESS_ENABLE | pm_function | PMREGMISC),
        access(OUT, CONFIG_DATA_PORT, 1, 0x1),  # ... decoded
        access(OUT, 0x604, 2, 0x2000),  # SLP_EN, S5
        access(OUT, 0x605, 1, 0x28),  # SLP_EN, S4 (QEMU powers off)
        access(OUTS, 0x92, 1, data=b"\x02\x01"),
        access(OUT, 0x80, 1, 0x1),  # harmless
        access(OUT, 0xF4, 3, 0x1),  # an invalid size: IOM refuses it before the device
    ]
    guarded = guard.sanitize(ops)
    assert guarded[0] == access(IN, 0xF4, 1)
    assert [op.value for op in guarded[1:8]] == [0x2, 0x3, 0xFF, 0xD1, 0x01, 0x02, 0x02]
    assert [op.value for op in guarded[12:14]] == [0x0000, 0x08]
    assert guarded[14].data == b"\x02\x00" and guarded[8:12] == ops[8:12] and guarded[15:] == ops[15:]
    assert guard.filtered == {FILTER_DEBUG_EXIT: 1, FILTER_TESTDEV_EM: 2, FILTER_KBD_COMMAND: 1,
                              FILTER_KBD_OUTPUT_PORT: 1, FILTER_PORT92: 2, FILTER_RESET_CONTROL: 1, FILTER_SLEEP: 2}
    result = api.run_workload(target.vm, guarded)
    assert (result.resets, result.final_status["name"], result.exit_status) == (0, "VINF_SUCCESS", None)


def test_a_harmless_workload_has_no_fatal_access() -> None:
    assert first_fatal_access(None, [access(IN, 0x540, 4), access(OUT, 0x544, 4, 0x1234)]) is None


def test_the_command_prints_json_and_says_by_its_status_whether_it_found_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--accesses", "300", "--seed", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accesses"] == 300 and report["ok"] and report["violations"] == 0
    assert set(report) >= {"seconds", "chunks", "findings", "per_device", "statuses", "filtered"}
    with pytest.raises(SystemExit) as exit_info:
        main(["--accesses", "-1"])
    assert exit_info.value.code == 2


# --- Broken invariants are reported ---------------------------------------------------------
def _table_with_two_port_ranges(first: tuple[int, int], second: tuple[int, int]) -> IomTable:
    """A table whose lookup lists [first] then [second] (first port, count), entries agreeing."""
    table = IomTable()
    table.registrations = table.lookup_entries = 2
    for handle, (port, count) in enumerate((first, second)):
        entry = table.entries[handle]
        entry.port, entry.count, entry.mapped = port, count, 1
        lookup = table.lookup[handle]
        lookup.first, lookup.last, lookup.handle = port, port + count - 1, handle
    return table


def test_a_sorted_table_passes_and_an_unsorted_or_overlapping_one_is_reported() -> None:
    assert check_tables(_table_with_two_port_ranges((0x60, 1), (0x70, 2))) == []
    unsorted = check_tables(_table_with_two_port_ranges((0x70, 2), (0x60, 1)))
    assert [f.rule for f in unsorted] == [RULE_TABLES] and "not after the range before it" in unsorted[0].message
    overlapping = check_tables(_table_with_two_port_ranges((0x60, 8), (0x64, 1)))
    assert [f.rule for f in overlapping] == [RULE_TABLES]

    table = _table_with_two_port_ranges((0x60, 1), (0x70, 2))
    table.generation = 3  # the IOM lock left taken
    table.entries[1].port = 0x71  # the entry disagrees with its lookup range
    table.mmio_registrations = 1
    table.mmio_entries[0].mapping = 0xFEC00000  # unmapped, but it says it is somewhere
    messages = [f.message for f in check_tables(table)]
    assert len(messages) == 3
    assert "left taken" in messages[0] and "disagrees" in messages[1] and "still says" in messages[2]


def test_a_pending_write_left_behind_is_reported() -> None:
    shared = VmShared()
    assert check_pending(shared, 2) == []
    shared.vcpus[1].pending_port_write.size = 1
    shared.vcpus[1].force_flag_iom = 1
    shared.vcpus[0].pending_mmio_write.size = 4
    assert [f.rule for f in check_pending(shared, 2)] == [RULE_PENDING] * 3


def test_statistics_that_do_not_add_up_and_errors_that_are_not_device_errors_are_reported(
    target: FuzzTarget,
) -> None:
    ops = [access(OUT, 0x541, 4, 0x1), access(IN, 0x541, 4), access(MMIO_WRITE, 0xFEB00008, 4, 0x1)]
    outcome = target.run(ops)
    assert outcome.findings == [] and outcome.result is not None and target.vm is not None
    result = outcome.result
    assert result.commits == 2  # the deferred OUT and MMIO write commit; the deferred IN is redone
    assert [f.rule for f in check_statistics(replace(result, ring0_handled=result.ring0_handled + 1))] == [
        RULE_ACCESSES
    ]
    shares = target.vm.split_workload(ops, "<test>")
    broken_commits = check_accesses(target.vm, shares, replace(result, commits=3), Counter())
    assert [f.rule for f in broken_commits] == [RULE_COMMITS]
    errors = ["vCPU 0: hpet#0 port 0xfed00010: KeyError: 7", "a request from nobody"]
    found = check_errors(target.vm, replace(result, errors=errors))
    assert [f.rule for f in found] == [DEVICE_CALLBACK, RULE_REJECTED]
    assert (found[0].device, found[0].register) == ("hpet#0", "HPET +0x10 (MMIO 0xfed00010)")
    assert not found[0].invariant and found[1].invariant


# --- Bugs the fuzzer found ------------------------------------------------------------------
# A REP INS or OUTS of unit size 0 killed the vCPU worker (ZeroDivisionError counting units in
# fastpath/vcpu.py, replay.py and journal.py) after IOM had already refused the size; fixed in
# 2f8bf91.  These pin the fix down.
@pytest.mark.parametrize("ops", [
    [access(INS, 0x540, 0, 3), access(IN, 0x540, 4)],
    [access(OUTS, 0x540, 0, data=b"\x01\x02\x03"), access(IN, 0x540, 4)],
], ids=["ins", "outs"])
def test_a_size_zero_string_access_is_refused_and_the_vcpu_goes_on(ops: list[TraceOp]) -> None:
    with open_fuzz_vm(chunk=len(ops)) as vm:
        outcome = run_chunk(vm, ops)
    assert outcome.findings == []
    assert outcome.statuses == Counter({"VERR_IOM_INVALID_IOPORT_SIZE": 1, "VINF_SUCCESS": 1})
