"""Showing the path of an access: ``--explain`` lines and the ``--timeline`` trace-event file.

Both are built after a run from two journals: each vCPU worker's (when an access started
and ended, what ring-0 decided, the request it sent) and ring-3's (when it received and
answered each request, what it did, the statuses it merged).  A request's vCPU and
sequence number tie the two together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.stats import (
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_FAILED,
    G_RING0_HANDLED,
    G_UNASSIGNED,
)
from shared.status import (
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    status_name,
)
from shared.trace import IN, INS, KIND_NAMES, MMIO_READ, MMIO_WRITE, OUT, OUTS
from shared.wire import (
    OP_COMMIT,
    OP_IOPORT_READ,
    OP_IOPORT_READ_STRING,
    OP_IOPORT_WRITE_STRING,
    OP_MMIO_READ,
)

if TYPE_CHECKING:
    from slowpath.vm import VM

# What ring-0 returns when it defers each kind of access.
DEFERRAL_STATUS = {
    IN: VINF_IOM_R3_IOPORT_READ,
    OUT: VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    INS: VINF_IOM_R3_IOPORT_READ,
    OUTS: VINF_IOM_R3_IOPORT_WRITE,
    MMIO_READ: VINF_IOM_R3_MMIO_READ,
    MMIO_WRITE: VINF_IOM_R3_MMIO_COMMIT_WRITE,
}
DEFERRAL_MEANING = {
    VINF_IOM_R3_IOPORT_READ: "redo the read in ring-3",
    VINF_IOM_R3_IOPORT_COMMIT_WRITE: "the OUT retires, its value waits as the vCPU's pending write",
    VINF_IOM_R3_IOPORT_WRITE: "finish the string write in ring-3",
    VINF_IOM_R3_MMIO_READ: "redo the MMIO read in ring-3",
    VINF_IOM_R3_MMIO_COMMIT_WRITE: "the write retires, its bytes wait as the vCPU's pending MMIO write",
}
RING3_ACTION = {
    OP_IOPORT_READ: "re-executed the IN",
    OP_COMMIT: "committed the pending write",
    OP_IOPORT_READ_STRING: "finished the REP INS",
    OP_IOPORT_WRITE_STRING: "finished the REP OUTS",
    OP_MMIO_READ: "re-executed the MMIO read",
}


def _device(vm: VM, kind: int, address: int) -> str:
    """The device instance whose region holds *address*, or "nothing"."""
    if kind in (MMIO_READ, MMIO_WRITE):
        for mmio_region in vm.iom.mmio_regions:
            entry = vm.table.mmio_entries[mmio_region.handle]
            if entry.mapped and entry.mapping <= address < entry.mapping + mmio_region.size:
                return mmio_region.device
        return "nothing"
    for region in vm.iom.regions:
        entry = vm.table.entries[region.handle]
        if entry.mapped and entry.port <= address < entry.port + region.count:
            return region.device
    return "nothing"


def _decision(outcome: int, device: str) -> str:
    return {
        G_RING0_HANDLED: f"{device}'s ring-0 callback handled it",
        G_UNASSIGNED: "no device decodes it: a read gives all ones, a write vanishes",
        G_DEFER_NO_R0_HANDLER: f"{device} has no ring-0 callback for it",
        G_DEFER_DEVICE_ASKED: f"{device}'s ring-0 callback asked for ring-3",
        G_DEFER_DEVICE_LOCK_BUSY: f"{device}'s lock was taken",
        G_DEFER_IOM_LOCK_BUSY: "the IOM lock was taken (ring-3 was changing the registration table)",
        G_FAILED: "it failed in ring-0",
    }.get(outcome, "?")


def _access(kind: int, address: int, size: int, value: Any, got: Any) -> str:
    where = f"{address:#06x}" if kind in (IN, OUT, INS, OUTS) else f"{address:#x}"
    name = KIND_NAMES[kind].upper()
    if kind in (OUT, MMIO_WRITE):
        return f"{name} {where} <- {value:#x} ({size} B)"
    if kind == OUTS:
        return f"{name} {where} x{value} ({size} B)"
    if kind == INS:
        return f"{name} {where} x{value} ({size} B)"
    shown = f" -> {got:#x}" if isinstance(got, int) else ""
    return f"{name} {where} ({size} B){shown}"


def _us(ns: int) -> str:
    return f"{ns / 1000:.1f} µs"


def explain_lines(vm: VM) -> list[str]:
    """One line per journalled access: its journey through both tiers, readable without the source."""
    ring3 = {(entry[0], entry[1]): entry for entry in vm.server.journal}
    lines = []
    for vcpu, entries in enumerate(vm.journals):
        for index, kind, address, size, value, started, ended, outcome, sent, status, got in entries:
            device = _device(vm, kind, address)
            access = _access(kind, address, size, value, got)
            line = f"#{index:<4} vCPU{vcpu} {access:<34} ring-0: {_decision(outcome, device)}"
            if sent is None:
                line += f" -> {status_name(status)}  [ring-0 {_us(ended - started)}]"
            else:
                op, seq, sent_at, replied_at, _args = sent
                deferral = DEFERRAL_STATUS[kind]
                line += f" -> {status_name(deferral)} ({DEFERRAL_MEANING[deferral]})"
                served = ring3.get((vcpu, seq))
                if served is not None:
                    *_, received, done, r3_status, merges = served
                    action = RING3_ACTION.get(op, "served it")
                    line += f" | ring-3 {action} on {device}"
                    for before, commit, merged in merges:
                        line += f", merged {status_name(before)} with {status_name(commit)} into {status_name(merged)}"
                    if not merges:
                        line += f" -> {status_name(r3_status)}"
                    line += (
                        f"  [ring-0 {_us(sent_at - started)}, ring-3 {_us(done - received)},"
                        f" round trip {_us(replied_at - sent_at)}]"
                    )
                else:
                    line += f" -> {status_name(status)}  [ring-0 {_us(sent_at - started)}]"
            lines.append(line)
    return lines


def timeline(vm: VM) -> dict[str, Any]:
    """A Chrome / Perfetto trace-event document of the journalled accesses.

    One track per vCPU (ring-0 work, then the wait for ring-3), one for ring-3 (what it
    did for each request), and a flow arrow from each deferral to the ring-3 work it caused.
    Times are microseconds of the VM's virtual clock.
    """
    base = vm.services.clock_base_ns
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "vCPU workers (ring-0)"}},
        {"name": "process_name", "ph": "M", "pid": 2, "tid": 0, "args": {"name": "VM process (ring-3)"}},
        {"name": "thread_name", "ph": "M", "pid": 2, "tid": 0, "args": {"name": "ring-3 server"}},
    ]

    def us(ns: int) -> float:
        return (ns - base) / 1000

    ring3 = {(entry[0], entry[1]): entry for entry in vm.server.journal}
    for vcpu, entries in enumerate(vm.journals):
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": vcpu, "args": {"name": f"vCPU {vcpu}"}})
        for index, kind, address, _size, _value, started, ended, outcome, sent, status, _got in entries:
            device = _device(vm, kind, address)
            name = f"{KIND_NAMES[kind].upper()} {address:#x}"
            ring0_end = ended if sent is None else sent[2]
            events.append({
                "name": name, "cat": "ring0", "ph": "X", "pid": 1, "tid": vcpu,
                "ts": us(started), "dur": max(ring0_end - started, 0) / 1000,
                "args": {"access": index, "device": device, "ring0": _decision(outcome, device),
                         "status": status_name(status if sent is None else DEFERRAL_STATUS[kind])},
            })
            if sent is None:
                continue
            op, seq, sent_at, replied_at, _args = sent
            events.append({
                "name": "wait for ring-3", "cat": "wait", "ph": "X", "pid": 1, "tid": vcpu,
                "ts": us(sent_at), "dur": max(replied_at - sent_at, 0) / 1000,
                "args": {"access": index, "request": seq, "status": status_name(status)},
            })
            served = ring3.get((vcpu, seq))
            if served is None:
                continue
            *_, received, done, r3_status, merges = served
            flow = (vcpu << 32) | seq
            events.append({"name": "deferral", "cat": "deferral", "ph": "s", "id": flow, "pid": 1, "tid": vcpu,
                           "ts": us(sent_at)})
            events.append({
                "name": f"{RING3_ACTION.get(op, 'serve')} ({device})", "cat": "ring3", "ph": "X", "pid": 2, "tid": 0,
                "ts": us(received), "dur": max(done - received, 0) / 1000,
                "args": {"vcpu": vcpu, "access": index, "request": seq, "status": status_name(r3_status),
                         "merges": [[status_name(s) for s in merge] for merge in merges]},
            })
            events.append({"name": "deferral", "cat": "deferral", "ph": "f", "bp": "e", "id": flow, "pid": 2, "tid": 0,
                           "ts": us(received)})
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": {"vm": vm.config.name}}


def write_timeline(vm: VM, path: Path) -> None:
    path.write_text(json.dumps(timeline(vm)))
