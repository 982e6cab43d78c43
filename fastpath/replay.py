"""Trace replay on one vCPU: every write performed, every read performed and checked.

The report counts, per port (or per 4 KiB MMIO page), the accesses, the units they
moved (a REP string instruction moves many), the reads that carried an expected value
and the reads that matched it.  Reads the VM config calls time-dependent (timer
counters, clock registers) are counted apart: a real machine's values for them cannot
be matched exactly.  The first mismatches of the rest are kept with their line numbers.
The report travels to ring-3 in the worker's ``done`` message, so its keys are strings.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from fastpath.vcpu import VCpu, VCpuStopped
from shared.status import VINF_SUCCESS
from shared.trace import IN, INS, KIND_NAMES, MMIO_READ, OUT, OUTS, TimeDependentRule, TraceOp
from shared.vcpu import VM_RUNNING

MAX_MISMATCHES = 20
MMIO_KEY_BASE = 1 << 16  # replay keys: a port is itself, MMIO page p is MMIO_KEY_BASE + p

# Per-key counters.
ACCESSES, UNITS, CHECKED, MATCHED, TIMED_CHECKED, TIMED_MATCHED = range(6)


@dataclass
class ReplayReport:
    """Counts per key: a port ("0x03f8") or an MMIO page ("mmio:0x000a0000")."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    mismatches: list[list[Any]] = field(default_factory=list)
    executed: int = 0
    status: int = VINF_SUCCESS
    wall_ns: int = 0
    latency_ns: dict[str, int] = field(default_factory=dict)  # percentiles, when timed

    def to_wire(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "mismatches": self.mismatches,
            "executed": self.executed,
            "wall_ns": self.wall_ns,
            "latency_ns": self.latency_ns,
        }


class TimeDependence:
    """Which reads the config calls time-dependent; follows the index ports' last values."""

    def __init__(self, rules: tuple[TimeDependentRule, ...]) -> None:
        self.rules = rules
        self.index_ports = {rule.index_port for rule in rules if rule.index_port is not None}
        self.index_values: dict[int, int] = {}

    def saw_write(self, op: TraceOp) -> None:
        if op.kind == OUT and op.address in self.index_ports:
            self.index_values[op.address] = op.value

    def covers(self, op: TraceOp) -> bool:
        mmio = op.kind == MMIO_READ
        for rule in self.rules:
            if rule.mmio != mmio or not rule.first <= op.address <= rule.last:
                continue
            if rule.index_port is None:
                return True
            index = self.index_values.get(rule.index_port)
            if index is not None and rule.index_first <= index & rule.index_mask <= rule.index_last:
                return True
        return False


def replay(
    vcpu: VCpu, ops: list[TraceOp], rules: tuple[TimeDependentRule, ...] = (), time_accesses: bool = False
) -> ReplayReport:
    """Run *ops* in order; stops early when the vCPU is stopped (power-off).

    With *time_accesses*, every access is timed and the report carries latency percentiles.
    """
    if time_accesses:
        return _timed_replay(vcpu, ops, rules)
    report = ReplayReport()
    by_key: dict[int, list[int]] = {}  # ports as themselves, MMIO pages above the port space
    timing = TimeDependence(rules)
    vm = vcpu.vm
    started = time.perf_counter_ns()
    try:
        for op in ops:
            if vm.state != VM_RUNNING:  # every access: another vCPU or ring-3 may have powered off
                vcpu.check_vm_state()
            kind = op.kind
            key = op.address if kind <= OUTS else MMIO_KEY_BASE + (op.address >> 12)
            counts = by_key.get(key)
            if counts is None:
                counts = by_key[key] = [0, 0, 0, 0, 0, 0]
            counts[ACCESSES] += 1
            if kind == INS:
                counts[UNITS] += op.value
            elif kind == OUTS and op.size in (1, 2, 4):
                counts[UNITS] += len(op.data) // op.size
            else:
                counts[UNITS] += 1
            report.executed += 1
            got: int | bytes | None = None
            if kind == OUT:
                timing.saw_write(op)
                vcpu.port_write(op.address, op.value, op.size)
            elif kind == IN:
                got = vcpu.port_read(op.address, op.size)[1]
            elif kind == INS:
                got = vcpu.port_read_string(op.address, op.size, op.value)[1]
            elif kind == OUTS:
                vcpu.port_write_string(op.address, op.size, op.data)
            elif kind == MMIO_READ:
                got = vcpu.mmio_read(op.address, op.size)[1]
            else:
                vcpu.mmio_write(op.address, op.value, op.size)
            if op.expected is None:
                continue
            if rules and timing.covers(op):
                counts[TIMED_CHECKED] += 1
                counts[TIMED_MATCHED] += got == op.expected
                continue
            counts[CHECKED] += 1
            if got == op.expected:
                counts[MATCHED] += 1
            elif len(report.mismatches) < MAX_MISMATCHES:
                report.mismatches.append([op.line, KIND_NAMES[kind], op.address, op.size, op.expected, got])
    except VCpuStopped as stop:
        report.status = stop.status
    report.wall_ns = time.perf_counter_ns() - started
    report.counts = {
        f"{key:#06x}" if key < MMIO_KEY_BASE else f"mmio:{(key - MMIO_KEY_BASE) << 12:#010x}": counts
        for key, counts in by_key.items()
    }
    return report


def _timed_replay(vcpu: VCpu, ops: list[TraceOp], rules: tuple[TimeDependentRule, ...]) -> ReplayReport:
    """The replay, one access at a time, timing each (for the benchmarks' percentiles)."""
    clock = time.perf_counter_ns
    samples = array("Q")
    started = clock()
    report = ReplayReport()
    for op in ops:
        before = clock()
        step = replay(vcpu, [op], rules)
        samples.append(clock() - before)
        for key, counts in step.counts.items():
            total = report.counts.setdefault(key, [0] * len(counts))
            for i, value in enumerate(counts):
                total[i] += value
        report.mismatches += step.mismatches[: MAX_MISMATCHES - len(report.mismatches)]
        report.executed += step.executed
        if step.status != VINF_SUCCESS:
            report.status = step.status
            break
    report.wall_ns = clock() - started
    ordered = sorted(samples)
    if ordered:
        report.latency_ns = {
            "p50": ordered[len(ordered) // 2],
            "p90": ordered[len(ordered) * 9 // 10],
            "p99": ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)],
            "mean": sum(ordered) // len(ordered),
        }
    return report
