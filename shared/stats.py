"""Statistics (STAM-like): 64-bit counters and profiles in shared memory, one row per writer.

Every row belongs to exactly one writer, so no counter is ever shared between
processes: row ``2*v`` is vCPU v's ring-0 worker, row ``2*v + 1`` is ring-3 working on
behalf of vCPU v.  Ring-3 sums rows when it reports.  A row is laid out as

    [ global counters | per-port entries | per-MMIO-region entries | per-device-lock entries ]

with the field orders below.  Profiles are a pair: nanoseconds and calls.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Global counters (VirtualBox's IOM globals plus ringsim's deferral reasons) ---------
G_IOPORT_IN = 0  # /IOM/IoPortIN
G_IOPORT_OUT = 1  # /IOM/IoPortOUT
G_IOPORT_INS = 2  # /IOM/IoPortINS
G_IOPORT_OUTS = 3  # /IOM/IoPortOUTS
G_IOPORT_COMMITS = 4  # /IOM/IoPortCommits
G_RING0_HANDLED = 6  # finished in ring-0 without a message to ring-3
G_DEFER_NO_R0_HANDLER = 7  # deferred: the region has no ring-0 callback for this direction
G_DEFER_DEVICE_ASKED = 8  # deferred: the ring-0 callback returned VINF_IOM_R3_*
G_DEFER_DEVICE_LOCK_BUSY = 9  # deferred: ring-0 could not take the device lock
G_DEFER_IOM_LOCK_BUSY = 10  # deferred: ring-3 was changing the registration table
G_UNASSIGNED = 11  # accesses to ports no region covers
G_RING3_ACCESSES = 13  # accesses ring-3 performed (rows of ring-3)
G_FAILED = 14  # accesses that ended with a failure status
G_MMIO_READS = 15  # MMIO reads issued
G_MMIO_WRITES = 16  # MMIO writes issued
G_MMIO_COMMITS_DIRECT = 17  # /IOM/MmioCommitsDirect: pending write committed through its region hint
G_MMIO_COMMITS_PGM = 18  # /IOM/MmioCommitsPgm: committed through a full lookup (PGMPhysWrite)
G_MMIO_STALE = 19  # /IOM/MmioMappingsStale: the region moved while the access was under way
G_MMIO_DEV_LOCK_CONTENTION_R0 = 20  # /IOM/MmioDevLockContentionR0
G_MMIO_SPLIT = 21  # accesses that ran past their region's end and were split per region
G_MMIO_COMMITS = 22  # /IOM/MmioR0ToR3Commits: pending MMIO writes ring-3 committed
G_POSTED = 23  # deferred writes posted: the vCPU did not wait (posted mode)
G_POSTED_WINDOW_FULL = 24  # writes done strictly because the posted window was full
G_DOORBELLS = 25  # doorbell writes: only signalled ring-3 (doorbell mode)
G_SYNCS = 26  # waits for ring-3 to finish posted writes before an access reached their device
G_COUNT = 32  # slots reserved for globals

GLOBAL_NAMES = {
    G_IOPORT_IN: "/IOM/IoPortIN",
    G_IOPORT_OUT: "/IOM/IoPortOUT",
    G_IOPORT_INS: "/IOM/IoPortINS",
    G_IOPORT_OUTS: "/IOM/IoPortOUTS",
    G_IOPORT_COMMITS: "/IOM/IoPortCommits",
    G_RING0_HANDLED: "/ringsim/Ring0Handled",
    G_DEFER_NO_R0_HANDLER: "/ringsim/Deferred/NoRing0Handler",
    G_DEFER_DEVICE_ASKED: "/ringsim/Deferred/DeviceAsked",
    G_DEFER_DEVICE_LOCK_BUSY: "/ringsim/Deferred/DeviceLockBusy",
    G_DEFER_IOM_LOCK_BUSY: "/ringsim/Deferred/IomLockBusy",
    G_UNASSIGNED: "/ringsim/Unassigned",
    G_RING3_ACCESSES: "/ringsim/Ring3Accesses",
    G_FAILED: "/ringsim/Failed",
    G_MMIO_READS: "/IOM/MmioReads",
    G_MMIO_WRITES: "/IOM/MmioWrites",
    G_MMIO_COMMITS_DIRECT: "/IOM/MmioCommitsDirect",
    G_MMIO_COMMITS_PGM: "/IOM/MmioCommitsPgm",
    G_MMIO_STALE: "/IOM/MmioMappingsStale",
    G_MMIO_DEV_LOCK_CONTENTION_R0: "/IOM/MmioDevLockContentionR0",
    G_MMIO_SPLIT: "/ringsim/MmioSplitAccesses",
    G_MMIO_COMMITS: "/IOM/MmioR0ToR3Commits",
    G_POSTED: "/ringsim/Posted/Writes",
    G_POSTED_WINDOW_FULL: "/ringsim/Posted/WindowFull",
    G_DOORBELLS: "/ringsim/Posted/Doorbells",
    G_SYNCS: "/ringsim/Posted/Syncs",
}

# --- Per-port entry (IOMIOPORTSTATSENTRY; RZ is ring-0 here) ---------------------------
P_TOTAL = 0
P_IN_R3 = 1
P_OUT_R3 = 2
P_IN_RZ = 3
P_OUT_RZ = 4
P_IN_RZ_TO_R3 = 5
P_OUT_RZ_TO_R3 = 6
P_PROF_IN_R3_NS = 7
P_PROF_IN_R3_CALLS = 8
P_PROF_OUT_R3_NS = 9
P_PROF_OUT_R3_CALLS = 10
P_PROF_IN_RZ_NS = 11
P_PROF_IN_RZ_CALLS = 12
P_PROF_OUT_RZ_NS = 13
P_PROF_OUT_RZ_CALLS = 14
P_COUNT = 15

PORT_FIELD_NAMES = (
    "Total",
    "In-R3",
    "Out-R3",
    "In-RZ",
    "Out-RZ",
    "In-RZtoR3",
    "Out-RZtoR3",
    "In-R3-Prof-ns",
    "In-R3-Prof-calls",
    "Out-R3-Prof-ns",
    "Out-R3-Prof-calls",
    "In-RZ-Prof-ns",
    "In-RZ-Prof-calls",
    "Out-RZ-Prof-ns",
    "Out-RZ-Prof-calls",
)

# --- Per MMIO region (IOMMMIOSTATSENTRY; one entry per region) --------------------------
M_READS_RZ = 0  # Read-RZ
M_READS_R3 = 1  # Read-R3
M_READ_RZ_TO_R3 = 2  # Read-RZtoR3
M_WRITES_RZ = 3  # Write-RZ
M_WRITES_R3 = 4  # Write-R3
M_WRITE_RZ_TO_R3 = 5  # Write-RZtoR3
M_COMMIT_RZ_TO_R3 = 6  # Write-RZtoR3-Commit
M_COMPLICATED_READS = 7  # Read-Complicated: split into aligned DWORDs
M_COMPLICATED_WRITES = 8  # Write-Complicated
M_FF_OR_00_READS = 9  # Read-FFor00
M_IGNORED_WRITES = 10  # sub-DWORD writes a WRITE_ONLY_DWORD* region ignores
M_PROF_READ_RZ_NS = 11
M_PROF_READ_RZ_CALLS = 12
M_PROF_WRITE_RZ_NS = 13
M_PROF_WRITE_RZ_CALLS = 14
M_PROF_READ_R3_NS = 15
M_PROF_READ_R3_CALLS = 16
M_PROF_WRITE_R3_NS = 17
M_PROF_WRITE_R3_CALLS = 18
M_COUNT = 19

MMIO_FIELD_NAMES = (
    "Read-RZ",
    "Read-R3",
    "Read-RZtoR3",
    "Write-RZ",
    "Write-R3",
    "Write-RZtoR3",
    "Write-RZtoR3-Commit",
    "Read-Complicated",
    "Write-Complicated",
    "Read-FFor00",
    "Write-Ignored",
    "Read-RZ-Prof-ns",
    "Read-RZ-Prof-calls",
    "Write-RZ-Prof-ns",
    "Write-RZ-Prof-calls",
    "Read-R3-Prof-ns",
    "Read-R3-Prof-calls",
    "Write-R3-Prof-ns",
    "Write-R3-Prof-calls",
)

# --- Per device lock (PDMCRITSECT statistics) ------------------------------------------
L_ENTERS_RZ = 0  # try-enters that succeeded in ring-0
L_CONTENTION_RZ_BUSY = 1  # ContentionRZLockBusy: ring-0 found it taken and deferred
L_ENTERS_R3 = 2
L_CONTENTION_R3 = 3  # ContentionR3: ring-3 found it taken and waited
L_CONTENTION_R3_WAIT_NS = 4  # ContentionR3Wait profile
L_CONTENTION_R3_WAIT_CALLS = 5
L_COUNT = 6

LOCK_FIELD_NAMES = (
    "EntersRZ",
    "ContentionRZLockBusy",
    "EntersR3",
    "ContentionR3",
    "ContentionR3Wait-ns",
    "ContentionR3Wait-calls",
)


@dataclass(frozen=True)
class StatsLayout:
    """Where everything is in the statistics segment (all offsets in 64-bit words)."""

    vcpus: int
    port_entries: int
    locks: int
    mmio_entries: int = 0

    @property
    def row_words(self) -> int:
        return G_COUNT + self.port_entries * P_COUNT + self.mmio_entries * M_COUNT + self.locks * L_COUNT

    @property
    def size_bytes(self) -> int:
        return 2 * self.vcpus * self.row_words * 8

    def row_base(self, vcpu: int, ring3: bool) -> int:
        return (2 * vcpu + (1 if ring3 else 0)) * self.row_words

    def port_base(self, row_base: int, stats_index: int) -> int:
        return row_base + G_COUNT + stats_index * P_COUNT

    def mmio_base(self, row_base: int, stats_index: int) -> int:
        return row_base + G_COUNT + self.port_entries * P_COUNT + stats_index * M_COUNT

    def lock_base(self, row_base: int, lock_index: int) -> int:
        return row_base + G_COUNT + self.port_entries * P_COUNT + self.mmio_entries * M_COUNT + lock_index * L_COUNT
