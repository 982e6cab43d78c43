"""IOM's registration tables: mappings between disjoint I/O port or guest-physical ranges and the devices behind them.

Both tables live in one shared-memory segment under one IOM lock.  Ring-3 is the only writer (create, map, unmap);
ring-0 readers never block.  The table's ``generation`` word is the IOM lock: ring-3
makes it odd while it changes the table and even again when done (a seqlock).  A reader
that finds it odd, or finds it changed under its feet, sees what VirtualBox's ring-0
sees when the IOM read/write lock is taken exclusively: VERR_SEM_BUSY, and it defers.

Layout follows VirtualBox's IOMIOPORTENTRYR3 / IOMMMIOENTRYR3 (one entry per
registration, indexed by handle) and IOMIOPORTLOOKUPENTRY / IOMMMIOLOOKUPENTRY (mapped
ranges sorted by start, inclusive last).
"""

from __future__ import annotations

import ctypes
import struct
from array import array
from dataclasses import dataclass
from typing import Any

IOPORT_MAX_REGISTRATIONS = 4096  # VirtualBox's _4K cap on I/O port registrations
IOPORT_MAX_PORTS_PER_REGION = 8192  # _8K
IOPORT_DESCRIPTION_MAX = 128  # descriptions must be shorter than this
UNMAPPED_PORT = 0xFFFF
NO_STATS = 0xFFFF

MMIO_MAX_REGISTRATIONS = 4096  # VirtualBox's _4K cap on MMIO registrations
MMIO_MAX_REGION_SIZE = 1 << 40  # MM_MMIO_64_MAX on 64-bit hosts (_1T)
NIL_GCPHYS = (1 << 64) - 1  # NIL_RTGCPHYS: an unmapped region's mapping
PAGE_SIZE = 4096

# Which callbacks a registration has, per context (bit per direction).  MMIO regions
# use CB_IN for read and CB_OUT for write.
CB_IN = 0x1
CB_OUT = 0x2
CB_IN_STRING = 0x4
CB_OUT_STRING = 0x8


class IoPortEntry(ctypes.Structure):
    """One registration (IOMIOPORTENTRYR3 with the ring-0 presence bits beside it)."""

    _fields_ = [
        ("port", ctypes.c_uint16),  # first port of the current mapping, UNMAPPED_PORT if none
        ("count", ctypes.c_uint16),  # cPorts
        ("stats_index", ctypes.c_uint16),  # first per-port statistics entry
        ("owner", ctypes.c_uint16),  # device instance index, in PDM construction order
        ("flags", ctypes.c_uint8),  # IOM_IOPORT_F_*
        ("mapped", ctypes.c_uint8),
        ("ring3_callbacks", ctypes.c_uint8),  # CB_* bits the ring-3 half registered
        ("ring0_callbacks", ctypes.c_uint8),  # CB_* bits the ring-0 half set up (fRing0)
        ("postable", ctypes.c_uint8),  # the device lets deferred writes be posted (ringsim's posted mode)
        ("description", ctypes.c_char * IOPORT_DESCRIPTION_MAX),
    ]


class IoPortLookupEntry(ctypes.Structure):
    """IOMIOPORTLOOKUPENTRY: a mapped range, last port inclusive."""

    _fields_ = [
        ("first", ctypes.c_uint16),
        ("last", ctypes.c_uint16),
        ("handle", ctypes.c_uint16),
    ]


class MmioEntry(ctypes.Structure):
    """One MMIO registration (IOMMMIOENTRYR3 with the ring-0 presence bits beside it)."""

    _fields_ = [
        ("mapping", ctypes.c_uint64),  # GCPhysMapping: NIL_GCPHYS while unmapped
        ("size", ctypes.c_uint64),  # cbRegion
        ("flags", ctypes.c_uint32),  # IOMMMIO_FLAGS_*
        ("stats_index", ctypes.c_uint16),  # one statistics entry per region
        ("owner", ctypes.c_uint16),
        ("mapped", ctypes.c_uint8),
        ("ring3_callbacks", ctypes.c_uint8),  # CB_IN (read) / CB_OUT (write)
        ("ring0_callbacks", ctypes.c_uint8),
        ("postable", ctypes.c_uint8),
        ("description", ctypes.c_char * IOPORT_DESCRIPTION_MAX),
    ]


class MmioLookupEntry(ctypes.Structure):
    """IOMMMIOLOOKUPENTRY: a mapped range, last address inclusive."""

    _fields_ = [
        ("first", ctypes.c_uint64),
        ("last", ctypes.c_uint64),
        ("handle", ctypes.c_uint16),
    ]


