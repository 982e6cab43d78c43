"""IOM in ring-3 (slowpath/iom.py): create/map/unmap, the freeze, ``info ioport`` and ring-3 port I/O."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from shared.devapi import IOM_IOPORT_F_ABS
from shared.iomtable import CB_IN, CB_OUT, UNMAPPED_PORT, IomTable, PortLookup
from shared.locks import DeviceLock
from shared.stats import (
    G_COUNT,
    G_FAILED,
    G_RING3_ACCESSES,
    G_UNASSIGNED,
    L_CONTENTION_R3,
    L_CONTENTION_R3_WAIT_CALLS,
    L_ENTERS_R3,
    P_COUNT,
    P_IN_R3,
    P_IN_RZ,
    P_OUT_R3,
    P_PROF_IN_R3_CALLS,
    P_PROF_OUT_R3_CALLS,
    P_TOTAL,
    StatsLayout,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_INVALID_FLAGS,
    VERR_INVALID_PARAMETER,
    VERR_IOM_INVALID_IOPORT_HANDLE,
    VERR_IOM_INVALID_IOPORT_SIZE,
    VERR_IOM_IOPORT_RANGE_CONFLICT,
    VERR_IOM_IOPORT_UNUSED,
    VERR_IOM_IOPORTS_ALREADY_MAPPED,
    VERR_IOM_IOPORTS_NOT_MAPPED,
    VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS,
    VERR_OUT_OF_RANGE,
    VERR_WRONG_ORDER,
    VINF_EM_OFF,
    VINF_EM_RESCHEDULE_REM,
    VINF_SUCCESS,
    VBoxError,
)
from slowpath.iom import IomManager, Ring3PortIO

SPAWN = multiprocessing.get_context("spawn")
LAYOUT = StatsLayout(vcpus=1, port_entries=256, locks=2)
ROW = LAYOUT.row_base(0, ring3=True)


def _out(offset: int, value: int, size: int) -> int:
    return VINF_SUCCESS


def _in(offset: int, size: int) -> tuple[int, int]:
    return VINF_SUCCESS, 0


def raises_rc(rc: int, action: Callable[[], object]) -> VBoxError:
    """Run *action*, which must raise VBoxError with status *rc*."""
    with pytest.raises(VBoxError) as caught:
        action()
    assert caught.value.rc == rc, str(caught.value)
    return caught.value


def lookup_rows(table: IomTable) -> list[tuple[int, int, int]]:
    rows = (table.lookup[i] for i in range(table.lookup_entries))
    return [(row.first, row.last, row.handle) for row in rows]


def make_manager() -> tuple[IomTable, IomManager]:
    table = IomTable()
    return table, IomManager(table)


# -- IOMR3IoPortCreate --------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, 8193, 65536])
def test_create_port_count_outside_1_to_8192_is_out_of_range(count: int) -> None:
    _, iom = make_manager()
    raises_rc(VERR_OUT_OF_RANGE, lambda: iom.create(0, "dev#0", count, "Foo", out=_out))


@pytest.mark.parametrize("count", [1, 8192])
def test_create_accepts_port_count_at_the_limits(count: int) -> None:
    table, iom = make_manager()
    handle = iom.create(0, "dev#0", count, "Foo", out=_out)
    assert table.entries[handle].count == count


@pytest.mark.parametrize("flags", [0x2, 0x80, 0x3])
def test_create_unknown_flags_is_invalid_flags(flags: int) -> None:
    _, iom = make_manager()
    raises_rc(VERR_INVALID_FLAGS, lambda: iom.create(0, "dev#0", 1, "Foo", flags=flags, out=_out))


def test_create_without_any_callback_is_invalid_parameter() -> None:
    _, iom = make_manager()
    raises_rc(VERR_INVALID_PARAMETER, lambda: iom.create(0, "dev#0", 1, "Foo"))


@pytest.mark.parametrize(
    "description", ["", "x" * 128, "é" * 64], ids=["empty", "128-bytes", "128-utf8-bytes"]
)
def test_create_description_empty_or_128_bytes_is_invalid_parameter(description: str) -> None:
    _, iom = make_manager()
    raises_rc(VERR_INVALID_PARAMETER, lambda: iom.create(0, "dev#0", 1, description, out=_out))


def test_create_accepts_a_127_byte_description() -> None:
    table, iom = make_manager()
    handle = iom.create(0, "dev#0", 1, "d" * 127, out=_out)
    assert table.entries[handle].description == b"d" * 127


def test_create_after_freeze_is_wrong_order() -> None:
    table, iom = make_manager()
    iom.create(0, "dev#0", 1, "Foo", out=_out)
    iom.freeze()
    assert table.frozen == 1
    raises_rc(VERR_WRONG_ORDER, lambda: iom.create(0, "dev#0", 1, "Bar", out=_out))
    assert table.registrations == 1


def test_create_leaves_the_region_unmapped_and_hands_out_handles_in_order() -> None:
    table, iom = make_manager()
    first = iom.create(0, "a#0", 8, "A", in_=_in)
    second = iom.create(1, "b#0", 3, "B", out=_out, flags=IOM_IOPORT_F_ABS)
    assert (first, second) == (0, 1)
    assert table.registrations == 2
    assert table.lookup_entries == 0
    a, b = table.entries[0], table.entries[1]
    assert (a.port, a.mapped, a.count, a.owner, a.stats_index) == (UNMAPPED_PORT, 0, 8, 0, 0)
    assert (b.port, b.mapped, b.count, b.owner, b.stats_index, b.flags) == (UNMAPPED_PORT, 0, 3, 1, 8, 1)
    assert (a.ring3_callbacks, b.ring3_callbacks) == (CB_IN, CB_OUT)
    assert (a.ring0_callbacks, b.ring0_callbacks) == (0, 0)
    assert table.port_stats == 11


def test_create_past_4096_registrations_is_too_many_registrations() -> None:
    table, iom = make_manager()
    for _ in range(4096):
        iom.create(0, "a#0", 1, "A", out=_out)
    raises_rc(VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS, lambda: iom.create(0, "a#0", 1, "A", out=_out))
    assert table.registrations == 4096


def test_create_past_65536_port_statistics_is_too_many_registrations() -> None:
    table, iom = make_manager()
    for _ in range(8):
        iom.create(0, "a#0", 8192, "A", out=_out)
    raises_rc(VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS, lambda: iom.create(0, "a#0", 1, "A", out=_out))
    assert (table.registrations, table.port_stats) == (8, 65536)


# -- IOMR3IoPortMap / Unmap ---------------------------------------------------------------

RANGES = [(0x3F8, 8), (0x60, 1), (0x2F8, 8), (0x64, 1), (0xE9, 1)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_map_keeps_the_lookup_sorted_whatever_the_insertion_order(order: tuple[int, ...]) -> None:
    table, iom = make_manager()
    handles = [iom.create(0, "dev#0", count, f"R{i}", out=_out) for i, (_, count) in enumerate(RANGES[:4])]
    for i in order:
        iom.map(0, handles[i], RANGES[i][0])
    assert lookup_rows(table) == [(0x60, 0x60, 1), (0x64, 0x64, 3), (0x2F8, 0x2FF, 2), (0x3F8, 0x3FF, 0)]
    assert [(table.entries[h].port, table.entries[h].mapped) for h in handles] == [
        (0x3F8, 1), (0x60, 1), (0x2F8, 1), (0x64, 1),
    ]


@pytest.mark.parametrize(
    ("port", "count"),
    [(0x100, 16), (0x0F8, 9), (0x10F, 4), (0x104, 2), (0x0F0, 0x40), (0x10F, 1), (0x100, 1)],
    ids=["same", "overlaps-start", "overlaps-end", "inside", "around", "last-port", "first-port"],
)
def test_map_overlapping_a_mapped_range_is_range_conflict(port: int, count: int) -> None:
    table, iom = make_manager()
    mapped = iom.create(0, "a#0", 16, "A", out=_out)
    iom.map(0, mapped, 0x100)
    other = iom.create(1, "b#0", count, "B", out=_out)
    generation = table.generation
    error = raises_rc(VERR_IOM_IOPORT_RANGE_CONFLICT, lambda: iom.map(1, other, port))
    assert "overlaps A at 0100-010f" in str(error)
    assert lookup_rows(table) == [(0x100, 0x10F, mapped)]
    assert table.entries[other].mapped == 0
    assert table.generation == generation


def test_map_adjacent_ranges_is_fine() -> None:
    table, iom = make_manager()
    middle = iom.create(0, "a#0", 16, "A", out=_out)
    below = iom.create(0, "a#0", 16, "B", out=_out)
    above = iom.create(0, "a#0", 16, "C", out=_out)
    iom.map(0, middle, 0x110)
    iom.map(0, below, 0x100)
    iom.map(0, above, 0x120)
    assert lookup_rows(table) == [(0x100, 0x10F, below), (0x110, 0x11F, middle), (0x120, 0x12F, above)]


@pytest.mark.parametrize(("port", "count"), [(0xFFFF, 2), (0xFFF9, 8), (-1, 1)])
def test_map_past_port_0xffff_is_out_of_range(port: int, count: int) -> None:
    _, iom = make_manager()
    handle = iom.create(0, "a#0", count, "A", out=_out)
    raises_rc(VERR_OUT_OF_RANGE, lambda: iom.map(0, handle, port))


def test_map_up_to_port_0xffff_is_fine() -> None:
    table, iom = make_manager()
    handle = iom.create(0, "a#0", 8, "A", out=_out)
    iom.map(0, handle, 0xFFF8)
    assert lookup_rows(table) == [(0xFFF8, 0xFFFF, handle)]


def test_map_twice_is_already_mapped() -> None:
    table, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out)
    iom.map(0, handle, 0x100)
    raises_rc(VERR_IOM_IOPORTS_ALREADY_MAPPED, lambda: iom.map(0, handle, 0x200))
    raises_rc(VERR_IOM_IOPORTS_ALREADY_MAPPED, lambda: iom.map(0, handle, 0x100))
    assert lookup_rows(table) == [(0x100, 0x103, handle)]


def test_unmap_when_not_mapped_is_not_mapped() -> None:
    _, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out)
    raises_rc(VERR_IOM_IOPORTS_NOT_MAPPED, lambda: iom.unmap(0, handle))
    iom.map(0, handle, 0x100)
    iom.unmap(0, handle)
    raises_rc(VERR_IOM_IOPORTS_NOT_MAPPED, lambda: iom.unmap(0, handle))


def test_unmap_removes_only_that_range_and_keeps_the_order() -> None:
    table, iom = make_manager()
    handles = [iom.create(0, "a#0", 4, f"R{i}", out=_out) for i in range(4)]
    for handle, port in zip(handles, (0x300, 0x100, 0x400, 0x200), strict=True):
        iom.map(0, handle, port)
    iom.unmap(0, handles[1])
    assert lookup_rows(table) == [(0x200, 0x203, 3), (0x300, 0x303, 0), (0x400, 0x403, 2)]
    assert (table.entries[handles[1]].port, table.entries[handles[1]].mapped) == (UNMAPPED_PORT, 0)
    iom.unmap(0, handles[2])
    assert lookup_rows(table) == [(0x200, 0x203, 3), (0x300, 0x303, 0)]


def test_unmap_then_map_elsewhere_after_freeze_moves_the_region() -> None:
    rig = Ring3Rig()
    seen: list[int] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        seen.append(offset)
        return VINF_SUCCESS, 0x42

    iom = rig.iom
    bar = iom.create(0, "pci#0", 16, "BAR0", in_=in_)
    fixed = iom.create(0, "pci#0", 4, "FIXED", out=_out)
    iom.map(0, bar, 0xC000)
    iom.map(0, fixed, 0xC010)
    iom.freeze()
    iom.unmap(0, bar)
    iom.map(0, bar, 0xD000)
    assert lookup_rows(rig.table) == [(0xC010, 0xC013, fixed), (0xD000, 0xD00F, bar)]
    # The old place is free again and the new one answers, for any reader of the table.
    assert rig.io.read(0xC005, 1) == (VINF_SUCCESS, 0xFF)
    assert rig.io.read(0xD005, 1) == (VINF_SUCCESS, 0x42)
    assert seen == [5]
    # Creation stays frozen all the same.
    raises_rc(VERR_WRONG_ORDER, lambda: iom.create(0, "pci#0", 1, "LATE", out=_out))


@pytest.mark.parametrize("action", ["map", "unmap", "set_up_ring0"])
@pytest.mark.parametrize(("owner", "handle"), [(1, 0), (0, 1), (0, -1), (0, 4096)], ids=[
    "wrong-owner", "no-such-handle", "negative", "past-the-table"
])
def test_wrong_owner_or_bad_handle_is_invalid_ioport_handle(action: str, owner: int, handle: int) -> None:
    table, iom = make_manager()
    mine = iom.create(0, "a#0", 4, "A", out=_out)
    if action == "unmap":
        iom.map(0, mine, 0x100)
    calls: dict[str, Callable[[], object]] = {
        "map": lambda: iom.map(owner, handle, 0x200),
        "unmap": lambda: iom.unmap(owner, handle),
        "set_up_ring0": lambda: iom.set_up_ring0(owner, handle, CB_OUT),
    }
    raises_rc(VERR_IOM_INVALID_IOPORT_HANDLE, calls[action])
    assert table.entries[mine].ring0_callbacks == 0
    assert table.lookup_entries == (1 if action == "unmap" else 0)


def test_each_change_bumps_generation_by_two_and_leaves_it_even() -> None:
    table, iom = make_manager()
    changes: list[Callable[[], object]] = [
        lambda: iom.create(0, "a#0", 4, "A", out=_out),
        lambda: iom.create(0, "a#0", 4, "B", out=_out),
        lambda: iom.map(0, 0, 0x100),
        lambda: iom.map(0, 1, 0x80),
        lambda: iom.set_up_ring0(0, 0, CB_OUT),
        lambda: iom.freeze(),
        lambda: iom.unmap(0, 0),
        lambda: iom.map(0, 0, 0x200),
    ]
    for change in changes:
        before = table.generation
        change()
        assert table.generation == before + 2
        assert table.generation % 2 == 0


def test_failed_change_leaves_generation_alone() -> None:
    table, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out)
    iom.map(0, handle, 0x100)
    before = table.generation
    for failing in (
        lambda: iom.create(0, "a#0", 0, "B", out=_out),
        lambda: iom.map(0, handle, 0x200),
        lambda: iom.unmap(1, handle),
    ):
        with pytest.raises(VBoxError):
            failing()
    assert table.generation == before


def test_readers_see_the_table_busy_while_it_changes() -> None:
    table, iom = make_manager()
    reader = PortLookup(table)
    assert reader.refresh()
    with iom.exclusive():
        assert table.generation % 2 == 1
        assert not reader.refresh()
    assert reader.refresh()


def test_set_up_ring0_records_the_callbacks() -> None:
    table, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out, in_=_in)
    iom.set_up_ring0(0, handle, CB_OUT)
    assert table.entries[handle].ring0_callbacks == CB_OUT


def test_set_up_ring0_twice_is_wrong_order() -> None:
    table, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out, in_=_in)
    iom.set_up_ring0(0, handle, CB_OUT)
    raises_rc(VERR_WRONG_ORDER, lambda: iom.set_up_ring0(0, handle, CB_IN))
    assert table.entries[handle].ring0_callbacks == CB_OUT


def test_set_up_ring0_without_callbacks_is_invalid_parameter() -> None:
    _, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out)
    raises_rc(VERR_INVALID_PARAMETER, lambda: iom.set_up_ring0(0, handle, 0))


def test_set_up_ring0_after_freeze_is_wrong_order() -> None:
    _, iom = make_manager()
    handle = iom.create(0, "a#0", 4, "A", out=_out)
    iom.freeze()
    raises_rc(VERR_WRONG_ORDER, lambda: iom.set_up_ring0(0, handle, CB_OUT))


# -- info ioport --------------------------------------------------------------------------


def test_info_matches_virtualbox_info_ioport_columns() -> None:
    _, iom = make_manager()
    serial = iom.create(0, "serial#0", 8, "SERIAL", out=_out, in_=_in)
    iom.map(0, serial, 0x3F8)
    iom.set_up_ring0(0, serial, CB_IN | CB_OUT)
    iom.create(1, "foo#0", 0x10, "Foo", out=_out)
    pic = iom.create(2, "pic#0", 2, "i8259 PIC #0", out=_out)
    iom.map(2, pic, 0x20)
    assert iom.info().splitlines() == [
        "I/O port registrations: 3 (4096 allocated)",
        " ## Ctx    Ports Mapping   PCI    Description",
        "  0 R3+0   0008  03f8-03ff        SERIAL",
        "  1 R3     0010  unmapped         Foo",
        "  2 R3     0002  0020-0021        i8259 PIC #0",
    ]


def test_info_follows_the_current_mapping() -> None:
    _, iom = make_manager()
    handle = iom.create(0, "pci#0", 0x100, "BAR", out=_out)
    iom.map(0, handle, 0xC000)
    iom.freeze()
    iom.unmap(0, handle)
    assert iom.info().splitlines()[2] == "  0 R3     0100  unmapped         BAR"
    iom.map(0, handle, 0xE000)
    assert iom.info().splitlines()[2] == "  0 R3     0100  e000-e0ff        BAR"


# -- Ring3PortIO ---------------------------------------------------------------------------


def counters() -> memoryview:
    return memoryview(bytearray(LAYOUT.size_bytes)).cast("Q")


class Ring3Rig:
    """An IomManager with two device owners, their locks, a ring-3 statistics row and the I/O."""

    def __init__(self) -> None:
        self.table, self.iom = make_manager()
        self.counters = counters()
        self.raw_locks: list[Any] = [SPAWN.RLock(), SPAWN.RLock()]
        self.locks = [
            DeviceLock(f"dev{i}#0", raw, self.counters, LAYOUT.lock_base(ROW, i))
            for i, raw in enumerate(self.raw_locks)
        ]
        self.io = Ring3PortIO(self.iom, self.locks, self.counters, ROW)

    def g(self, index: int) -> int:
        return int(self.counters[ROW + index])

    def port_stat(self, handle: int, offset: int, field_index: int) -> int:
        stats_index = self.table.entries[handle].stats_index
        return int(self.counters[ROW + G_COUNT + (stats_index + offset) * P_COUNT + field_index])

    def lock_stat(self, owner: int, field_index: int) -> int:
        return int(self.counters[LAYOUT.lock_base(ROW, owner) + field_index])


def lock_is_free_elsewhere(lock: Any) -> bool:
    result: list[bool] = []

    def probe() -> None:
        got = lock.acquire(False)
        if got:
            lock.release()
        result.append(got)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(10)
    return result[0]


@contextmanager
def held_by_another_thread(lock: Any) -> Iterator[threading.Event]:
    """Hold *lock* from a second thread until the yielded event is set (or the block ends)."""
    taken = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_ring3_missing_in_callback_reads_all_ones(size: int) -> None:
    rig = Ring3Rig()
    handle = rig.iom.create(0, "a#0", 2, "A", out=_out)
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read(0x101, size) == (VINF_SUCCESS, {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}[size])
    assert rig.io.read_string(0x100, size, 2) == (VINF_SUCCESS, b"\xff" * (2 * size), 0)
    assert rig.port_stat(handle, 1, P_IN_R3) == 1


def test_ring3_missing_out_callback_drops_the_write() -> None:
    rig = Ring3Rig()
    reads: list[int] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        reads.append(offset)
        return VINF_SUCCESS, 7

    handle = rig.iom.create(0, "a#0", 2, "A", in_=in_)
    rig.iom.map(0, handle, 0x100)
    assert rig.io.write(0x100, 0x55, 1) == VINF_SUCCESS
    assert rig.io.write_string(0x101, 1, b"abc") == (VINF_SUCCESS, 3)
    assert reads == []
    assert rig.port_stat(handle, 0, P_OUT_R3) == 1
    assert rig.port_stat(handle, 1, P_OUT_R3) == 1


def test_ring3_unassigned_port_reads_all_ones_and_drops_writes() -> None:
    rig = Ring3Rig()
    assert rig.io.read(0x80, 2) == (VINF_SUCCESS, 0xFFFF)
    assert rig.io.write(0x80, 1, 1) == VINF_SUCCESS
    assert rig.io.read_string(0x80, 1, 3) == (VINF_SUCCESS, b"\xff\xff\xff", 0)
    assert rig.io.write_string(0x80, 2, b"abcd") == (VINF_SUCCESS, 2)
    assert rig.g(G_UNASSIGNED) == 4
    assert rig.g(G_RING3_ACCESSES) == 0


@pytest.mark.parametrize("size", [0, 3, 8])
def test_ring3_invalid_size_is_verr_iom_invalid_ioport_size(size: int) -> None:
    rig = Ring3Rig()
    handle = rig.iom.create(0, "a#0", 2, "A", out=_out, in_=_in)
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read(0x100, size)[0] == VERR_IOM_INVALID_IOPORT_SIZE
    assert rig.io.write(0x100, 1, size) == VERR_IOM_INVALID_IOPORT_SIZE
    assert rig.io.read_string(0x100, size, 2)[0] == VERR_IOM_INVALID_IOPORT_SIZE
    assert rig.io.write_string(0x100, size, b"abcdefgh")[0] == VERR_IOM_INVALID_IOPORT_SIZE
    assert rig.g(G_RING3_ACCESSES) == 0


def test_ring3_callbacks_get_offsets_or_absolute_ports() -> None:
    rig = Ring3Rig()
    calls: list[tuple[str, int]] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        calls.append(("in", offset))
        return VINF_SUCCESS, 0

    def out(offset: int, value: int, size: int) -> int:
        calls.append(("out", offset))
        return VINF_SUCCESS

    relative = rig.iom.create(0, "a#0", 8, "REL", in_=in_, out=out)
    absolute = rig.iom.create(0, "a#0", 8, "ABS", in_=in_, out=out, flags=IOM_IOPORT_F_ABS)
    rig.iom.map(0, relative, 0x3F8)
    rig.iom.map(0, absolute, 0x2F8)
    rig.io.read(0x3FD, 1)
    rig.io.write(0x3F9, 0, 1)
    rig.io.read(0x2FD, 1)
    rig.io.write(0x2F9, 0, 1)
    assert calls == [("in", 5), ("out", 1), ("in", 0x2FD), ("out", 0x2F9)]


@pytest.mark.parametrize(("size", "expected"), [(1, 0x44), (2, 0x3344), (4, 0x11223344)])
def test_ring3_values_are_cut_to_the_access_size(size: int, expected: int) -> None:
    rig = Ring3Rig()
    written: list[int] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, 0xFF11223344

    def out(offset: int, value: int, size: int) -> int:
        written.append(value)
        return VINF_SUCCESS

    handle = rig.iom.create(0, "a#0", 1, "A", in_=in_, out=out)
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read(0x100, size) == (VINF_SUCCESS, expected)
    rig.io.write(0x100, 0xFF11223344, size)
    assert written == [expected]


def test_ring3_ioport_unused_reads_all_ones() -> None:
    rig = Ring3Rig()
    handle = rig.iom.create(0, "a#0", 1, "A", in_=lambda offset, size: (VERR_IOM_IOPORT_UNUSED, 0))
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read(0x100, 2) == (VINF_SUCCESS, 0xFFFF)
    assert rig.io.read_string(0x100, 1, 2) == (VINF_SUCCESS, b"\xff\xff", 0)


def test_ring3_passes_em_statuses_through() -> None:
    rig = Ring3Rig()
    handle = rig.iom.create(0, "a#0", 1, "A", out=lambda offset, value, size: VINF_EM_OFF)
    rig.iom.map(0, handle, 0xF4)
    assert rig.io.write(0xF4, 1, 1) == VINF_EM_OFF


def test_ring3_enters_the_device_lock_around_callbacks() -> None:
    rig = Ring3Rig()
    held: list[tuple[bool, bool]] = []

    def probe() -> None:
        held.append((lock_is_free_elsewhere(rig.raw_locks[0]), lock_is_free_elsewhere(rig.raw_locks[1])))

    def in_(offset: int, size: int) -> tuple[int, int]:
        probe()
        return VINF_SUCCESS, 0

    def out(offset: int, value: int, size: int) -> int:
        probe()
        return VINF_SUCCESS

    handle = rig.iom.create(0, "a#0", 1, "A", in_=in_, out=out)
    rig.iom.map(0, handle, 0x100)
    rig.io.read(0x100, 1)
    rig.io.write(0x100, 1, 1)
    rig.io.read_string(0x100, 1, 2)
    rig.io.write_string(0x100, 1, b"ab")
    # Only the owner's lock, every time; and it is given back afterwards.
    assert held == [(False, True)] * 6
    assert lock_is_free_elsewhere(rig.raw_locks[0])
    assert rig.lock_stat(0, L_ENTERS_R3) == 4
    assert rig.lock_stat(1, L_ENTERS_R3) == 0


def test_ring3_waits_for_a_busy_device_lock() -> None:
    rig = Ring3Rig()
    called = threading.Event()

    def out(offset: int, value: int, size: int) -> int:
        called.set()
        return VINF_SUCCESS

    handle = rig.iom.create(0, "a#0", 1, "A", out=out)
    rig.iom.map(0, handle, 0x100)
    results: list[int] = []
    with held_by_another_thread(rig.raw_locks[0]) as release:
        writer = threading.Thread(target=lambda: results.append(rig.io.write(0x100, 1, 1)))
        writer.start()
        time.sleep(0.05)
        assert not called.is_set()  # blocked on the lock, not deferred and not dropped
        assert results == []
        release.set()
        writer.join(10)
    assert results == [VINF_SUCCESS]
    assert called.is_set()
    assert rig.lock_stat(0, L_CONTENTION_R3) == 1
    assert rig.lock_stat(0, L_CONTENTION_R3_WAIT_CALLS) == 1
    assert rig.lock_stat(0, L_ENTERS_R3) == 1


def test_ring3_counts_in_r3_and_out_r3_on_the_accessed_port() -> None:
    rig = Ring3Rig()
    rig.iom.create(0, "a#0", 3, "FIRST", out=_out)
    handle = rig.iom.create(1, "b#0", 4, "B", in_=_in, out=_out)
    rig.iom.map(1, handle, 0x200)
    rig.io.read(0x202, 1)
    rig.io.read(0x202, 1)
    rig.io.write(0x201, 1, 1)
    rig.io.read_string(0x203, 1, 4)
    rig.io.write_string(0x200, 1, b"xy")
    rows = {
        offset: (rig.port_stat(handle, offset, P_IN_R3), rig.port_stat(handle, offset, P_OUT_R3))
        for offset in range(4)
    }
    assert rows == {0: (0, 1), 1: (0, 1), 2: (2, 0), 3: (1, 0)}
    assert rig.port_stat(handle, 0, P_TOTAL) == 5
    assert rig.port_stat(handle, 2, P_PROF_IN_R3_CALLS) == 2
    assert rig.port_stat(handle, 1, P_PROF_OUT_R3_CALLS) == 1
    assert rig.port_stat(handle, 2, P_IN_RZ) == 0
    assert rig.g(G_RING3_ACCESSES) == 5
    assert not any(rig.counters[ROW + G_COUNT : ROW + G_COUNT + 3 * P_COUNT])  # the other region's entries


def test_ring3_string_callbacks_first_then_single_accesses() -> None:
    rig = Ring3Rig()
    calls: list[str] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        calls.append("in")
        return VINF_SUCCESS, 0x7E

    def in_string(offset: int, count: int, size: int) -> tuple[int, bytes]:
        calls.append(f"in_string({count})")
        return VINF_SUCCESS, b"ab"

    def out(offset: int, value: int, size: int) -> int:
        calls.append(f"out({value:#x})")
        return VINF_SUCCESS

    def out_string(offset: int, data: bytes, size: int) -> tuple[int, int]:
        calls.append(f"out_string({data!r})")
        return VINF_SUCCESS, 2

    handle = rig.iom.create(0, "a#0", 1, "A", in_=in_, in_string=in_string, out=out, out_string=out_string)
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read_string(0x100, 1, 4) == (VINF_SUCCESS, b"ab~~", 0)
    assert rig.io.write_string(0x100, 1, b"wxyz") == (VINF_SUCCESS, 4)
    assert calls == ["in_string(4)", "in", "in", "out_string(b'wxyz')", "out(0x79)", "out(0x7a)"]


def test_ring3_string_stops_at_the_first_status_other_than_success() -> None:
    rig = Ring3Rig()
    answers = iter([VINF_SUCCESS, VINF_EM_OFF, VINF_SUCCESS])
    reads = iter([(VINF_SUCCESS, 1), (VINF_EM_RESCHEDULE_REM, 2), (VINF_SUCCESS, 3)])
    handle = rig.iom.create(
        0, "a#0", 1, "A", out=lambda offset, value, size: next(answers), in_=lambda offset, size: next(reads)
    )
    rig.iom.map(0, handle, 0x100)
    # An EM status is IOM_SUCCESS: the unit counts, then the loop stops.
    assert rig.io.write_string(0x100, 1, b"abcde") == (VINF_EM_OFF, 2)
    # A reschedule code is not IOM_SUCCESS in ring-3: the unit does not count.
    assert rig.io.read_string(0x100, 1, 5) == (VINF_EM_RESCHEDULE_REM, b"\x01", 4)


def test_ring3_callback_exception_becomes_failure_status() -> None:
    rig = Ring3Rig()

    def in_(offset: int, size: int) -> tuple[int, int]:
        raise KeyError("boom")

    def out(offset: int, value: int, size: int) -> int:
        raise ZeroDivisionError("zero")

    handle = rig.iom.create(0, "dev", 1, "A", in_=in_, out=out)
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read(0x100, 1) == (VERR_INTERNAL_ERROR, 0)
    assert rig.io.write(0x100, 1, 1) == VERR_INTERNAL_ERROR
    assert rig.io.read_string(0x100, 1, 2) == (VERR_INTERNAL_ERROR, b"", 2)
    assert rig.io.write_string(0x100, 1, b"ab") == (VERR_INTERNAL_ERROR, 0)
    assert rig.g(G_FAILED) == 4
    assert rig.io.callback_errors[:2] == [
        "dev port 0x0100: KeyError: 'boom'",
        "dev port 0x0100: ZeroDivisionError: zero",
    ]
    assert lock_is_free_elsewhere(rig.raw_locks[0])


def test_ring3_sees_regions_mapped_after_it_started() -> None:
    rig = Ring3Rig()
    assert rig.io.read(0x100, 1) == (VINF_SUCCESS, 0xFF)
    handle = rig.iom.create(0, "a#0", 1, "A", in_=lambda offset, size: (VINF_SUCCESS, 0x12))
    rig.iom.map(0, handle, 0x100)
    assert rig.io.read(0x100, 1) == (VINF_SUCCESS, 0x12)
    rig.iom.unmap(0, handle)
    assert rig.io.read(0x100, 1) == (VINF_SUCCESS, 0xFF)
