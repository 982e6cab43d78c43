"""shared/iomtable.py: PortLookup's copy of the lookup table and VirtualBox's iomIoPortGetEntry search."""

from __future__ import annotations

from typing import Any

import pytest

from shared.iomtable import (
    CB_IN,
    CB_IN_STRING,
    CB_OUT,
    CB_OUT_STRING,
    IomTable,
    PortLookup,
    RegionInfo,
)

# Mapped ranges (first, last inclusive), as ring-3 keeps them: sorted, disjoint.
PC_RANGES = [
    (0x0000, 0x001F),  # starts at port 0
    (0x0020, 0x0021),  # adjacent to the previous one, no gap
    (0x0040, 0x0043),
    (0x0060, 0x0060),  # a single port
    (0x0064, 0x0064),
    (0x0080, 0x0080),
    (0x03F8, 0x03FF),
    (0x0CF8, 0x0CFF),
    (0xFFF0, 0xFFFF),  # ends at the top port
]


def fill_table(table: IomTable, ranges: list[tuple[int, int]], generation: int = 2) -> None:
    """Map *ranges* as ring-3 would: registration i (handle 10 + i) holds range i, in lookup order."""
    for position, (first, last) in enumerate(ranges):
        handle = 10 + position
        entry = table.entries[handle]
        entry.port = first
        entry.count = last - first + 1
        entry.stats_index = 100 * position
        entry.owner = position % 3
        entry.flags = position & 1
        entry.mapped = 1
        entry.ring3_callbacks = CB_IN | CB_OUT
        entry.ring0_callbacks = CB_IN if position % 2 else 0
        entry.description = f"range {position}".encode()
        table.lookup[position].first = first
        table.lookup[position].last = last
        table.lookup[position].handle = handle
    table.registrations = 10 + len(ranges)
    table.lookup_entries = len(ranges)
    table.generation = generation


def lookup_over(ranges: list[tuple[int, int]]) -> PortLookup:
    table = IomTable()
    fill_table(table, ranges)
    lookup = PortLookup(table)
    assert lookup.refresh()
    return lookup


def linear_find(ranges: list[tuple[int, int]], port: int) -> int:
    """The reference answer: the position of the range holding *port*, or -1."""
    for position, (first, last) in enumerate(ranges):
        if first <= port <= last:
            return position
    return -1


