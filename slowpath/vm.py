"""The VM: ring-3's process, which owns every segment, socket, device and worker of a run.

    with VM(config) as vm:          # create: devices built, regions registered, frozen
        result = vm.run(ops)        # power on, serve the workers until done, power off

Leaving the ``with`` block, by return, exception or Ctrl-C, stops and reaps every worker
and unlinks every shared-memory segment: cleanup is the structure, not a memory.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from fastpath.worker import worker_main
from shared.boot import MODES, DeviceBoot, WorkerBoot
from shared.iomtable import IomTable
from shared.locks import DeviceLock
from shared.segments import Segment, sweep_stale
from shared.stats import (
    G_IOPORT_IN,
    G_IOPORT_INS,
    G_IOPORT_OUT,
    G_IOPORT_OUTS,
    G_MMIO_READS,
    G_MMIO_WRITES,
    StatsLayout,
)
from shared.trace import TraceError, TraceOp
from shared.vcpu import MAX_VCPUS, VM_POWERING_OFF, VM_RUNNING, VmShared
from shared.wire import MAX_MESSAGE_BYTES
from slowpath.config import VmConfig
from slowpath.drivers import MemoryCharDriver
from slowpath.iom import IomManager, Ring3MmioIO, Ring3PortIO
from slowpath.pdm import (
    DeviceInstance,
    DeviceRegistry,
    VmServices,
    builtin_registry,
    construct_instances,
    plan_instances,
    state_bytes,
)
from slowpath.report import RunResult, build_result
from slowpath.server import Ring3Server, WorkerDied

POLL_MS = 50
WORKER_CHECK_S = 0.1
STOP_GRACE_S = 3.0
HOOK_LOCK_WAIT_S = 1.0


@dataclass
class _Worker:
    vcpu: int
    process: Any  # multiprocessing.Process (spawn context)


def _pin_threads(cpus: set[int]) -> None:
    """Pin every thread of this process (ZeroMQ's I/O thread too, not only the caller)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except (ProcessLookupError, PermissionError):
            continue


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


class VM:
    """A VM built from a config; a context manager that owns all of its resources."""

    def __init__(
        self,
        config: VmConfig,
        *,
        vcpus: int | None = None,
        transport: str = "ipc",
        registry: DeviceRegistry | None = None,
        journal_limit: int = 0,
        mode: str | None = None,
        time_accesses: bool = False,
        pin: str = "none",
        listen_any: bool = False,
    ) -> None:
        self.config = config
        self.mode = mode or config.mode  # strict | posted | doorbell
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        self.vcpu_count = vcpus if vcpus is not None else config.vcpus
        if not 1 <= self.vcpu_count <= MAX_VCPUS:
            raise ValueError(f"vCPU count {self.vcpu_count} is not in 1..{MAX_VCPUS}")
        if transport not in ("ipc", "tcp"):
            raise ValueError(f"transport {transport!r} is not ipc or tcp")
        self.transport = transport
        self.listen_any = listen_any  # tcp on every interface instead of loopback (asked for explicitly)
        self.time_accesses = time_accesses  # per-access latency percentiles in the report
        if pin not in ("none", "same", "split"):
            raise ValueError(f"pin {pin!r} is not none, same or split")
        self.pin = pin  # where ring-3 and the workers run: none, all on one CPU, ring-3 apart
        self.journal_limit = journal_limit  # journal each vCPU's first N accesses (explain, timeline)
        self.journals: list[list[tuple[Any, ...]]] = []
        self.registry = registry or builtin_registry()
        self.instances: list[DeviceInstance] = []
        self.segments: list[Segment] = []
        self.workers: list[_Worker] = []
        self._private_dir: str | None = None
        self._context: zmq.Context[Any] | None = None
        self._socket: zmq.Socket[Any] | None = None
        self._powered_off = True  # until power_on
        self._broken = ""  # why this VM may not run again (a worker died mid-run)
        self._deadline: float | None = None
        self.services = VmServices(time.monotonic_ns())

    # -- creation ------------------------------------------------------------------------
    def __enter__(self) -> VM:
        try:
            self._create()
        except BaseException:
            self._destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._destroy()

    def _segment(self, tag: str, size: int) -> Segment:
        segment = Segment.create(tag, size)
        self.segments.append(segment)
        return segment

    def _create(self) -> None:
        sweep_stale()
        self.instances = plan_instances(self.config, self.registry)
        self.table_segment = self._segment("iom", ctypes.sizeof(IomTable))
        self.table = self.table_segment.view(IomTable)
        self.vm_segment = self._segment("vm", ctypes.sizeof(VmShared))
        self.vm = self.vm_segment.view(VmShared)
        self.vm.vcpu_count = self.vcpu_count
        self.vm.clock_base_ns = self.services.clock_base_ns
        self.state_segment = self._segment("devstate", state_bytes(self.instances))
        states = [self.state_segment.view(i.reg.shared_state, i.state_offset) for i in self.instances]
        self.iom = IomManager(self.table)
        construct_instances(self.instances, states, self.iom, self.services, self.config)
        # Region creation is frozen now, so the statistics table can be sized exactly.
        self.stats = StatsLayout(
            self.vcpu_count, self.table.port_stats, len(self.instances), self.table.mmio_registrations
        )
        self.stats_segment = self._segment("stats", self.stats.size_bytes)
        self.counters = self.stats_segment.words()
        self.ring3_rows = [self.stats.row_base(v, ring3=True) for v in range(self.vcpu_count)]
        self.port_io = []
        self.mmio_io = []
        for row in self.ring3_rows:
            locks = [
                DeviceLock(i.name, i.lock, self.counters, self.stats.lock_base(row, i.index), self._check_workers)
                for i in self.instances
            ]
            self.port_io.append(Ring3PortIO(self.iom, locks, self.counters, row))
            self.mmio_io.append(Ring3MmioIO(self.iom, locks, self.counters, row, self.stats.mmio_base(row, 0)))
        self._bind()

    def _bind(self) -> None:
        # Ring-3's private directory (mode 0700): the ipc socket and the workers' workloads.
        self._private_dir = tempfile.mkdtemp(prefix="ringsim-")
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if self.transport == "ipc":
            self._socket.bind(f"ipc://{self._private_dir}/ring3.sock")
        elif self.listen_any:
            warnings.warn("ring-3 listens on every interface: anything that can reach this machine can "
                          "talk to it", stacklevel=2)
            self._socket.bind("tcp://0.0.0.0:*")
        else:
            self._socket.bind("tcp://127.0.0.1:*")
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- running -------------------------------------------------------------------------
    def split_workload(self, ops: list[TraceOp], source: str) -> list[list[TraceOp]]:
        """Each vCPU's share of a workload (the '@N' prefixes); raises TraceError."""
        shares: list[list[TraceOp]] = [[] for _ in range(self.vcpu_count)]
        for op in ops:
            if op.vcpu >= self.vcpu_count:
                raise TraceError(f"{source}:{op.line}: vCPU {op.vcpu}, but the VM has {self.vcpu_count}")
            shares[op.vcpu].append(op)
        return shares

    def worker_boot(self, vcpu: int, ops_file: str = "") -> WorkerBoot:
        """What the ring-0 worker of *vcpu* needs to attach to this VM."""
        return WorkerBoot(
            vcpu=vcpu,
            endpoint=self.endpoint,
            ring3_pid=os.getpid(),
            table_segment=self.table_segment.name,
            vm_segment=self.vm_segment.name,
            state_segment=self.state_segment.name,
            stats_segment=self.stats_segment.name,
            stats=self.stats,
            devices=tuple(
                DeviceBoot(i.index, i.name, i.module, i.number, i.state_offset, i.config, i.lock)
                for i in self.instances
                if i.r0_enabled
            ),
            ops_file=ops_file,
            report_file=ops_file.removesuffix(".ops") + ".report" if ops_file else "",
            time_dependent=tuple(self.config.time_dependent),
            mode=self.mode,
            posted_window=self.config.posted_window,
            doorbells=tuple(self.config.doorbells) if self.mode == "doorbell" else (),
            power_off_on_device_error=self.config.on_device_error == "poweroff",
            time_accesses=self.time_accesses,
            cpus=self._worker_cpus(),
            journal_limit=self.journal_limit,
            journal_file=ops_file.removesuffix(".ops") + ".journal" if ops_file else "",
        )

    def _worker_cpus(self) -> tuple[int, ...]:
        cpus = sorted(os.sched_getaffinity(0)) if self.pin != "none" else []
        if not cpus:
            return ()
        return (cpus[0],) if self.pin == "same" or len(cpus) == 1 else tuple(cpus[1:])

    def placement(self) -> dict[str, Any]:
        """Where ring-3 and the workers run (benchmarks record it with every figure)."""
        ring3 = sorted(os.sched_getaffinity(0))
        workers = list(self._worker_cpus()) or ring3
        return {"pin": self.pin, "ring3_cpus": ring3, "worker_cpus": workers, "cpus": os.cpu_count()}

    def power_on(self, shares: list[list[TraceOp]]) -> None:
        """Spawn one ring-0 worker per vCPU with its share of the workload.

        A VM can be powered on again after a run: device state carries over, the
        statistics start from zero (each run reports its own).
        """
        if not self._powered_off:
            raise RuntimeError("the VM is already powered on")
        if self._broken:
            raise RuntimeError(f"the VM cannot run again: {self._broken} (device locks may be held); create a new VM")
        context = multiprocessing.get_context("spawn")
        # Each run starts clean: statistics, pending writes, what the last run reported.
        self.counters[:] = memoryview(bytes(len(self.counters) * 8)).cast("Q")
        ctypes.memset(ctypes.addressof(self.vm.vcpus), 0, ctypes.sizeof(self.vm.vcpus))
        for errors in [io.callback_errors for io in self.port_io] + [io.callback_errors for io in self.mmio_io]:
            errors.clear()
        self.services.exit_status = None
        assert self._socket is not None and self._private_dir is not None
        self.server = Ring3Server(
            self._socket, self.vm, self.port_io, self.mmio_io, self.counters, self.ring3_rows, self.reset,
            self.journal_limit * len(shares),
        )
        self.workers = []
        self._powered_off = False
        self.vm.state = VM_RUNNING
        for vcpu, share in enumerate(shares):
            ops_file = os.path.join(self._private_dir, f"vcpu{vcpu}.ops")
            with open(ops_file, "wb") as file:
                pickle.dump(share, file, protocol=pickle.HIGHEST_PROTOCOL)
            boot = self.worker_boot(vcpu, ops_file)
            process = context.Process(target=worker_main, args=(boot,), name=f"ringsim-vcpu{vcpu}", daemon=True)
            # Ctrl-C in the middle of start() would leave a child we hold no handle on.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                process.start()
                self.workers.append(_Worker(vcpu, process))
                assert process.pid is not None
                self.server.expected_pids[vcpu] = process.pid
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def run(
        self,
        shares: list[list[TraceOp]],
        *,
        timeout_s: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> RunResult:
        """Power on, serve every worker until each reports done, power off; the run's result.

        *progress*, if given, is called about ten times a second with (accesses done,
        accesses in the workload), read off the workers' statistics rows.
        """
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        affinity = os.sched_getaffinity(0)
        if self.pin != "none":  # ring-3 on the first CPU; the workers pin themselves
            _pin_threads({min(affinity)})
        try:
            return self._serve(shares, progress)
        finally:
            if self.pin != "none":
                _pin_threads(affinity)

    def _serve(self, shares: list[list[TraceOp]], progress: Callable[[int, int], None] | None) -> RunResult:
        started = time.perf_counter()
        total = sum(len(share) for share in shares)
        self.power_on(shares)
        assert self._socket is not None
        poller = zmq.Poller()  # one poller for the run: socket.poll() builds one per call
        poller.register(self._socket, zmq.POLLIN)
        next_check = 0.0
        while not self.server.all_done:
            if poller.poll(POLL_MS):
                self.server.serve_pending()
            now = time.monotonic()
            if now >= next_check:  # a waitpid per worker, so not after every message
                next_check = now + WORKER_CHECK_S
                self._check_workers()
                if progress is not None:
                    progress(self.accesses_done(), total)
        self._deadline = None
        self.power_off()
        for worker in self.workers:
            self.server.vcpus[worker.vcpu].report = self._load(worker.vcpu, "report", {})
        self.journals = [self._load(worker.vcpu, "journal", []) if self.journal_limit else []
                         for worker in self.workers]
        return build_result(self, time.perf_counter() - started)

    def result_so_far(self) -> RunResult:
        """After an interrupted run: power off (serving the workers until they stop), then
        the report of what ran.  Workers that stopped early left no replay report."""
        started = time.perf_counter()
        self._deadline = None
        self.power_off()
        for worker in self.workers:
            self.server.vcpus[worker.vcpu].report = self._load(worker.vcpu, "report", {})
        return build_result(self, time.perf_counter() - started)

    def accesses_done(self) -> int:
        """Guest accesses the workers have issued so far in this run (their statistics rows)."""
        counted = (G_IOPORT_IN, G_IOPORT_OUT, G_IOPORT_INS, G_IOPORT_OUTS, G_MMIO_READS, G_MMIO_WRITES)
        rows = [self.stats.row_base(vcpu, ring3=False) for vcpu in range(self.vcpu_count)]
        return sum(self.counters[row + index] for row in rows for index in counted)

    def _load(self, vcpu: int, what: str, missing: Any) -> Any:
        """What the worker of *vcpu* left in ring-3's private directory (its report, its journal)."""
        assert self._private_dir is not None
        try:
            with open(os.path.join(self._private_dir, f"vcpu{vcpu}.{what}"), "rb") as file:
                return pickle.load(file)
        except FileNotFoundError:
            return missing

    def _check_workers(self) -> None:
        """Raise WorkerDied for a worker that exited before reporting done.

        A worker waits for the reply to its ``done``, so one that has exited without
        it being recorded did not finish: it was killed or failed.
        """
        for worker in self.workers:
            code = worker.process.exitcode
            if code is not None and not self.server.vcpus[worker.vcpu].done:
                self._broken = f"vCPU {worker.vcpu}'s worker died"
                raise WorkerDied(
                    f"vCPU {worker.vcpu} worker (pid {worker.process.pid}) ended before finishing its "
                    f"workload: {_describe_exit(code)}"
                )
        if self._deadline is not None and time.monotonic() > self._deadline:
            # Also reached from a ring-3 wait for a device lock (on_stall), which never
            # returns to the run loop while the lock stays taken.
            self._broken = "the run timed out"
            raise TimeoutError("the run did not finish in time")

    def reset(self) -> None:
        """VM reset (VINF_EM_RESET): every device's reset hook, under its lock."""
        self._call_device_hooks("reset")

    def _call_device_hooks(self, name: str) -> None:
        """Call a ring-3 hook of every device that has one, holding the device's lock.

        A lock still held after HOOK_LOCK_WAIT_S can only belong to a worker that died
        inside a callback; the hook runs anyway, so nothing is left unflushed.
        """
        for instance in self.instances:
            hook = getattr(instance.ring3, name, None)
            if hook is None:
                continue
            locked = instance.lock.acquire(True, HOOK_LOCK_WAIT_S)
            try:
                hook()
            finally:
                if locked:
                    instance.lock.release()

    def power_off(self) -> None:
        """Stop the workers (serving them meanwhile), then the devices' power-off hooks."""
        if self._powered_off:
            return
        self._powered_off = True
        self._stop_workers()
        self._call_device_hooks("power_off")

    def _stop_workers(self) -> None:
        if not self.workers:
            return
        if self.segments:
            self.vm.state = VM_POWERING_OFF
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            while any(w.process.is_alive() for w in self.workers) and time.monotonic() < deadline:
                if self._socket is not None and self._socket.poll(20):
                    self.server.serve_pending()
        finally:  # whatever interrupted the grace period, every worker is reaped
            for worker in self.workers:
                if worker.process.is_alive():
                    worker.process.terminate()
                    worker.process.join(1.0)
                if worker.process.is_alive():
                    worker.process.kill()
                worker.process.join()

    def remap_mmio(self, handle: int, address: int) -> None:
        """Move an MMIO region at runtime, as a PCI BAR write does (the IOM lock taken exclusively).

        Safe while workers run: an access already past its lookup finds the region
        moved and is counted as a stale mapping.
        """
        region = self.iom.mmio_regions[handle]
        self.iom.mmio_unmap(region.owner, handle)
        self.iom.mmio_map(region.owner, handle, address)

    # -- what a run leaves ---------------------------------------------------------------
    def console_output(self) -> dict[str, str]:
        """What each device wrote to a memory driver, by device and LUN."""
        output: dict[str, str] = {}
        for instance in self.instances:
            for lun, driver in instance.drivers.items():
                if isinstance(driver, MemoryCharDriver):
                    output[f"{instance.name}/LUN#{lun}"] = driver.output.decode("latin-1")
        return output

    def device(self, name: str, number: int = 0) -> DeviceInstance:
        for instance in self.instances:
            if instance.reg.name == name and instance.number == number:
                return instance
        raise KeyError(f"no device {name}#{number}")

    # -- destruction ---------------------------------------------------------------------
    def _destroy(self) -> None:
        # A second Ctrl-C or a SIGTERM must not cut cleanup short: hold them until it is done.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._release()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _release(self) -> None:
        try:
            self.power_off()
        finally:
            for instance in self.instances:
                for driver in instance.drivers.values():
                    close = getattr(driver, "close", None)
                    if close is not None:
                        close()
            if self._socket is not None:
                self._socket.close(linger=0)
                self._socket = None
            if self._context is not None:
                self._context.term()
                self._context = None
            if self._private_dir is not None:
                shutil.rmtree(self._private_dir, ignore_errors=True)
                self._private_dir = None
            self._release_segments()

    def _release_segments(self) -> None:
        # Every view on the segments must go before they can close.
        for instance in self.instances:
            instance.state = None
            instance.ring3 = None
        self.port_io = []
        self.mmio_io = []
        self.__dict__.pop("server", None)
        for name in ("table", "vm", "counters", "iom"):
            self.__dict__.pop(name, None)
        for segment in self.segments:
            segment.close()
            segment.unlink()
        self.segments = []

