"""First benchmark: what the fast path and a deferral cost, each against its floor.

Ratios, each measured side by side in this one run:

1. an OUT handled in ring-0 (lookup, device try-lock, statistics, testdev's NOP
   callback) against a direct call of the same ring-0 callback, both in this process;
2. a deferred OUT (testdev's NOP_R3: ring-0 parks a pending write, the vCPU worker asks
   ring-3 to commit it and waits for the merged status) against a raw pyzmq + msgpack
   DEALER/ROUTER round trip between a spawned process and this one, over the same
   transport;
3. an MMIO write handled in ring-0 (testdev's MMIO NOP) against a deferred one (its
   MMIO NOP_R3: a pending MMIO write committed by ring-3);
4. a complicated MMIO read (two bytes at an odd address of the I/O APIC, whose region
   takes only DWORDs, so IOM reads the DWORD and extracts them) against an aligned DWORD
   read of the same register, both in ring-0.

Nothing here passes or fails: it prints figures, ratios and where the processes ran.

    python bench/bench_core.py [--n 20000] [--transport ipc|tcp] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Any

import msgpack
import zmq

from fastpath.worker import Ring0Environment
from shared.trace import parse_text
from slowpath.config import parse_config
from slowpath.vm import VM

CONFIG = """
Name = "bench-core"
[Devices.testdev.0]
[Devices.testdev.0.Config]
IOBase = 0x540
MMIOBase = 0xfeb00000
[Devices.ioapic.0]
"""
NOP, NOP_R3 = 0x540, 0x541
MMIO_NOP, MMIO_NOP_R3 = 0xFEB00000, 0xFEB00008
IOWIN = 0xFEC00010
REPEATS = 5


def _median_ns_per_op(fn: Any, n: int) -> float:
    """Median over REPEATS runs of fn(n), in ns per operation."""
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter_ns()
        fn(n)
        samples.append((time.perf_counter_ns() - started) / n)
    return statistics.median(samples)


def fast_path_vs_direct_call(vm: VM, n: int) -> dict[str, float]:
    environment = Ring0Environment(vm.worker_boot(0))
    try:
        return _time_fast_path(environment, vm.device("testdev").state.io_handle, n)
    finally:
        environment.close()  # the timing closures are gone by now, so the views can go


def _time_fast_path(environment: Ring0Environment, handle: int, n: int) -> dict[str, float]:
    write = environment.dispatcher.write
    mmio_write = environment.mmio.write
    mmio_read = environment.mmio.read
    callback = environment.callbacks[handle].out
    assert callback is not None

    def through_ring0(count: int) -> None:
        for _ in range(count):
            write(NOP, 1, 4)

    def direct(count: int) -> None:
        for _ in range(count):
            callback(0, 1, 4)

    def mmio_through_ring0(count: int) -> None:
        for _ in range(count):
            mmio_write(MMIO_NOP, 1, 4)

    def aligned_read(count: int) -> None:
        for _ in range(count):
            mmio_read(IOWIN, 4)

    def complicated_read(count: int) -> None:
        for _ in range(count):
            mmio_read(IOWIN + 1, 2)

    def empty_loop(count: int) -> None:
        for _ in range(count):
            pass

    through_ring0(n)  # warm up: lookup snapshots, hints
    mmio_through_ring0(n)
    loop = _median_ns_per_op(empty_loop, n)
    ring0 = _median_ns_per_op(through_ring0, n) - loop
    call = _median_ns_per_op(direct, n) - loop
    mmio_ring0 = _median_ns_per_op(mmio_through_ring0, n) - loop
    aligned = _median_ns_per_op(aligned_read, n) - loop
    complicated = _median_ns_per_op(complicated_read, n) - loop
    return {
        "ring0_out_ns": ring0,
        "direct_callback_ns": call,
        "loop_overhead_ns": loop,
        "ratio": ring0 / call,
        "mmio_ring0_write_ns": mmio_ring0,
        "mmio_aligned_read_ns": aligned,
        "mmio_complicated_read_ns": complicated,
        "complicated_vs_aligned_ratio": complicated / aligned,
    }


def deferred_writes(vm: VM, n: int) -> dict[str, float]:
    """Per-access cost of N deferred OUTs and of N deferred MMIO writes, timed inside the worker."""
    figures = {}
    for name, line in (("out", f"out {NOP_R3:#x} 4 0x1\n"), ("mmio", f"wr {MMIO_NOP_R3:#x} 4 0x1\n")):
        result = vm.run(vm.split_workload(parse_text(line * n, "bench"), "bench"))
        assert result.commits == n, result.commits
        figures[name] = result.per_vcpu[0]["workload_ns"] / n
    return figures


def _raw_client(endpoint: str, n: int, results: Any) -> None:
    """The shape of a deferral without ringsim: encode, send, wait, decode."""
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    for seq in range(200):  # warm up
        socket.send(packb([1, 3, seq, 0, 0x541, 4, 1]))
        unpackb(socket.recv())
    started = time.perf_counter_ns()
    for seq in range(n):
        socket.send(packb([1, 3, seq, 0, 0x541, 4, 1]))
        unpackb(socket.recv())
    results.put((time.perf_counter_ns() - started) / n)
    socket.close()
    context.term()


def raw_round_trip(transport: str, n: int) -> float:
    directory = tempfile.mkdtemp(prefix="ringsim-bench-")
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{directory}/raw.sock" if transport == "ipc" else "tcp://127.0.0.1:*")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    client = spawn.Process(target=_raw_client, args=(endpoint, n, results))
    client.start()
    try:
        for _ in range(n + 200):
            identity, frame = router.recv_multipart()
            request = msgpack.unpackb(frame)
            router.send_multipart([identity, msgpack.packb([1, 64, request[2], 0, 0])])
        per_trip: float = results.get(timeout=60)
    finally:
        client.join(10)
        router.close()
        context.term()
        shutil.rmtree(directory, ignore_errors=True)
    return per_trip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="operations per measurement")
    parser.add_argument("--transport", choices=["ipc", "tcp"], default="ipc")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    config = parse_config(CONFIG, "bench-core.toml")
    with VM(config, transport=args.transport) as vm:
        fast = fast_path_vs_direct_call(vm, args.n * 10)
    with VM(config, transport=args.transport) as vm:
        deferred = deferred_writes(vm, args.n)
    raw_ns = raw_round_trip(args.transport, args.n)

    figures = {
        "machine": {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                    "python": platform.python_version(), "placement": "unpinned (the scheduler decides)"},
        "transport": args.transport,
        "n": args.n,
        "fast_path": fast,
        "deferred_out_ns": deferred["out"],
        "deferred_mmio_write_ns": deferred["mmio"],
        "raw_round_trip_ns": raw_ns,
        "deferral_vs_raw_ratio": deferred["out"] / raw_ns,
        "deferral_vs_ring0_ratio": deferred["out"] / fast["ring0_out_ns"],
        "mmio_deferred_vs_ring0_ratio": deferred["mmio"] / fast["mmio_ring0_write_ns"],
    }
    print(f"ringsim bench_core  ({args.transport}, n={args.n}, {os.cpu_count()} CPUs, unpinned)")
    print(f"  OUT handled in ring-0            {fast['ring0_out_ns']:10.0f} ns")
    print(f"  direct call of the callback      {fast['direct_callback_ns']:10.0f} ns")
    print(f"    ratio ring-0 / direct          {fast['ratio']:10.1f} x")
    print(f"  deferred OUT (commit in R3)      {deferred['out']:10.0f} ns")
    print(f"  raw pyzmq+msgpack round trip     {raw_ns:10.0f} ns")
    print(f"    ratio deferred / raw           {figures['deferral_vs_raw_ratio']:10.2f} x")
    print(f"    ratio deferred / ring-0 OUT    {figures['deferral_vs_ring0_ratio']:10.0f} x")
    print(f"  MMIO write handled in ring-0     {fast['mmio_ring0_write_ns']:10.0f} ns")
    print(f"  MMIO write deferred (commit R3)  {deferred['mmio']:10.0f} ns")
    print(f"    ratio deferred / ring-0        {figures['mmio_deferred_vs_ring0_ratio']:10.0f} x")
    print(f"  MMIO aligned DWORD read (R0)     {fast['mmio_aligned_read_ns']:10.0f} ns")
    print(f"  MMIO complicated read (R0)       {fast['mmio_complicated_read_ns']:10.0f} ns")
    print(f"    ratio complicated / aligned    {fast['complicated_vs_aligned_ratio']:10.2f} x")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
