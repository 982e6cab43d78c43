"""The statistics tree: ringsim's shared-memory counters as VirtualBox STAM samples with names.

A finished (or running) VM's statistics are rows of 64-bit words, one row per writer
(see :mod:`shared.stats`).  :func:`snapshot` reads them once and names every counter
and profile the way VirtualBox's STAM does, so that the names form a tree:

    /IOM/IoPortIN ...                          IOM globals, summed over every row
    /ringsim/Ring0Handled ...                  ringsim's own globals, summed over every row
    /ringsim/vCPU0/Ring0Handled ...            per vCPU, from that vCPU's ring-0 or ring-3 row
    /IOM/IoPorts/03f8-03ff                     a port range's Total (iomR3IoPortRegStats)
    /IOM/IoPorts/03f8-03ff/03fd-In-R0          per port; a single-port range drops the "03fd-"
    /IOM/MmioRegions/00000000feb00000-00000000feb00fff/Read-R0      per MMIO region
    /PDM/CritSects/serial#0/EntersR0           per device lock

ringsim says R0 where VirtualBox says RZ.  MMIO regions are named with %016x, which is
what VirtualBox's %RGp prints for a 64-bit guest-physical address; ranges that are not
mapped are named by handle (``unmapped-<handle>``, leaves of their ports ``+<offset>``).

:func:`select` is ``VBoxManage debugvm statistics --pattern``; :func:`render_flat` is
STAMR3Print's plain-text dump, :func:`render_tree` the same samples as an indented tree;
:func:`to_json` / :func:`from_json` keep a snapshot in a file for later printing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.stats import (
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_FAILED,
    G_IOPORT_COMMITS,
    G_IOPORT_IN,
    G_IOPORT_INS,
    G_IOPORT_OUT,
    G_IOPORT_OUTS,
    G_MMIO_COMMITS,
    G_MMIO_COMMITS_DIRECT,
    G_MMIO_COMMITS_PGM,
    G_MMIO_DEV_LOCK_CONTENTION_R0,
    G_MMIO_READS,
    G_MMIO_SPLIT,
    G_MMIO_STALE,
    G_MMIO_WRITES,
    G_RING0_HANDLED,
    G_RING3_ACCESSES,
    G_UNASSIGNED,
    GLOBAL_NAMES,
    L_CONTENTION_R3,
    L_CONTENTION_R3_WAIT_CALLS,
    L_CONTENTION_R3_WAIT_NS,
    L_CONTENTION_RZ_BUSY,
    L_ENTERS_R3,
    L_ENTERS_RZ,
    M_COMMIT_RZ_TO_R3,
    M_COMPLICATED_READS,
    M_COMPLICATED_WRITES,
    M_FF_OR_00_READS,
    M_IGNORED_WRITES,
    M_PROF_READ_R3_CALLS,
    M_PROF_READ_R3_NS,
    M_PROF_READ_RZ_CALLS,
    M_PROF_READ_RZ_NS,
    M_PROF_WRITE_R3_CALLS,
    M_PROF_WRITE_R3_NS,
    M_PROF_WRITE_RZ_CALLS,
    M_PROF_WRITE_RZ_NS,
    M_READ_RZ_TO_R3,
    M_READS_R3,
    M_READS_RZ,
    M_WRITE_RZ_TO_R3,
    M_WRITES_R3,
    M_WRITES_RZ,
    P_IN_R3,
    P_IN_RZ,
    P_IN_RZ_TO_R3,
    P_OUT_R3,
    P_OUT_RZ,
    P_OUT_RZ_TO_R3,
    P_PROF_IN_R3_CALLS,
    P_PROF_IN_R3_NS,
    P_PROF_IN_RZ_CALLS,
    P_PROF_IN_RZ_NS,
    P_PROF_OUT_R3_CALLS,
    P_PROF_OUT_R3_NS,
    P_PROF_OUT_RZ_CALLS,
    P_PROF_OUT_RZ_NS,
    P_TOTAL,
)

if TYPE_CHECKING:
    from slowpath.vm import VM

COUNTER = "counter"  # STAMTYPE_COUNTER
PROFILE = "profile"  # STAMTYPE_PROFILE: total nanoseconds and calls
TIMES = "times"  # STAMUNIT_OCCURENCES
NS_PER_CALL = "ns/call"  # STAMUNIT_NS_PER_CALL
USED = "used"  # STAMVISIBILITY_USED: hidden while zero
ALWAYS = "always"  # STAMVISIBILITY_ALWAYS: shown even when zero

FILE_FORMAT = "ringsim-statistics"
FILE_VERSION = 1


class StatisticsFileError(ValueError):
    """A statistics file (JSON) that is not a snapshot :func:`to_json` wrote."""


@dataclass(frozen=True)
class Sample:
    """One STAM sample: a counter (``value``) or a profile (``ns`` over ``calls``)."""

    kind: str
    value: int = 0
    ns: int = 0
    calls: int = 0
    unit: str = TIMES
    description: str = ""
    visibility: str = USED

    @classmethod
    def counter(cls, value: int, description: str, visibility: str = USED) -> Sample:
        return cls(COUNTER, value=value, unit=TIMES, description=description, visibility=visibility)

    @classmethod
    def profile(cls, ns: int, calls: int, description: str) -> Sample:
        return cls(PROFILE, ns=ns, calls=calls, unit=NS_PER_CALL, description=description)

    @property
    def used(self) -> bool:
        """Whether STAMVISIBILITY_USED would show it: a counter not zero, a profile with calls."""
        return self.value != 0 if self.kind == COUNTER else self.calls != 0

    @property
    def average_ns(self) -> int:
        """A profile's nanoseconds per call, rounded down (STAMR3Print divides by at least 1)."""
        return self.ns // max(self.calls, 1)


