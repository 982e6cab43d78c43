"""IOM in ring-3: creating, mapping and unmapping I/O port regions, and doing port I/O here.

Ring-3 is the only writer of the shared registration table.  Every change runs inside
:meth:`IomManager.exclusive`, which makes the table's generation word odd for the
duration (the IOM lock taken exclusively): ring-0 readers that look meanwhile see
"busy" and defer.  Region creation is allowed only until init-complete freezes it
(VERR_WRONG_ORDER after, as IOMR3InitCompleted does); mapping and unmapping stay
possible at runtime, which is how a PCI BAR moves.

:class:`Ring3PortIO` is IOMAll.cpp compiled for ring-3: the same lookup, but the device
lock is entered blocking and every region has all four callbacks (missing ones are
VirtualBox's dummies), so nothing is deferred any further.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from shared.devapi import (
    IOM_IOPORT_F_ABS,
    IOM_IOPORT_F_VALID_MASK,
    IOMMMIO_FLAGS_READ_DWORD_QWORD,
    IOMMMIO_FLAGS_READ_MODE,
    IOMMMIO_FLAGS_VALID_MASK,
    IOMMMIO_FLAGS_WRITE_MODE,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
    MmioRead,
    MmioWrite,
    PortIn,
    PortInString,
    PortOut,
    PortOutString,
)
from shared.iomtable import (
    CB_IN,
    CB_IN_STRING,
    CB_OUT,
    CB_OUT_STRING,
    IOPORT_DESCRIPTION_MAX,
    IOPORT_MAX_PORTS_PER_REGION,
    IOPORT_MAX_REGISTRATIONS,
    MMIO_MAX_REGION_SIZE,
    MMIO_MAX_REGISTRATIONS,
    NIL_GCPHYS,
    PAGE_SIZE,
    UNMAPPED_PORT,
    IomTable,
    MmioLookup,
    PortLookup,
    RangeLookup,
)
from shared.locks import DeviceLock
from shared.mmio import MMIO_SIZES, RING3_STATUSES, all_ones, do_read, do_write, split_parts
from shared.portio import ALL_ONES, read_units, write_units
from shared.stats import (
    G_COUNT,
    G_FAILED,
    G_MMIO_COMMITS_DIRECT,
    G_MMIO_COMMITS_PGM,
    G_MMIO_SPLIT,
    G_MMIO_STALE,
    G_RING3_ACCESSES,
    G_UNASSIGNED,
    M_COUNT,
    M_PROF_READ_R3_CALLS,
    M_PROF_READ_R3_NS,
    M_PROF_WRITE_R3_CALLS,
    M_PROF_WRITE_R3_NS,
    M_READS_R3,
    M_WRITES_R3,
    P_COUNT,
    P_IN_R3,
    P_OUT_R3,
    P_PROF_IN_R3_NS,
    P_PROF_OUT_R3_NS,
    P_TOTAL,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_INVALID_FLAGS,
    VERR_INVALID_PARAMETER,
    VERR_IOM_INVALID_IOPORT_HANDLE,
    VERR_IOM_INVALID_IOPORT_SIZE,
    VERR_IOM_INVALID_MMIO_HANDLE,
    VERR_IOM_INVALID_MMIO_RANGE,
    VERR_IOM_IOPORT_IPE_1,
    VERR_IOM_IOPORT_RANGE_CONFLICT,
    VERR_IOM_IOPORT_UNUSED,
    VERR_IOM_IOPORTS_ALREADY_MAPPED,
    VERR_IOM_IOPORTS_NOT_MAPPED,
    VERR_IOM_MMIO_IPE_1,
    VERR_IOM_MMIO_IPE_2,
    VERR_IOM_MMIO_RANGE_CONFLICT,
    VERR_IOM_MMIO_REGION_ALREADY_MAPPED,
    VERR_IOM_MMIO_REGION_NOT_MAPPED,
    VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS,
    VERR_IOM_TOO_MANY_MMIO_REGISTRATIONS,
    VERR_OUT_OF_RANGE,
    VERR_SEM_BUSY,
    VERR_UNSUPPORTED_ALIGNMENT,
    VERR_WRONG_ORDER,
    VINF_SUCCESS,
    VBoxError,
    iom_success_r3,
    is_em_status,
)

PORT_STATS_MAX = 65536  # VirtualBox's _64K cap on per-port statistics entries


WRITER_WAIT_S = 5.0


def _refresh(lookup: RangeLookup) -> None:
    """Ring-3's lookups wait for a ring-3 writer (another thread) to finish, but not forever."""
    deadline = time.monotonic() + WRITER_WAIT_S
    while not lookup.refresh():
        if time.monotonic() > deadline:
            raise VBoxError(VERR_SEM_BUSY, "the IOM lock stayed taken for more than 5 s")
        time.sleep(0)


