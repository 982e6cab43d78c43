"""What ring-3 hands a vCPU worker when it spawns it (pickled once, as process arguments).

Everything a worker needs to attach to the VM: the segment names, the statistics
layout, the ring-0-enabled device instances with their locks, where its share of the
workload waits (a pickle in ring-3's private 0700 directory, so that spawning stays
quick however long the workload) and where ring-3 listens.  None of this ever travels
over the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.stats import StatsLayout
from shared.trace import TimeDependentRule

MODES = ("strict", "posted", "doorbell")


class Doorbell(NamedTuple):
    """A write that only rings ring-3 (doorbell mode, like KVM's ioeventfd): a port or an address,
    optionally only for one value.  Ring-3 runs the device's handler; the vCPU never waits."""

    mmio: bool
    address: int
    value: int | None = None


@dataclass(frozen=True)
class DeviceBoot:
    """A ring-0-enabled device instance, as a worker builds its ring-0 half."""

    index: int  # owner id in the registration table, and lock statistics index
    name: str  # "serial#0"
    module: str  # the device module defining REGISTRATION
    number: int  # instance number
    state_offset: int  # where its shared state lies in the device-state segment
    config: dict[str, Any]
    lock: Any  # the instance's multiprocessing RLock


@dataclass(frozen=True)
class WorkerBoot:
    vcpu: int
    endpoint: str
    ring3_pid: int
    table_segment: str
    vm_segment: str
    state_segment: str
    stats_segment: str
    stats: StatsLayout
    devices: tuple[DeviceBoot, ...]
    ops_file: str
    time_dependent: tuple[TimeDependentRule, ...] = ()
    report_file: str = ""  # where the worker leaves its full replay report (it can exceed a message)
    mode: str = "strict"  # strict | posted | doorbell
    posted_window: int = 64  # writes in flight before a posted write falls back to strict
    doorbells: tuple[Doorbell, ...] = ()
    power_off_on_device_error: bool = False  # a device callback that raises stops the VM
    time_accesses: bool = False  # measure each access (benchmarks: latency percentiles)
    cpus: tuple[int, ...] = ()  # pin the worker to these CPUs (benchmarks: --pin)
    journal_limit: int = 0  # journal the first N accesses (--explain, --timeline) ...
    journal_file: str = ""  # ... into this file in ring-3's private directory