Snapshot = dict[str, Sample]

# --- Descriptions and per-vCPU rows of the globals ---------------------------------------
GLOBAL_DESCRIPTIONS = {
    G_IOPORT_IN: "IN instructions issued",
    G_IOPORT_OUT: "OUT instructions issued",
    G_IOPORT_INS: "INS instructions issued",
    G_IOPORT_OUTS: "OUTS instructions issued",
    G_IOPORT_COMMITS: "Pending OUTs ring-3 committed (VINF_IOM_R3_IOPORT_COMMIT_WRITE)",
    G_RING0_HANDLED: "Accesses finished in ring-0 without a message to ring-3",
    G_DEFER_NO_R0_HANDLER: "Deferred to ring-3: no ring-0 callback for this direction",
    G_DEFER_DEVICE_ASKED: "Deferred to ring-3: the ring-0 callback returned VINF_IOM_R3_*",
    G_DEFER_DEVICE_LOCK_BUSY: "Deferred to ring-3: ring-0 could not take the device lock",
    G_DEFER_IOM_LOCK_BUSY: "Deferred to ring-3: ring-3 was changing the registration table",
    G_UNASSIGNED: "Accesses no region covers",
    G_RING3_ACCESSES: "Accesses ring-3 performed",
    G_FAILED: "Accesses that ended with a failure status",
    G_MMIO_READS: "MMIO reads issued",
    G_MMIO_WRITES: "MMIO writes issued",
    G_MMIO_COMMITS_DIRECT: "Pending MMIO writes committed through their region hint",
    G_MMIO_COMMITS_PGM: "Pending MMIO writes committed through a full lookup (PGMPhysWrite)",
    G_MMIO_STALE: "MMIO accesses whose region moved while they were under way",
    G_MMIO_DEV_LOCK_CONTENTION_R0: "MMIO accesses ring-0 deferred because the device lock was taken",
    G_MMIO_SPLIT: "MMIO accesses that ran past their region and were split per region",
    G_MMIO_COMMITS: "Pending MMIO writes ring-3 committed (VINF_IOM_R3_MMIO_COMMIT_WRITE)",
}