def _description(device: str, description: str) -> bytes:
    """A region's description as the table stores it; it must be 1..127 bytes."""
    encoded = description.encode()
    if not encoded or len(encoded) >= IOPORT_DESCRIPTION_MAX:
        raise VBoxError(VERR_INVALID_PARAMETER, f"{device}: description must be 1..127 bytes")
    return encoded


def _dummy_in(offset: int, size: int) -> tuple[int, int]:
    """IOM's stand-in for a missing ring-3 IN callback: all ones."""
    return VINF_SUCCESS, ALL_ONES.get(size, 0xFFFFFFFF)


def _dummy_out(offset: int, value: int, size: int) -> int:
    """IOM's stand-in for a missing ring-3 OUT callback: the write is dropped."""
    return VINF_SUCCESS


P = ParamSpec("P")
R = TypeVar("R")


def _one_writer(method: Callable[Concatenate[IomManager, P], R]) -> Callable[Concatenate[IomManager, P], R]:
    """Run a table change with the writer lock held from its first check to its last write."""

    def serialized(self: IomManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._writer:
            return method(self, *args, **kwargs)

    serialized.__name__ = method.__name__
    serialized.__doc__ = method.__doc__
    return serialized


@dataclass
class Ring3Region:
    """The ring-3 half of a registration: what the shared table cannot hold (callbacks)."""

    handle: int
    owner: int
    device: str
    count: int
    description: str
    flags: int
    in_: PortIn
    out: PortOut
    in_string: PortInString | None
    out_string: PortOutString | None


@dataclass
class MmioRegion:
    """The ring-3 half of an MMIO registration.  Missing callbacks stay None (no dummies)."""

    handle: int
    owner: int
    device: str
    size: int
    description: str
    flags: int
    read: MmioRead | None
    write: MmioWrite | None


class IomManager:
    """IOM in ring-3: the only writer of the registration tables (I/O ports and MMIO)."""

    def __init__(self, table: IomTable) -> None:
        self.table = table
        self.regions: list[Ring3Region] = []
        self.mmio_regions: list[MmioRegion] = []
        self._writer = threading.RLock()  # held across a change's checks and its writes

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """IOM_LOCK_EXCL: readers that look while this is held see VERR_SEM_BUSY."""
        with self._writer:
            start = self.table.generation
            try:
                self.table.generation = start + 1
                yield
            finally:
                self.table.generation = start + 2  # even again, whatever interrupted the change

    # -- IOMR3IoPortCreate -------------------------------------------------------------
    @_one_writer
    def create(
        self,
        owner: int,
        device: str,
        count: int,
        description: str,
        *,
        flags: int = 0,
        in_: PortIn | None = None,
        out: PortOut | None = None,
        in_string: PortInString | None = None,
        out_string: PortOutString | None = None,
        posted: bool = False,
    ) -> int:
        """Create an unmapped region of *count* ports and return its handle.

        *posted*: in posted mode, writes ring-0 defers may be posted (the vCPU does not wait).
        """
        table = self.table
        if table.frozen:
            raise VBoxError(VERR_WRONG_ORDER, f"{device}: I/O port regions can only be created before init-complete")
        if not 1 <= count <= IOPORT_MAX_PORTS_PER_REGION:
            raise VBoxError(VERR_OUT_OF_RANGE, f"{device}: {count} ports is not in 1..{IOPORT_MAX_PORTS_PER_REGION}")
        if flags & ~IOM_IOPORT_F_VALID_MASK:
            raise VBoxError(VERR_INVALID_FLAGS, f"{device}: flags {flags:#x}")
        if in_ is None and out is None and in_string is None and out_string is None:
            raise VBoxError(VERR_INVALID_PARAMETER, f"{device}: a region needs at least one callback")
        encoded = _description(device, description)
        handle = int(table.registrations)
        if handle >= IOPORT_MAX_REGISTRATIONS or table.port_stats + count > PORT_STATS_MAX:
            raise VBoxError(VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS, f"{device}: no room for {count} more ports")
        callbacks = (
            (CB_IN if in_ else 0)
            | (CB_OUT if out else 0)
            | (CB_IN_STRING if in_string else 0)
            | (CB_OUT_STRING if out_string else 0)
        )
        with self.exclusive():
            entry = table.entries[handle]
            entry.port = UNMAPPED_PORT
            entry.count = count
            entry.stats_index = table.port_stats
            entry.owner = owner
            entry.flags = flags
            entry.mapped = 0
            entry.ring3_callbacks = callbacks
            entry.ring0_callbacks = 0
            entry.postable = posted
            entry.description = encoded
            table.port_stats += count
            table.registrations = handle + 1
        self.regions.append(
            Ring3Region(
                handle, owner, device, count, description, flags,
                in_ or _dummy_in, out or _dummy_out, in_string, out_string,
            )
        )
        return handle

    def _entry(self, owner: int, handle: int) -> Ring3Region:
        if not 0 <= handle < len(self.regions) or self.regions[handle].owner != owner:
            raise VBoxError(VERR_IOM_INVALID_IOPORT_HANDLE, f"handle {handle} is not a region of this device")
        return self.regions[handle]

    # -- the sorted lookup tables --------------------------------------------------------
    def _find_gap(self, lookup: Any, count: int, first: int, last: int) -> int | None:
        """Where [first, last] goes in a sorted lookup table, or None if it overlaps a range there."""
        at = 0
        while at < count and lookup[at].first <= last:
            if lookup[at].last >= first:
                return None
            at += 1
        return at

    def _overlapped(self, lookup: Any, count: int, first: int, last: int) -> int:
        return next(i for i in range(count) if lookup[i].first <= last and lookup[i].last >= first)

    @staticmethod
    def _insert(lookup: Any, count: int, at: int, first: int, last: int, handle: int) -> None:
        """memmove the tail up one and put the range at *at* (the caller holds the IOM lock)."""
        for i in range(count, at, -1):
            above, below = lookup[i], lookup[i - 1]
            above.first, above.last, above.handle = below.first, below.last, below.handle
        lookup[at].first, lookup[at].last, lookup[at].handle = first, last, handle

    @staticmethod
    def _remove(lookup: Any, count: int, at: int) -> None:
        for i in range(at, count - 1):
            below, above = lookup[i], lookup[i + 1]
            below.first, below.last, below.handle = above.first, above.last, above.handle

    # -- IOMR3IoPortMap / Unmap ----------------------------------------------------------
    @_one_writer
    def map(self, owner: int, handle: int, port: int) -> None:
        """Map a region at *port*; VERR_IOM_IOPORT_RANGE_CONFLICT if it overlaps a mapped one."""
        region = self._entry(owner, handle)
        last = port + region.count - 1
        if port < 0 or last > 0xFFFF:
            raise VBoxError(VERR_OUT_OF_RANGE, f"{region.description}: ports {port:#x}..{last:#x} exceed 0xffff")
        table = self.table
        if table.entries[handle].mapped:
            raise VBoxError(VERR_IOM_IOPORTS_ALREADY_MAPPED, f"{region.description} is already mapped")
        count = table.lookup_entries
        at = self._find_gap(table.lookup, count, port, last)
        if at is None:
            other = table.lookup[self._overlapped(table.lookup, count, port, last)]
            raise VBoxError(
                VERR_IOM_IOPORT_RANGE_CONFLICT,
                f"{region.description} at {port:04x}-{last:04x} overlaps {self.regions[other.handle].description} "
                f"at {other.first:04x}-{other.last:04x}",
            )
        with self.exclusive():
            self._insert(table.lookup, count, at, port, last, handle)
            table.lookup_entries = count + 1
            entry = table.entries[handle]
            entry.port = port
            entry.mapped = 1

    @_one_writer
    def unmap(self, owner: int, handle: int) -> None:
        region = self._entry(owner, handle)
        table = self.table
        entry = table.entries[handle]
        if not entry.mapped:
            raise VBoxError(VERR_IOM_IOPORTS_NOT_MAPPED, f"{region.description} is not mapped")
        count = table.lookup_entries
        at = next((i for i in range(count) if table.lookup[i].handle == handle), -1)
        if at < 0 or table.lookup[at].first != entry.port:
            raise VBoxError(VERR_IOM_IOPORT_IPE_1, f"{region.description} is missing from the lookup table")
        with self.exclusive():
            self._remove(table.lookup, count, at)
            table.lookup_entries = count - 1
            entry.port = UNMAPPED_PORT
            entry.mapped = 0

    # -- IOMR0IoPortSetUpContext, as ring-3 records it -----------------------------------
    @_one_writer
    def set_up_ring0(self, owner: int, handle: int, callbacks: int) -> None:
        """Mark which ring-0 callbacks a region has (fRing0 and the R0 entry's callbacks)."""
        description = self._entry(owner, handle).description  # checks the handle first
        self._record_ring0(self.table.entries[handle], description, callbacks)

    def _record_ring0(self, entry: Any, description: str, callbacks: int) -> None:
        if self.table.frozen:
            raise VBoxError(VERR_WRONG_ORDER, f"{description}: ring-0 set-up after init-complete")
        if entry.ring0_callbacks:
            raise VBoxError(VERR_WRONG_ORDER, f"{description}: ring-0 context already set up")
        if not callbacks:
            raise VBoxError(VERR_INVALID_PARAMETER, f"{description}: ring-0 set-up with no callback")
        with self.exclusive():
            entry.ring0_callbacks = callbacks

    # -- IOMR3MmioCreate / Map / Unmap ---------------------------------------------------
    @_one_writer
    def mmio_create(
        self,
        owner: int,
        device: str,
        size: int,
        description: str,
        *,
        flags: int = 0,
        read: MmioRead | None = None,
        write: MmioWrite | None = None,
        posted: bool = False,
    ) -> int:
        """Create an unmapped MMIO region of *size* bytes and return its handle."""
        table = self.table
        if table.frozen:
            raise VBoxError(VERR_WRONG_ORDER, f"{device}: MMIO regions can only be created before init-complete")
        if not 0 < size <= MMIO_MAX_REGION_SIZE:
            raise VBoxError(VERR_OUT_OF_RANGE, f"{device}: region size {size:#x}")
        if size % PAGE_SIZE:
            raise VBoxError(VERR_UNSUPPORTED_ALIGNMENT, f"{device}: region size {size:#x} is not a page multiple")
        if (
            flags & ~IOMMMIO_FLAGS_VALID_MASK
            or flags & IOMMMIO_FLAGS_READ_MODE > IOMMMIO_FLAGS_READ_DWORD_QWORD
            or flags & IOMMMIO_FLAGS_WRITE_MODE > IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD
        ):
            raise VBoxError(VERR_INVALID_FLAGS, f"{device}: MMIO flags {flags:#x}")
        if read is None and write is None:
            raise VBoxError(VERR_INVALID_PARAMETER, f"{device}: an MMIO region needs a read or a write callback")
        encoded = _description(device, description)
        handle = int(table.mmio_registrations)
        if handle >= MMIO_MAX_REGISTRATIONS:
            raise VBoxError(VERR_IOM_TOO_MANY_MMIO_REGISTRATIONS, f"{device}: no room for another MMIO region")
        with self.exclusive():
            entry = table.mmio_entries[handle]
            entry.mapping = NIL_GCPHYS
            entry.size = size
            entry.flags = flags
            entry.stats_index = handle
            entry.owner = owner
            entry.mapped = 0
            entry.ring3_callbacks = (CB_IN if read else 0) | (CB_OUT if write else 0)
            entry.ring0_callbacks = 0
            entry.postable = posted
            entry.description = encoded
            table.mmio_registrations = handle + 1
        self.mmio_regions.append(MmioRegion(handle, owner, device, size, description, flags, read, write))
        return handle

    def _mmio_entry(self, owner: int, handle: int) -> MmioRegion:
        if not 0 <= handle < len(self.mmio_regions) or self.mmio_regions[handle].owner != owner:
            raise VBoxError(VERR_IOM_INVALID_MMIO_HANDLE, f"handle {handle} is not an MMIO region of this device")
        return self.mmio_regions[handle]

    @_one_writer
    def mmio_map(self, owner: int, handle: int, address: int) -> None:
        """Map a region at a page-aligned *address*; VERR_IOM_MMIO_RANGE_CONFLICT on overlap."""
        region = self._mmio_entry(owner, handle)
        last = address + region.size - 1
        if address < 0 or address % PAGE_SIZE or last > NIL_GCPHYS - 1:
            raise VBoxError(VERR_IOM_INVALID_MMIO_RANGE, f"{region.description}: cannot map at {address:#x}")
        table = self.table
        entry = table.mmio_entries[handle]
        if entry.mapped:
            raise VBoxError(VERR_IOM_MMIO_REGION_ALREADY_MAPPED, f"{region.description} is already mapped")
        count = table.mmio_lookup_entries
        at = self._find_gap(table.mmio_lookup, count, address, last)
        if at is None:
            other = table.mmio_lookup[self._overlapped(table.mmio_lookup, count, address, last)]
            raise VBoxError(
                VERR_IOM_MMIO_RANGE_CONFLICT,
                f"{region.description} at {address:#x}-{last:#x} overlaps "
                f"{self.mmio_regions[other.handle].description} at {other.first:#x}-{other.last:#x}",
            )
        with self.exclusive():
            entry.mapping = address
            self._insert(table.mmio_lookup, count, at, address, last, handle)
            table.mmio_lookup_entries = count + 1
            entry.mapped = 1

    @_one_writer
    def mmio_unmap(self, owner: int, handle: int) -> None:
        region = self._mmio_entry(owner, handle)
        table = self.table
        entry = table.mmio_entries[handle]
        if not entry.mapped:
            raise VBoxError(VERR_IOM_MMIO_REGION_NOT_MAPPED, f"{region.description} is not mapped")
        count = table.mmio_lookup_entries
        at = next((i for i in range(count) if table.mmio_lookup[i].handle == handle), -1)
        if at < 0:
            raise VBoxError(VERR_IOM_MMIO_IPE_1, f"{region.description} is missing from the lookup table")
        with self.exclusive():
            self._remove(table.mmio_lookup, count, at)
            table.mmio_lookup_entries = count - 1
            entry.mapped = 0
            entry.mapping = NIL_GCPHYS

    @_one_writer
    def mmio_set_up_ring0(self, owner: int, handle: int, callbacks: int) -> None:
        """IOMR0MmioSetUpContext as ring-3 records it: which ring-0 callbacks the region has."""
        description = self._mmio_entry(owner, handle).description  # checks the handle first
        self._record_ring0(self.table.mmio_entries[handle], description, callbacks)

    def freeze(self) -> None:
        """IOMR3InitCompleted: no more regions from here on."""
        with self.exclusive():
            self.table.frozen = 1

    # -- info ioport ---------------------------------------------------------------------
    def info(self) -> str:
        """``info ioport`` in VirtualBox's columns, one row per registration in handle order."""
        lines = [
            f"I/O port registrations: {len(self.regions)} ({IOPORT_MAX_REGISTRATIONS} allocated)",
            " ## Ctx    Ports Mapping   PCI    Description",
        ]
        for region in self.regions:
            entry = self.table.entries[region.handle]
            context = "+0  " if entry.ring0_callbacks else "    "
            if entry.mapped:
                mapping = f"{entry.port:04x}-{entry.port + region.count - 1:04x}"
            else:
                mapping = "unmapped "
            lines.append(f"{region.handle:3d} R3{context} {region.count:04x}  {mapping}        {region.description}")
        return "\n".join(lines)

    def info_mmio(self) -> str:
        """``info mmio``: the same columns as ``info ioport``, with 64-bit sizes and addresses."""
        lines = [
            f"MMIO registrations: {len(self.mmio_regions)} ({MMIO_MAX_REGISTRATIONS} allocated)",
            " ## Ctx    Size             Mapping                               PCI    Description",
        ]
        for region in self.mmio_regions:
            entry = self.table.mmio_entries[region.handle]
            context = "+0  " if entry.ring0_callbacks else "    "
            if entry.mapped:
                mapping = f"{entry.mapping:016x}-{entry.mapping + region.size - 1:016x}"
            else:
                mapping = f"{'unmapped':<33}"
            lines.append(f"{region.handle:3d} R3{context} {region.size:016x} {mapping}        {region.description}")
        return "\n".join(lines)


class Ring3PortIO:
    """IOMAll.cpp as compiled for ring-3, working on behalf of one vCPU (its hints, its row)."""

    def __init__(
        self,
        manager: IomManager,
        locks: list[DeviceLock],
        counters: memoryview,
        row_base: int,
    ) -> None:
        self.manager = manager
        self.lookup = PortLookup(manager.table)
        self.locks = locks
        self.counters = counters
        self.row = row_base
        self.port_stats = row_base + G_COUNT
        self.hints = [0, 0]  # last read, last write
        self.callback_errors: list[str] = []

    def _resolve(self, port: int, hint_slot: int) -> tuple[Ring3Region, int, int] | None:
        """(region, offset or absolute port, stats base), or None when no region holds the port."""
        _refresh(self.lookup)
        lookup = self.lookup
        i = lookup.find(port, self.hints[hint_slot])
        if i < 0:
            return None
        self.hints[hint_slot] = i
        info = lookup.infos[i]
        region = self.manager.regions[info.handle]
        offset = port - info.first
        stats = self.port_stats + (info.stats_index + offset) * P_COUNT
        return region, port if region.flags & IOM_IOPORT_F_ABS else offset, stats

    def _failed(self, region: Ring3Region, port: int, exc: BaseException) -> int:
        if len(self.callback_errors) < 20:
            self.callback_errors.append(f"{region.device} port {port:#06x}: {type(exc).__name__}: {exc}")
        self.counters[self.row + G_FAILED] += 1
        return VERR_INTERNAL_ERROR

    def _count(self, region: Ring3Region, stats: int, field: int, prof: int, started: int) -> None:
        c = self.counters
        c[stats + field] += 1
        c[stats + prof] += time.perf_counter_ns() - started
        c[stats + prof + 1] += 1
        c[self.port_stats + self.manager.table.entries[region.handle].stats_index * P_COUNT + P_TOTAL] += 1
        c[self.row + G_RING3_ACCESSES] += 1

    def read(self, port: int, size: int) -> tuple[int, int]:
        """IOMIOPortRead in ring-3: (status, value)."""
        if size not in ALL_ONES:
            return VERR_IOM_INVALID_IOPORT_SIZE, 0
        hit = self._resolve(port, 0)
        if hit is None:
            self.counters[self.row + G_UNASSIGNED] += 1
            return VINF_SUCCESS, ALL_ONES[size]
        region, where, stats = hit
        lock = self.locks[region.owner]
        started = time.perf_counter_ns()
        with lock:
            try:
                rc, value = region.in_(where, size)
            except Exception as exc:
                rc, value = self._failed(region, port, exc), 0
        self._count(region, stats, P_IN_R3, P_PROF_IN_R3_NS, started)
        if rc == VERR_IOM_IOPORT_UNUSED:
            return VINF_SUCCESS, ALL_ONES[size]
        return rc, value & ALL_ONES[size]

    def write(self, port: int, value: int, size: int) -> int:
        """IOMIOPortWrite in ring-3."""
        if size not in ALL_ONES:
            return VERR_IOM_INVALID_IOPORT_SIZE
        hit = self._resolve(port, 1)
        if hit is None:
            self.counters[self.row + G_UNASSIGNED] += 1
            return VINF_SUCCESS
        region, where, stats = hit
        started = time.perf_counter_ns()
        with self.locks[region.owner]:
            try:
                rc = region.out(where, value & ALL_ONES[size], size)
            except Exception as exc:
                rc = self._failed(region, port, exc)
        self._count(region, stats, P_OUT_R3, P_PROF_OUT_R3_NS, started)
        return rc

    def read_string(self, port: int, size: int, count: int) -> tuple[int, bytes, int]:
        """IOMIOPortReadString in ring-3: (status, data, units left)."""
        if size not in ALL_ONES:
            return VERR_IOM_INVALID_IOPORT_SIZE, b"", count
        hit = self._resolve(port, 0)
        if hit is None:
            self.counters[self.row + G_UNASSIGNED] += 1
            return VINF_SUCCESS, b"\xff" * (count * size), 0
        region, where, stats = hit
        started = time.perf_counter_ns()
        with self.locks[region.owner]:
            try:
                rc, data, left = read_units(region.in_, region.in_string, where, size, count, iom_success_r3)
            except Exception as exc:
                rc, data, left = self._failed(region, port, exc), b"", count
        self._count(region, stats, P_IN_R3, P_PROF_IN_R3_NS, started)
        return rc, data, left

    def write_string(self, port: int, size: int, data: bytes) -> tuple[int, int]:
        """IOMIOPortWriteString in ring-3: (status, units done)."""
        if size not in ALL_ONES:
            return VERR_IOM_INVALID_IOPORT_SIZE, 0
        hit = self._resolve(port, 1)
        if hit is None:
            self.counters[self.row + G_UNASSIGNED] += 1
            return VINF_SUCCESS, len(data) // size
        region, where, stats = hit
        started = time.perf_counter_ns()
        with self.locks[region.owner]:
            try:
                rc, done = write_units(region.out, region.out_string, where, size, data, iom_success_r3)
            except Exception as exc:
                rc, done = self._failed(region, port, exc), 0
        self._count(region, stats, P_OUT_R3, P_PROF_OUT_R3_NS, started)
        return rc, done


class Ring3MmioIO:
    """IOMAllMmioNew.cpp as ring-3 runs it for one vCPU: MMIO reads, writes, and commits.

    An access is cut at region boundaries; each part goes to its region under the
    device lock, entered blocking.  A region that moved between the lookup and the
    lock is a stale mapping: counted, reads give all ones and writes are dropped, as
    VirtualBox's ring-3 handler does.
    """

    def __init__(
        self,
        manager: IomManager,
        locks: list[DeviceLock],
        counters: memoryview,
        row_base: int,
        mmio_stats: int,
    ) -> None:
        self.manager = manager
        self.table = manager.table
        self.lookup = MmioLookup(manager.table)
        self.locks = locks
        self.counters = counters
        self.row = row_base
        self.mmio_stats = mmio_stats  # statistics entry 0 of this row
        self.hint = 0
        self.callback_errors: list[str] = []

    def _parts(self, address: int, size: int) -> list[tuple[int, int, int, int]]:
        """(handle or -1, region start, part start, part length) for each part of an access."""
        lookup = self.lookup
        _refresh(lookup)
        i = lookup.find(address, self.hint)
        if i >= 0:
            self.hint = i
        parts = split_parts(lookup.firsts, lookup.lasts, address, size, i)
        if len(parts) > 1:
            self.counters[self.row + G_MMIO_SPLIT] += 1
        return [
            (lookup.infos[at].handle, lookup.firsts[at], start, length) if at >= 0 else (-1, 0, start, length)
            for at, start, length in parts
        ]

    def _count_unassigned(self, parts: list[tuple[int, int, int, int]]) -> None:
        """An access no region holds any part of counts as unassigned, once (as in ring-0)."""
        if all(handle < 0 for handle, _, _, _ in parts):
            self.counters[self.row + G_UNASSIGNED] += 1

    def _failed(self, region: MmioRegion, address: int, what: str) -> int:
        if len(self.callback_errors) < 20:
            self.callback_errors.append(f"{region.device} MMIO {address:#x}: {what}")
        self.counters[self.row + G_FAILED] += 1
        return VERR_INTERNAL_ERROR

    def read(self, address: int, size: int) -> tuple[int, int]:
        """An MMIO read done in ring-3: (status, value)."""
        if size not in MMIO_SIZES:
            return VERR_IOM_MMIO_IPE_2, 0
        status = VINF_SUCCESS
        value = 0
        parts = self._parts(address, size)
        self._count_unassigned(parts)
        for handle, first, start, length in parts:
            if handle < 0:
                part = all_ones(length)
            else:
                rc, part = self._read_region(handle, first, start, length)
                if rc < 0:
                    return rc, 0
                if is_em_status(rc):
                    status = rc if status == VINF_SUCCESS else min(status, rc)
            value |= part << (8 * (start - address))
        return status, value

    def _read_region(self, handle: int, first: int, address: int, size: int) -> tuple[int, int]:
        region = self.manager.mmio_regions[handle]
        c = self.counters
        stats = self.mmio_stats + handle * M_COUNT
        started = time.perf_counter_ns()
        with self.locks[region.owner]:
            if self.table.mmio_entries[handle].mapping != first:
                c[self.row + G_MMIO_STALE] += 1
                return VINF_SUCCESS, all_ones(size)
            try:
                rc, value = do_read(region.read, region.flags, address, address - first, size, c, stats)
            except Exception as exc:
                rc, value = self._failed(region, address, f"{type(exc).__name__}: {exc}"), 0
        if rc in RING3_STATUSES:
            rc, value = self._failed(region, address, "a ring-3 callback asked for ring-3"), 0
        c[stats + M_READS_R3] += 1
        c[stats + M_PROF_READ_R3_NS] += time.perf_counter_ns() - started
        c[stats + M_PROF_READ_R3_CALLS] += 1
        c[self.row + G_RING3_ACCESSES] += 1
        return rc, value

    def write(self, address: int, data: bytes) -> int:
        """An MMIO write done in ring-3 (and PGMPhysWrite's path for commits): the status."""
        status = VINF_SUCCESS
        parts = self._parts(address, len(data))
        self._count_unassigned(parts)
        for handle, first, start, length in parts:
            if handle < 0:
                continue
            offset = start - address
            rc = self._write_region(handle, first, start, data[offset : offset + length])
            if rc < 0:
                return rc
            if is_em_status(rc):
                status = rc if status == VINF_SUCCESS else min(status, rc)
        return status

    def _write_region(self, handle: int, first: int, address: int, data: bytes) -> int:
        region = self.manager.mmio_regions[handle]
        c = self.counters
        stats = self.mmio_stats + handle * M_COUNT
        started = time.perf_counter_ns()
        with self.locks[region.owner]:
            if self.table.mmio_entries[handle].mapping != first:
                c[self.row + G_MMIO_STALE] += 1
                return VINF_SUCCESS
            try:
                rc, _, left = do_write(
                    region.write, region.read, region.flags, address, address - first, data, c, stats
                )
            except Exception as exc:
                rc, left = self._failed(region, address, f"{type(exc).__name__}: {exc}"), b""
        if left:
            rc = self._failed(region, address, "a ring-3 callback asked for ring-3")
        c[stats + M_WRITES_R3] += 1
        c[stats + M_PROF_WRITE_R3_NS] += time.perf_counter_ns() - started
        c[stats + M_PROF_WRITE_R3_CALLS] += 1
        c[self.row + G_RING3_ACCESSES] += 1
        return rc

    def commit(self, address: int, data: bytes, region_hint: int) -> int:
        """Commit a pending MMIO write: through its region hint when the region still
        holds the whole write (MmioCommitsDirect), else through a full lookup (MmioCommitsPgm)."""
        c = self.counters
        if region_hint < len(self.manager.mmio_regions):
            entry = self.table.mmio_entries[region_hint]
            mapping = int(entry.mapping)
            if entry.mapped and mapping <= address and address + len(data) <= mapping + entry.size:
                c[self.row + G_MMIO_COMMITS_DIRECT] += 1
                return self._write_region(region_hint, mapping, address, data)
        c[self.row + G_MMIO_COMMITS_PGM] += 1
        return self.write(address, data)
