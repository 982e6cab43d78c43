"""The I/O port registration table: a mapping between disjoint port ranges and the devices behind them.

It lives in one shared-memory segment.  Ring-3 is the only writer (create, map, unmap);
ring-0 readers never block.  The table's ``generation`` word is the IOM lock: ring-3
makes it odd while it changes the table and even again when done (a seqlock).  A reader
that finds it odd, or finds it changed under its feet, sees what VirtualBox's ring-0
sees when the IOM read/write lock is taken exclusively: VERR_SEM_BUSY, and it defers.

Layout follows VirtualBox's IOMIOPORTENTRYR3 (one entry per registration, indexed by
handle) and IOMIOPORTLOOKUPENTRY (mapped ranges sorted by first port, inclusive last).
"""

from __future__ import annotations

import ctypes
from array import array
from dataclasses import dataclass

IOPORT_MAX_REGISTRATIONS = 4096  # VirtualBox's _4K cap on I/O port registrations
IOPORT_MAX_PORTS_PER_REGION = 8192  # _8K
IOPORT_DESCRIPTION_MAX = 128  # descriptions must be shorter than this
UNMAPPED_PORT = 0xFFFF
NO_STATS = 0xFFFF

# Which callbacks a registration has, per context (bit per direction).
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
        ("description", ctypes.c_char * IOPORT_DESCRIPTION_MAX),
    ]


class IoPortLookupEntry(ctypes.Structure):
    """IOMIOPORTLOOKUPENTRY: a mapped range, last port inclusive."""

    _fields_ = [
        ("first", ctypes.c_uint16),
        ("last", ctypes.c_uint16),
        ("handle", ctypes.c_uint16),
    ]


class IoPortTable(ctypes.Structure):
    _fields_ = [
        ("generation", ctypes.c_uint64),  # seqlock word: odd while ring-3 writes
        ("registrations", ctypes.c_uint32),  # cIoPortRegs
        ("lookup_entries", ctypes.c_uint32),  # cIoPortLookupEntries
        ("frozen", ctypes.c_uint32),  # fIoPortsFrozen: no more creates after init-complete
        ("port_stats", ctypes.c_uint32),  # statistics entries handed out so far
        ("entries", IoPortEntry * IOPORT_MAX_REGISTRATIONS),
        ("lookup", IoPortLookupEntry * IOPORT_MAX_REGISTRATIONS),
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


class PortLookup:
    """A reader's consistent copy of the lookup table, refreshed when the generation moves.

    Copying lets the hot path search plain Python lists instead of reading ctypes
    fields on every probe; a single read of the generation word per access tells
    whether the copy is still current.  Both tiers use it: ring-0 in each worker,
    ring-3 for the accesses it performs itself.
    """

    __slots__ = ("_table", "generation", "firsts", "lasts", "infos")

    def __init__(self, table: IoPortTable) -> None:
        self._table = table
        self.generation = -1
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.infos: list[RegionInfo] = []

    def refresh(self) -> bool:
        """Bring the copy up to date.  False means ring-3 is writing: VERR_SEM_BUSY."""
        table = self._table
        generation = table.generation
        if generation == self.generation:
            return True
        if generation & 1:
            return False
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
        if table.generation != generation:
            return False
        self.firsts, self.lasts, self.infos = firsts, lasts, infos
        self.generation = generation
        return True

    def find(self, port: int, hint: int) -> int:
        """Position in the lookup table of the range holding *port*, or -1.

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
            if firsts[i] > port:
                if i > lo:
                    end = i
                else:
                    return -1
            elif lasts[i] < port:
                i += 1
                if i < end:
                    lo = i
                else:
                    return -1
            else:
                return i
            i = lo + (end - lo) // 2