class IomTable(ctypes.Structure):
    _fields_ = [
        ("generation", ctypes.c_uint64),  # seqlock word: odd while ring-3 writes
        ("registrations", ctypes.c_uint32),  # cIoPortRegs
        ("lookup_entries", ctypes.c_uint32),  # cIoPortLookupEntries
        ("frozen", ctypes.c_uint32),  # fIoPortsFrozen / fMmioFrozen: no creates after init-complete
        ("port_stats", ctypes.c_uint32),  # statistics entries handed out so far
        ("mmio_registrations", ctypes.c_uint32),  # cMmioRegs
        ("mmio_lookup_entries", ctypes.c_uint32),  # cMmioLookupEntries
        ("entries", IoPortEntry * IOPORT_MAX_REGISTRATIONS),
        ("lookup", IoPortLookupEntry * IOPORT_MAX_REGISTRATIONS),
        ("mmio_entries", MmioEntry * MMIO_MAX_REGISTRATIONS),
        ("mmio_lookup", MmioLookupEntry * MMIO_MAX_REGISTRATIONS),
    ]


@dataclass(frozen=True, slots=True)
class RegionInfo:
    """What a lookup hit needs to know about a registration, copied out of the table."""

    handle: int
    first: int
    count: int
    flags: int
    owner: int
    stats_index: int
    ring0_callbacks: int
    ring3_callbacks: int


@dataclass(frozen=True, slots=True)
class MmioRegionInfo:
    """What an MMIO lookup hit needs, copied out of the table."""

    handle: int
    first: int
    size: int
    flags: int
    owner: int
    stats_index: int
    ring0_callbacks: int
    ring3_callbacks: int


_MMIO_LOOKUP = struct.Struct("<QQH6x")
assert _MMIO_LOOKUP.size == ctypes.sizeof(MmioLookupEntry)


class RangeLookup:
    """A reader's consistent copy of a lookup table, refreshed when the generation moves.

    Copying lets the hot path search plain Python lists instead of reading ctypes
    fields on every probe; a single read of the generation word per access tells
    whether the copy is still current.  Both tiers use it: ring-0 in each worker,
    ring-3 for the accesses it performs itself.
    """

    __slots__ = ("_table", "generation", "firsts", "lasts", "infos")

    def __init__(self, table: IomTable) -> None:
        self._table = table
        self.generation = -1
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.infos: list[Any] = []

    def _copy(self, table: IomTable) -> tuple[list[int], list[int], list[Any]]:
        raise NotImplementedError

    def refresh(self) -> bool:
        """Bring the copy up to date.  False means ring-3 is writing: VERR_SEM_BUSY."""
        table = self._table
        generation = table.generation
        if generation == self.generation:
            return True
        if generation & 1:
            return False
        firsts, lasts, infos = self._copy(table)
        if table.generation != generation:
            return False
        self.firsts, self.lasts, self.infos = firsts, lasts, infos
        self.generation = generation
        return True

    def find(self, key: int, hint: int) -> int:
        """Position in the lookup table of the range holding *key* (a port, an address), or -1.

        VirtualBox's iomIoPortGetEntry: the caller's hint (the position of its last
        hit) is probed first, then a binary search narrows [first, end).
        """
        firsts = self.firsts
        lasts = self.lasts
        end = len(firsts)
        if end == 0:
            return -1
        lo = 0
        i = hint if hint < end else end // 2
        while True:
            if firsts[i] > key:
                if i > lo:
                    end = i
                else:
                    return -1
            elif lasts[i] < key:
                i += 1
                if i < end:
                    lo = i
                else:
                    return -1
            else:
                return i
            i = lo + (end - lo) // 2


class PortLookup(RangeLookup):
    """The I/O port lookup table (iomIoPortGetEntry's view)."""

    __slots__ = ()

    def _copy(self, table: IomTable) -> tuple[list[int], list[int], list[Any]]:
        count = table.lookup_entries
        raw = array("H", ctypes.string_at(ctypes.addressof(table.lookup), count * 6))
        firsts, lasts, handles = raw[0::3].tolist(), raw[1::3].tolist(), raw[2::3].tolist()
        infos = []
        for first, handle in zip(firsts, handles, strict=True):
            entry = table.entries[handle]
            infos.append(
                RegionInfo(
                    handle,
                    first,
                    entry.count,
                    entry.flags,
                    entry.owner,
                    entry.stats_index,
                    entry.ring0_callbacks,
                    entry.ring3_callbacks,
                )
            )
        return firsts, lasts, infos


class MmioLookup(RangeLookup):
    """The MMIO lookup table (iomMmioGetEntry's view)."""

    __slots__ = ()

    def _copy(self, table: IomTable) -> tuple[list[int], list[int], list[Any]]:
        count = table.mmio_lookup_entries
        raw = ctypes.string_at(ctypes.addressof(table.mmio_lookup), count * _MMIO_LOOKUP.size)
        firsts: list[int] = []
        lasts: list[int] = []
        infos: list[Any] = []
        for first, last, handle in _MMIO_LOOKUP.iter_unpack(raw):
            entry = table.mmio_entries[handle]
            firsts.append(first)
            lasts.append(last)
            infos.append(
                MmioRegionInfo(
                    handle,
                    first,
                    entry.size,
                    entry.flags,
                    entry.owner,
                    entry.stats_index,
                    entry.ring0_callbacks,
                    entry.ring3_callbacks,
                )
            )
        return firsts, lasts, infos