def interesting_ports(ranges: list[tuple[int, int]]) -> list[int]:
    """Every range's first, last and middle port, the ports just outside each, and both ends of the space."""
    ports = {0, 1, 0x7FFF, 0xFFFE, 0xFFFF}
    for first, last in ranges:
        ports.update({first - 1, first, (first + last) // 2, last, last + 1})
    return sorted(port for port in ports if 0 <= port <= 0xFFFF)


def all_hints(count: int) -> list[int]:
    """Every position, then out-of-range hints (VirtualBox's hint is unsigned: never negative)."""
    return [*range(count), count, count + 1, 4095, 1 << 32]


class ProbeRecorder(list[int]):
    """A list that records which positions are read, to see where a search starts."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(values)
        self.probes: list[int] = []

    def __getitem__(self, index: Any) -> Any:
        self.probes.append(index)
        return super().__getitem__(index)


# --- find: answers ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "ranges",
    [
        pytest.param(PC_RANGES, id="pc-ports"),
        pytest.param([(0x3F8, 0x3FF)], id="one-range"),
        pytest.param([(0, 0xFFFF)], id="whole-space"),
        pytest.param([(0x10, 0x10), (0x11, 0x11), (0x12, 0x12), (0x13, 0x13)], id="adjacent-single-ports"),
        pytest.param([(0x100 * i, 0x100 * i + 7) for i in range(40)], id="forty-ranges"),
    ],
)
def test_find_gives_the_same_answer_for_every_hint(ranges: list[tuple[int, int]]) -> None:
    lookup = lookup_over(ranges)
    for port in interesting_ports(ranges):
        wanted = linear_find(ranges, port)
        for hint in all_hints(len(ranges)):
            assert lookup.find(port, hint) == wanted, (hex(port), hint)


@pytest.mark.parametrize(
    ("port", "position"),
    [
        (0x0000, 0),  # start of the first range
        (0x001F, 0),  # end of the first range
        (0x0020, 1),  # start of a range adjacent to the previous
        (0x0042, 2),  # middle
        (0x0060, 3),  # single-port range
        (0x03F8, 6),
        (0x03FC, 6),
        (0x03FF, 6),
        (0x0CFF, 7),
        (0xFFF0, 8),
        (0xFFFF, 8),  # end of the last range, top of the space
    ],
)
def test_find_returns_the_position_of_the_range_holding_the_port(port: int, position: int) -> None:
    lookup = lookup_over(PC_RANGES)
    assert lookup.find(port, 0) == position
    assert lookup.find(port, position) == position


@pytest.mark.parametrize("port", [0x0022, 0x003F, 0x0044, 0x0061, 0x0063, 0x03F7, 0x0400, 0x8000, 0xFFEF])
def test_find_returns_minus_one_in_gaps(port: int) -> None:
    lookup = lookup_over(PC_RANGES)
    for hint in all_hints(len(PC_RANGES)):
        assert lookup.find(port, hint) == -1


def test_find_returns_minus_one_before_the_first_and_after_the_last_range() -> None:
    lookup = lookup_over([(0x40, 0x43), (0x3F8, 0x3FF)])
    for hint in all_hints(2):
        assert lookup.find(0x3F, hint) == -1
        assert lookup.find(0, hint) == -1
        assert lookup.find(0x400, hint) == -1
        assert lookup.find(0xFFFF, hint) == -1


def test_find_in_an_empty_table_is_a_miss() -> None:
    lookup = lookup_over([])
    assert lookup.firsts == []
    for port in (0, 0x80, 0xFFFF):
        for hint in (0, 1, 7):
            assert lookup.find(port, hint) == -1


def test_find_in_a_never_refreshed_lookup_is_a_miss() -> None:
    table = IomTable()
    fill_table(table, PC_RANGES)
    assert PortLookup(table).find(0x3F8, 0) == -1


# --- find: the probing order of iomIoPortGetEntry --------------------------------------
def test_hint_in_range_is_probed_first() -> None:
    lookup = lookup_over(PC_RANGES)
    for hint in range(len(PC_RANGES)):
        lookup.firsts = recorder = ProbeRecorder(lookup.firsts)
        lookup.find(0x80, hint)
        assert recorder.probes[0] == hint


def test_hit_at_the_hint_probes_nothing_else() -> None:
    lookup = lookup_over(PC_RANGES)
    lookup.firsts = firsts = ProbeRecorder(lookup.firsts)
    lookup.lasts = lasts = ProbeRecorder(lookup.lasts)
    assert lookup.find(0x3FA, 6) == 6
    assert firsts.probes == [6] and lasts.probes == [6]


@pytest.mark.parametrize("hint", [9, 10, 4095, 1 << 32])
def test_hint_out_of_range_falls_back_to_middle(hint: int) -> None:
    lookup = lookup_over(PC_RANGES)
    lookup.firsts = recorder = ProbeRecorder(lookup.firsts)
    assert lookup.find(0x80, hint) == 5
    assert recorder.probes[0] == len(PC_RANGES) // 2


def test_unassigned_hint_out_of_range_falls_back_to_middle() -> None:
    lookup = lookup_over(PC_RANGES)
    lookup.firsts = recorder = ProbeRecorder(lookup.firsts)
    assert lookup.find(0x8000, len(PC_RANGES)) == -1
    assert recorder.probes[0] == len(PC_RANGES) // 2


def test_search_after_a_wrong_hint_is_logarithmic() -> None:
    ranges = [(0x10 * i, 0x10 * i + 3) for i in range(1024)]
    lookup = lookup_over(ranges)
    lookup.firsts = recorder = ProbeRecorder(lookup.firsts)
    assert lookup.find(0x10 * 1000 + 2, 3) == 1000
    assert len(recorder.probes) <= 2 + 11  # the hint, then a binary search over 1024 entries


# --- refresh: the generation seqlock ---------------------------------------------------
def test_refresh_copies_ranges_and_region_info() -> None:
    table = IomTable()
    fill_table(table, PC_RANGES)
    lookup = PortLookup(table)
    assert lookup.refresh()
    assert lookup.generation == 2
    assert lookup.firsts == [first for first, _ in PC_RANGES]
    assert lookup.lasts == [last for _, last in PC_RANGES]
    assert len(lookup.infos) == len(PC_RANGES)
    for position, info in enumerate(lookup.infos):
        entry = table.entries[10 + position]
        assert info == RegionInfo(
            handle=10 + position,
            first=PC_RANGES[position][0],
            count=entry.count,
            flags=entry.flags,
            owner=entry.owner,
            stats_index=entry.stats_index,
            ring0_callbacks=entry.ring0_callbacks,
            ring3_callbacks=entry.ring3_callbacks,
        )


def test_region_info_fields_come_from_the_registration_entry() -> None:
    table = IomTable()
    fill_table(table, [(0x3F8, 0x3FF)])
    entry = table.entries[10]
    entry.count, entry.flags, entry.owner, entry.stats_index = 8, 0x1, 7, 1234
    entry.ring0_callbacks, entry.ring3_callbacks = (
        CB_IN | CB_OUT,
        CB_IN | CB_OUT | CB_IN_STRING | CB_OUT_STRING,
    )
    lookup = PortLookup(table)
    assert lookup.refresh()
    assert lookup.infos == [RegionInfo(10, 0x3F8, 8, 0x1, 7, 1234, 0x3, 0xF)]


def test_refresh_returns_false_while_generation_is_odd() -> None:
    table = IomTable()
    fill_table(table, PC_RANGES, generation=3)
    lookup = PortLookup(table)
    assert not lookup.refresh()
    assert lookup.firsts == [] and lookup.find(0x3F8, 0) == -1


def test_refresh_keeps_the_old_copy_while_ring3_writes_then_picks_up_changes() -> None:
    table = IomTable()
    fill_table(table, [(0x3F8, 0x3FF)], generation=4)
    lookup = PortLookup(table)
    assert lookup.refresh()
    # Ring-3 starts changing the table: readers must defer, and keep their old copy.
    table.generation = 5
    fill_table(table, [(0x2F8, 0x2FF), (0x3F8, 0x3FF)], generation=5)
    assert not lookup.refresh()
    assert lookup.generation == 4
    assert lookup.find(0x2F8, 0) == -1 and lookup.find(0x3F8, 0) == 0
    # Ring-3 is done: the next refresh sees the new table.
    table.generation = 6
    assert lookup.refresh()
    assert lookup.generation == 6
    assert lookup.find(0x2F8, 0) == 0 and lookup.find(0x3F8, 0) == 1
    assert [info.handle for info in lookup.infos] == [10, 11]


def test_refresh_does_not_recopy_while_generation_is_unchanged() -> None:
    table = IomTable()
    fill_table(table, [(0x3F8, 0x3FF)])
    lookup = PortLookup(table)
    assert lookup.refresh()
    table.lookup[0].first = 0x3F0  # a change without a generation bump is invisible by design
    table.entries[10].owner = 9
    assert lookup.refresh()
    assert lookup.firsts == [0x3F8]
    assert lookup.infos[0].owner == 0


def test_refresh_picks_up_an_unmap() -> None:
    table = IomTable()
    fill_table(table, PC_RANGES)
    lookup = PortLookup(table)
    assert lookup.refresh()
    table.lookup_entries = 0
    table.generation += 2
    assert lookup.refresh()
    assert lookup.firsts == [] and lookup.find(0x3F8, 6) == -1


class GenerationMovesDuringCopy:
    """A table whose generation word changes between refresh's first and second read."""

    def __init__(self, table: IomTable, generations: list[int]) -> None:
        self._table = table
        self._generations = generations

    @property
    def generation(self) -> int:
        return self._generations.pop(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def test_refresh_returns_false_when_generation_moves_during_the_copy() -> None:
    table = IomTable()
    fill_table(table, PC_RANGES)
    moving: Any = GenerationMovesDuringCopy(table, [2, 4])
    lookup = PortLookup(moving)
    assert not lookup.refresh()
    assert lookup.firsts == [] and lookup.generation == -1
