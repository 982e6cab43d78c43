"""Regressions from review: nothing a run produces or a peer sends may hang or crash ring-3."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
from conftest import vm_config, workload

from shared.status import VERR_INTERNAL_ERROR
from shared.wire import (
    OP_ERROR,
    OP_HELLO,
    OP_IOPORT_READ,
    OP_IOPORT_WRITE_STRING,
    OP_REPLY,
    PROTOCOL_VERSION,
    decode_reply,
    encode_request,
)
from slowpath.server import Ring3Server
from slowpath.vm import VM


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(frames)


def test_a_report_larger_than_any_message_still_reaches_ring3() -> None:
    # 50,000 distinct unassigned MMIO pages: the replay report alone is over 1 MiB.
    ops = workload("".join(f"rd {0x100000000 + (page << 12):#x} 4\n" for page in range(50_000)))
    with VM(vm_config()) as vm:
        result = vm.run(vm.split_workload(ops, "t"), timeout_s=120)
    assert result.replay["accesses"] == 50_000
    assert len(result.replay["per_port"]) == 50_000


def test_bad_requests_get_error_replies_and_the_server_keeps_serving() -> None:
    with VM(vm_config()) as vm:
        socket = FakeSocket()
        server = Ring3Server(socket, vm.vm, vm.port_io, vm.mmio_io, vm.counters, vm.ring3_rows, vm.reset)  # type: ignore[arg-type]
        worker = b"worker-0"

        def send(*message: Any, raw: bytes | None = None) -> Any:
            server._handle([worker, raw if raw is not None else msgpack.packb(list(message), use_bin_type=True)])
            return decode_reply(socket.sent[-1][1])

        assert send(PROTOCOL_VERSION, OP_HELLO, 1, 0, 4242).op == OP_REPLY
        # A string access of zero-byte units once crashed ring-3 with a division by zero.
        assert send(PROTOCOL_VERSION, OP_IOPORT_WRITE_STRING, 2, 0, 0x540, 0, b"abcd").op == OP_ERROR
        assert send(raw=b"\xc1not msgpack").op == OP_ERROR
        assert send(PROTOCOL_VERSION, 99, 3, 0).op == OP_ERROR
        assert send(PROTOCOL_VERSION, OP_IOPORT_READ, 4, 7, 0x540, 4, 0).op == OP_ERROR  # no such vCPU
        assert server.rejected == 4
        reply = send(raw=encode_request(OP_IOPORT_READ, 5, 0, 0x540, 4, 0))
        assert (reply.op, reply.seq, reply.status, reply.payload) == (OP_REPLY, 5, 0, 0x64726962)
        # A peer that is not the registered worker cannot speak for its vCPU.
        server._handle([b"intruder", encode_request(OP_IOPORT_READ, 6, 0, 0x540, 4, 0)])
        assert decode_reply(socket.sent[-1][1]).status == VERR_INTERNAL_ERROR


def test_workers_do_not_inherit_blocked_interrupt_signals() -> None:
    ops = workload("out 0x541 4 0x1\n" * 50_000)
    with VM(vm_config()) as vm:
        vm.power_on(vm.split_workload(ops, "t"))
        try:
            deadline = time.monotonic() + 30
            while vm.server.vcpus[0].identity is None and time.monotonic() < deadline:  # until its hello
                vm.server.serve_pending()
                time.sleep(0.01)
            pid = vm.workers[0].process.pid
            status = Path(f"/proc/{pid}/status").read_text()
            blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
            assert not blocked & (1 << (2 - 1)) and not blocked & (1 << (15 - 1))  # SIGINT, SIGTERM
        finally:
            vm.power_off()


def test_a_hello_from_a_process_ring3_did_not_spawn_is_refused() -> None:
    with VM(vm_config()) as vm:
        socket = FakeSocket()
        server = Ring3Server(socket, vm.vm, vm.port_io, vm.mmio_io, vm.counters, vm.ring3_rows, vm.reset)  # type: ignore[arg-type]
        server.expected_pids = {0: 1234}

        def hello(identity: bytes, pid: int) -> Any:
            server._handle([identity, encode_request(OP_HELLO, 1, 0, pid)])
            return decode_reply(socket.sent[-1][1])

        assert hello(b"impostor", 4242).op == OP_ERROR
        assert server.vcpus[0].identity is None  # vCPU 0's slot is still free for its worker
        assert hello(b"worker-0", 1234).op == OP_REPLY
        assert hello(b"impostor", 1234).op == OP_ERROR  # the slot is taken: no second identity
        assert server.vcpus[0].identity == b"worker-0"
        assert any("4242 is not the worker of vCPU 0" in rejection for rejection in server.rejections)
