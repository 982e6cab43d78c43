"""What a run leaves: the statistics summed over every row, the replay checks, the guest's output.

:func:`build_result` reads the statistics segment after the workers are gone, sums the
rows of every writer, and combines them with what each worker reported in its ``done``
message.  :class:`RunResult` renders as the human summary or as one JSON object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shared.stats import (
    G_COUNT,
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_DOORBELLS,
    G_IOPORT_COMMITS,
    G_IOPORT_IN,
    G_IOPORT_INS,
    G_IOPORT_OUT,
    G_IOPORT_OUTS,
    G_MMIO_COMMITS,
    G_MMIO_COMMITS_DIRECT,
    G_MMIO_COMMITS_PGM,
    G_MMIO_DEV_LOCK_CONTENTION_R0,
    G_MMIO_READS,
    G_MMIO_SPLIT,
    G_MMIO_STALE,
    G_MMIO_WRITES,
    G_POSTED,
    G_POSTED_WINDOW_FULL,
    G_RING0_HANDLED,
    G_RING3_ACCESSES,
    G_SYNCS,
    G_UNASSIGNED,
    L_CONTENTION_R3,
    L_CONTENTION_R3_WAIT_NS,
    L_CONTENTION_RZ_BUSY,
    L_ENTERS_R3,
    L_ENTERS_RZ,
    M_COMMIT_RZ_TO_R3,
    M_COMPLICATED_READS,
    M_COMPLICATED_WRITES,
    M_FF_OR_00_READS,
    M_IGNORED_WRITES,
    M_READ_RZ_TO_R3,
    M_READS_R3,
    M_READS_RZ,
    M_WRITES_R3,
    M_WRITES_RZ,
    P_COUNT,
    P_IN_R3,
    P_IN_RZ,
    P_IN_RZ_TO_R3,
    P_OUT_R3,
    P_OUT_RZ,
    P_OUT_RZ_TO_R3,
    P_TOTAL,
)
from shared.status import VINF_SUCCESS, is_em_status, status_name

if TYPE_CHECKING:
    from slowpath.vm import VM

DEFER_REASONS = {
    "no_ring0_handler": G_DEFER_NO_R0_HANDLER,
    "device_asked": G_DEFER_DEVICE_ASKED,
    "device_lock_busy": G_DEFER_DEVICE_LOCK_BUSY,
    "iom_lock_busy": G_DEFER_IOM_LOCK_BUSY,
    "doorbell": G_DOORBELLS,  # doorbell mode: the write skipped ring-0 and only rang ring-3
}


@dataclass
class RunResult:
    vm: str
    vcpus: int
    accesses: int
    ring0_handled: int
    deferred: dict[str, int]
    commits: int
    mode: str
    posted: dict[str, int]
    unassigned: int
    mmio: dict[str, int]
    ring3_accesses: int
    final_status: dict[str, Any]
    wall_s: float
    regions: list[dict[str, Any]]
    locks: dict[str, dict[str, int]]
    replay: dict[str, Any]
    console: dict[str, str]
    exit_status: int | None
    resets: int
    per_vcpu: list[dict[str, Any]]
    merges: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    contention: dict[str, Any] = field(default_factory=dict)  # what --contention injected, when it did

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """The human summary."""
        lines = [
            f"VM {self.vm!r}: {self.vcpus} vCPU(s), {self.wall_s:.3f} s wall",
            f"  accesses            {self.accesses:>10}",
            f"  handled in ring-0   {self.ring0_handled:>10}",
            f"  deferred to ring-3  {sum(self.deferred.values()):>10}",
        ]
        for reason, count in self.deferred.items():
            lines.append(f"    {reason.replace('_', ' '):<18}{count:>10}")
        lines += [
            f"  pending writes committed {self.commits:>5}   (mode {self.mode}"
            + (f": {self.posted['posted_writes']} posted, {self.posted['doorbells']} doorbells,"
               f" {self.posted['syncs']} syncs, {self.posted['window_full_fell_back_to_strict']} window-full,"
               f" {self.posted['drained_at_power_off']} drained at power-off)"
               if self.mode != "strict" else ")"),
            f"  final status        {self.final_status['name']} ({self.final_status['rc']})",
        ]
        if self.exit_status is not None:
            lines.append(f"  guest exit status   {self.exit_status}")
        replay = self.replay
        timed = replay["time_dependent"]
        lines.append(
            f"  reads checked       {replay['reads_checked']:>10}   matched {replay['reads_matched']}"
            + (f"   (time-dependent: {timed['reads_checked']} checked, {timed['reads_matched']} matched)"
               if timed["reads_checked"] else "")
        )
        units = replay["units"] or 1
        lines.append(
            f"  units moved         {replay['units']:>10}   on devices {replay['units_on_devices']}"
            f" ({100 * replay['units_on_devices'] / units:.1f}%), finished in ring-0 {replay['units_ring0']}"
            f" ({100 * replay['units_ring0'] / units:.1f}%)"
        )
        if len(replay["per_device"]) > 1:
            lines.append("  replay by device      accesses      units   checked   matched   timed  matched")
            for name, row in sorted(replay["per_device"].items(), key=lambda item: -item[1]["units"]):
                lines.append(
                    f"    {name[:18]:<18}{row['accesses']:>10} {row['units']:>10} {row['reads_checked']:>9}"
                    f" {row['reads_matched']:>9} {row['time_dependent_checked']:>7} {row['time_dependent_matched']:>8}"
                )
        checked_ports = [(key, row) for key, row in replay["per_port"].items()
                         if row["reads_checked"] or row["time_dependent_checked"]]
        if len(checked_ports) > 1:
            lines.append("  replay by port      device               accesses  checked  matched  timed  matched")
            for key, row in checked_ports[:40]:
                lines.append(
                    f"    {key:<16}{row['device'][:18]:<18}{row['accesses']:>10} {row['reads_checked']:>8}"
                    f" {row['reads_matched']:>8} {row['time_dependent_checked']:>6} {row['time_dependent_matched']:>8}"
                )
            if len(checked_ports) > 40:
                lines.append(f"    ... {len(checked_ports) - 40} more in --json (replay.per_port)")
        for mismatch in replay["mismatches"][:10]:
            lines.append(
                f"    line {mismatch['line']}: {mismatch['access']} {mismatch['address']:#x}/{mismatch['size']} "
                f"expected {_show(mismatch['expected'])}, got {_show(mismatch['got'])}"
            )
        lines.append("")
        lines.append("  region          ports      R0  in-R0 out-R0  in-R3 out-R3 in-R0>R3 out-R0>R3")
        for region in self.regions:
            if "ports" not in region:
                continue
            lines.append(
                f"  {region['description'][:14]:<14}  {region['ports']:<9}  {'yes' if region['ring0'] else 'no':<3}"
                f" {region['in_r0']:>6} {region['out_r0']:>6} {region['in_r3']:>6} {region['out_r3']:>6}"
                f" {region['in_r0_to_r3']:>8} {region['out_r0_to_r3']:>9}"
            )
        mmio_regions = [region for region in self.regions if "mmio" in region]
        if mmio_regions:
            lines.append("")
            lines.append("  region          mapping                  R0   rd-R0  wr-R0  rd-R3  wr-R3 rd>R3 wr>R3 cmplx")
            for region in mmio_regions:
                lines.append(
                    f"  {region['description'][:14]:<14}  {region['mmio']:<23}  {'yes' if region['ring0'] else 'no':<3}"
                    f" {region['read_r0']:>6} {region['write_r0']:>6} {region['read_r3']:>6} {region['write_r3']:>6}"
                    f" {region['read_r0_to_r3']:>5} {region['write_r0_to_r3']:>5}"
                    f" {region['complicated_reads'] + region['complicated_writes']:>5}"
                )
            mmio = self.mmio
            lines.append(
                f"  MMIO commits: {mmio['commits']} ({mmio['commits_direct']} direct, {mmio['commits_pgm']} by lookup);"
                f" stale mappings {mmio['stale_mappings']}; accesses split across regions {mmio['split_accesses']}"
            )
        for merge in self.merges[:5]:
            lines.append(
                f"  vCPU {merge['vcpu']}: merged {merge['before']} with {merge['commit']} into {merge['merged']}"
            )
        for name, text in self.console.items():
            if text:
                lines.append(f"\n  output of {name}:")
                lines.extend(f"    | {_printable(line)}" for line in text.splitlines())
        if self.contention:
            lines.append(f"  contention injected: {json.dumps(self.contention, default=str)}")
        for error in self.errors:
            lines.append(f"  error: {error}")
        return "\n".join(lines)


def _printable(text: str) -> str:
    """Guest output with control characters (terminal escapes) made visible."""
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in text)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 16 else value[:16].hex() + "..."
    return f"{value:#x}" if isinstance(value, int) else repr(value)


def _sum_rows(vm: VM, ring3: bool) -> list[int]:
    words = vm.stats.row_words
    total = [0] * words
    for vcpu in range(vm.vcpu_count):
        base = vm.stats.row_base(vcpu, ring3)
        for i, value in enumerate(vm.counters[base : base + words].tolist()):
            total[i] += value
    return total


REPLAY_FIELDS = ("accesses", "units", "reads_checked", "reads_matched", "time_dependent_checked",
                 "time_dependent_matched")


def _owner(vm: VM, key: str) -> str:
    """The device instance whose region holds a replay key's port or MMIO page."""
    if key.startswith("mmio:"):
        address = int(key[5:], 16)
        for mmio_region in vm.iom.mmio_regions:
            entry = vm.table.mmio_entries[mmio_region.handle]
            if entry.mapped and entry.mapping <= address < entry.mapping + mmio_region.size:
                return mmio_region.device
        return "unassigned"
    port = int(key, 16)
    for region in vm.iom.regions:
        entry = vm.table.entries[region.handle]
        if entry.mapped and entry.port <= port < entry.port + region.count:
            return region.device
    return "unassigned"


