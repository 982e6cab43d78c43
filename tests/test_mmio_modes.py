"""How IOM shapes an MMIO access for a region (shared/mmio.py): IOMAllMmioNew.cpp's read and write modes.

Table-driven: every read mode and every write mode against the same access shapes, each
row the exact calls the device must see (reads as ``(offset, size)``, writes as
``(offset, size, value)``, in order) and the counters the access leaves.  The device is a
64-byte register file whose DWORDs read 0x13121110, 0x17161514, ... so a merged
DWORD shows which bytes came from the guest (0xA0, 0xA1, ...) and which from the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shared.devapi import (
    IOMMMIO_FLAGS_ABS,
    IOMMMIO_FLAGS_READ_DWORD,
    IOMMMIO_FLAGS_READ_DWORD_QWORD,
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING,
    IOMMMIO_FLAGS_WRITE_DWORD_QWORD_ZEROED,
    IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING,
    IOMMMIO_FLAGS_WRITE_DWORD_ZEROED,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
)
from shared.mmio import do_read, do_write, natural_pieces, split_parts
from shared.stats import (
    M_COMPLICATED_READS,
    M_COMPLICATED_WRITES,
    M_COUNT,
    M_FF_OR_00_READS,
    M_IGNORED_WRITES,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_IOM_MMIO_IPE_2,
    VINF_EM_HALT,
    VINF_EM_RESET,
    VINF_EM_SUSPEND,
    VINF_IOM_MMIO_UNUSED_00,
    VINF_IOM_MMIO_UNUSED_FF,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_READ_WRITE,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
)

REGION = 0x1000_0000  # the region's guest-physical address (page aligned)
INITIAL = bytes(range(0x10, 0x50))  # the register file: DWORD 0 reads 0x13121110
STATS = 0  # the region's statistics entry starts at word 0 of the counters
R3_STATUSES = (VINF_IOM_R3_MMIO_READ, VINF_IOM_R3_MMIO_WRITE, VINF_IOM_R3_MMIO_READ_WRITE)

Call = tuple[int, ...]  # (offset, size) for a read, (offset, size, value) for a write


def guest_bytes(size: int) -> bytes:
    """What the guest writes: 0xA0, 0xA1, ... (little-endian, so 0xA0 is the low byte)."""
    return bytes(range(0xA0, 0xA0 + size))


def guest_value(size: int) -> int:
    return int.from_bytes(guest_bytes(size), "little")


def new_counters() -> memoryview:
    return memoryview(bytearray(8 * 64)).cast("Q")


@dataclass
class RegisterFile:
    """A device's 64 bytes of registers, recording every call IOM makes to them.

    Statuses to answer are per offset the device sees; a write answered with a
    VINF_IOM_R3_MMIO_* status stores nothing (the device wants ring-3 to do it).
    """

    base: int = 0  # subtracted from what the callbacks get (the region address with ABS)
    regs: bytearray = field(default_factory=lambda: bytearray(INITIAL))
    calls: list[Call] = field(default_factory=list)
    read_status: dict[int, int] = field(default_factory=dict)
    write_status: dict[int, int] = field(default_factory=dict)
    every_read_status: int = VINF_SUCCESS

    def read(self, where: int, size: int) -> tuple[int, int]:
        self.calls.append((where, size))
        at = where - self.base
        status = self.read_status.get(where, self.every_read_status)
        return status, int.from_bytes(self.regs[at : at + size], "little")

    def write(self, where: int, value: int, size: int) -> int:
        self.calls.append((where, size, value))
        status = self.write_status.get(where, VINF_SUCCESS)
        if status not in R3_STATUSES:
            at = where - self.base
            self.regs[at : at + size] = value.to_bytes(size, "little")
        return status


def read_at(device: RegisterFile, flags: int, offset: int, size: int, counters: memoryview) -> tuple[int, int]:
    return do_read(device.read, flags, REGION + offset, offset, size, counters, STATS)


def write_at(
    device: RegisterFile, flags: int, offset: int, data: bytes, counters: memoryview
) -> tuple[int, int, bytes]:
    return do_write(device.write, device.read, flags, REGION + offset, offset, data, counters, STATS)


# -- the access shapes, and what each read mode makes of them -----------------------------

# (offset, size) -> (calls in READ_DWORD mode, calls in READ_DWORD_QWORD mode)
READ_SHAPES: dict[tuple[int, int], tuple[list[Call], list[Call]]] = {
    (4, 4): ([(4, 4)], [(4, 4)]),  # aligned DWORD: always direct
    (1, 4): ([(0, 4), (4, 4)], [(0, 4), (4, 4)]),  # misaligned DWORDs
    (2, 4): ([(0, 4), (4, 4)], [(0, 4), (4, 4)]),
    (3, 4): ([(0, 4), (4, 4)], [(0, 4), (4, 4)]),
    (0, 1): ([(0, 4)], [(0, 4)]),  # bytes
    (1, 1): ([(0, 4)], [(0, 4)]),
    (2, 1): ([(0, 4)], [(0, 4)]),
    (3, 1): ([(0, 4)], [(0, 4)]),
    (0, 2): ([(0, 4)], [(0, 4)]),  # words; the one at 3 straddles two DWORDs
    (1, 2): ([(0, 4)], [(0, 4)]),
    (2, 2): ([(0, 4)], [(0, 4)]),
    (3, 2): ([(0, 4), (4, 4)], [(0, 4), (4, 4)]),
    (8, 8): ([(8, 4), (12, 4)], [(8, 8)]),  # aligned QWORD: direct only where QWORDs are allowed
    (4, 8): ([(4, 4), (8, 4)], [(4, 4), (8, 4)]),  # DWORD- but not QWORD-aligned
    (2, 8): ([(0, 4), (4, 4), (8, 4)], [(0, 4), (4, 4), (8, 4)]),  # misaligned QWORD: three DWORDs
}


def _read_rows() -> list[object]:
    rows: list[object] = []
    for (offset, size), (dword_calls, qword_calls) in READ_SHAPES.items():
        passthru: list[Call] = [(offset, size)]
        for name, flags, calls in (
            ("PASSTHRU", IOMMMIO_FLAGS_READ_PASSTHRU, passthru),
            ("DWORD", IOMMMIO_FLAGS_READ_DWORD, dword_calls),
            ("DWORD_QWORD", IOMMMIO_FLAGS_READ_DWORD_QWORD, qword_calls),
        ):
            complicated = 0 if calls == passthru else 1
            rows.append(pytest.param(flags, offset, size, calls, complicated, id=f"{name}-{size}@{offset}"))
    return rows


@pytest.mark.parametrize(("flags", "offset", "size", "calls", "complicated"), _read_rows())
def test_read_mode_shapes_the_device_calls_and_returns_the_guest_bytes(
    flags: int, offset: int, size: int, calls: list[Call], complicated: int
) -> None:
    device = RegisterFile()
    counters = new_counters()
    assert read_at(device, flags, offset, size, counters) == (
        VINF_SUCCESS,
        int.from_bytes(INITIAL[offset : offset + size], "little"),
    )
    assert device.calls == calls
    assert counters[STATS + M_COMPLICATED_READS] == complicated
    assert counters[STATS + M_FF_OR_00_READS] == 0


# -- what each write mode makes of the same shapes ----------------------------------------

QWORD = guest_value(8)

ZEROED_CALLS: dict[tuple[int, int], list[Call]] = {
    (1, 4): [(0, 4, 0xA2A1A000), (4, 4, 0x000000A3)],
    (2, 4): [(0, 4, 0xA1A00000), (4, 4, 0x0000A3A2)],
    (3, 4): [(0, 4, 0xA0000000), (4, 4, 0x00A3A2A1)],
    (0, 1): [(0, 4, 0x000000A0)],
    (1, 1): [(0, 4, 0x0000A000)],
    (2, 1): [(0, 4, 0x00A00000)],
    (3, 1): [(0, 4, 0xA0000000)],
    (0, 2): [(0, 4, 0x0000A1A0)],
    (1, 2): [(0, 4, 0x00A1A000)],
    (2, 2): [(0, 4, 0xA1A00000)],
    (3, 2): [(0, 4, 0xA0000000), (4, 4, 0x000000A1)],
    (8, 8): [(8, 4, 0xA3A2A1A0), (12, 4, 0xA7A6A5A4)],
    (4, 8): [(4, 4, 0xA3A2A1A0), (8, 4, 0xA7A6A5A4)],
    (2, 8): [(0, 4, 0xA1A00000), (4, 4, 0xA5A4A3A2), (8, 4, 0x0000A7A6)],
}

# The missing bytes come from a DWORD read first, only where the DWORD is not all the guest's.
READ_MISSING_CALLS: dict[tuple[int, int], list[Call]] = {
    (1, 4): [(0, 4), (0, 4, 0xA2A1A010), (4, 4), (4, 4, 0x171615A3)],
    (2, 4): [(0, 4), (0, 4, 0xA1A01110), (4, 4), (4, 4, 0x1716A3A2)],
    (3, 4): [(0, 4), (0, 4, 0xA0121110), (4, 4), (4, 4, 0x17A3A2A1)],
    (0, 1): [(0, 4), (0, 4, 0x131211A0)],
    (1, 1): [(0, 4), (0, 4, 0x1312A010)],
    (2, 1): [(0, 4), (0, 4, 0x13A01110)],
    (3, 1): [(0, 4), (0, 4, 0xA0121110)],
    (0, 2): [(0, 4), (0, 4, 0x1312A1A0)],
    (1, 2): [(0, 4), (0, 4, 0x13A1A010)],
    (2, 2): [(0, 4), (0, 4, 0xA1A01110)],
    (3, 2): [(0, 4), (0, 4, 0xA0121110), (4, 4), (4, 4, 0x171615A1)],
    (8, 8): [(8, 4, 0xA3A2A1A0), (12, 4, 0xA7A6A5A4)],
    (4, 8): [(4, 4, 0xA3A2A1A0), (8, 4, 0xA7A6A5A4)],
    (2, 8): [(0, 4), (0, 4, 0xA1A01110), (4, 4, 0xA5A4A3A2), (8, 4), (8, 4, 0x1B1AA7A6)],
}

WRITE_MODES = {
    "PASSTHRU": IOMMMIO_FLAGS_WRITE_PASSTHRU,
    "DWORD_ZEROED": IOMMMIO_FLAGS_WRITE_DWORD_ZEROED,
    "DWORD_QWORD_ZEROED": IOMMMIO_FLAGS_WRITE_DWORD_QWORD_ZEROED,
    "DWORD_READ_MISSING": IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING,
    "DWORD_QWORD_READ_MISSING": IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING,
    "ONLY_DWORD": IOMMMIO_FLAGS_WRITE_ONLY_DWORD,
    "ONLY_DWORD_QWORD": IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
}

OVERLAY = "guest bytes stored, the rest of each DWORD kept"
ZERO_FILL = "guest bytes stored, the rest of each DWORD touched zeroed"
UNCHANGED = "nothing stored"


def _write_expectation(mode: str, offset: int, size: int) -> tuple[list[Call], int, int, str]:
    """(calls, complicated count, ignored count, effect on the registers) for one row."""
    direct: list[Call] = [(offset, size, guest_value(size))]
    if (offset, size) == (4, 4) or mode == "PASSTHRU":
        return direct, 0, 0, OVERLAY
    if (offset, size) == (8, 8) and "QWORD" in mode:
        return direct, 0, 0, OVERLAY
    if mode.startswith("ONLY_"):
        return [], 1, 1, UNCHANGED
    if mode.endswith("ZEROED"):
        return ZEROED_CALLS[(offset, size)], 1, 0, ZERO_FILL
    return READ_MISSING_CALLS[(offset, size)], 1, 0, OVERLAY


def _write_rows() -> list[object]:
    rows: list[object] = []
    for offset, size in READ_SHAPES:
        for mode, flags in WRITE_MODES.items():
            calls, complicated, ignored, effect = _write_expectation(mode, offset, size)
            rows.append(
                pytest.param(flags, offset, size, calls, complicated, ignored, effect, id=f"{mode}-{size}@{offset}")
            )
    return rows


def _registers_after(offset: int, size: int, effect: str) -> bytes:
    regs = bytearray(INITIAL)
    if effect == UNCHANGED:
        return bytes(regs)
    if effect == ZERO_FILL:
        first, end = offset & ~3, (offset + size + 3) & ~3
        regs[first:end] = bytes(end - first)
    regs[offset : offset + size] = guest_bytes(size)
    return bytes(regs)


@pytest.mark.parametrize(("flags", "offset", "size", "calls", "complicated", "ignored", "effect"), _write_rows())
def test_write_mode_shapes_the_device_calls_and_merges_the_missing_bytes(
    flags: int, offset: int, size: int, calls: list[Call], complicated: int, ignored: int, effect: str
) -> None:
    device = RegisterFile()
    counters = new_counters()
    status, _, left = write_at(device, flags, offset, guest_bytes(size), counters)
    assert (status, left) == (VINF_SUCCESS, b"")
    assert device.calls == calls
    assert bytes(device.regs) == _registers_after(offset, size, effect)
    assert counters[STATS + M_COMPLICATED_WRITES] == complicated
    assert counters[STATS + M_IGNORED_WRITES] == ignored
    assert counters[STATS + M_FF_OR_00_READS] == 0


def test_successful_complicated_write_returns_the_access_address() -> None:
    device = RegisterFile()
    result = write_at(device, IOMMMIO_FLAGS_WRITE_DWORD_ZEROED, 2, guest_bytes(8), new_counters())
    assert result == (VINF_SUCCESS, REGION + 2, b"")


# -- statuses the device answers ---------------------------------------------------------

FILL = {VINF_IOM_MMIO_UNUSED_FF: 0xFF, VINF_IOM_MMIO_UNUSED_00: 0x00}


@pytest.mark.parametrize("unused", [VINF_IOM_MMIO_UNUSED_FF, VINF_IOM_MMIO_UNUSED_00], ids=["FF", "00"])
@pytest.mark.parametrize(
    ("flags", "offset", "size", "dwords"),
    [
        pytest.param(IOMMMIO_FLAGS_READ_PASSTHRU, 3, 2, 0, id="PASSTHRU-direct"),
        pytest.param(IOMMMIO_FLAGS_READ_DWORD, 4, 4, 0, id="DWORD-direct"),
        pytest.param(IOMMMIO_FLAGS_READ_DWORD_QWORD, 8, 8, 0, id="QWORD-direct"),
        pytest.param(IOMMMIO_FLAGS_READ_DWORD, 1, 1, 1, id="DWORD-byte"),
        pytest.param(IOMMMIO_FLAGS_READ_DWORD, 2, 8, 3, id="DWORD-misaligned-qword"),
    ],
)
def test_unused_read_status_fills_the_whole_access(
    unused: int, flags: int, offset: int, size: int, dwords: int
) -> None:
    device = RegisterFile(every_read_status=unused)
    counters = new_counters()
    assert read_at(device, flags, offset, size, counters) == (
        VINF_SUCCESS,
        int.from_bytes(bytes([FILL[unused]]) * size),
    )
    # A direct read counts once for the access; a complicated one once per DWORD it read.
    assert counters[STATS + M_FF_OR_00_READS] == max(dwords, 1)


def test_unused_read_status_fills_only_its_own_dword_of_a_complicated_read() -> None:
    device = RegisterFile(read_status={4: VINF_IOM_MMIO_UNUSED_FF})
    counters = new_counters()
    assert read_at(device, IOMMMIO_FLAGS_READ_DWORD, 2, 8, counters) == (VINF_SUCCESS, 0x1918FFFFFFFF1312)
    assert counters[STATS + M_FF_OR_00_READS] == 1


@pytest.mark.parametrize("flags", [IOMMMIO_FLAGS_READ_PASSTHRU, IOMMMIO_FLAGS_READ_DWORD])
@pytest.mark.parametrize(("offset", "size"), [(0, 1), (2, 2), (4, 4), (8, 8), (3, 8)])
def test_region_without_read_callback_reads_all_ones(flags: int, offset: int, size: int) -> None:
    counters = new_counters()
    assert do_read(None, flags, REGION + offset, offset, size, counters, STATS) == (VINF_SUCCESS, (1 << 8 * size) - 1)
    assert counters[STATS + M_FF_OR_00_READS] == 1
    assert counters[STATS + M_COMPLICATED_READS] == 0


@pytest.mark.parametrize("flags", list(WRITE_MODES.values()), ids=list(WRITE_MODES))
def test_region_without_write_callback_drops_the_write(flags: int) -> None:
    device = RegisterFile()
    counters = new_counters()
    assert do_write(None, device.read, flags, REGION + 1, 1, guest_bytes(2), counters, STATS) == (
        VINF_SUCCESS,
        REGION + 1,
        b"",
    )
    assert device.calls == []  # not even the read of the missing bytes
    assert counters[STATS + M_COMPLICATED_WRITES] == 0


def test_read_missing_without_read_callback_merges_all_ones() -> None:
    device = RegisterFile()
    counters = new_counters()
    flags = IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING
    assert do_write(device.write, None, flags, REGION + 1, 1, b"\xa0", counters, STATS)[0] == VINF_SUCCESS
    assert device.calls == [(0, 4, 0xFFFFA0FF)]


@pytest.mark.parametrize("unused", [VINF_IOM_MMIO_UNUSED_FF, VINF_IOM_MMIO_UNUSED_00], ids=["FF", "00"])
def test_read_missing_counts_unused_answers_as_ff_or_00_reads(unused: int) -> None:
    device = RegisterFile(every_read_status=unused)
    counters = new_counters()
    status, _, _ = write_at(device, IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING, 1, b"\xa0", counters)
    assert status == VINF_SUCCESS
    assert device.calls == [(0, 4), (0, 4, 0xA000 | (0xFFFF00FF if unused == VINF_IOM_MMIO_UNUSED_FF else 0))]
    assert counters[STATS + M_FF_OR_00_READS] == 1


@pytest.mark.parametrize(
    ("statuses", "kept"),
    [
        pytest.param({0: VINF_EM_HALT, 8: VINF_EM_RESET}, VINF_EM_RESET, id="later-more-urgent"),
        pytest.param({0: VINF_EM_RESET, 4: VINF_EM_HALT}, VINF_EM_RESET, id="earlier-more-urgent"),
        pytest.param({4: VINF_EM_HALT}, VINF_EM_HALT, id="one"),
        pytest.param({0: VINF_EM_HALT, 4: VINF_EM_SUSPEND, 8: VINF_EM_RESET}, VINF_EM_SUSPEND, id="three"),
    ],
)
def test_complicated_access_keeps_the_most_urgent_em_status(statuses: dict[int, int], kept: int) -> None:
    reader = RegisterFile(read_status=statuses)
    assert read_at(reader, IOMMMIO_FLAGS_READ_DWORD, 2, 8, new_counters()) == (kept, 0x1918171615141312)
    assert len(reader.calls) == 3  # an EM status does not stop the access

    writer = RegisterFile(write_status=statuses)
    status, _, left = write_at(writer, IOMMMIO_FLAGS_WRITE_DWORD_ZEROED, 2, guest_bytes(8), new_counters())
    assert (status, left) == (kept, b"")
    assert writer.calls == ZEROED_CALLS[(2, 8)]


def test_read_missing_keeps_the_em_status_of_its_read() -> None:
    device = RegisterFile(read_status={0: VINF_EM_HALT})
    status, _, left = write_at(device, IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING, 1, b"\xa0", new_counters())
    assert device.calls == READ_MISSING_CALLS[(1, 1)]
    assert (status, left) == (VINF_EM_HALT, b"")


@pytest.mark.parametrize("failure", [VERR_INTERNAL_ERROR, VERR_IOM_MMIO_IPE_2])
def test_failure_in_one_dword_stops_a_complicated_access(failure: int) -> None:
    reader = RegisterFile(read_status={4: failure})
    assert read_at(reader, IOMMMIO_FLAGS_READ_DWORD, 2, 8, new_counters()) == (failure, 0)
    assert reader.calls == [(0, 4), (4, 4)]

    writer = RegisterFile(write_status={4: failure})
    status, _, left = write_at(writer, IOMMMIO_FLAGS_WRITE_DWORD_ZEROED, 2, guest_bytes(8), new_counters())
    assert (status, left) == (failure, b"")
    assert writer.calls == ZEROED_CALLS[(2, 8)][:2]


# -- a device asking for ring-3 part-way ---------------------------------------------------


@pytest.mark.parametrize("asked", R3_STATUSES)
def test_ring3_status_stops_a_complicated_read_at_once(asked: int) -> None:
    device = RegisterFile(read_status={4: asked})
    assert read_at(device, IOMMMIO_FLAGS_READ_DWORD, 2, 8, new_counters()) == (asked, 0)
    assert device.calls == [(0, 4), (4, 4)]


@pytest.mark.parametrize("asked", R3_STATUSES)
def test_ring3_status_on_a_direct_write_leaves_the_whole_write(asked: int) -> None:
    device = RegisterFile(write_status={4: asked})
    result = write_at(device, IOMMMIO_FLAGS_WRITE_DWORD_ZEROED, 4, guest_bytes(4), new_counters())
    # Nothing was written before the device asked: the status is VINF_SUCCESS, and the
    # bytes left say ring-3 must do it all.
    assert result == (VINF_SUCCESS, REGION + 4, guest_bytes(4))


@pytest.mark.parametrize("asked", R3_STATUSES)
@pytest.mark.parametrize(
    ("flags", "offset", "size", "asking", "calls", "left_at", "left"),
    [
        # The first DWORD asks: the pending write starts at its aligned address with the
        # merged DWORD (zeroes below the guest's bytes), then the guest's remaining bytes.
        pytest.param(
            IOMMMIO_FLAGS_WRITE_DWORD_ZEROED,
            2,
            8,
            (0,),
            ZEROED_CALLS[(2, 8)][:1],
            0,
            b"\x00\x00\xa0\xa1" + guest_bytes(8)[2:],
            id="ZEROED-first-dword",
        ),
        # The second DWORD asks after the first was written in this tier.
        pytest.param(
            IOMMMIO_FLAGS_WRITE_DWORD_ZEROED,
            2,
            8,
            (4,),
            ZEROED_CALLS[(2, 8)][:2],
            4,
            guest_bytes(8)[2:],
            id="ZEROED-second-dword",
        ),
        # The last, partial DWORD asks: the merged DWORD holds what the device had in byte 3.
        pytest.param(
            IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING,
            1,
            2,
            (0,),
            READ_MISSING_CALLS[(1, 2)],
            0,
            b"\x10\xa0\xa1\x13",
            id="READ_MISSING-partial-dword",
        ),
    ],
)
def test_ring3_status_mid_complicated_write_leaves_merged_dword_and_the_rest(
    asked: int,
    flags: int,
    offset: int,
    size: int,
    asking: tuple[int, ...],
    calls: list[Call],
    left_at: int,
    left: bytes,
) -> None:
    device = RegisterFile(write_status=dict.fromkeys(asking, asked))
    assert write_at(device, flags, offset, guest_bytes(size), new_counters()) == (VINF_SUCCESS, REGION + left_at, left)
    assert device.calls == calls


@pytest.mark.parametrize("asked", R3_STATUSES)
def test_ring3_status_from_the_missing_bytes_read_leaves_the_write_from_there(asked: int) -> None:
    device = RegisterFile(read_status={4: asked})
    flags = IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING
    # A word at 3 straddles DWORDs 0 and 4: the first half is written, the read for the
    # second half asks for ring-3, so ring-3 must still write the guest's byte at 4.
    assert write_at(device, flags, 3, guest_bytes(2), new_counters()) == (VINF_SUCCESS, REGION + 4, b"\xa1")
    assert device.calls == [(0, 4), (0, 4, 0xA0121110), (4, 4)]


# -- PASSTHRU writes of sizes a device does not take, sizes IOM refuses to split ------------


@pytest.mark.parametrize(
    ("offset", "size", "calls"),
    [
        (1, 3, [(1, 1, 0xA0), (2, 2, 0xA2A1)]),
        (1, 7, [(1, 1, 0xA0), (2, 2, 0xA2A1), (4, 4, 0xA6A5A4A3)]),
        (2, 6, [(2, 2, 0xA1A0), (4, 4, 0xA5A4A3A2)]),
        (0, 12, [(0, 8, 0xA7A6A5A4A3A2A1A0), (8, 4, 0xABAAA9A8)]),
    ],
)
def test_passthru_write_of_odd_size_goes_in_natural_pieces(offset: int, size: int, calls: list[Call]) -> None:
    device = RegisterFile()
    assert write_at(device, IOMMMIO_FLAGS_WRITE_PASSTHRU, offset, guest_bytes(size), new_counters())[0] == VINF_SUCCESS
    assert device.calls == calls


def test_ring3_status_in_a_passthru_piece_leaves_the_rest_from_that_piece() -> None:
    device = RegisterFile(write_status={4: VINF_IOM_R3_MMIO_WRITE})
    result = write_at(device, IOMMMIO_FLAGS_WRITE_PASSTHRU, 1, guest_bytes(7), new_counters())
    assert result == (VINF_SUCCESS, REGION + 4, guest_bytes(7)[3:])
    assert device.calls == [(1, 1, 0xA0), (2, 2, 0xA2A1), (4, 4, 0xA6A5A4A3)]


def test_complicated_access_longer_than_16_bytes_is_ipe_2() -> None:
    device = RegisterFile()
    counters = new_counters()
    assert read_at(device, IOMMMIO_FLAGS_READ_DWORD, 1, 17, counters) == (VERR_IOM_MMIO_IPE_2, 0)
    assert write_at(device, IOMMMIO_FLAGS_WRITE_DWORD_ZEROED, 1, guest_bytes(17), counters)[0] == VERR_IOM_MMIO_IPE_2
    assert device.calls == []


# -- IOMMMIO_FLAGS_ABS --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "offset", "size", "calls"),
    [
        pytest.param(IOMMMIO_FLAGS_READ_PASSTHRU, 3, 2, [(REGION + 3, 2)], id="direct"),
        pytest.param(IOMMMIO_FLAGS_READ_DWORD, 2, 4, [(REGION, 4), (REGION + 4, 4)], id="complicated"),
    ],
)
def test_abs_flag_passes_absolute_addresses_to_reads(flags: int, offset: int, size: int, calls: list[Call]) -> None:
    device = RegisterFile(base=REGION)
    status, value = read_at(device, flags | IOMMMIO_FLAGS_ABS, offset, size, new_counters())
    assert (status, value) == (VINF_SUCCESS, int.from_bytes(INITIAL[offset : offset + size], "little"))
    assert device.calls == calls


@pytest.mark.parametrize(
    ("flags", "offset", "size", "calls"),
    [
        pytest.param(IOMMMIO_FLAGS_WRITE_DWORD_ZEROED, 4, 4, [(REGION + 4, 4, 0xA3A2A1A0)], id="direct"),
        pytest.param(
            IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING, 1, 1, [(REGION, 4), (REGION, 4, 0x1312A010)], id="complicated"
        ),
        pytest.param(IOMMMIO_FLAGS_WRITE_PASSTHRU, 1, 3, [(REGION + 1, 1, 0xA0), (REGION + 2, 2, 0xA2A1)], id="pieces"),
    ],
)
def test_abs_flag_passes_absolute_addresses_to_writes(flags: int, offset: int, size: int, calls: list[Call]) -> None:
    device = RegisterFile(base=REGION)
    assert write_at(device, flags | IOMMMIO_FLAGS_ABS, offset, guest_bytes(size), new_counters())[0] == VINF_SUCCESS
    assert device.calls == calls


def test_abs_flag_pending_write_address_is_the_guest_address() -> None:
    device = RegisterFile(base=REGION, write_status={REGION + 4: VINF_IOM_R3_MMIO_WRITE})
    flags = IOMMMIO_FLAGS_WRITE_DWORD_ZEROED | IOMMMIO_FLAGS_ABS
    assert write_at(device, flags, 2, guest_bytes(8), new_counters()) == (
        VINF_SUCCESS,
        REGION + 4,
        guest_bytes(8)[2:],
    )


def test_counters_go_to_the_region_statistics_entry() -> None:
    counters = new_counters()
    device = RegisterFile()
    entry = 2 * M_COUNT
    do_read(device.read, IOMMMIO_FLAGS_READ_DWORD, REGION + 1, 1, 1, counters, entry)
    do_write(device.write, device.read, IOMMMIO_FLAGS_WRITE_ONLY_DWORD, REGION + 1, 1, b"\xa0", counters, entry)
    assert counters[entry + M_COMPLICATED_READS] == 1
    assert counters[entry + M_COMPLICATED_WRITES] == 1
    assert counters[entry + M_IGNORED_WRITES] == 1
    assert sum(counters) == 3


# -- split_parts and natural_pieces -------------------------------------------------------

FIRSTS = [0x1000, 0x2000, 0x5000]  # 0x1000-0x2FFF is two adjacent regions, then a gap
LASTS = [0x1FFF, 0x2FFF, 0x5FFF]


@pytest.mark.parametrize(
    ("address", "size", "at", "parts"),
    [
        pytest.param(0x1010, 4, 0, [(0, 0x1010, 4)], id="inside"),
        pytest.param(0x1FFE, 4, 0, [(0, 0x1FFE, 2), (1, 0x2000, 2)], id="into-adjacent-region"),
        pytest.param(0x2FFC, 8, 1, [(1, 0x2FFC, 4), (-1, 0x3000, 4)], id="into-gap"),
        pytest.param(0x4FFA, 8, -1, [(-1, 0x4FFA, 6), (2, 0x5000, 2)], id="out-of-gap"),
        pytest.param(0xFFC, 8, -1, [(-1, 0xFFC, 4), (0, 0x1000, 4)], id="into-first-region"),
        pytest.param(0x5FFC, 8, 2, [(2, 0x5FFC, 4), (-1, 0x6000, 4)], id="past-last-region"),
        pytest.param(0x3000, 8, -1, [(-1, 0x3000, 8)], id="all-in-gap"),
        pytest.param(
            0x1FF0,
            0x3020,
            0,
            [(0, 0x1FF0, 0x10), (1, 0x2000, 0x1000), (-1, 0x3000, 0x2000), (2, 0x5000, 0x10)],
            id="across-everything",
        ),
    ],
)
def test_split_parts_cuts_accesses_at_region_ends_and_gaps(
    address: int, size: int, at: int, parts: list[tuple[int, int, int]]
) -> None:
    assert split_parts(FIRSTS, LASTS, address, size, at) == parts


@pytest.mark.parametrize(
    ("address", "length", "pieces"),
    [
        (0x1000, 8, [(0x1000, 8)]),
        (0x1000, 16, [(0x1000, 8), (0x1008, 8)]),
        (0x1001, 7, [(0x1001, 1), (0x1002, 2), (0x1004, 4)]),
        (0x1003, 6, [(0x1003, 1), (0x1004, 4), (0x1008, 1)]),
        (0x1006, 5, [(0x1006, 2), (0x1008, 2), (0x100A, 1)]),
        (0x1004, 0, []),
    ],
)
def test_natural_pieces_are_aligned_and_as_large_as_possible(
    address: int, length: int, pieces: list[tuple[int, int]]
) -> None:
    assert list(natural_pieces(address, length)) == pieces
