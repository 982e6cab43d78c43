"""How IOM shapes an MMIO access for a region before the device sees it (IOMAllMmioNew.cpp).

A region's flags say what its device can take.  An access it can take as it is goes to
the device directly: an aligned DWORD, anything in PASSTHRU mode, an aligned QWORD
where the mode allows QWORDs.  Anything else is "complicated": it is split into the
aligned DWORDs it touches.  A complicated read takes the bytes it needs out of each
DWORD read.  A complicated write merges the guest's bytes into each DWORD, the missing
bytes being zero (``*_ZEROED``) or read from the device first (``*_READ_MISSING``).

The same code runs in both tiers.  In ring-0 a device may answer VINF_IOM_R3_MMIO_*
half-way through a complicated write; :func:`do_write` then returns what is left to do
(from the current DWORD on) for the caller to park as the vCPU's pending MMIO write.

One deliberate departure: VirtualBox's code returns VERR_IOM_MMIO_IPE_1 for a sub-DWORD
write to a WRITE_ONLY_DWORD(_QWORD) region, because its mode check comes before the
branch that would ignore it, while iom.h documents such writes as ignored.  ringsim
implements the documented intent: the write is dropped and counted (Write-Ignored).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from shared.devapi import (
    IOMMMIO_FLAGS_ABS,
    IOMMMIO_FLAGS_READ_DWORD,
    IOMMMIO_FLAGS_READ_DWORD_QWORD,
    IOMMMIO_FLAGS_READ_MODE,
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING,
    IOMMMIO_FLAGS_WRITE_DWORD_QWORD_ZEROED,
    IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING,
    IOMMMIO_FLAGS_WRITE_MODE,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
    MmioRead,
    MmioWrite,
)
from shared.stats import M_COMPLICATED_READS, M_COMPLICATED_WRITES, M_FF_OR_00_READS, M_IGNORED_WRITES
from shared.status import (
    VERR_IOM_MMIO_IPE_1,
    VERR_IOM_MMIO_IPE_2,
    VINF_IOM_MMIO_UNUSED_00,
    VINF_IOM_MMIO_UNUSED_FF,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_READ_WRITE,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
    is_em_status,
)

MMIO_SIZES = (1, 2, 4, 8)
MAX_COMPLICATED = 16  # IOM splits at most 16 bytes into DWORDs
MAX_PENDING_MMIO_WRITE = 128  # IOMCPU.PendingMmioWrite.abValue
RING3_STATUSES = frozenset((VINF_IOM_R3_MMIO_READ, VINF_IOM_R3_MMIO_WRITE, VINF_IOM_R3_MMIO_READ_WRITE))
_QWORD_WRITE_MODES = (
    IOMMMIO_FLAGS_WRITE_DWORD_QWORD_ZEROED,
    IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
)
_READ_MISSING_MODES = (IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING, IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING)
_ONLY_DWORD_MODES = (IOMMMIO_FLAGS_WRITE_ONLY_DWORD, IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD)


def all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


def natural_pieces(address: int, length: int) -> Iterator[tuple[int, int]]:
    """Split [address, address+length) into aligned pieces of 1, 2, 4 or 8 bytes."""
    end = address + length
    while address < end:
        size = 8
        while size > 1 and (address % size or address + size > end):
            size //= 2
        yield address, size
        address += size


def _merge_em(current: int, new: int) -> int:
    """Keep the most urgent EM status seen so far (lower is more urgent)."""
    return new if current == VINF_SUCCESS or new < current else current


def do_read(
    read: MmioRead | None, flags: int, address: int, offset: int, size: int, counters: memoryview, stats: int
) -> tuple[int, int]:
    """iomMmioDoRead: (status, value).  VINF_IOM_R3_MMIO_* means ring-3 must redo the read."""
    if read is None:
        rc, value = VINF_IOM_MMIO_UNUSED_FF, 0
    else:
        mode = flags & IOMMMIO_FLAGS_READ_MODE
        where = address if flags & IOMMMIO_FLAGS_ABS else offset
        if (
            (size == 4 and not address & 3)
            or mode == IOMMMIO_FLAGS_READ_PASSTHRU
            or (size == 8 and not address & 7 and mode == IOMMMIO_FLAGS_READ_DWORD_QWORD)
        ):
            if size in MMIO_SIZES:
                rc, value = read(where, size)
            else:  # a piece of a split access: the device takes 1, 2, 4 or 8 bytes
                rc, value = _pieces_read(read, where, address, size)
                if rc in RING3_STATUSES or rc < 0:
                    return rc, 0
        else:
            counters[stats + M_COMPLICATED_READS] += 1
            rc, value = _complicated_read(read, flags, mode, address, offset, size, counters, stats)
            if rc in RING3_STATUSES or rc < 0:
                return rc, 0
    if rc == VINF_IOM_MMIO_UNUSED_FF:
        counters[stats + M_FF_OR_00_READS] += 1
        return VINF_SUCCESS, all_ones(size)
    if rc == VINF_IOM_MMIO_UNUSED_00:
        counters[stats + M_FF_OR_00_READS] += 1
        return VINF_SUCCESS, 0
    if rc in RING3_STATUSES:
        return rc, 0
    return rc, value & all_ones(size)


def _pieces_read(read: MmioRead, where: int, address: int, size: int) -> tuple[int, int]:
    """A PASSTHRU read of a size devices do not take, in natural pieces merged into one value."""
    status = VINF_SUCCESS
    value = 0
    for piece_address, piece in natural_pieces(address, size):
        shift = piece_address - address
        rc, part = read(where + shift, piece)
        if rc == VINF_IOM_MMIO_UNUSED_FF:
            part = all_ones(piece)
        elif rc == VINF_IOM_MMIO_UNUSED_00:
            part = 0
        elif rc in RING3_STATUSES or rc < 0:
            return rc, 0
        elif is_em_status(rc):
            status = _merge_em(status, rc)
        value |= (part & all_ones(piece)) << (8 * shift)
    return status, value


def _complicated_read(
    read: MmioRead, flags: int, mode: int, address: int, offset: int, size: int, counters: memoryview, stats: int
) -> tuple[int, int]:
    if mode not in (IOMMMIO_FLAGS_READ_DWORD, IOMMMIO_FLAGS_READ_DWORD_QWORD):
        return VERR_IOM_MMIO_IPE_1, 0
    if not 1 <= size <= MAX_COMPLICATED:
        return VERR_IOM_MMIO_IPE_2, 0
    status = VINF_SUCCESS
    value = 0
    done = 0
    while done < size:
        skew = address & 3
        part = min(4 - skew, size - done)
        rc, dword = read((address - skew) if flags & IOMMMIO_FLAGS_ABS else (offset - skew), 4)
        if rc == VINF_IOM_MMIO_UNUSED_FF:
            counters[stats + M_FF_OR_00_READS] += 1
            dword = 0xFFFFFFFF
        elif rc == VINF_IOM_MMIO_UNUSED_00:
            counters[stats + M_FF_OR_00_READS] += 1
            dword = 0
        elif rc in RING3_STATUSES or rc < 0:
            return rc, 0  # "reads could be kind of screwed" past this point, as in VirtualBox
        elif is_em_status(rc):
            status = _merge_em(status, rc)
        value |= ((dword >> (8 * skew)) & all_ones(part)) << (8 * done)
        done += part
        address += part
        offset += part
    return status, value


def do_write(
    write: MmioWrite | None,
    read: MmioRead | None,
    flags: int,
    address: int,
    offset: int,
    data: bytes,
    counters: memoryview,
    stats: int,
) -> tuple[int, int, bytes]:
    """iomMmioDoWrite: (status, address, bytes left for ring-3).

    When the device answers VINF_IOM_R3_MMIO_* (ring-0 only), the bytes left are what
    ring-3 must still write, from the current DWORD on (VirtualBox's pending write), at
    that address, and the status is the most urgent EM status of the parts already
    written (VINF_SUCCESS if none).  Otherwise no bytes are left and the status is the
    write's.  *data* is the guest's bytes, little-endian.
    """
    size = len(data)
    if write is None:
        return VINF_SUCCESS, address, b""
    mode = flags & IOMMMIO_FLAGS_WRITE_MODE
    where = address if flags & IOMMMIO_FLAGS_ABS else offset
    if (
        (size == 4 and not address & 3)
        or mode == IOMMMIO_FLAGS_WRITE_PASSTHRU
        or (size == 8 and not address & 7 and mode in _QWORD_WRITE_MODES)
    ):
        if size in MMIO_SIZES:
            rc = write(where, int.from_bytes(data, "little"), size)
            return (VINF_SUCCESS, address, data) if rc in RING3_STATUSES else (rc, address, b"")
        return _pieces_write(write, where, address, data)
    counters[stats + M_COMPLICATED_WRITES] += 1
    if mode in _ONLY_DWORD_MODES:
        counters[stats + M_IGNORED_WRITES] += 1
        return VINF_SUCCESS, address, b""
    if not 1 <= size <= MAX_COMPLICATED:
        return VERR_IOM_MMIO_IPE_2, address, b""
    status = VINF_SUCCESS
    done = 0
    at = address
    while done < size:
        skew = at & 3
        part = min(4 - skew, size - done)
        given = int.from_bytes(data[done : done + part], "little")
        aligned_where = where + done - skew
        if part == 4:
            merged = given
        else:
            missing = 0
            if mode in _READ_MISSING_MODES:
                # No read callback reads as unused (all ones), as do_read says.
                rc, missing = read(aligned_where, 4) if read is not None else (VINF_IOM_MMIO_UNUSED_FF, 0)
                if rc == VINF_IOM_MMIO_UNUSED_FF:
                    counters[stats + M_FF_OR_00_READS] += 1
                    missing = 0xFFFFFFFF
                elif rc == VINF_IOM_MMIO_UNUSED_00:
                    counters[stats + M_FF_OR_00_READS] += 1
                    missing = 0
                elif rc in RING3_STATUSES:
                    return status, at, data[done:]
                elif rc < 0:
                    return rc, address, b""
                elif is_em_status(rc):
                    status = _merge_em(status, rc)
            mask = all_ones(part) << (8 * skew)
            merged = (missing & ~mask | (given << (8 * skew)) & mask) & 0xFFFFFFFF
        rc = write(aligned_where, merged, 4)
        if rc in RING3_STATUSES:
            return status, at - skew, merged.to_bytes(4, "little") + data[done + part :]
        if rc < 0:
            return rc, address, b""
        if is_em_status(rc):
            status = _merge_em(status, rc)
        done += part
        at += part
    return status, address, b""


def _pieces_write(write: MmioWrite, where: int, address: int, data: bytes) -> tuple[int, int, bytes]:
    """A PASSTHRU write of a size devices do not take (a split access's piece) in natural pieces."""
    status = VINF_SUCCESS
    for piece_address, piece in natural_pieces(address, len(data)):
        start = piece_address - address
        rc = write(where + start, int.from_bytes(data[start : start + piece], "little"), piece)
        if rc in RING3_STATUSES:
            return status, piece_address, data[start:]
        if rc < 0:
            return rc, address, b""
        if is_em_status(rc):
            status = _merge_em(status, rc)
    return status, address, b""


def split_parts(firsts: list[int], lasts: list[int], address: int, size: int, i: int) -> list[tuple[int, int, int]]:
    """Cut an access at region boundaries: (lookup position or -1 for unassigned, start, length).

    *i* is the lookup position of the region holding *address*, or -1.  No part is
    ever sent to a device beyond its region's end.
    """
    parts = []
    end = address + size
    while address < end:
        if i >= 0:
            part_end = min(end, lasts[i] + 1)
        else:
            following = bisect.bisect_right(firsts, address)
            part_end = min(end, firsts[following]) if following < len(firsts) else end
        parts.append((i, address, part_end - address))
        address = part_end
        if address < end:
            i = i + 1 if 0 <= i + 1 < len(firsts) and firsts[i + 1] == address else _position(firsts, lasts, address)
    return parts


def _position(firsts: list[int], lasts: list[int], address: int) -> int:
    at = bisect.bisect_right(firsts, address) - 1
    return at if at >= 0 and lasts[at] >= address else -1