# Which rows of a vCPU hold a counter: its ring-0 worker's (False), ring-3's (True), or both.
RING0_ROW = (False,)
RING3_ROW = (True,)
BOTH_ROWS = (False, True)

PER_VCPU: tuple[tuple[str, int, tuple[bool, ...]], ...] = (
    ("Ring0Handled", G_RING0_HANDLED, RING0_ROW),
    ("Deferred/NoRing0Handler", G_DEFER_NO_R0_HANDLER, RING0_ROW),
    ("Deferred/DeviceAsked", G_DEFER_DEVICE_ASKED, RING0_ROW),
    ("Deferred/DeviceLockBusy", G_DEFER_DEVICE_LOCK_BUSY, RING0_ROW),
    ("Deferred/IomLockBusy", G_DEFER_IOM_LOCK_BUSY, RING0_ROW),
    ("Ring3Accesses", G_RING3_ACCESSES, RING3_ROW),
    ("IoPortCommits", G_IOPORT_COMMITS, RING3_ROW),  # the pending-write slot is per vCPU
    ("MmioCommits", G_MMIO_COMMITS, RING3_ROW),
    ("Unassigned", G_UNASSIGNED, BOTH_ROWS),  # both tiers count what they find unassigned
    ("Failed", G_FAILED, BOTH_ROWS),
)

# --- Leaves under a port, an MMIO region, a device lock: (suffix, field, description) ----
PORT_COUNTERS = (
    ("In-R0", P_IN_RZ, "INs handled in ring-0"),
    ("In-R3", P_IN_R3, "INs handled in ring-3"),
    ("In-R0toR3", P_IN_RZ_TO_R3, "INs ring-0 sent to ring-3"),
    ("Out-R0", P_OUT_RZ, "OUTs handled in ring-0"),
    ("Out-R3", P_OUT_R3, "OUTs handled in ring-3"),
    ("Out-R0toR3", P_OUT_RZ_TO_R3, "OUTs ring-0 sent to ring-3"),
)
PORT_PROFILES = (  # (suffix, nanoseconds, calls, description)
    ("In-R0-Prof", P_PROF_IN_RZ_NS, P_PROF_IN_RZ_CALLS, "Time in ring-0 IN callbacks"),
    ("Out-R0-Prof", P_PROF_OUT_RZ_NS, P_PROF_OUT_RZ_CALLS, "Time in ring-0 OUT callbacks"),
    ("In-R3-Prof", P_PROF_IN_R3_NS, P_PROF_IN_R3_CALLS, "Time in ring-3 IN callbacks"),
    ("Out-R3-Prof", P_PROF_OUT_R3_NS, P_PROF_OUT_R3_CALLS, "Time in ring-3 OUT callbacks"),
)
MMIO_COUNTERS = (
    ("Read-R0", M_READS_RZ, "Reads handled in ring-0"),
    ("Read-R3", M_READS_R3, "Reads handled in ring-3"),
    ("Read-R0toR3", M_READ_RZ_TO_R3, "Reads ring-0 sent to ring-3"),
    ("Write-R0", M_WRITES_RZ, "Writes handled in ring-0"),
    ("Write-R3", M_WRITES_R3, "Writes handled in ring-3"),
    # Ring-0 parks every write it defers, so today only the -Commit counter below moves.
    ("Write-R0toR3", M_WRITE_RZ_TO_R3, "Writes ring-0 sent to ring-3 without parking them"),
    ("Write-R0toR3-Commit", M_COMMIT_RZ_TO_R3, "Writes ring-0 parked for ring-3 to commit"),
    ("Read-Complicated", M_COMPLICATED_READS, "Reads split into or merged from aligned DWORDs"),
    ("Write-Complicated", M_COMPLICATED_WRITES, "Writes split into or merged from aligned DWORDs"),
    ("Read-FFor00", M_FF_OR_00_READS, "Reads answered with all ones or zeros, no callback"),
    ("Write-Ignored", M_IGNORED_WRITES, "Sub-DWORD writes a DWORD-only region ignored"),
)
MMIO_PROFILES = (
    ("Read-R0-Prof", M_PROF_READ_RZ_NS, M_PROF_READ_RZ_CALLS, "Time in ring-0 read callbacks"),
    ("Write-R0-Prof", M_PROF_WRITE_RZ_NS, M_PROF_WRITE_RZ_CALLS, "Time in ring-0 write callbacks"),
    ("Read-R3-Prof", M_PROF_READ_R3_NS, M_PROF_READ_R3_CALLS, "Time in ring-3 read callbacks"),
    ("Write-R3-Prof", M_PROF_WRITE_R3_NS, M_PROF_WRITE_R3_CALLS, "Time in ring-3 write callbacks"),
)
LOCK_COUNTERS = (
    ("EntersR0", L_ENTERS_RZ, "Try-enters that succeeded in ring-0"),
    ("ContentionR0Busy", L_CONTENTION_RZ_BUSY, "Ring-0 found the lock taken and deferred (ContentionRZLockBusy)"),
    ("EntersR3", L_ENTERS_R3, "Enters in ring-3"),
    ("ContentionR3", L_CONTENTION_R3, "Ring-3 found the lock taken and waited"),
)
LOCK_PROFILES = (
    ("ContentionR3Wait", L_CONTENTION_R3_WAIT_NS, L_CONTENTION_R3_WAIT_CALLS, "Time ring-3 waited for the lock"),
)


