"""First benchmark: what the fast path and a deferral cost, each against its floor.

Two ratios, each measured side by side in this one run:

1. an OUT handled in ring-0 (lookup, device try-lock, statistics, testdev's NOP
   callback) against a direct call of the same ring-0 callback, both in this process;
2. a deferred OUT (testdev's NOP_R3: ring-0 parks a pending write, the vCPU worker asks
   ring-3 to commit it and waits for the merged status) against a raw pyzmq + msgpack
   DEALER/ROUTER round trip between a spawned process and this one, over the same
   transport.

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
"""
NOP, NOP_R3 = 0x540, 0x541
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
    callback = environment.callbacks[handle].out
    assert callback is not None

    def through_ring0(count: int) -> None:
        for _ in range(count):
            write(NOP, 1, 4)

    def direct(count: int) -> None:
        for _ in range(count):
            callback(0, 1, 4)

    def empty_loop(count: int) -> None:
        for _ in range(count):
            pass

    through_ring0(n)  # warm up: lookup snapshot, hints
    loop = _median_ns_per_op(empty_loop, n)
    ring0 = _median_ns_per_op(through_ring0, n)
    call = _median_ns_per_op(direct, n)
    return {
        "ring0_out_ns": ring0 - loop,
        "direct_callback_ns": call - loop,
        "loop_overhead_ns": loop,
        "ratio": (ring0 - loop) / (call - loop),
    }


def deferred_write(vm: VM, n: int) -> dict[str, float]:
    """Per-access cost of N deferred OUTs and of N ring-0 OUTs, timed inside the worker."""
    ops = parse_text(f"out {NOP_R3:#x} 4 0x1\n" * n + f"out {NOP:#x} 4 0x1\n" * n, "bench")
    result = vm.run(vm.split_workload(ops, "bench"))
    assert result.commits == n, result.commits
    total_ns = result.per_vcpu[0]["workload_ns"]
    return {"deferred_out_ns_incl_ring0_outs": total_ns / n, "commits": result.commits}


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
    # The deferred OUTs run in a real worker, so the ring-0 OUTs of the same workload
    # are subtracted with the in-process figure: what is left is the deferral.
    with VM(config, transport=args.transport) as vm:
        deferred = deferred_write(vm, args.n)
    deferred_ns = deferred["deferred_out_ns_incl_ring0_outs"] - fast["ring0_out_ns"]
    raw_ns = raw_round_trip(args.transport, args.n)

    figures = {
        "machine": {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                    "python": platform.python_version(), "placement": "unpinned (the scheduler decides)"},
        "transport": args.transport,
        "n": args.n,
        "fast_path": fast,
        "deferred_out_ns": deferred_ns,
        "raw_round_trip_ns": raw_ns,
        "deferral_vs_raw_ratio": deferred_ns / raw_ns,
        "deferral_vs_ring0_ratio": deferred_ns / fast["ring0_out_ns"],
    }
    print(f"ringsim bench_core  ({args.transport}, n={args.n}, {os.cpu_count()} CPUs, unpinned)")
    print(f"  OUT handled in ring-0          {fast['ring0_out_ns']:10.0f} ns")
    print(f"  direct call of the callback    {fast['direct_callback_ns']:10.0f} ns")
    print(f"    ratio ring-0 / direct        {fast['ratio']:10.1f} x")
    print(f"  deferred OUT (commit in R3)    {deferred_ns:10.0f} ns")
    print(f"  raw pyzmq+msgpack round trip   {raw_ns:10.0f} ns")
    print(f"    ratio deferred / raw         {figures['deferral_vs_raw_ratio']:10.2f} x")
    print(f"    ratio deferred / ring-0 OUT  {figures['deferral_vs_ring0_ratio']:10.0f} x")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
