"""The ring-0 worker: one process per vCPU, spawned by ring-3 at power-on.

It attaches the VM's shared-memory segments by name, builds the ring-0 halves of the
ring-0-enabled devices on their shared state, connects to ring-3, replays its share of
the guest workload through the ring-0 dispatcher, reports, and exits.  It never waits
on ring-3 while holding a lock, and never waits for ring-3 without a deadline.
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import signal
import sys
import time

from fastpath.dispatch import PortDispatcher, Ring0Callbacks
from fastpath.journal import JournalingVCpu
from fastpath.link import Ring3Gone, Ring3Link, Ring3Refused
from fastpath.mmio import MmioDispatcher, Ring0MmioCallbacks
from fastpath.posted import PostingVCpu
from fastpath.replay import replay
from fastpath.vcpu import VCpu
from shared.boot import DeviceBoot, WorkerBoot
from shared.devapi import MmioRead, MmioWrite, PortIn, PortInString, PortOut, PortOutString
from shared.iomtable import IomTable, MmioLookup, PortLookup
from shared.locks import DeviceLock
from shared.segments import Segment
from shared.status import VERR_IOM_INVALID_IOPORT_HANDLE, VERR_IOM_INVALID_MMIO_HANDLE, VBoxError
from shared.vcpu import VmShared
from shared.wire import OP_DONE, OP_HELLO, WireError

EXIT_RING3_GONE = 3
EXIT_PROTOCOL = 4


class Ring0Helpers:
    """PDMDEVHLPR0 for one device instance in this worker."""

    def __init__(
        self,
        device: DeviceBoot,
        table: IomTable,
        lock: DeviceLock,
        callbacks: dict[int, Ring0Callbacks],
        mmio_callbacks: dict[int, Ring0MmioCallbacks],
        clock_base_ns: int,
    ) -> None:
        self._device = device
        self._table = table
        self._lock = lock
        self._callbacks = callbacks
        self._mmio_callbacks = mmio_callbacks
        self._clock_base_ns = clock_base_ns

    @property
    def instance(self) -> int:
        return self._device.number

    def ioport_set_up_context(
        self,
        handle: int,
        *,
        out: PortOut | None = None,
        in_: PortIn | None = None,
        out_string: PortOutString | None = None,
        in_string: PortInString | None = None,
    ) -> None:
        """IOMR0IoPortSetUpContext: bind ring-0 callbacks to a region ring-3 created."""
        if not 0 <= handle < self._table.registrations or self._table.entries[handle].owner != self._device.index:
            raise VBoxError(VERR_IOM_INVALID_IOPORT_HANDLE, f"{self._device.name}: handle {handle} is not its region")
        self._callbacks[handle] = Ring0Callbacks(self._device.name, self._lock, in_, out, in_string, out_string)

    def mmio_set_up_context(self, handle: int, *, read: MmioRead | None = None, write: MmioWrite | None = None) -> None:
        """IOMR0MmioSetUpContext: bind ring-0 callbacks to an MMIO region ring-3 created."""
        table = self._table
        if not 0 <= handle < table.mmio_registrations or table.mmio_entries[handle].owner != self._device.index:
            raise VBoxError(VERR_IOM_INVALID_MMIO_HANDLE, f"{self._device.name}: handle {handle} is not its region")
        self._mmio_callbacks[handle] = Ring0MmioCallbacks(self._device.name, self._lock, read, write)

    def virtual_time_ns(self) -> int:
        return time.monotonic_ns() - self._clock_base_ns


class Ring0Environment:
    """A worker's view of the VM: segments attached, ring-0 halves built, dispatcher ready.

    The benchmarks build one in their own process to time the ring-0 path without a
    worker around it; :func:`worker_main` builds one per vCPU process.
    """

    def __init__(self, boot: WorkerBoot) -> None:
        self.segments = [
            Segment.attach(name)
            for name in (boot.table_segment, boot.vm_segment, boot.state_segment, boot.stats_segment)
        ]
        table_segment, vm_segment, state_segment, stats_segment = self.segments
        self.table = table = table_segment.view(IomTable)
        self.vm = vm_segment.view(VmShared)
        counters = stats_segment.words()
        row = boot.stats.row_base(boot.vcpu, ring3=False)
        self.callbacks: dict[int, Ring0Callbacks] = {}
        self.mmio_callbacks: dict[int, Ring0MmioCallbacks] = {}
        for device in boot.devices:
            reg = importlib.import_module(device.module).REGISTRATION
            state = state_segment.view(reg.shared_state, device.state_offset)
            lock = DeviceLock(device.name, device.lock, counters, boot.stats.lock_base(row, device.index))
            helpers = Ring0Helpers(device, table, lock, self.callbacks, self.mmio_callbacks, self.vm.clock_base_ns)
            reg.ring0(helpers, state, device.config)  # its callbacks now live in self.(mmio_)callbacks
        vcpu = self.vm.vcpus[boot.vcpu]
        self.dispatcher = PortDispatcher(PortLookup(table), self.callbacks, vcpu, counters, row)
        self.mmio = MmioDispatcher(
            MmioLookup(table),
            self.mmio_callbacks,
            table,
            vcpu,
            counters,
            row,
            boot.stats.mmio_base(row, 0),
            self.dispatcher.callback_errors,
        )

    def close(self) -> None:
        """Drop every view, then unmap (ring-3 unlinks)."""
        for name in ("mmio", "mmio_callbacks", "table"):
            self.__dict__.pop(name, None)
        self.__dict__.pop("dispatcher", None)
        self.__dict__.pop("callbacks", None)
        self.__dict__.pop("vm", None)
        for segment in self.segments:
            segment.close()


def worker_main(boot: WorkerBoot) -> None:
    """Process entry point (multiprocessing, spawn)."""
    # Ctrl-C reaches the whole process group; ring-3 decides how the VM stops.  Ring-3
    # spawned us with SIGINT/SIGTERM blocked (so a Ctrl-C could not interrupt the spawn):
    # unblock them, or ring-3's terminate() would never reach us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if boot.cpus:
        os.sched_setaffinity(0, boot.cpus)
    environment = Ring0Environment(boot)
    link = Ring3Link(boot.endpoint, boot.vcpu, boot.ring3_pid)
    try:
        code = _run(boot, environment, link)
    finally:
        link.close()
        environment.close()
    if code:
        sys.exit(code)


def _remove_private_directory(boot: WorkerBoot) -> None:
    """Ring-3 died without cleaning up: its private directory (socket, workload and report
    files) goes with the workers.  Every worker tries; whichever is last finds nothing left."""
    directory = os.path.dirname(boot.ops_file)
    if os.path.basename(directory).startswith("ringsim-"):
        shutil.rmtree(directory, ignore_errors=True)


def _run(boot: WorkerBoot, environment: Ring0Environment, link: Ring3Link) -> int:
    dispatcher = environment.dispatcher
    vcpu: VCpu
    if boot.mode != "strict":
        vcpu = PostingVCpu(
            boot.vcpu, dispatcher, environment.mmio, link, environment.vm, environment.table,
            posted=boot.mode == "posted", window=boot.posted_window, doorbells=boot.doorbells,
        )
    elif boot.journal_limit:
        vcpu = JournalingVCpu(boot.vcpu, dispatcher, environment.mmio, link, environment.vm, boot.journal_limit)
    else:
        vcpu = VCpu(boot.vcpu, dispatcher, environment.mmio, link, environment.vm)
    vcpu.power_off_on_device_error = boot.power_off_on_device_error
    try:
        link.call(OP_HELLO, os.getpid())
        with open(boot.ops_file, "rb") as ops_file:
            ops = pickle.load(ops_file)
        report = replay(vcpu, ops, boot.time_dependent, boot.time_accesses)
        if isinstance(vcpu, JournalingVCpu):
            vcpu.save(boot.journal_file)
        wire_report = report.to_wire()
        wire_report["failures"] = vcpu.failures
        wire_report["units_ring0"] = vcpu.units_ring0
        wire_report["units_ring3"] = vcpu.units_ring3
        wire_report["callback_errors"] = [str(error) for error in dispatcher.callback_errors]
        wire_report["messages"] = link.messages + 1
        # The full report can be larger than a message may be: it goes through a file in
        # ring-3's private directory, and "done" carries only the count.
        with open(boot.report_file, "wb") as report_file:
            pickle.dump(wire_report, report_file, protocol=pickle.HIGHEST_PROTOCOL)
        # Posted writes and doorbells still in flight when the guest stopped: ring-3 applies them
        # before it reads "done" (one socket, in order), and the report counts them as drained.
        in_flight = vcpu.in_flight if isinstance(vcpu, PostingVCpu) else 0
        link.call(OP_DONE, report.status, {"executed": report.executed, "drained": in_flight})
    except Ring3Gone as exc:
        print(f"ringsim vCPU {boot.vcpu}: {exc}; stopping", file=sys.stderr)
        _remove_private_directory(boot)
        return EXIT_RING3_GONE
    except (WireError, Ring3Refused) as exc:
        print(f"ringsim vCPU {boot.vcpu}: {exc}; stopping", file=sys.stderr)
        return EXIT_PROTOCOL
    return 0
