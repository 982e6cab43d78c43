"""Statistics (STAM-like): 64-bit counters and profiles in shared memory, one row per writer.

Every row belongs to exactly one writer, so no counter is ever shared between
processes: row ``2*v`` is vCPU v's ring-0 worker, row ``2*v + 1`` is ring-3 working on
behalf of vCPU v.  Ring-3 sums rows when it reports.  A row is laid out as

    [ global counters | per-port entries | per-device-lock entries ]

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
G_ACCESSES = 5  # guest accesses issued (a string instruction counts once)
G_RING0_HANDLED = 6  # finished in ring-0 without a message to ring-3
G_DEFER_NO_R0_HANDLER = 7  # deferred: the region has no ring-0 callback for this direction
G_DEFER_DEVICE_ASKED = 8  # deferred: the ring-0 callback returned VINF_IOM_R3_*
G_DEFER_DEVICE_LOCK_BUSY = 9  # deferred: ring-0 could not take the device lock
G_DEFER_IOM_LOCK_BUSY = 10  # deferred: ring-3 was changing the registration table
G_UNASSIGNED = 11  # accesses to ports no region covers
G_MESSAGES = 12  # messages a worker sent to ring-3
G_RING3_ACCESSES = 13  # accesses ring-3 performed (rows of ring-3)
G_FAILED = 14  # accesses that ended with a failure status
G_COUNT = 16  # slots reserved for globals

GLOBAL_NAMES = {
    G_IOPORT_IN: "/IOM/IoPortIN",
    G_IOPORT_OUT: "/IOM/IoPortOUT",
    G_IOPORT_INS: "/IOM/IoPortINS",
    G_IOPORT_OUTS: "/IOM/IoPortOUTS",
    G_IOPORT_COMMITS: "/IOM/IoPortCommits",
    G_ACCESSES: "/ringsim/Accesses",
    G_RING0_HANDLED: "/ringsim/Ring0Handled",
    G_DEFER_NO_R0_HANDLER: "/ringsim/Deferred/NoRing0Handler",
    G_DEFER_DEVICE_ASKED: "/ringsim/Deferred/DeviceAsked",
    G_DEFER_DEVICE_LOCK_BUSY: "/ringsim/Deferred/DeviceLockBusy",
    G_DEFER_IOM_LOCK_BUSY: "/ringsim/Deferred/IomLockBusy",
    G_UNASSIGNED: "/ringsim/Unassigned",
    G_MESSAGES: "/ringsim/MessagesToRing3",
    G_RING3_ACCESSES: "/ringsim/Ring3Accesses",
    G_FAILED: "/ringsim/Failed",
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

    @property
    def row_words(self) -> int:
        return G_COUNT + self.port_entries * P_COUNT + self.locks * L_COUNT

    @property
    def size_bytes(self) -> int:
        return 2 * self.vcpus * self.row_words * 8

    def row_base(self, vcpu: int, ring3: bool) -> int:
        return (2 * vcpu + (1 if ring3 else 0)) * self.row_words

    def port_base(self, row_base: int, stats_index: int) -> int:
        return row_base + G_COUNT + stats_index * P_COUNT

    def lock_base(self, row_base: int, lock_index: int) -> int:
        return row_base + G_COUNT + self.port_entries * P_COUNT + lock_index * L_COUNT