# --- Reading a VM ------------------------------------------------------------------------
def _rows(vm: VM) -> dict[tuple[int, bool], list[int]]:
    """Every writer's row, keyed by (vCPU, ring-3)."""
    words = vm.stats.row_words
    rows = {}
    for vcpu in range(vm.vcpu_count):
        for ring3 in (False, True):
            base = vm.stats.row_base(vcpu, ring3)
            rows[vcpu, ring3] = vm.counters[base : base + words].tolist()
    return rows


def _leaves(
    samples: Snapshot,
    prefix: str,
    row: list[int],
    base: int,
    counters: tuple[tuple[str, int, str], ...],
    profiles: tuple[tuple[str, int, int, str], ...],
    about: str,
) -> None:
    """Add one statistics entry's counters and profiles under *prefix* (which ends in '/' or '-')."""
    for suffix, field, description in counters:
        samples[prefix + suffix] = Sample.counter(row[base + field], f"{about}: {description}")
    for suffix, ns, calls, description in profiles:
        samples[prefix + suffix] = Sample.profile(row[base + ns], row[base + calls], f"{about}: {description}")


def snapshot(vm: VM) -> Snapshot:
    """Name every counter and profile of *vm*'s statistics segment, as STAM would.

    Call it while the VM is open (inside its ``with`` block), after ``run`` or during
    it; the values are read once, so the result outlives the VM.
    """
    layout = vm.stats
    rows = _rows(vm)
    summed = [sum(column) for column in zip(*rows.values(), strict=True)]
    samples: Snapshot = {}

    for index, name in sorted(GLOBAL_NAMES.items()):
        samples[name] = Sample.counter(summed[index], GLOBAL_DESCRIPTIONS.get(index, ""), ALWAYS)

    for vcpu in range(vm.vcpu_count):
        for suffix, index, ring3_rows in PER_VCPU:
            value = sum(rows[vcpu, ring3][index] for ring3 in ring3_rows)
            description = f"{GLOBAL_DESCRIPTIONS.get(index, '')} (vCPU {vcpu})"
            samples[f"/ringsim/vCPU{vcpu}/{suffix}"] = Sample.counter(value, description)

    for region in vm.iom.regions:
        entry = vm.table.entries[region.handle]
        if entry.mapped:
            first = int(entry.port)
            last = first + region.count - 1
            prefix = f"/IOM/IoPorts/{first:04x}" if region.count == 1 else f"/IOM/IoPorts/{first:04x}-{last:04x}"
        else:
            prefix = f"/IOM/IoPorts/unmapped-{region.handle}"
        bases = [layout.port_base(0, entry.stats_index + offset) for offset in range(region.count)]
        # Total is counted on the range's first port only (IOMIOPORTSTATSENTRY); sum it anyway.
        total = sum(summed[base + P_TOTAL] for base in bases)
        samples[prefix] = Sample.counter(total, region.description, ALWAYS)
        for offset, base in enumerate(bases):
            if region.count == 1:
                leaf = f"{prefix}/"
            elif entry.mapped:
                leaf = f"{prefix}/{entry.port + offset:04x}-"
            else:
                leaf = f"{prefix}/+{offset:04x}-"
            _leaves(samples, leaf, summed, base, PORT_COUNTERS, PORT_PROFILES, region.description)

    for mmio_region in vm.iom.mmio_regions:
        mmio_entry = vm.table.mmio_entries[mmio_region.handle]
        if mmio_entry.mapped:
            first = int(mmio_entry.mapping)
            prefix = f"/IOM/MmioRegions/{first:016x}-{first + mmio_region.size - 1:016x}"
        else:
            prefix = f"/IOM/MmioRegions/unmapped-{mmio_region.handle}"
        base = layout.mmio_base(0, mmio_entry.stats_index)
        _leaves(samples, f"{prefix}/", summed, base, MMIO_COUNTERS, MMIO_PROFILES, mmio_region.description)

    for instance in vm.instances:
        base = layout.lock_base(0, instance.index)
        _leaves(
            samples, f"/PDM/CritSects/{instance.name}/", summed, base, LOCK_COUNTERS, LOCK_PROFILES, instance.name
        )
    return samples


