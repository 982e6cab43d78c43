"""Broken peers on the wire, and nothing lost at power-off, with real workers and sockets."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import signal
import threading
import time
from typing import Any

import msgpack
import pytest
import zmq
from conftest import vm_config, workload

from fastpath.worker import worker_main
from shared.wire import OP_ERROR, OP_REPLY, PROTOCOL_VERSION, decode_reply, encode_request
from slowpath import api
from slowpath.server import WorkerDied
from slowpath.vm import VM


def test_server_rejects_a_rogue_peers_bad_messages_and_keeps_serving_the_real_vcpu() -> None:
    ops = workload("out 0x541 4 0x1\n" * 2000)  # deferred writes: the server is busy the whole run
    bad = [
        b"\x93\x01",  # truncated msgpack
        msgpack.packb([PROTOCOL_VERSION, 3, 1, 0, "not a status"]),  # wrong type
        msgpack.packb([PROTOCOL_VERSION, 99, 2, 0]),  # unknown operation
        msgpack.packb([7, 3, 3, 0, 0]),  # wrong protocol version
        msgpack.packb([PROTOCOL_VERSION, 5, 4, 0, 0x540, 1, b"x" * 200_000]),  # oversized payload
        msgpack.packb([PROTOCOL_VERSION, 2, 5, 9, 0x540, 4, 0]),  # a vCPU that does not exist
        msgpack.packb([PROTOCOL_VERSION, OP_REPLY, 6, 0, 0]),  # a reply to a request never sent
        encode_request(2, 7, 0, 0x540, 4, 0),  # well formed, but this peer is not vCPU 0
    ]
    answers: list[Any] = []
    with VM(vm_config()) as vm:
        def rogue() -> None:
            while vm.__dict__.get("server") is None or vm.server.vcpus[0].identity is None:
                time.sleep(0.01)
            context = zmq.Context()
            socket = context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(vm.endpoint)
            for frame in bad:
                socket.send(frame)
                if socket.poll(5000):
                    answers.append(decode_reply(socket.recv()))
            socket.close()
            context.term()

        thread = threading.Thread(target=rogue)
        thread.start()
        result = vm.run(vm.split_workload(ops, "t"), timeout_s=120)
        thread.join()
        assert vm.device("testdev").state.nop_writes == 2000  # the real vCPU was served throughout
    assert [answer.op for answer in answers] == [OP_ERROR] * len(answers)
    # The oversized message exceeds the socket's size cap: ZeroMQ drops it (and that peer's
    # connection) before ring-3 sees it, so it gets no answer and costs no memory.
    assert len(answers) >= 4
    assert result.errors  # the rejections are in the report, with what was wrong


@pytest.mark.parametrize("reply", [b"\xc1junk", msgpack.packb([PROTOCOL_VERSION, OP_REPLY, 999, 0, 0])])
def test_a_worker_given_a_malformed_reply_stops_with_a_clear_error_not_a_hang(reply: bytes, tmp_path: Any) -> None:
    # A stand-in ring-3 answers the worker's hello with junk, or with a reply to a request
    # it never sent: the worker must stop with its protocol exit status, not wait forever.
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{tmp_path}/ring3.sock")
    with VM(vm_config()) as vm:
        ops_file = tmp_path / "vcpu0.ops"
        ops_file.write_bytes(pickle.dumps(workload("out 0x541 4 0x1\n")))
        endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        boot = dataclasses.replace(vm.worker_boot(0, str(ops_file)), endpoint=endpoint)
        process = multiprocessing.get_context("spawn").Process(target=worker_main, args=(boot,))
        process.start()
        try:
            identity, _hello = router.recv_multipart()
            router.send_multipart([identity, reply])
            process.join(10)
            assert process.exitcode == 4  # EXIT_PROTOCOL: it said what was wrong and stopped
        finally:
            if process.is_alive():
                process.kill()
            process.join()
            router.close()
            context.term()


def test_power_off_drains_posted_writes_so_every_retired_write_is_applied_once() -> None:
    # vCPU 1 powers the VM off early while vCPU 0 streams posted writes: each write vCPU 0
    # saw retire is applied exactly once, and the report counts those applied after power-off began.
    text = "out 0x548 4 0x1\n" * 20_000 + "@1 out 0x540 4 0x1\n" * 200 + "@1 out 0x543 1 0x0\n"
    with api.open_vm(vm_config(), vcpus=2, mode="posted") as vm:
        result = api.run_workload(vm, workload(text))
        applied = vm.device("testdev").state.nop_writes
    retired_on_vcpu0 = result.per_vcpu[0]["executed"]
    assert result.final_status["name"] == "VINF_EM_OFF"
    assert applied == retired_on_vcpu0 + 200
    # Only writes still in flight when power-off began are drained: never more than were posted.
    assert 0 <= result.posted["drained_at_power_off"] <= result.posted["posted_writes"]


def test_writes_still_in_flight_when_the_guest_stops_are_applied_and_counted_as_drained() -> None:
    # Ten posted writes and the workload ends: none has been confirmed yet, power-off waits for
    # all ten, applies each once, and says so.
    with api.open_vm(vm_config(), mode="posted") as vm:
        result = api.run_workload(vm, workload("out 0x548 4 0x1\n" * 10))
        applied = vm.device("testdev").state.nop_writes
    assert applied == 10
    assert result.posted["posted_writes"] == 10
    assert result.posted["drained_at_power_off"] == 10
    assert "10 drained at power-off" in result.render()


def test_a_worker_killed_during_a_posted_burst_ends_the_run_cleanly() -> None:
    with api.open_vm(vm_config(), mode="posted") as vm:
        names = [segment.name for segment in vm.segments]

        def kill_soon() -> None:
            deadline = time.monotonic() + 30
            while vm.device("testdev").state.nop_writes < 2000 and time.monotonic() < deadline:
                time.sleep(0.002)
            os.kill(vm.workers[0].process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        with pytest.raises(WorkerDied, match="killed by SIGKILL"):
            api.run_workload(vm, workload("out 0x548 4 0x1\n" * 200_000))
        killer.join()
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in names)
