"""IOM in ring-3: creating, mapping and unmapping I/O port regions, and doing port I/O here.

Ring-3 is the only writer of the shared registration table.  Every change runs inside
:meth:`IoPortManager.exclusive`, which makes the table's generation word odd for the
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
from typing import Concatenate, ParamSpec, TypeVar

from shared.devapi import (
    IOM_IOPORT_F_ABS,
    IOM_IOPORT_F_VALID_MASK,
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
    UNMAPPED_PORT,
    IoPortTable,
    PortLookup,
)
from shared.locks import DeviceLock
from shared.portio import ALL_ONES, read_units, write_units
from shared.stats import (
    G_COUNT,
    G_FAILED,
    G_RING3_ACCESSES,
    G_UNASSIGNED,
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
    VERR_IOM_IOPORT_IPE_1,
    VERR_IOM_IOPORT_RANGE_CONFLICT,
    VERR_IOM_IOPORT_UNUSED,
    VERR_IOM_IOPORTS_ALREADY_MAPPED,
    VERR_IOM_IOPORTS_NOT_MAPPED,
    VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS,
    VERR_OUT_OF_RANGE,
    VERR_WRONG_ORDER,
    VINF_SUCCESS,
    VBoxError,
    iom_success_r3,
)

PORT_STATS_MAX = 65536  # VirtualBox's _64K cap on per-port statistics entries


def _dummy_in(offset: int, size: int) -> tuple[int, int]:
    """IOM's stand-in for a missing ring-3 IN callback: all ones."""
    return VINF_SUCCESS, ALL_ONES.get(size, 0xFFFFFFFF)


def _dummy_out(offset: int, value: int, size: int) -> int:
    """IOM's stand-in for a missing ring-3 OUT callback: the write is dropped."""
    return VINF_SUCCESS


P = ParamSpec("P")
R = TypeVar("R")


def _one_writer(method: Callable[Concatenate[IoPortManager, P], R]) -> Callable[Concatenate[IoPortManager, P], R]:
    """Run a table change with the writer lock held from its first check to its last write."""

    def serialized(self: IoPortManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
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


class IoPortManager:
    """The I/O port half of IOM in ring-3: the only writer of the registration table."""

    def __init__(self, table: IoPortTable) -> None:
        self.table = table
        self.regions: list[Ring3Region] = []
        self._writer = threading.RLock()  # held across a change's checks and its writes

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """IOM_LOCK_EXCL: readers that look while this is held see VERR_SEM_BUSY."""
        with self._writer:
            self.table.generation += 1
            try:
                yield
            finally:
                self.table.generation += 1

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
    ) -> int:
        """Create an unmapped region of *count* ports and return its handle."""
        table = self.table
        if table.frozen:
            raise VBoxError(VERR_WRONG_ORDER, f"{device}: I/O port regions can only be created before init-complete")
        if not 1 <= count <= IOPORT_MAX_PORTS_PER_REGION:
            raise VBoxError(VERR_OUT_OF_RANGE, f"{device}: {count} ports is not in 1..{IOPORT_MAX_PORTS_PER_REGION}")
        if flags & ~IOM_IOPORT_F_VALID_MASK:
            raise VBoxError(VERR_INVALID_FLAGS, f"{device}: flags {flags:#x}")
        if in_ is None and out is None and in_string is None and out_string is None:
            raise VBoxError(VERR_INVALID_PARAMETER, f"{device}: a region needs at least one callback")
        encoded = description.encode()
        if not encoded or len(encoded) >= IOPORT_DESCRIPTION_MAX:
            raise VBoxError(VERR_INVALID_PARAMETER, f"{device}: description must be 1..127 bytes")
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
        lookup = table.lookup
        # The sorted table's insertion point: the first range that starts after us.
        at = 0
        while at < count and lookup[at].first <= last:
            if lookup[at].last >= port:
                other = self.regions[lookup[at].handle]
                raise VBoxError(
                    VERR_IOM_IOPORT_RANGE_CONFLICT,
                    f"{region.description} at {port:04x}-{last:04x} overlaps {other.description} "
                    f"at {lookup[at].first:04x}-{lookup[at].last:04x}",
                )
            at += 1
        with self.exclusive():
            for i in range(count, at, -1):
                lookup[i].first, lookup[i].last, lookup[i].handle = (
                    lookup[i - 1].first, lookup[i - 1].last, lookup[i - 1].handle,
                )
            lookup[at].first, lookup[at].last, lookup[at].handle = port, last, handle
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
        lookup = table.lookup
        at = next((i for i in range(count) if lookup[i].handle == handle), -1)
        if at < 0 or lookup[at].first != entry.port:
            raise VBoxError(VERR_IOM_IOPORT_IPE_1, f"{region.description} is missing from the lookup table")
        with self.exclusive():
            for i in range(at, count - 1):
                lookup[i].first, lookup[i].last, lookup[i].handle = (
                    lookup[i + 1].first, lookup[i + 1].last, lookup[i + 1].handle,
                )
            table.lookup_entries = count - 1
            entry.port = UNMAPPED_PORT
            entry.mapped = 0

    # -- IOMR0IoPortSetUpContext, as ring-3 records it -----------------------------------
    @_one_writer
    def set_up_ring0(self, owner: int, handle: int, callbacks: int) -> None:
        """Mark which ring-0 callbacks a region has (fRing0 and the R0 entry's callbacks)."""
        region = self._entry(owner, handle)
        if self.table.frozen:
            raise VBoxError(VERR_WRONG_ORDER, f"{region.description}: ring-0 set-up after init-complete")
        entry = self.table.entries[handle]
        if entry.ring0_callbacks:
            raise VBoxError(VERR_WRONG_ORDER, f"{region.description}: ring-0 context already set up")
        if not callbacks:
            raise VBoxError(VERR_INVALID_PARAMETER, f"{region.description}: ring-0 set-up with no callback")
        with self.exclusive():
            entry.ring0_callbacks = callbacks

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


class Ring3PortIO:
    """IOMAll.cpp as compiled for ring-3, working on behalf of one vCPU (its hints, its row)."""

    def __init__(
        self,
        manager: IoPortManager,
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
        lookup = self.lookup
        while not lookup.refresh():  # only another ring-3 thread can be writing: wait it out
            time.sleep(0)
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
