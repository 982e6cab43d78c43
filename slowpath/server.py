"""Ring-3's ZeroMQ server: it finishes in ring-3 what a vCPU's ring-0 deferred.

One ROUTER socket serves every vCPU worker.  For each request it

* redoes a deferred IN in ring-3 (EM's emR3ExecutePendingIoPortRead) and replies with
  the value;
* redoes a deferred MMIO read in ring-3;
* commits the vCPU's pending OUT and pending MMIO write from shared memory
  (IOMR3ProcessForceFlag) and replies with the commits' statuses merged into the one
  ring-0 returned (iomR3MergeStatus);
* finishes the units of a string access ring-0 left;

then acts on the resulting status as EM would: VINF_EM_OFF / _TERMINATE starts the
power-off of every vCPU, VINF_EM_RESET resets the devices.  A message that breaks the
protocol is answered with an error reply and counted; the server keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from shared.stats import G_IOPORT_COMMITS, G_MMIO_COMMITS
from shared.status import (
    VERR_INTERNAL_ERROR,
    VINF_EM_OFF,
    VINF_EM_RESET,
    VINF_EM_TERMINATE,
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_SUCCESS,
    merge_status,
)
from shared.vcpu import VM_POWERING_OFF, VmShared
from shared.wire import (
    ONE_WAY,
    OP_COMMIT,
    OP_DONE,
    OP_ERROR,
    OP_HELLO,
    OP_IOPORT_READ,
    OP_IOPORT_READ_STRING,
    OP_IOPORT_WRITE_STRING,
    OP_MMIO_READ,
    OP_POST,
    OP_POST_MMIO,
    OP_REPLY,
    OP_SYNC,
    Request,
    WireError,
    decode_request,
    encode_reply,
)
from slowpath.iom import Ring3MmioIO, Ring3PortIO


class WorkerDied(Exception):
    """A vCPU worker ended before it reported its workload done."""


_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: pyzmq's flag enum costs microseconds per call


@dataclass
class VCpuRecord:
    """What ring-3 knows of one vCPU worker."""

    identity: bytes | None = None
    pid: int = 0
    posted_status: int = 0  # merged statuses of posted commits since the vCPU's last sync point
    done: bool = False
    status: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    # (status before, commit's status, merged) for every commit that returned more than success.
    merges: list[tuple[int, int, int]] = field(default_factory=list)


class Ring3Server:
    def __init__(
        self,
        socket: zmq.Socket,  # type: ignore[type-arg]
        vm: VmShared,
        port_io: list[Ring3PortIO],
        mmio_io: list[Ring3MmioIO],
        counters: memoryview,
        ring3_rows: list[int],
        reset_devices: Callable[[], None],
        journal_limit: int = 0,
    ) -> None:
        self.socket = socket
        self.vm = vm
        self.port_io = port_io
        self.mmio_io = mmio_io
        self.counters = counters
        self.ring3_rows = ring3_rows
        self.reset_devices = reset_devices
        self.vcpus = [VCpuRecord() for _ in port_io]
        self.rejected = 0
        self.rejections: list[str] = []
        self.power_off_status: int | None = None
        self.resets = 0
        self.drained = 0  # posted writes and doorbells still in flight when their vCPU's guest stopped
        # (vcpu, seq, op, args, received, done, status, merges): what ring-3 did, for --explain.
        self.journal_limit = journal_limit
        self.journal: list[tuple[Any, ...]] = []
        self.expected_pids: dict[int, int] = {}  # vCPU -> the pid ring-3 spawned for it

    # -- the loop body -------------------------------------------------------------------
    def serve_pending(self) -> int:
        """Answer every request waiting on the socket without blocking; returns how many."""
        served = 0
        recv_multipart = self.socket.recv_multipart
        while True:
            try:
                frames = recv_multipart(_NOBLOCK)
            except zmq.Again:
                return served
            self._handle(frames)
            served += 1

    def _reject(self, identity: bytes | None, seq: int, message: str) -> None:
        self.rejected += 1
        if len(self.rejections) < 20:
            self.rejections.append(message)
        if identity is not None:
            self.socket.send_multipart([identity, encode_reply(OP_ERROR, seq, VERR_INTERNAL_ERROR, message)])

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._reject(frames[0] if frames else None, 0, f"expected one message frame, got {len(frames) - 1}")
            return
        identity, frame = frames
        try:
            request = decode_request(frame, len(self.vcpus))
        except WireError as exc:
            self._reject(identity, 0, str(exc))
            return
        record = self.vcpus[request.vcpu]
        if request.op == OP_HELLO:
            if record.identity is not None and record.identity != identity:
                self._reject(identity, request.seq, f"vCPU {request.vcpu} is already connected")
                return
            expected = self.expected_pids.get(request.vcpu)
            if expected is not None and request.args[0] != expected:
                self._reject(identity, request.seq, f"pid {request.args[0]} is not the worker of vCPU {request.vcpu}")
                return
            record.identity = identity
            record.pid = request.args[0]
            self._reply(identity, request.seq, 0, 0)
            return
        if record.identity != identity:
            self._reject(identity, request.seq, f"this peer is not vCPU {request.vcpu}")
            return
        received = time.monotonic_ns()
        merges = len(record.merges)
        try:
            if request.op in ONE_WAY:
                self._perform_posted(request, record)
                return
            status, payload = self._perform(request, record)
            self._act_on(status)
            if record.posted_status != VINF_SUCCESS:  # a sync point: posted statuses reach the vCPU
                status = merge_status(status, record.posted_status, VINF_IOM_R3_IOPORT_COMMIT_WRITE)
                record.posted_status = VINF_SUCCESS
        except WorkerDied:
            raise  # a device lock's holder died: the run ends, as it must
        except Exception as exc:  # a request that passed validation but still broke something
            self._reject(identity, request.seq, f"{type(exc).__name__} serving {request.op}: {exc}")
            return
        if self.journal_limit and len(self.journal) < self.journal_limit and request.op != OP_DONE:
            args = request.args if request.op != OP_IOPORT_WRITE_STRING else request.args[:2]
            self.journal.append(
                (request.vcpu, request.seq, request.op, args, received, time.monotonic_ns(), status,
                 record.merges[merges:])
            )
        self._reply(identity, request.seq, status, payload)

    def _reply(self, identity: bytes, seq: int, status: int, payload: Any) -> None:
        self.socket.send_multipart([identity, encode_reply(OP_REPLY, seq, status, payload)])

    # -- the work --------------------------------------------------------------------------
    def _perform(self, request: Request, record: VCpuRecord) -> tuple[int, Any]:
        io = self.port_io[request.vcpu]
        op = request.op
        if op == OP_IOPORT_READ:
            port, size, _ring0_status = request.args
            return io.read(port, size)
        if op == OP_COMMIT:
            return self.process_force_flag(request.vcpu, request.args[0]), 0
        if op == OP_MMIO_READ:
            address, size, _ring0_status = request.args
            return self.mmio_io[request.vcpu].read(address, size)
        if op == OP_SYNC:
            return VINF_SUCCESS, 0  # everything sent before is done; the posted status is merged in
        if op == OP_IOPORT_READ_STRING:
            port, size, count = request.args
            status, data, _left = io.read_string(port, size, count)
            return status, data
        if op == OP_IOPORT_WRITE_STRING:
            port, size, data = request.args
            if len(data) % size:
                return VERR_INTERNAL_ERROR, 0
            return io.write_string(port, size, data)
        # OP_DONE: the workload ended with this status (its report waits in a file).
        record.done = True
        record.status = request.args[0]
        drained = request.args[1].get("drained", 0)
        if type(drained) is int and drained > 0:
            self.drained += drained  # applied above, before this "done": nothing that retired is lost
        self._act_on(record.status)  # a VINF_EM_OFF ring-0 produced stops the other vCPUs too
        return 0, 0

    def _perform_posted(self, request: Request, record: VCpuRecord) -> None:
        """A posted write or a doorbell: do it now; its status waits for the vCPU's next sync point."""
        vcpu = request.vcpu
        row = self.ring3_rows[vcpu]
        if request.op == OP_POST:
            port, size, value = request.args
            self.counters[row + G_IOPORT_COMMITS] += 1
            status, code = self.port_io[vcpu].write(port, value, size), VINF_IOM_R3_IOPORT_COMMIT_WRITE
        elif request.op == OP_POST_MMIO:
            address, hint, data = request.args
            self.counters[row + G_MMIO_COMMITS] += 1
            status, code = self.mmio_io[vcpu].commit(address, data, hint), VINF_IOM_R3_MMIO_COMMIT_WRITE
        else:  # OP_DOORBELL: ring-3 runs the device's write handler
            mmio, address, size, value = request.args
            if mmio:
                status = self.mmio_io[vcpu].write(address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
            else:
                status = self.port_io[vcpu].write(address, value, size)
            code = VINF_IOM_R3_IOPORT_COMMIT_WRITE
        record.posted_status = self._merge(vcpu, record.posted_status, status, code)
        self._act_on(status)

    def process_force_flag(self, vcpu: int, status: int) -> int:
        """IOMR3ProcessForceFlag: commit vCPU *vcpu*'s pending writes, merging into *status*."""
        shared = self.vm.vcpus[vcpu]
        port_write = shared.pending_port_write
        mmio_write = shared.pending_mmio_write
        shared.force_flag_iom = 0
        if not port_write.size and not mmio_write.size:
            return status  # nothing pending: IOMR3ProcessForceFlag leaves the status as it was
        row = self.ring3_rows[vcpu]
        if port_write.size:
            self.counters[row + G_IOPORT_COMMITS] += 1
            committed = self.port_io[vcpu].write(port_write.port, port_write.value, port_write.size)
            port_write.size = 0
            status = self._merge(vcpu, status, committed, VINF_IOM_R3_IOPORT_COMMIT_WRITE)
        if mmio_write.size:
            self.counters[row + G_MMIO_COMMITS] += 1
            data = bytes(mmio_write.data[: mmio_write.size])
            committed = self.mmio_io[vcpu].commit(mmio_write.address, data, mmio_write.region_hint)
            mmio_write.size = 0
            status = self._merge(vcpu, status, committed, VINF_IOM_R3_MMIO_COMMIT_WRITE)
        return status

    def _merge(self, vcpu: int, status: int, committed: int, commit_code: int) -> int:
        merged = merge_status(status, committed, commit_code)
        if committed != 0:
            records = self.vcpus[vcpu].merges
            if len(records) < 100:
                records.append((status, committed, merged))
        return merged

    def _act_on(self, status: int) -> None:
        """EM's reaction to a status ring-3 produced."""
        if status in (VINF_EM_OFF, VINF_EM_TERMINATE):
            if self.power_off_status is None or status < self.power_off_status:
                self.power_off_status = status
            self.vm.state = VM_POWERING_OFF
        elif status == VINF_EM_RESET:
            self.resets += 1
            self.reset_devices()

    @property
    def all_done(self) -> bool:
        return all(record.done for record in self.vcpus)