def _replay_summary(vm: VM, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay checks summed over vCPUs, per port / MMIO page and per device."""
    per_key: dict[str, list[int]] = {}
    mismatches: list[dict[str, Any]] = []
    for vcpu, report in enumerate(reports):
        for key, counts in report.get("counts", {}).items():
            total = per_key.setdefault(key, [0] * len(REPLAY_FIELDS))
            for i, value in enumerate(counts):
                total[i] += value
        for line, access, address, size, expected, got in report.get("mismatches", []):
            mismatches.append(
                {"vcpu": vcpu, "line": line, "access": access, "address": address, "size": size,
                 "expected": expected, "got": got}
            )
    mismatches.sort(key=lambda m: m["line"])
    per_device: dict[str, list[int]] = {}
    per_port = {}
    for key, counts in sorted(per_key.items()):
        owner = _owner(vm, key)
        per_port[key] = {"device": owner, **dict(zip(REPLAY_FIELDS, counts, strict=True))}
        total = per_device.setdefault(owner, [0] * len(REPLAY_FIELDS))
        for i, value in enumerate(counts):
            total[i] += value
    sums = [sum(counts[i] for counts in per_key.values()) for i in range(len(REPLAY_FIELDS))]
    units_on_devices = sums[1] - per_device.get("unassigned", [0, 0])[1]
    units_ring0 = sum(report.get("units_ring0", 0) for report in reports)
    units_ring3 = sum(report.get("units_ring3", 0) for report in reports)
    return {
        "accesses": sums[0],
        "units": sums[1],
        "units_on_devices": units_on_devices,
        "units_ring0": units_ring0,
        "units_ring3": units_ring3,
        "reads_checked": sums[2],
        "reads_matched": sums[3],
        "time_dependent": {"reads_checked": sums[4], "reads_matched": sums[5]},
        "mismatches": mismatches[:20],
        "per_port": per_port,
        "per_device": {name: dict(zip(REPLAY_FIELDS, counts, strict=True)) for name, counts in per_device.items()},
    }


def build_result(vm: VM, wall_s: float) -> RunResult:
    ring0 = _sum_rows(vm, ring3=False)
    ring3 = _sum_rows(vm, ring3=True)
    both = [a + b for a, b in zip(ring0, ring3, strict=True)]
    server = vm.server

    regions = []
    for region in vm.iom.regions:
        entry = vm.table.entries[region.handle]
        sums = [0] * P_COUNT
        for port in range(region.count):
            base = G_COUNT + (entry.stats_index + port) * P_COUNT
            for i in range(P_COUNT):
                sums[i] += both[base + i]
        regions.append(
            {
                "handle": region.handle,
                "device": region.device,
                "description": region.description,
                "ports": f"{entry.port:04x}-{entry.port + region.count - 1:04x}" if entry.mapped else "unmapped",
                "ring0": bool(entry.ring0_callbacks),
                "total": sums[P_TOTAL],
                "in_r0": sums[P_IN_RZ],
                "out_r0": sums[P_OUT_RZ],
                "in_r3": sums[P_IN_R3],
                "out_r3": sums[P_OUT_R3],
                "in_r0_to_r3": sums[P_IN_RZ_TO_R3],
                "out_r0_to_r3": sums[P_OUT_RZ_TO_R3],
            }
        )

    for mmio_region in vm.iom.mmio_regions:
        entry = vm.table.mmio_entries[mmio_region.handle]
        base = vm.stats.mmio_base(0, entry.stats_index)
        regions.append(
            {
                "handle": mmio_region.handle,
                "device": mmio_region.device,
                "description": mmio_region.description,
                "mmio": f"{entry.mapping:#x}-{entry.mapping + mmio_region.size - 1:#x}" if entry.mapped else "unmapped",
                "ring0": bool(entry.ring0_callbacks),
                "total": sum(both[base + f] for f in (M_READS_RZ, M_READS_R3, M_WRITES_RZ, M_WRITES_R3)),
                "read_r0": both[base + M_READS_RZ],
                "write_r0": both[base + M_WRITES_RZ],
                "read_r3": both[base + M_READS_R3],
                "write_r3": both[base + M_WRITES_R3],
                "read_r0_to_r3": both[base + M_READ_RZ_TO_R3],
                "write_r0_to_r3": both[base + M_COMMIT_RZ_TO_R3],  # every ring-0 write deferral is a commit
                "complicated_reads": both[base + M_COMPLICATED_READS],
                "complicated_writes": both[base + M_COMPLICATED_WRITES],
                "ff_or_00_reads": both[base + M_FF_OR_00_READS],
                "ignored_writes": both[base + M_IGNORED_WRITES],
            }
        )

    locks = {}
    for instance in vm.instances:
        base = vm.stats.lock_base(0, instance.index)
        locks[instance.name] = {
            "enters_r0": both[base + L_ENTERS_RZ],
            "busy_r0": both[base + L_CONTENTION_RZ_BUSY],
            "enters_r3": both[base + L_ENTERS_R3],
            "contention_r3": both[base + L_CONTENTION_R3],
            "wait_r3_ns": both[base + L_CONTENTION_R3_WAIT_NS],
        }

    per_vcpu = []
    errors = list(server.rejections)
    merges = []
    for vcpu, record in enumerate(server.vcpus):
        report = record.report
        errors += [f"vCPU {vcpu}: {error}" for error in report.get("callback_errors", [])]
        errors += [f"ring-3 for vCPU {vcpu}: {error}" for error in vm.port_io[vcpu].callback_errors]
        errors += [f"ring-3 for vCPU {vcpu}: {error}" for error in vm.mmio_io[vcpu].callback_errors]
        per_vcpu.append(
            {
                "vcpu": vcpu,
                "status": {"rc": record.status, "name": status_name(record.status)},
                "executed": report.get("executed", 0),
                "messages": report.get("messages", 0),
                "failures": report.get("failures", 0),
                "units_ring0": report.get("units_ring0", 0),
                "units_ring3": report.get("units_ring3", 0),
                "workload_ns": report.get("wall_ns", 0),
                "latency_ns": report.get("latency_ns", {}),
            }
        )
        merges += [
            {"vcpu": vcpu, "before": status_name(a), "commit": status_name(b), "merged": status_name(c)}
            for a, b, c in record.merges
        ]

    final = server.power_off_status
    if final is None:
        em = [record.status for record in server.vcpus if is_em_status(record.status)]
        final = min(em) if em else VINF_SUCCESS

    return RunResult(
        vm=vm.config.name,
        vcpus=vm.vcpu_count,
        accesses=sum(
            ring0[i] for i in (G_IOPORT_IN, G_IOPORT_OUT, G_IOPORT_INS, G_IOPORT_OUTS, G_MMIO_READS, G_MMIO_WRITES)
        ),
        ring0_handled=ring0[G_RING0_HANDLED],
        deferred={reason: ring0[index] for reason, index in DEFER_REASONS.items()},
        commits=ring3[G_IOPORT_COMMITS] + ring3[G_MMIO_COMMITS],
        unassigned=both[G_UNASSIGNED],
        mode=vm.mode,
        posted={
            "posted_writes": ring0[G_POSTED],
            "window_full_fell_back_to_strict": ring0[G_POSTED_WINDOW_FULL],
            "doorbells": ring0[G_DOORBELLS],
            "syncs": ring0[G_SYNCS],
            "drained_at_power_off": server.drained,
        },
        mmio={
            "reads": ring0[G_MMIO_READS],
            "writes": ring0[G_MMIO_WRITES],
            "commits": ring3[G_MMIO_COMMITS],
            "commits_direct": ring3[G_MMIO_COMMITS_DIRECT],
            "commits_pgm": ring3[G_MMIO_COMMITS_PGM],
            "stale_mappings": both[G_MMIO_STALE],
            "stale_dropped_in_ring3": ring3[G_MMIO_STALE],  # ring-0's stale accesses were redone in ring-3
            "split_accesses": both[G_MMIO_SPLIT],
            "device_lock_contention_r0": ring0[G_MMIO_DEV_LOCK_CONTENTION_R0],
        },
        ring3_accesses=ring3[G_RING3_ACCESSES],
        final_status={"rc": final, "name": status_name(final)},
        wall_s=wall_s,
        regions=regions,
        locks=locks,
        replay=_replay_summary(vm, [record.report for record in server.vcpus]),
        console=vm.console_output(),
        exit_status=vm.services.exit_status,
        resets=server.resets,
        per_vcpu=per_vcpu,
        merges=merges,
        errors=errors,
    )