# --- Selecting --------------------------------------------------------------------------
def _compile(pattern: str) -> re.Pattern[str]:
    """RTStrSimplePatternMatch: '*' is any run of characters ('/' too), '?' any one; the rest literal."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def select(samples: Snapshot, pattern: str | None = None, *, include_zero: bool = False) -> Snapshot:
    """The samples ``VBoxManage debugvm <vm> statistics --pattern <pattern>`` would print.

    As STAMR3's stamR3EnumU: a pattern is one or more alternatives separated by '|';
    each is a glob with '*' (any run of characters, '/' included) and '?' (one
    character) matched, case-sensitively, against the *whole* name.  There is no
    implicit substring match: since every name starts with '/', a pattern that does
    not start with '/' or a wildcard selects nothing (write ``*IoPortIN*`` or
    ``/IOM/IoPortIN``).  None, "" and "*" select everything.

    Samples with USED visibility are left out while zero, as STAMR3Print and
    STAMR3Snapshot leave them out; ``include_zero`` keeps them.  ALWAYS samples (the
    globals and each port range's Total) are kept whatever their value.
    """
    matchers = [_compile(alternative) for alternative in pattern.split("|")] if pattern else []
    return {
        name: sample
        for name, sample in samples.items()
        if (not matchers or any(m.fullmatch(name) for m in matchers))
        and (include_zero or sample.used or sample.visibility == ALWAYS)
    }


# --- Files ----------------------------------------------------------------------------------
def to_json(samples: Snapshot) -> dict[str, Any]:
    """A snapshot as one JSON-ready object, in the snapshot's order."""
    out: dict[str, Any] = {}
    for name, sample in samples.items():
        entry: dict[str, Any] = {"kind": sample.kind}
        if sample.kind == COUNTER:
            entry["value"] = sample.value
        else:
            entry["ns"] = sample.ns
            entry["calls"] = sample.calls
        entry.update(unit=sample.unit, visibility=sample.visibility, description=sample.description)
        out[name] = entry
    return {"format": FILE_FORMAT, "version": FILE_VERSION, "samples": out}


def _count(name: str, entry: dict[str, Any], key: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StatisticsFileError(f"sample {name!r}: {key!r} must be a non-negative integer")
    return value


def _text(name: str, entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise StatisticsFileError(f"sample {name!r}: {key!r} must be a string")
    return value


def from_json(document: Any) -> Snapshot:
    """The snapshot :func:`to_json` wrote; raises StatisticsFileError for anything else."""
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise StatisticsFileError(f"not a ringsim statistics file (no \"format\": {FILE_FORMAT!r})")
    version = document.get("version")
    if version != FILE_VERSION:
        raise StatisticsFileError(f"statistics file version {version!r}; this ringsim reads {FILE_VERSION}")
    entries = document.get("samples")
    if not isinstance(entries, dict):
        raise StatisticsFileError("\"samples\" must be an object of name: sample")
    samples: Snapshot = {}
    for name, entry in entries.items():
        if not name.startswith("/") or not isinstance(entry, dict):
            raise StatisticsFileError(f"sample {name!r}: names start with '/' and samples are objects")
        kind = entry.get("kind")
        if kind not in (COUNTER, PROFILE):
            raise StatisticsFileError(f"sample {name!r}: kind must be {COUNTER!r} or {PROFILE!r}")
        unit = _text(name, entry, "unit")
        description = _text(name, entry, "description")
        visibility = entry.get("visibility")
        if visibility not in (USED, ALWAYS):
            raise StatisticsFileError(f"sample {name!r}: visibility must be {USED!r} or {ALWAYS!r}")
        if kind == COUNTER:
            value = _count(name, entry, "value")
            samples[name] = Sample(COUNTER, value=value, unit=unit, description=description, visibility=visibility)
        else:
            ns, calls = _count(name, entry, "ns"), _count(name, entry, "calls")
            samples[name] = Sample(
                PROFILE, ns=ns, calls=calls, unit=unit, description=description, visibility=visibility
            )
    return samples


# --- Printing -------------------------------------------------------------------------------
def _path(name: str) -> list[str]:
    return name.strip("/").split("/")


def _value_text(sample: Sample) -> str:
    if sample.kind == COUNTER:
        return f"{sample.value:>10} {sample.unit}"
    return f"{sample.average_ns:>10} {sample.unit} ({sample.calls} calls, {sample.ns} ns)"


def render_flat(samples: Snapshot) -> str:
    """One line a sample, in name order, as STAMR3Print prints them.

    Counters as ``"%-32s %8llu %s"``; profiles as ``"%-32s %8llu %s (%12llu ns, %7llu calls)"``
    (average, unit, total, calls: ringsim keeps no max or min).  Filter with :func:`select` first.
    """
    lines = []
    for name in sorted(samples, key=_path):
        sample = samples[name]
        if sample.kind == COUNTER:
            lines.append(f"{name:<32} {sample.value:>8} {sample.unit}")
        else:
            average = f"{name:<32} {sample.average_ns:>8} {sample.unit}"
            lines.append(f"{average} ({sample.ns:>12} ns, {sample.calls:>7} calls)")
    return "\n".join(lines)


def render_tree(samples: Snapshot) -> str:
    """The samples as an indented tree: one line a path component, values on the samples' lines.

    A node can be both a sample and a parent (a port range's Total and its ports).
    Counters show value and unit; profiles "average ns/call (calls calls, total ns)".
    """
    names = sorted(samples, key=_path)
    lines: list[tuple[str, Sample | None]] = []
    shown: list[str] = []  # the path of the last line, to print only what changes
    for name in names:
        path = _path(name)
        common = 0
        while common < min(len(shown), len(path)) and shown[common] == path[common]:
            common += 1
        for depth in range(common, len(path)):
            label = "  " * depth + path[depth]
            lines.append((label, samples[name] if depth == len(path) - 1 else None))
        shown = path
    width = max((len(label) for label, _ in lines), default=0)
    return "\n".join(
        label if sample is None else f"{label:<{width}}  {_value_text(sample)}" for label, sample in lines
    )
