"""Trace replay on one vCPU: every write performed, every read performed and checked.

The report counts, per port, the accesses, the reads that carried an expected value
and the reads that matched it, and keeps the first mismatches with their line numbers.
It travels to ring-3 in the worker's ``done`` message, so its keys are strings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastpath.vcpu import VCpu, VCpuStopped
from shared.status import VINF_SUCCESS
from shared.trace import IN, INS, KIND_NAMES, MMIO_READ, OUT, OUTS, TraceOp

MAX_MISMATCHES = 20
VM_STATE_CHECK_EVERY = 64  # accesses between looks at the VM-wide "stop" flag


@dataclass
class ReplayReport:
    """Counts per key: a port ("0x03f8") or an MMIO page ("mmio:0x000a0000")."""

    counts: dict[str, list[int]] = field(default_factory=dict)  # key -> [accesses, checked, matched]
    mismatches: list[list[Any]] = field(default_factory=list)
    executed: int = 0
    status: int = VINF_SUCCESS
    wall_ns: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "mismatches": self.mismatches,
            "executed": self.executed,
            "wall_ns": self.wall_ns,
        }


def replay(vcpu: VCpu, ops: list[TraceOp]) -> ReplayReport:
    """Run *ops* in order; stops early when the vCPU is stopped (power-off)."""
    report = ReplayReport()
    counts_by_key = report.counts
    started = time.perf_counter_ns()
    try:
        for n, op in enumerate(ops):
            if n % VM_STATE_CHECK_EVERY == 0:
                vcpu.check_vm_state()
            kind = op.kind
            key = f"{op.address:#06x}" if kind <= OUTS else f"mmio:{op.address & ~0xFFF:#010x}"
            counts = counts_by_key.get(key)
            if counts is None:
                counts = counts_by_key[key] = [0, 0, 0]
            counts[0] += 1
            report.executed += 1
            got: int | bytes | None = None
            if kind == OUT:
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
            if op.expected is not None:
                counts[1] += 1
                if got == op.expected:
                    counts[2] += 1
                elif len(report.mismatches) < MAX_MISMATCHES:
                    report.mismatches.append([op.line, KIND_NAMES[kind], op.address, op.size, op.expected, got])
    except VCpuStopped as stop:
        report.status = stop.status
    report.wall_ns = time.perf_counter_ns() - started
    return report

