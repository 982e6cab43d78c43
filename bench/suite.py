"""The benchmark suite behind ``ringsim bench``: what deferral costs, measured side by side.

Every comparison is measured in the same run, on the same transport and CPU placement
(both recorded with the figures).  The suite writes ``results.json``, ``results.md`` (the
tables) and PNG plots into its output folder.  It prints figures and ratios and checks
the targets the team set, as goals met or not: never a pass or fail.

Sections: the fast path against a direct call of the same callback; deferred read,
strict, posted and doorbell writes against a raw pyzmq+msgpack round trip / one-way send
(p50/p90/p99); write throughput per mode; lookup cost among 1 to 4096 ranges; deferral
rate and access latency against injected lock contention, for 1 and 2 vCPUs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import queue
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from fastpath.worker import Ring0Environment
from shared.iomtable import IomTable, PortLookup
from shared.trace import parse_text
from slowpath.config import VmConfig, parse_config
from slowpath.contention import ContentionInjector, LockHold
from slowpath.iom import IomManager
from slowpath.vm import VM

CONFIG = """
Name = "bench"
PostedWindow = 64
[Devices.testdev.0]
[Devices.testdev.0.Config]
IOBase = 0x540
MMIOBase = 0xfeb00000
[[Doorbells]]
Port = 0x548
"""
NOP, NOP_R3, RING3_ONLY = 0x540, 0x541, 0x548
DUTIES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
TARGETS = {
    "ring0_vs_direct": ("a ring-0-handled OUT costs <= 4x a direct call of the same callback", 4.0, "<="),
    "strict_vs_raw": ("a strict deferred write costs <= 1.25x the raw round trip", 1.25, "<="),
    "posted_vs_strict_throughput": ("posted writes reach >= 20x the throughput of strict ones", 20.0, ">="),
    "posted_vs_raw_oneway_throughput": ("posted writes reach >= 0.5x raw unbatched one-way records/s", 0.5, ">="),
    "lookup_4096_vs_1": ("a lookup among 4,096 ranges costs <= 1.2x one among a single range", 1.2, "<="),
}

Step = Callable[[str], None]


def _config() -> VmConfig:
    return parse_config(CONFIG, "bench.toml")


def _median_ns(fn: Callable[[int], None], n: int, repeats: int = 5) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        fn(n)
        samples.append((time.perf_counter_ns() - started) / n)
    return statistics.median(samples)


# -- the fast path ----------------------------------------------------------------------
def fast_path(n: int, transport: str, pin: str) -> dict[str, Any]:
    """An OUT handled in ring-0 (lookup, try-lock, statistics, callback) against a direct call."""
    with VM(_config(), transport=transport, pin=pin) as vm:
        environment = Ring0Environment(vm.worker_boot(0))
        try:
            return _time_fast_path(environment, vm.device("testdev").state.io_handle, n)
        finally:
            environment.close()


def _time_fast_path(environment: Ring0Environment, handle: int, n: int) -> dict[str, Any]:
    write = environment.dispatcher.write
    callback = environment.callbacks[handle].out
    assert callback is not None

    def through_ring0(count: int) -> None:
        for _ in range(count):
            write(NOP, 1, 4)

    def direct(count: int) -> None:
        for _ in range(count):
            callback(0, 1, 4)

    def empty(count: int) -> None:
        for _ in range(count):
            pass

    through_ring0(n)
    loop = _median_ns(empty, n)
    ring0 = _median_ns(through_ring0, n) - loop
    call = _median_ns(direct, n) - loop
    return {"ring0_out_ns": ring0, "direct_call_ns": call, "ratio": ring0 / call}


def lookup_cost(n: int) -> dict[str, Any]:
    """PortLookup.find among 1, 16, 256 and 4096 mapped one-port ranges (hits, cold hints)."""
    figures: dict[str, Any] = {}
    for ranges in (1, 16, 256, 4096):
        table = IomTable()
        manager = IomManager(table)
        for index in range(ranges):
            handle = manager.create(0, "bench", 1, f"r{index}", out=lambda offset, value, size: 0)
            manager.map(0, handle, index * 2)
        lookup = PortLookup(table)
        lookup.refresh()
        ports = [(index * 7919 % ranges) * 2 for index in range(1024)]
        find = lookup.find

        def probe(count: int, ports: list[int] = ports, find: Callable[[int, int], int] = find) -> None:
            for index in range(count):
                find(ports[index & 1023], 0)

        figures[str(ranges)] = _median_ns(probe, n)
    figures["ratio_4096_vs_1"] = figures["4096"] / figures["1"]
    return figures


# -- deferrals against the raw transport ----------------------------------------------------
def _run(vm: VM, text: str, mode: str) -> Any:
    vm.mode = mode
    return vm.run(vm.split_workload(parse_text(text, "bench"), "bench"))


def deferrals(n: int, transport: str, pin: str) -> dict[str, Any]:
    """Latency percentiles of each kind of deferral, and write throughput per mode."""
    figures: dict[str, Any] = {}
    with VM(_config(), transport=transport, pin=pin, time_accesses=True) as vm:
        for name, line, mode in (
            ("deferred_read", f"in {RING3_ONLY:#x} 4\n", "strict"),
            ("strict_write", f"out {RING3_ONLY:#x} 4 0x1\n", "strict"),
            ("posted_write", f"out {RING3_ONLY:#x} 4 0x1\n", "posted"),
            ("doorbell_write", f"out {RING3_ONLY:#x} 4 0x1\n", "doorbell"),
        ):
            result = _run(vm, line * n, mode)
            figures[name] = result.per_vcpu[0]["latency_ns"]
        placement = vm.placement()
    with VM(_config(), transport=transport, pin=pin) as vm:
        for mode in ("strict", "posted", "doorbell"):
            result = _run(vm, f"out {RING3_ONLY:#x} 4 0x1\n" * n, mode)
            assert vm.device("testdev").state.nop_writes >= n
            workload_ns = result.per_vcpu[0]["workload_ns"]
            figures[f"{mode}_writes_per_s"] = n / (workload_ns / 1e9)
    figures["placement"] = placement
    return figures


def _raw_client(endpoint: str, n: int, results: Any, one_way: bool, cpus: tuple[int, ...]) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, -1)
    socket.connect(endpoint)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    samples = []
    for seq in range(n + 200):
        started = time.perf_counter_ns()
        socket.send(packb([1, 8 if one_way else 3, seq, 0, 0x548, 4, 1]))
        if not one_way:
            unpackb(socket.recv())
        if seq >= 200:
            samples.append(time.perf_counter_ns() - started)
    if one_way:
        socket.send(packb([1, 11, n + 200, 0]))  # the end marker: the server answers it
        socket.recv()
    samples.sort()
    results.put({"p50": samples[len(samples) // 2], "p90": samples[len(samples) * 9 // 10],
                 "p99": samples[len(samples) * 99 // 100], "mean": sum(samples) // len(samples)})
    socket.close()
    context.term()


def raw_transport(n: int, transport: str, pin: str) -> dict[str, Any]:
    """The floor: a raw DEALER/ROUTER msgpack round trip and a one-way send, same transport."""
    figures: dict[str, Any] = {}
    cpus = sorted(os.sched_getaffinity(0))
    client_cpus: tuple[int, ...] = ()
    if pin != "none":  # the client plays the worker: with ring-3 (same) or on the next CPU (split)
        client_cpus = (cpus[0],) if pin == "same" or len(cpus) < 2 else (cpus[1],)
    for one_way in (False, True):
        directory = tempfile.mkdtemp(prefix="ringsim-bench-")
        context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        if transport == "inproc":
            figures["note"] = "inproc needs both ends in one process: the raw figures use a thread there"
        bind = {"ipc": f"ipc://{directory}/raw.sock", "tcp": "tcp://127.0.0.1:*", "inproc": "inproc://raw"}[transport]
        router.bind(bind)
        endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        spawn = multiprocessing.get_context("spawn")
        results: Any = spawn.Queue() if transport != "inproc" else queue.Queue()
        args = (endpoint if transport != "inproc" else bind, n, results, one_way, client_cpus)
        if transport == "inproc":
            client: Any = threading.Thread(target=_raw_client_inproc, args=(context, *args))
        else:
            client = spawn.Process(target=_raw_client, args=args)
        affinity = os.sched_getaffinity(0)
        if pin != "none":
            os.sched_setaffinity(0, {cpus[0]})
        started = 0
        try:
            client.start()
            received = 0
            while True:
                identity, frame = router.recv_multipart()
                if not received:
                    started = time.perf_counter_ns()  # from the first record: not the client's start-up
                message = msgpack.unpackb(frame)
                received += 1
                if not one_way or message[1] == 11:
                    router.send_multipart([identity, msgpack.packb([1, 64, message[2], 0, 0])])
                if (one_way and message[1] == 11) or (not one_way and received == n + 200):
                    break
            elapsed = time.perf_counter_ns() - started
            latency = results.get(timeout=120)
        finally:
            os.sched_setaffinity(0, affinity)
            client.join(10)
            router.close()
            context.term()
            shutil.rmtree(directory, ignore_errors=True)
        key = "one_way" if one_way else "round_trip"
        figures[key] = latency
        if one_way:
            figures["one_way_records_per_s"] = (n + 199) / (elapsed / 1e9)
    return figures


def _raw_client_inproc(context: zmq.Context[Any], *args: Any) -> None:
    endpoint, n, results, one_way, _cpus = args
    socket = context.socket(zmq.DEALER)
    socket.connect(endpoint)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    samples = []
    for seq in range(n + 200):
        started = time.perf_counter_ns()
        socket.send(packb([1, 8 if one_way else 3, seq, 0, 0x548, 4, 1]))
        if not one_way:
            unpackb(socket.recv())
        if seq >= 200:
            samples.append(time.perf_counter_ns() - started)
    if one_way:
        socket.send(packb([1, 11, n + 200, 0]))
        socket.recv()
    samples.sort()
    results.put({"p50": samples[len(samples) // 2], "p90": samples[len(samples) * 9 // 10],
                 "p99": samples[len(samples) * 99 // 100], "mean": sum(samples) // len(samples)})
    socket.close()


# -- contention -----------------------------------------------------------------------------
def contention(n: int, transport: str, pin: str, duties: tuple[float, ...] = DUTIES) -> dict[str, Any]:
    """Deferral rate and mean access latency of ring-0 NOP writes against testdev's lock held
    by ring-3 for a duty cycle of each 2 ms period, with 1 and 2 vCPUs."""
    curves: dict[str, Any] = {}
    for vcpus in (1, 2):
        points = []
        with VM(_config(), vcpus=vcpus, transport=transport, pin=pin) as vm:
            text = "".join(f"@{v} out {NOP:#x} 4 0x1\n" * n for v in range(vcpus))
            for duty in duties:
                holds = [LockHold("testdev#0", duty, 0.002)] if duty else []
                with ContentionInjector(vm, holds=holds):
                    result = vm.run(vm.split_workload(parse_text(text, "bench"), "bench"))
                deferred = sum(result.deferred.values())
                workload_ns = max(row["workload_ns"] for row in result.per_vcpu)
                points.append({"duty": duty, "deferral_rate": deferred / result.accesses,
                               "latency_ns": workload_ns / n})
        curves[str(vcpus)] = points
    return curves


# -- the suite ------------------------------------------------------------------------------
def _met(name: str, value: float) -> dict[str, Any]:
    description, bound, sense = TARGETS[name]
    met = value <= bound if sense == "<=" else value >= bound
    return {"target": description, "value": round(value, 3), "met": met}


def run_suite(out: Path, *, quick: bool, transport: str, pin: str, step: Step | None = None) -> dict[str, Any]:
    """Run every section, write results.json, results.md and plots into *out*; the figures."""
    out.mkdir(parents=True, exist_ok=True)
    say = step or (lambda _name: None)
    n_fast, n_io, n_contention = (20_000, 300, 300) if quick else (200_000, 5_000, 30_000)
    vm_transport = "ipc" if transport == "inproc" else transport
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "transport": transport,
        "vm_transport": vm_transport,
        "pin": pin,
        "quick": quick,
    }
    say("fast path")
    results["fast_path"] = fast_path(n_fast, vm_transport, pin)
    say("lookup cost")
    results["lookup_ns"] = lookup_cost(n_fast // 4)
    say("deferrals")
    results["deferrals"] = deferrals(n_io, vm_transport, pin)
    say("raw transport")
    results["raw"] = raw_transport(n_io, transport, pin)
    say("contention")
    results["contention"] = contention(n_contention, vm_transport, pin, DUTIES[::2] if quick else DUTIES)
    deferrals_ = results["deferrals"]
    raw = results["raw"]
    results["ratios"] = {
        "ring0_vs_direct": results["fast_path"]["ratio"],
        "strict_vs_raw": deferrals_["strict_write"]["p50"] / raw["round_trip"]["p50"],
        "deferred_read_vs_raw": deferrals_["deferred_read"]["p50"] / raw["round_trip"]["p50"],
        "posted_vs_raw_one_way": deferrals_["posted_write"]["p50"] / raw["one_way"]["p50"],
        "doorbell_vs_raw_one_way": deferrals_["doorbell_write"]["p50"] / raw["one_way"]["p50"],
        "posted_vs_strict_throughput": deferrals_["posted_writes_per_s"] / deferrals_["strict_writes_per_s"],
        "doorbell_vs_strict_throughput": deferrals_["doorbell_writes_per_s"] / deferrals_["strict_writes_per_s"],
        "posted_vs_raw_oneway_throughput": deferrals_["posted_writes_per_s"] / raw["one_way_records_per_s"],
        "lookup_4096_vs_1": results["lookup_ns"]["ratio_4096_vs_1"],
    }
    results["targets"] = {name: _met(name, results["ratios"][name]) for name in TARGETS}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    say("plots")
    plot(results, out)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The figures as markdown tables (what the README quotes)."""
    d, raw, r = results["deferrals"], results["raw"], results["ratios"]
    place = d["placement"]
    lines = [
        f"Transport {results['transport']}, placement `--pin {results['pin']}` (ring-3 on CPUs "
        f"{place['ring3_cpus']}, workers on {place['worker_cpus']}), {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}{', quick' if results['quick'] else ''}.",
        "",
        "| access | p50 ns | p90 ns | p99 ns | vs raw |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, floor, ratio in (
        ("deferred_read", "round_trip", r["deferred_read_vs_raw"]),
        ("strict_write", "round_trip", r["strict_vs_raw"]),
        ("posted_write", "one_way", r["posted_vs_raw_one_way"]),
        ("doorbell_write", "one_way", r["doorbell_vs_raw_one_way"]),
    ):
        lat = d[name]
        lines.append(f"| {name.replace('_', ' ')} | {lat['p50']} | {lat['p90']} | {lat['p99']} | "
                     f"{ratio:.2f}x raw {floor.replace('_', ' ')} |")
    for name in ("round_trip", "one_way"):
        lat = raw[name]
        lines.append(f"| raw {name.replace('_', ' ')} | {lat['p50']} | {lat['p90']} | {lat['p99']} | 1.00x |")
    fast = results["fast_path"]
    lines += [
        "",
        "| figure | value |",
        "|---|---:|",
        f"| OUT handled in ring-0 | {fast['ring0_out_ns']:.0f} ns |",
        f"| direct call of the same callback | {fast['direct_call_ns']:.0f} ns |",
        f"| writes/s strict / posted / doorbell | {d['strict_writes_per_s']:.0f} / {d['posted_writes_per_s']:.0f} / "
        f"{d['doorbell_writes_per_s']:.0f} |",
        f"| raw one-way records/s | {raw['one_way_records_per_s']:.0f} |",
        "| lookup ns among 1 / 16 / 256 / 4096 ranges | "
        + " / ".join(f"{results['lookup_ns'][k]:.0f}" for k in ("1", "16", "256", "4096")) + " |",
        "",
        "| target | value | met |",
        "|---|---:|:-:|",
    ]
    for target in results["targets"].values():
        lines.append(f"| {target['target']} | {target['value']} | {'yes' if target['met'] else 'no'} |")
    lines += ["", "| vCPUs | lock duty | deferral rate | mean access ns |", "|---:|---:|---:|---:|"]
    for vcpus, points in results["contention"].items():
        for point in points:
            lines.append(
                f"| {vcpus} | {point['duty']:.0%} | {point['deferral_rate']:.1%} | {point['latency_ns']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> None:
    """PNG plots: contention curves, latency percentiles, lookup cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_axis, latency_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for vcpus, points in results["contention"].items():
        duties = [100 * p["duty"] for p in points]
        rate_axis.plot(duties, [100 * p["deferral_rate"] for p in points], marker="o", label=f"{vcpus} vCPU")
        latency_axis.plot(duties, [p["latency_ns"] / 1000 for p in points], marker="o", label=f"{vcpus} vCPU")
    rate_axis.set(xlabel="device lock held by ring-3 (% of each 2 ms)", ylabel="accesses deferred (%)",
                  title="deferral rate under contention")
    latency_axis.set(xlabel="device lock held by ring-3 (% of each 2 ms)", ylabel="mean access (µs)",
                     title="access latency under contention")
    rate_axis.legend()
    latency_axis.legend()
    fig.tight_layout()
    fig.savefig(out / "contention.png", dpi=100)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(7, 4))
    names = ["deferred_read", "strict_write", "posted_write", "doorbell_write"]
    rows = [results["deferrals"][name] for name in names] + [results["raw"]["round_trip"], results["raw"]["one_way"]]
    labels = [name.replace("_", "\n") for name in names] + ["raw\nround trip", "raw\none way"]
    for offset, percentile in enumerate(("p50", "p90", "p99")):
        axis.bar([i + offset * 0.27 for i in range(len(rows))], [row[percentile] / 1000 for row in rows], 0.27,
                 label=percentile)
    axis.set_xticks([i + 0.27 for i in range(len(rows))], labels)
    axis.set(ylabel="µs", title="what a deferral costs")
    axis.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(5, 3.5))
    sizes = ["1", "16", "256", "4096"]
    axis.plot([int(s) for s in sizes], [results["lookup_ns"][s] for s in sizes], marker="o")
    axis.set(xscale="log", xlabel="mapped ranges", ylabel="ns per lookup", title="lookup cost")
    fig.tight_layout()
    fig.savefig(out / "lookup.png", dpi=100)
    plt.close(fig)
