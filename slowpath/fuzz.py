"""Hostile-guest fuzzing: seeded random port, MMIO and PCI accesses against a real VM, with invariants.

A hypervisor assumes its guest is hostile: whatever a guest does with IN, OUT, INS, OUTS
and MMIO, the monitor must answer every access with a defined status and keep its own
books straight.  :class:`GuestFuzzer` makes seeded, reproducible accesses aimed at every
port range and MMIO region the VM registered (read off its registration tables), at
addresses nothing holds, at the edges between the two, and at the windows the guest
itself programs into PCI BARs; every size, valid or not (ports 0-8, MMIO 0-16), string
accesses of 1-4096 units, and PCI configuration pokes (a CONFIG_ADDRESS write at 0xCF8,
then data accesses at 0xCFC-0xCFF, any function, any register).  The accesses are
:class:`~shared.trace.TraceOp` records built directly, since the trace parser rightly
refuses invalid sizes.

:func:`fuzz_guest` runs them through a real VM in chunks, one run of the VM each (device
state carries over), and after each chunk checks that

* the run finished: no worker died, each vCPU executed its whole share, every access
  ended with a status it can have (VINF_SUCCESS or an EM code; the size error for an
  invalid size), reads returned values of their width, and ring-3 rejected no request
  (``result.errors`` holds at most device-callback errors);
* the registration tables, ports and MMIO, are sorted, non-overlapping and agree with
  their entries, and the IOM lock is not left taken;
* no vCPU is left with a pending write or VMCPU_FF_IOM set;
* the statistics add up: accesses = handled in ring-0 + deferred; commits = the single
  OUTs and MMIO writes ring-0 deferred, whatever the reason (each parks a pending write;
  a deferred read is redone and a deferred string access finished in ring-3, so neither
  commits), and as many commit requests as commits (none found nothing pending); a port
  range's Total = its ports' INs and OUTs in ring-0 and ring-3.

A device callback that raises is a finding too, with the device and the register: a
guest made the device fail.  The per-access checks read each vCPU's journal (the VM is
opened with ``journal_limit`` at least a chunk, in strict mode).

    from slowpath.fuzz import fuzz_guest

    if __name__ == "__main__":          # workers are spawned: scripts need the guard
        report = fuzz_guest(100_000, seed=1)
        print(report.render())

:func:`main` is the command, ``ringsim fuzz guest [--accesses N] [--seed S] [--vcpus N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from devices.i8042 import (
    CCMD_WRITE_OUTPUT_PORT,
    COMMAND_PORT,
    DATA_PORT,
    OUT_RESET,
    PORT92_RESET,
    SYSTEM_CONTROL_PORT,
    resets_machine,
)
from devices.pci import (
    CACHE_LINE_SIZE,
    COMMAND,
    CONFIG_ADDRESS_ENABLE,
    CONFIG_ADDRESS_PORT,
    CONFIG_DATA_PORT,
    INTERRUPT_LINE,
    PciFunctionLayout,
)
from devices.piix import (
    I440FX,
    PIIX3_IDE,
    PIIX3_ISA,
    PIIX4_PM,
    PM1_CNT,
    PM_BLOCK_SIZE,
    PMBA,
    PMREGMISC,
    RC_RESET_CPU,
    RESET_CONTROL,
    SLEEP_STATUSES,
    SLP_EN,
    SLP_TYP_MASK,
    SLP_TYP_SHIFT,
    VGA,
)
from devices.testdev import EM, EM_REQUESTS
from devices.testdev import PORT_COUNT as TESTDEV_PORTS
from shared.iomtable import IOPORT_MAX_REGISTRATIONS, MMIO_MAX_REGISTRATIONS, NIL_GCPHYS, PAGE_SIZE, IomTable
from shared.stats import (
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_UNASSIGNED,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_IOM_INVALID_IOPORT_SIZE,
    VERR_IOM_MMIO_IPE_2,
    VINF_EM_OFF,
    VINF_EM_RESET,
    VINF_EM_TERMINATE,
    VINF_SUCCESS,
    VBoxError,
    is_em_status,
    status_name,
)
from shared.trace import IN, INS, KIND_NAMES, MAX_STRING_UNITS, MMIO_READ, MMIO_WRITE, OUT, OUTS, TraceOp
from shared.vcpu import VmShared
from shared.wire import OP_COMMIT
from slowpath import api
from slowpath.config import ConfigFileError, VmConfig
from slowpath.report import RunResult
from slowpath.server import WorkerDied
from slowpath.vm import VM

CHUNK_ACCESSES = 10_000  # accesses per run of the VM
CHUNK_TIMEOUT_S = 600.0  # a run that takes longer is a hung VM: a finding
TRIAGE_RUNS = 16  # fresh-VM runs allowed to find the access that kills a worker

VALID_PORT_SIZES = (1, 2, 4)
INVALID_PORT_SIZES = (0, 3, 5, 6, 7, 8)
VALID_MMIO_SIZES = (1, 2, 4, 8)
INVALID_MMIO_SIZES = (0, 3, 5, 6, 7, *range(9, 17))

# Writes :class:`PowerGuard` changes, by rule (the keys of FuzzReport.filtered).
FILTER_DEBUG_EXIT = "isa-debug-exit write (powers off)"
FILTER_TESTDEV_EM = "testdev EM 0/1 (power off / reset)"
FILTER_KBD_COMMAND = "i8042 reset-pulse command"
FILTER_KBD_OUTPUT_PORT = "i8042 output port with the reset line low"
FILTER_PORT92 = "port 0x92 bit 0 (reset)"
FILTER_RESET_CONTROL = "0xcf9 RCPU (reset)"
FILTER_SLEEP = "PM1a_CNT SLP_EN for S5/S4 (power off)"

# Invariants a finding can break; DEVICE_CALLBACK is a finding that is not an invariant of ringsim's own.
RULE_RUN = "run-completed"
RULE_STATUS = "defined-status"
RULE_READ_WIDTH = "read-width"
RULE_UNASSIGNED_READ = "unassigned-reads-all-ones"
RULE_REJECTED = "no-rejected-request"
RULE_TABLES = "tables-sorted"
RULE_PENDING = "no-pending-write"
RULE_ACCESSES = "accesses-add-up"
RULE_COMMITS = "commits-add-up"
RULE_REGION_TOTALS = "region-totals-add-up"
RULE_POWER = "no-power-off-or-reset"
DEVICE_CALLBACK = "device-callback"

DEFER_OUTCOMES = frozenset((G_DEFER_NO_R0_HANDLER, G_DEFER_DEVICE_ASKED, G_DEFER_DEVICE_LOCK_BUSY,
                            G_DEFER_IOM_LOCK_BUSY))
INTERESTING_VALUES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x80000000, 0xFFFFFFFF,
                      0x55555555, 0xAAAAAAAA, (1 << 64) - 1, 1 << 63)
PCI_FUNCTIONS = (I440FX, PIIX3_ISA, PIIX3_IDE, PIIX4_PM, VGA)


def _all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


# --- What the guest aims at ----------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A range of ports (``mmio`` False) or guest-physical bytes a device answers, or may."""

    device: str
    first: int
    size: int  # ports, or bytes
    mmio: bool


def windows_of(vm: VM) -> list[Window]:
    """Every mapped port range and MMIO region in *vm*'s registration tables."""
    windows = []
    for region in vm.iom.regions:
        entry = vm.table.entries[region.handle]
        if entry.mapped:
            windows.append(Window(region.device, int(entry.port), region.count, False))
    for mmio_region in vm.iom.mmio_regions:
        mmio_entry = vm.table.mmio_entries[mmio_region.handle]
        if mmio_entry.mapped:
            windows.append(Window(mmio_region.device, int(mmio_entry.mapping), mmio_region.size, True))
    return windows


def _regions_of(vm: VM, device_type: str) -> list[tuple[int, int]]:
    """(first port, count) of every mapped port range of every instance of *device_type*."""
    owners = {instance.index for instance in vm.instances if instance.reg.name == device_type}
    return [
        (int(vm.table.entries[region.handle].port), region.count)
        for region in vm.iom.regions
        if region.owner in owners and vm.table.entries[region.handle].mapped
    ]


# --- The writes that would end the run -----------------------------------------------------
class PowerGuard:
    """Changes the writes that would power the VM off or reset it, so a run is not cut short.

    A fuzzing run that powers off stops its vCPUs and leaves the rest of the chunk
    unexecuted; a reset puts every device back at its power-on state and throws away
    the state the accesses before built up.  Both are legitimate guest actions, so they
    are filtered only by default (``allow_power_off`` keeps them).  Each rule keeps the
    access and changes only the bits that would do it, so the register still gets hit:

    * isa-debug-exit (0xF4-0xF7 in the PC): every write powers off; it becomes a read;
    * testdev's EM port (IOBase+3, 0x543): 0 powers off and 1 resets; they become 2 and 3;
    * i8042 command port 0x64: a pulse command with bit 0 clear (0xFE ...) resets; bit 0 is set;
    * i8042 data port 0x60 right after command 0xD1: an output port value with bit 0 (the
      reset line) clear resets; bit 0 is set.  This one depends on order, so every write
      to 0x60 and 0x64 runs on vCPU 0, in the order the guard saw it;
    * port 0x92 bit 0 resets; it is cleared;
    * 0xCF9 (byte writes): RCPU (bit 2) resets; it is cleared;
    * PM1a_CNT (PM base + 4): SLP_EN with SLP_TYP S5 or S4 powers off; SLP_EN is cleared.
      The guest can move the PM block to any 64-port boundary through PMBA, so the rule
      applies to the byte at offset 5 of every 64-port block.

    Only valid sizes (1, 2, 4) are changed: IOM refuses the others before a device sees
    them, so one that powers off is a bug the fuzzer reports, not a write to filter.
    """

    def __init__(self, vm: VM) -> None:
        self.debug_exit = [range(first, first + count) for first, count in _regions_of(vm, "isa-debug-exit")]
        self.testdev_em = {first + EM for first, count in _regions_of(vm, "testdev") if count == TESTDEV_PORTS}
        i8042 = {first for first, _ in _regions_of(vm, "i8042")}
        self.kbd_data = DATA_PORT if DATA_PORT in i8042 else None
        self.kbd_command = COMMAND_PORT if COMMAND_PORT in i8042 else None
        self.port92 = SYSTEM_CONTROL_PORT if SYSTEM_CONTROL_PORT in i8042 else None
        piix = {first for first, _ in _regions_of(vm, "piix")}
        self.reset_control = CONFIG_ADDRESS_PORT + RESET_CONTROL if CONFIG_ADDRESS_PORT in piix else None
        self.sleep_types_off = frozenset(t for t, rc in SLEEP_STATUSES.items() if rc in (VINF_EM_OFF, VINF_EM_RESET))
        self.has_pm_block = bool(piix)
        self.output_port_armed = False  # command 0xD1 went to 0x64, no byte to 0x60 since
        self.filtered: Counter[str] = Counter()  # accesses changed, by rule
        self._hits: set[str] = set()  # the rules the access being sanitized hit

    def sanitize(self, ops: Iterable[TraceOp]) -> list[TraceOp]:
        """*ops* with the powering-off and resetting writes changed; call it in run order."""
        return [self.sanitize_one(op) for op in ops]

    def sanitize_one(self, op: TraceOp) -> TraceOp:
        """One access, changed if it would end the run; each rule it hit is counted once."""
        if op.kind not in (OUT, OUTS) or op.size not in VALID_PORT_SIZES:
            return op
        self._hits = set()
        try:
            return self._sanitize(op)
        finally:
            self.filtered.update(self._hits)

    def _sanitize(self, op: TraceOp) -> TraceOp:
        port = op.address
        if any(port in block for block in self.debug_exit):
            self._hits.add(FILTER_DEBUG_EXIT)
            if op.kind == OUT:
                return op._replace(kind=IN, value=0)
            return op._replace(kind=INS, value=len(op.data) // op.size, data=b"")
        if port in (self.kbd_data, self.kbd_command):
            op = op._replace(vcpu=0)
        if op.kind == OUT:
            return op._replace(value=self._unit(port, op.value, op.size))
        size = op.size
        units = (int.from_bytes(op.data[at : at + size], "little") for at in range(0, len(op.data), size))
        data = b"".join(self._unit(port, unit, size).to_bytes(size, "little") for unit in units)
        return op._replace(data=data)

    def _unit(self, port: int, value: int, size: int) -> int:
        """One unit written to *port*, changed if it would end the run."""
        if port in self.testdev_em and EM_REQUESTS.get(value) in (VINF_EM_OFF, VINF_EM_RESET):
            self._hits.add(FILTER_TESTDEV_EM)
            value |= 2
        elif port == self.kbd_command:
            if resets_machine(value & 0xFF):
                self._hits.add(FILTER_KBD_COMMAND)
                value |= OUT_RESET
            if value & 0xFF == CCMD_WRITE_OUTPUT_PORT:
                self.output_port_armed = True
        elif port == self.kbd_data:
            if self.output_port_armed and not value & OUT_RESET:
                self._hits.add(FILTER_KBD_OUTPUT_PORT)
                value |= OUT_RESET
            self.output_port_armed = False
        elif port == self.port92 and value & PORT92_RESET:
            self._hits.add(FILTER_PORT92)
            value &= ~PORT92_RESET
        elif port == self.reset_control and size == 1 and value & RC_RESET_CPU:
            self._hits.add(FILTER_RESET_CONTROL)
            value &= ~RC_RESET_CPU
        if self.has_pm_block:
            value = self._no_sleep(port, value, size)
        return value

    def _no_sleep(self, port: int, value: int, size: int) -> int:
        """Clear SLP_EN in the lane that would land on PM1a_CNT's high byte of a PM block here."""
        slp_en = SLP_EN >> 8
        for lane in range(size):
            if (port + lane) % PM_BLOCK_SIZE != PM1_CNT + 1:
                continue
            byte = value >> (8 * lane) & 0xFF
            if byte & slp_en and byte >> (SLP_TYP_SHIFT - 8) & SLP_TYP_MASK in self.sleep_types_off:
                self._hits.add(FILTER_SLEEP)
                value &= ~(slp_en << (8 * lane))
        return value


# --- The generator -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Register:
    """A PCI configuration register worth aiming at, and what writing it can map."""

    offset: int
    io_window: int = 0  # ports a write here can map (a BAR's size), 0 if none
    mmio_window: int = 0  # bytes a write here can map


def _pci_registers(layout: PciFunctionLayout) -> tuple[_Register, ...]:
    """The header registers that matter, the function's BARs, and its own registers (PMBA maps the PM block)."""
    registers = [_Register(COMMAND), _Register(CACHE_LINE_SIZE & ~3), _Register(INTERRUPT_LINE & ~3)]
    for bar in layout.bars:
        registers.append(_Register(bar.offset, bar.size if bar.io else 0, 0 if bar.io else bar.size))
    for register in layout.registers:
        maps_pm_block = layout is PIIX4_PM and register.offset == PMBA
        registers.append(_Register(register.offset & ~3, PM_BLOCK_SIZE if maps_pm_block else 0))
    return tuple(registers)


class GuestFuzzer:
    """Seeded random guest accesses over *windows*: the same seed gives the same accesses.

    Each draw is one of: an IN or OUT in a registered port range (32%); an MMIO read or
    write in a registered region (25%), mostly in its first 256 bytes, sometimes running
    past its end or starting before it; a PCI configuration poke (12%); a REP INS or OUTS
    of 1-4096 units in a registered range (8%); a port nothing holds (6%); an MMIO address
    nothing holds (8%: random, at the top of the 64-bit space, or straddling into a
    region); an access to a window the guest itself programmed into a BAR or PMBA (9%).
    Sizes are valid nine times in ten, else any other of 0-8 (ports) or 0-16 (MMIO), string
    accesses included.  *guard*, if given, changes the writes that would end the run.
    """

    def __init__(
        self,
        windows: Sequence[Window],
        *,
        seed: int,
        vcpus: int = 1,
        guard: PowerGuard | None = None,
        pci: bool = True,
    ) -> None:
        if vcpus < 1:
            raise ValueError("a guest needs at least one vCPU")
        self.random = random.Random(seed)
        self.port_windows = [w for w in windows if not w.mmio] or [Window("nothing", 0, 0x10000, False)]
        self.mmio_windows = [w for w in windows if w.mmio] or [Window("nothing", 0, PAGE_SIZE, True)]
        self.vcpus = vcpus
        self.guard = guard
        self.pci = pci
        self.programmed: list[Window] = []  # windows the guest itself wrote into BARs (last few)
        self.line = 0

    # -- building blocks ----------------------------------------------------------------------
    def _op(self, kind: int, vcpu: int, address: int, size: int, value: int = 0, data: bytes = b"") -> TraceOp:
        self.line += 1
        return TraceOp(kind, vcpu, address, size, value, data, None, self.line)

    def _vcpu(self) -> int:
        return self.random.randrange(self.vcpus)

    def _port_size(self) -> int:
        r = self.random
        return r.choice(VALID_PORT_SIZES) if r.random() < 0.9 else r.choice(INVALID_PORT_SIZES)

    def _mmio_size(self) -> int:
        r = self.random
        return r.choice(VALID_MMIO_SIZES) if r.random() < 0.9 else r.choice(INVALID_MMIO_SIZES)

    def _value(self, size: int) -> int:
        r = self.random
        roll = r.random()
        if roll < 0.4:
            value = r.getrandbits(8)
        elif roll < 0.6:
            value = r.choice(INTERESTING_VALUES)
        else:
            value = r.getrandbits(8 * size) if size else 0
        return value & _all_ones(size)

    def _count(self) -> int:
        r = self.random
        roll = r.random()
        if roll < 0.6:
            return r.randint(1, 16)
        if roll < 0.9:
            return r.randint(17, 512)
        return r.randint(513, MAX_STRING_UNITS)

    # -- one draw -----------------------------------------------------------------------------
    def accesses(self, count: int) -> list[TraceOp]:
        """The next *count* accesses (guarded, when a guard was given)."""
        ops: list[TraceOp] = []
        while len(ops) < count:
            ops.extend(self._draw())
        del ops[count:]  # the guard must see only what runs, in order
        return self.guard.sanitize(ops) if self.guard is not None else ops

    def _draw(self) -> list[TraceOp]:
        roll = self.random.random()
        if roll < 0.32:
            return [self._port_access(self.random.choice(self.port_windows))]
        if roll < 0.57:
            return [self._mmio_access(self.random.choice(self.mmio_windows))]
        if roll < 0.69 and self.pci:
            return self._pci_poke()
        if roll < 0.77:
            window = self.random.choice(self.port_windows)
            return [self._string_access((window.first + self.random.randrange(window.size)) & 0xFFFF)]
        if roll < 0.83:
            return [self._unassigned_port()]
        if roll < 0.91:
            return [self._unassigned_mmio()]
        if self.programmed:
            window = self.random.choice(self.programmed)
            return [self._mmio_access(window) if window.mmio else self._port_access(window)]
        return [self._port_access(self.random.choice(self.port_windows))]

    def _port_access(self, window: Window) -> TraceOp:
        r = self.random
        port = (window.first + r.randrange(window.size)) & 0xFFFF
        size = self._port_size()
        if r.random() < 0.5:
            return self._op(IN, self._vcpu(), port, size)
        return self._op(OUT, self._vcpu(), port, size, self._value(size))

    def _string_access(self, port: int) -> TraceOp:
        r = self.random
        size = self._port_size()
        count = self._count()
        if r.random() < 0.5:
            return self._op(INS, self._vcpu(), port, size, count)
        return self._op(OUTS, self._vcpu(), port, size, data=r.randbytes(count * max(size, 1)))

    def _mmio_access(self, window: Window) -> TraceOp:
        r = self.random
        size = self._mmio_size()
        roll = r.random()
        if roll < 0.6:
            offset = r.randrange(min(window.size, 0x100))
        elif roll < 0.75:
            offset = r.randrange(window.size)
        elif roll < 0.9:
            offset = window.size - r.randint(1, 16)  # runs past the region's end
        else:
            offset = -r.randint(1, 15)  # starts before the region
        if size in VALID_MMIO_SIZES and offset > 0 and r.random() < 0.7:
            offset &= ~(size - 1)
        address = min(max(window.first + offset, 0), NIL_GCPHYS)
        if r.random() < 0.5:
            return self._op(MMIO_READ, self._vcpu(), address, size)
        return self._op(MMIO_WRITE, self._vcpu(), address, size, self._value(size))

    def _unassigned_port(self) -> TraceOp:
        r = self.random
        port = r.randrange(0x10000)
        for _ in range(8):
            if not any(w.first <= port < w.first + w.size for w in self.port_windows):
                break
            port = r.randrange(0x10000)
        if r.random() < 0.15:
            return self._string_access(port)
        return self._port_access(Window("nothing", port, 1, False))

    def _unassigned_mmio(self) -> TraceOp:
        r = self.random
        roll = r.random()
        if roll < 0.4:
            first = r.getrandbits(32)
        elif roll < 0.6:
            first = r.getrandbits(64)
        elif roll < 0.75:
            first = NIL_GCPHYS - r.randrange(16)  # the top of the 64-bit space
        else:
            first = max(r.choice(self.mmio_windows).first - r.randint(1, 15), 0)  # straddles into a region
        size = self._mmio_size()
        if r.random() < 0.5:
            return self._op(MMIO_READ, self._vcpu(), first, size)
        return self._op(MMIO_WRITE, self._vcpu(), first, size, self._value(size))

    # -- PCI configuration pokes --------------------------------------------------------------
    def _pci_poke(self) -> list[TraceOp]:
        """CONFIG_ADDRESS, then one to three data-port accesses, all on one vCPU."""
        r = self.random
        vcpu = self._vcpu()
        layout: PciFunctionLayout | None = r.choice(PCI_FUNCTIONS) if r.random() < 0.85 else None
        registers = _pci_registers(layout) if layout is not None else ()
        register = r.choice(registers) if registers and r.random() < 0.6 else _Register(r.randrange(0, 256, 4))
        if layout is not None:
            bus, devfn = 0, layout.devfn
        else:
            bus, devfn = (0 if r.random() < 0.7 else r.randrange(256)), r.randrange(256)
        address = CONFIG_ADDRESS_ENABLE | bus << 16 | devfn << 8 | register.offset
        if r.random() < 0.08:
            address &= ~CONFIG_ADDRESS_ENABLE
        if r.random() < 0.05:
            address |= r.randrange(1, 4)
        ops = [self._op(OUT, vcpu, CONFIG_ADDRESS_PORT, 4, address)]
        for _ in range(r.randint(1, 3)):
            lane = 0 if r.random() < 0.6 else r.randrange(4)
            size = 4 if lane == 0 and r.random() < 0.6 else self._port_size()
            port = CONFIG_DATA_PORT + lane
            if r.random() < 0.45:
                ops.append(self._op(IN, vcpu, port, size))
                continue
            value = self._config_value(register, lane, size)
            ops.append(self._op(OUT, vcpu, port, size, value))
        return ops

    def _config_value(self, register: _Register, lane: int, size: int) -> int:
        """A value for a config write: BAR sizing and placements, decode enables, or anything."""
        r = self.random
        whole = lane == 0 and size == 4
        if whole and (register.io_window or register.mmio_window):
            roll = r.random()
            if roll < 0.25:
                return 0xFFFFFFFF  # BAR sizing
            if roll < 0.35:
                return 0
            if register.io_window:
                align = register.io_window
                base = self._near(self.port_windows, align) if r.random() < 0.4 else r.randrange(0, 0x10000, align)
                self._remember(Window("programmed", base, register.io_window, False))
                return base | 1
            align = max(register.mmio_window, PAGE_SIZE)
            base = self._near(self.mmio_windows, align) if r.random() < 0.4 else r.randrange(0, 1 << 32, align)
            self._remember(Window("programmed", base, min(register.mmio_window, 0x10000), True))
            return base
        if register.offset == COMMAND and lane == 0 and r.random() < 0.7:
            return r.choice((0, 1, 2, 3, 7, 0x107, 0xFFFF)) & _all_ones(size)
        if register.offset == PMREGMISC and lane == 0 and r.random() < 0.7:
            return 1
        return self._value(size)

    def _near(self, windows: list[Window], align: int) -> int:
        """A BAR address on top of a registered window, or just before or after it (*align*-aligned)."""
        window = self.random.choice(windows)
        start = window.first & ~(align - 1)
        after = start + ((window.first + window.size - start + align - 1) & ~(align - 1))
        return max(0, self.random.choice((start, after, start - align))) & 0xFFFFFFFF

    def _remember(self, window: Window) -> None:
        self.programmed.append(window)
        del self.programmed[:-8]


# --- Findings and the report ---------------------------------------------------------------
@dataclass
class Finding:
    """Something the fuzzer found: an invariant ringsim broke, or a device callback that raised."""

    rule: str
    message: str
    chunk: int = -1
    device: str = ""
    register: str = ""
    access: str = ""  # the first access it was seen on, in trace syntax (sizes as they were)
    detail: str = ""  # more about the first one seen (a callback's exception)
    count: int = 1

    @property
    def invariant(self) -> bool:
        return self.rule != DEVICE_CALLBACK

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.rule, self.device, self.register, self.message


@dataclass
class FuzzReport:
    """What a fuzzing session did and found; ``to_json`` is one JSON-ready dict."""

    seed: int
    vcpus: int
    requested: int
    accesses: int = 0  # accesses the vCPUs executed
    chunks: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    per_device: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    ring0_handled: int = 0
    deferred: dict[str, int] = field(default_factory=dict)
    commits: int = 0
    unassigned: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    power_offs: int = 0
    resets: int = 0
    vm_restarts: int = 0

    @property
    def violations(self) -> int:
        return sum(1 for finding in self.findings if finding.invariant)

    @property
    def ok(self) -> bool:
        return not self.findings

    def count(self, outcome: ChunkOutcome) -> None:
        """Add one run: its findings, accesses, statuses, and its result's counters."""
        self.add(outcome.findings)
        self.chunks += 1
        self.accesses += outcome.executed
        _add_counts(self.statuses, outcome.statuses)
        result = outcome.result
        if result is None:
            return
        self.ring0_handled += result.ring0_handled
        self.commits += result.commits
        self.unassigned += result.unassigned
        self.resets += result.resets
        self.power_offs += int(_powered_off(result))
        _add_counts(self.deferred, result.deferred)
        _add_counts(self.per_device, {name: row["accesses"] for name, row in result.replay["per_device"].items()})

    def add(self, findings: Iterable[Finding]) -> None:
        """Add findings, counting repeats of one already known instead of listing them again."""
        known = {finding.key: finding for finding in self.findings}
        for finding in findings:
            seen = known.get(finding.key)
            if seen is None:
                known[finding.key] = finding
                self.findings.append(finding)
            else:
                seen.count += finding.count

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["violations"] = self.violations
        data["ok"] = self.ok
        for finding in data["findings"]:
            finding["invariant"] = finding["rule"] != DEVICE_CALLBACK
        return data

    def render(self) -> str:
        rate = self.accesses / self.seconds if self.seconds else 0.0
        reasons = ", ".join(f"{reason.replace('_', ' ')} {count}" for reason, count in self.deferred.items() if count)
        lines = [
            f"fuzz guest: {self.accesses} of {self.requested} accesses (seed {self.seed}, {self.vcpus} vCPU(s)) in "
            f"{self.chunks} chunk(s), {self.seconds:.1f} s ({rate:.0f} accesses/s)",
            f"  handled in ring-0 {self.ring0_handled}, deferred {sum(self.deferred.values())} ({reasons or 'none'}),"
            f" commits {self.commits}, unassigned {self.unassigned}",
            f"  statuses: {_listed(self.statuses)}",
            f"  per device: {_listed(self.per_device)}",
        ]
        if self.filtered:
            lines.append(f"  writes filtered: {_listed(self.filtered)}")
        if self.power_offs or self.resets or self.vm_restarts:
            lines.append(f"  power-offs {self.power_offs}, resets {self.resets}, VM restarts {self.vm_restarts}")
        if not self.findings:
            lines.append("  findings: none; every invariant held")
            return "\n".join(lines)
        lines.append(f"  findings: {len(self.findings)} ({self.violations} invariant violation(s))")
        for finding in self.findings:
            where = " ".join(part for part in (finding.device, finding.register) if part)
            lines.append(f"    [{finding.rule}] {where + ': ' if where else ''}{finding.message}"
                         f" (x{finding.count}, first in chunk {finding.chunk})")
            if finding.access:
                lines.append(f"        access: {finding.access}")
            if finding.detail:
                lines.append(f"        first: {finding.detail}")
        return "\n".join(lines)


def _add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for name, count in more.items():
        total[name] = total.get(name, 0) + count


def _listed(counts: dict[str, int]) -> str:
    """"name count, ..." with the largest counts first."""
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def describe(op: TraceOp) -> str:
    """An access in trace syntax (its size as it was, valid or not)."""
    prefix = f"@{op.vcpu} " if op.vcpu else ""
    text = f"{prefix}{KIND_NAMES[op.kind]} {op.address:#x} {op.size}"
    if op.kind in (OUT, MMIO_WRITE):
        text += f" {op.value:#x}"
    elif op.kind == INS:
        text += f" {op.value}"
    elif op.kind == OUTS:
        text += f" {op.data[:16].hex()}{'...' if len(op.data) > 16 else ''} ({len(op.data)} bytes)"
    return text


# --- Invariants ----------------------------------------------------------------------------
def check_tables(table: IomTable, chunk: int = -1) -> list[Finding]:
    """The port and MMIO lookup tables: sorted, non-overlapping, each range its entry's mapping.

    Also: the IOM lock (the generation word) is not left taken, every mapped entry has
    exactly one lookup range and no unmapped one has any, MMIO ranges are page aligned
    and an unmapped MMIO entry's mapping is NIL.
    """
    findings: list[Finding] = []

    def broken(message: str) -> None:
        findings.append(Finding(RULE_TABLES, message, chunk))

    if table.generation & 1:
        broken(f"the IOM lock is left taken (generation {table.generation} is odd)")

    def port_entry(handle: int) -> tuple[bool, int, int]:
        entry = table.entries[handle]
        return bool(entry.mapped), int(entry.port), int(entry.port) + int(entry.count) - 1

    def mmio_entry(handle: int) -> tuple[bool, int, int]:
        entry = table.mmio_entries[handle]
        return bool(entry.mapped), int(entry.mapping), int(entry.mapping) + int(entry.size) - 1

    count = _lookup_count("port", int(table.lookup_entries), int(table.registrations), IOPORT_MAX_REGISTRATIONS,
                          broken)
    ranges = [(int(r.first), int(r.last), int(r.handle)) for r in table.lookup[:count]]
    _check_ranges("port", ranges, min(int(table.registrations), IOPORT_MAX_REGISTRATIONS), port_entry, 1, broken)
    count = _lookup_count("MMIO", int(table.mmio_lookup_entries), int(table.mmio_registrations),
                          MMIO_MAX_REGISTRATIONS, broken)
    ranges = [(int(r.first), int(r.last), int(r.handle)) for r in table.mmio_lookup[:count]]
    registrations = min(int(table.mmio_registrations), MMIO_MAX_REGISTRATIONS)
    _check_ranges("MMIO", ranges, registrations, mmio_entry, PAGE_SIZE, broken)
    for handle in range(registrations):
        entry = table.mmio_entries[handle]
        if not entry.mapped and entry.mapping != NIL_GCPHYS:
            broken(f"unmapped MMIO entry {handle} still says it is at {entry.mapping:#x}")
    return findings


def _lookup_count(space: str, count: int, registrations: int, limit: int, broken: Callable[[str], None]) -> int:
    """How many lookup ranges to check: the table's count, if it is possible."""
    if not count <= registrations <= limit:
        broken(f"{count} {space} lookup ranges for {registrations} registrations (at most {limit})")
        return min(count, registrations, limit)
    return count


def _check_ranges(
    space: str,
    ranges: list[tuple[int, int, int]],
    registrations: int,
    entry: Callable[[int], tuple[bool, int, int]],
    align: int,
    broken: Callable[[str], None],
) -> None:
    """One lookup table's (first, last, handle) ranges against the entries' (mapped, first, last)."""
    seen: set[int] = set()
    previous_last = -1
    for i, (first, last, handle) in enumerate(ranges):
        label = f"{space} range {i} ({first:#x}-{last:#x}, handle {handle})"
        if first > last:
            broken(f"{label} ends before it starts")
        if first <= previous_last:
            broken(f"{label} is not after the range before it (which ends at {previous_last:#x})")
        previous_last = max(previous_last, last)
        if first % align:
            broken(f"{label} is not aligned to {align:#x}")
        if handle >= registrations or handle in seen:
            broken(f"{label}: its handle is {'listed twice' if handle in seen else 'not a registration'}")
            continue
        seen.add(handle)
        mapped, entry_first, entry_last = entry(handle)
        if not mapped or (entry_first, entry_last) != (first, last):
            broken(f"{label} disagrees with its entry ({'mapped' if mapped else 'unmapped'}, "
                   f"{entry_first:#x}-{entry_last:#x})")
    mapped_handles = {handle for handle in range(registrations) if entry(handle)[0]}
    if mapped_handles != seen:
        broken(f"mapped {space} entries {sorted(mapped_handles ^ seen)} are missing from, or extra in, "
               "the lookup table")


def check_pending(shared: VmShared, vcpus: int, chunk: int = -1) -> list[Finding]:
    """No vCPU left with a pending OUT, a pending MMIO write or VMCPU_FF_IOM after a run."""
    findings = []
    for vcpu in range(vcpus):
        record = shared.vcpus[vcpu]
        port, mmio = record.pending_port_write, record.pending_mmio_write
        if port.size:
            findings.append(Finding(RULE_PENDING, f"vCPU {vcpu} left a pending OUT: port {port.port:#06x} "
                                    f"size {port.size} value {port.value:#x}", chunk))
        if mmio.size:
            findings.append(Finding(RULE_PENDING, f"vCPU {vcpu} left a pending MMIO write of {mmio.size} bytes "
                                    f"at {mmio.address:#x}", chunk))
        if record.force_flag_iom:
            findings.append(Finding(RULE_PENDING, f"vCPU {vcpu} left VMCPU_FF_IOM set", chunk))
    return findings


def check_statistics(result: RunResult, chunk: int = -1) -> list[Finding]:
    """Accesses = handled in ring-0 + deferred; each port range's Total = its ports' INs and OUTs;
    the replay counted every access the vCPUs executed."""
    findings = []
    executed = sum(row["executed"] for row in result.per_vcpu)
    if result.replay["accesses"] != executed:
        findings.append(Finding(RULE_ACCESSES, f"the replay counted {result.replay['accesses']} accesses, the "
                                f"vCPUs executed {executed}", chunk))
    deferred = sum(result.deferred.values())
    if result.accesses != result.ring0_handled + deferred:
        findings.append(Finding(RULE_ACCESSES, f"{result.accesses} accesses, but {result.ring0_handled} handled in "
                                f"ring-0 + {deferred} deferred = {result.ring0_handled + deferred}", chunk))
    for region in result.regions:
        if "ports" not in region:
            continue
        parts = region["in_r0"] + region["out_r0"] + region["in_r3"] + region["out_r3"]
        if region["total"] != parts:
            findings.append(Finding(RULE_REGION_TOTALS, f"Total {region['total']} != {parts} INs and OUTs "
                                    f"in ring-0 and ring-3", chunk, region["device"], region["description"]))
    return findings


_CALLBACK_ERROR = re.compile(
    r"^(?:ring-3 for )?vCPU \d+: (?P<device>\S+) (?P<space>port|MMIO) (?P<address>0x[0-9a-fA-F]+): (?P<error>.*)$",
    re.DOTALL,
)


def _regions_holding(vm: VM, address: int, mmio: bool) -> Iterator[tuple[str, str, int]]:
    """(device, description, first address) of the mapped region of that space holding *address*, if any."""
    if mmio:
        for mmio_region in vm.iom.mmio_regions:
            mmio_entry = vm.table.mmio_entries[mmio_region.handle]
            if mmio_entry.mapped and mmio_entry.mapping <= address < mmio_entry.mapping + mmio_region.size:
                yield mmio_region.device, mmio_region.description, int(mmio_entry.mapping)
        return
    for region in vm.iom.regions:
        entry = vm.table.entries[region.handle]
        if entry.mapped and entry.port <= address < entry.port + region.count:
            yield region.device, region.description, int(entry.port)


def _owner(vm: VM, op: TraceOp) -> str:
    """The device whose region holds an access's first byte now, or ""."""
    for device, _, _ in _regions_holding(vm, op.address, op.kind in (MMIO_READ, MMIO_WRITE)):
        return device
    return ""


def _register(vm: VM, device: str, address: int, mmio: bool | None) -> str:
    """Where in *device*'s region *address* is: "HPET +0x10 (MMIO 0xfed00010)" (*mmio* None: either space)."""
    for space in (False, True) if mmio is None else (mmio,):
        for owner, description, first in _regions_holding(vm, address, space):
            if owner == device:
                return f"{description} +{address - first:#x} ({'MMIO' if space else 'port'} {address:#x})"
    return f"{'MMIO' if mmio else 'port'} {address:#x}"


def check_errors(vm: VM, result: RunResult, chunk: int = -1) -> list[Finding]:
    """``result.errors``: device callback errors become findings with the register; anything else breaks a rule."""
    findings = []
    for error in result.errors:
        match = _CALLBACK_ERROR.match(error)
        if match is None:
            findings.append(Finding(RULE_REJECTED, f"ring-3 rejected a request: {error}", chunk))
            continue
        device, address = match["device"], int(match["address"], 16)
        # Ring-0's callback errors say "port" for MMIO addresses too: try both spaces then.
        mmio = True if match["space"] == "MMIO" else None
        exception = match["error"].split(":", 1)[0]
        findings.append(Finding(DEVICE_CALLBACK, f"callback raised {exception}", chunk, device,
                                _register(vm, device, address, mmio), detail=match["error"]))
    return findings


def _expected_size_error(op: TraceOp) -> int | None:
    """The status IOM answers an invalid size with, or None when the size is valid."""
    if op.kind in (MMIO_READ, MMIO_WRITE):
        return None if op.size in VALID_MMIO_SIZES else VERR_IOM_MMIO_IPE_2
    return None if op.size in VALID_PORT_SIZES else VERR_IOM_INVALID_IOPORT_SIZE


def check_accesses(
    vm: VM,
    shares: list[list[TraceOp]],
    result: RunResult,
    statuses: Counter[str],
    *,
    allow_power_off: bool = False,
    chunk: int = -1,
) -> list[Finding]:
    """Each access's journal entry: a defined status, a read of its width; and commits add up.

    Needs the vCPUs' journals to cover their shares (``journal_limit``); the status of
    each access is counted into *statuses* by name.
    """
    findings = []
    has_device_errors = any(_CALLBACK_ERROR.match(error) for error in result.errors)
    expected_commits = 0
    commit_requests = 0
    journals = vm.journals if len(vm.journals) == len(shares) else [[] for _ in shares]
    for vcpu, (share, journal) in enumerate(zip(shares, journals, strict=True)):
        executed = result.per_vcpu[vcpu]["executed"]
        if executed != len(share) and not (allow_power_off and _powered_off(result)):
            findings.append(Finding(RULE_RUN, f"vCPU {vcpu} executed {executed} of its {len(share)} accesses", chunk))
        if len(journal) < executed:
            findings.append(Finding(RULE_RUN, f"vCPU {vcpu}'s journal holds {len(journal)} of {executed} accesses: "
                                    "open the VM with journal_limit >= the chunk", chunk))
            continue
        for entry in journal[:executed]:  # fastpath.journal's records
            index, _kind, _address, _size, _value, _started, _ended, outcome, sent, status, got = entry
            op = share[index]
            statuses[status_name(status)] += 1
            if op.kind in (OUT, MMIO_WRITE) and outcome in DEFER_OUTCOMES:
                expected_commits += 1
            if sent is not None and sent[0] == OP_COMMIT:
                commit_requests += 1
            problem = _status_problem(op, status, allow_power_off, has_device_errors)
            if problem:
                ended = f"{KIND_NAMES[op.kind]} size {op.size} ended with {status_name(status)}"
                findings.append(Finding(problem, ended, chunk, _owner(vm, op), access=describe(op)))
            elif status == VINF_SUCCESS and not _read_fits(op, got):
                findings.append(Finding(RULE_READ_WIDTH, f"{KIND_NAMES[op.kind]} size {op.size} returned "
                                        f"{_shown(got)}", chunk, _owner(vm, op), access=describe(op)))
            elif status == VINF_SUCCESS and outcome == G_UNASSIGNED and not _all_ones_read(op, got):
                findings.append(Finding(RULE_UNASSIGNED_READ, f"{KIND_NAMES[op.kind]} size {op.size} of nothing "
                                        f"returned {_shown(got)}", chunk, access=describe(op)))
    if all(len(journal) >= row["executed"] for journal, row in zip(journals, result.per_vcpu, strict=True)):
        if result.commits != expected_commits or commit_requests != result.commits:
            findings.append(Finding(RULE_COMMITS, f"{result.commits} commits, but ring-0 deferred {expected_commits} "
                                    f"single OUTs and MMIO writes and the vCPUs sent {commit_requests} commit "
                                    "requests", chunk))
    return findings


def _powered_off(result: RunResult) -> bool:
    return result.final_status["rc"] in (VINF_EM_OFF, VINF_EM_TERMINATE)


def _status_problem(op: TraceOp, status: int, allow_power_off: bool, has_device_errors: bool) -> str:
    """Why *status* is not a status *op* can end with ("" if it can)."""
    size_error = _expected_size_error(op)
    if size_error is not None:
        return "" if status == size_error else RULE_STATUS
    if status in (VINF_EM_OFF, VINF_EM_TERMINATE, VINF_EM_RESET):
        return "" if allow_power_off else RULE_POWER
    if status == VINF_SUCCESS or is_em_status(status):
        return ""
    if status == VERR_INTERNAL_ERROR and has_device_errors:
        return ""  # a device callback raised: reported with its device and register
    return RULE_STATUS


def _read_fits(op: TraceOp, got: Any) -> bool:
    """Whether what a successful read returned has the read's width."""
    if op.kind in (IN, MMIO_READ):
        return isinstance(got, int) and 0 <= got <= _all_ones(op.size)
    if op.kind == INS:
        return isinstance(got, bytes) and len(got) == op.value * op.size
    return True


def _all_ones_read(op: TraceOp, got: Any) -> bool:
    """Whether a read no region answered returned all ones, as IOM answers for nothing there."""
    if op.kind in (IN, MMIO_READ):
        return bool(got == _all_ones(op.size))
    if op.kind == INS:
        return bool(got == b"\xff" * (op.value * op.size))
    return True


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return f"{value:#x}" if isinstance(value, int) else repr(value)


# --- Running ---------------------------------------------------------------------------------
@dataclass
class ChunkOutcome:
    """One chunk's run: its result (None if the run died), findings, and statuses by name."""

    result: RunResult | None
    findings: list[Finding]
    statuses: Counter[str]
    executed: int = 0
    worker_died: bool = False  # the run died because a worker did (not a hang)

    @property
    def died(self) -> bool:
        return self.result is None


def open_fuzz_vm(config: VmConfig | None = None, vcpus: int = 1, chunk: int = CHUNK_ACCESSES) -> VM:
    """A VM for fuzzing: the config's (default: the built-in PC), journaling a whole chunk per vCPU."""
    return api.open_vm(config, vcpus=vcpus, journal_limit=chunk)


def run_chunk(
    vm: VM,
    ops: list[TraceOp],
    *,
    chunk: int = -1,
    allow_power_off: bool = False,
    timeout_s: float = CHUNK_TIMEOUT_S,
) -> ChunkOutcome:
    """Run *ops* as one run of *vm* and check every invariant after it.

    A run that dies (a worker killed, a hang past *timeout_s*) is a finding; the VM
    cannot run again then.
    """
    if getattr(vm, "mode", "strict") != "strict":
        raise ValueError(f"fuzzing checks strict mode; this VM runs in {getattr(vm, 'mode', '')} mode")
    shares = vm.split_workload(ops, "<fuzz>")
    try:
        result = vm.run(shares, timeout_s=timeout_s)
    except (WorkerDied, TimeoutError) as exc:
        died = Finding(RULE_RUN, f"the run died: {type(exc).__name__}", chunk, detail=str(exc))
        # What the workers' statistics rows counted before the end (string restarts count again).
        return ChunkOutcome(None, [died], Counter(), vm.accesses_done(), worker_died=isinstance(exc, WorkerDied))
    statuses: Counter[str] = Counter()
    findings = check_accesses(vm, shares, result, statuses, allow_power_off=allow_power_off, chunk=chunk)
    findings += check_errors(vm, result, chunk)
    findings += check_statistics(result, chunk)
    findings += check_tables(vm.table, chunk)
    findings += check_pending(vm.vm, vm.vcpu_count, chunk)
    if not allow_power_off and (result.resets or _powered_off(result) or result.exit_status is not None):
        findings.append(Finding(RULE_POWER, f"the VM reset {result.resets} time(s) and ended with "
                                f"{result.final_status['name']} though the guard filters those writes", chunk))
    executed = sum(row["executed"] for row in result.per_vcpu)
    return ChunkOutcome(result, findings, statuses, executed)


def first_fatal_access(config: VmConfig | None, ops: list[TraceOp], runs: int = TRIAGE_RUNS) -> TraceOp | None:
    """The access whose run kills a fresh one-vCPU VM: the end of the shortest fatal prefix of *ops*.

    A binary search over prefixes, one fresh VM per probe (a VM whose worker died cannot
    run again); None when the whole of *ops* does not kill a fresh VM, or the probes ran out.
    """
    def dies(length: int) -> bool:
        with api.open_vm(config, vcpus=1) as vm:
            try:
                vm.run([[op._replace(vcpu=0) for op in ops[:length]]], timeout_s=CHUNK_TIMEOUT_S)
            except WorkerDied:
                return True
        return False

    low, high = 0, len(ops)  # ops[:low] survives; ops[:high] dies once checked
    if not ops or not dies(high):
        return None
    for _ in range(runs - 1):
        if high - low <= 1:
            return ops[high - 1]
        middle = (low + high) // 2
        if dies(middle):
            high = middle
        else:
            low = middle
    return ops[high - 1] if high - low <= 1 else None


def fuzz_guest(
    accesses: int,
    seed: int,
    vcpus: int = 1,
    config: VmConfig | None = None,
    *,
    chunk: int = CHUNK_ACCESSES,
    allow_power_off: bool = False,
    progress: Callable[[int, FuzzReport], None] | None = None,
) -> FuzzReport:
    """Throw *accesses* seeded random guest accesses at a VM built from *config* (default: the PC).

    They run in chunks of *chunk*, one run of the same VM each, so device state carries
    over; every invariant is checked after each chunk (see the module docstring).  With
    *allow_power_off* a chunk the guest powered off goes on in the next run with the
    accesses it did not execute.  A run that dies is a finding: the fatal access is
    looked for on fresh VMs (one vCPU only) and the session goes on with a new VM.
    *progress* is called after each run with its number and the report so far.
    """
    if accesses < 0 or chunk < 1:
        raise ValueError("accesses must be >= 0 and chunk >= 1")
    started = time.perf_counter()
    report = FuzzReport(seed=seed, vcpus=vcpus, requested=accesses)
    vm: VM | None = open_fuzz_vm(config, vcpus, chunk).__enter__()
    try:
        assert vm is not None
        guard = None if allow_power_off else PowerGuard(vm)
        fuzzer = GuestFuzzer(windows_of(vm), seed=seed, vcpus=vcpus, guard=guard, pci=bool(_regions_of(vm, "piix")))
        generated = 0
        left_over: list[TraceOp] = []  # what a powered-off run did not execute
        while generated < accesses or left_over:
            if left_over:
                ops, left_over = left_over, []
            else:
                ops = fuzzer.accesses(min(chunk, accesses - generated))
                generated += len(ops)
            outcome = run_chunk(vm, ops, chunk=report.chunks, allow_power_off=allow_power_off)
            if outcome.died:  # a VM whose run died cannot run again: go on with a new one
                fatal = first_fatal_access(config, ops) if vcpus == 1 and outcome.worker_died else None
                if fatal is not None:
                    outcome.findings[0].access = describe(fatal)
                    outcome.findings[0].device = _owner(vm, fatal)
                broken, vm = vm, None
                broken.__exit__(None, None, None)
                vm = open_fuzz_vm(config, vcpus, chunk).__enter__()
                report.vm_restarts += 1
            elif outcome.executed and outcome.result is not None and _powered_off(outcome.result):
                left_over = _not_executed(vm, ops, outcome.result)
            report.count(outcome)
            report.seconds = time.perf_counter() - started
            if progress is not None:
                progress(report.chunks, report)
        report.filtered = dict(guard.filtered) if guard is not None else {}
    finally:
        if vm is not None:
            vm.__exit__(None, None, None)
    report.seconds = time.perf_counter() - started
    return report


def _not_executed(vm: VM, ops: list[TraceOp], result: RunResult) -> list[TraceOp]:
    """Each vCPU's accesses after the ones it executed before the VM powered off."""
    shares = vm.split_workload(ops, "<fuzz>")
    return [op for share, row in zip(shares, result.per_vcpu, strict=True) for op in share[row["executed"] :]]


# --- The command ---------------------------------------------------------------------------
EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """``ringsim fuzz guest [--accesses N] [--seed S] [--vcpus N] [--json] ...``; returns the exit status.

    0 when nothing was found; 1 when an invariant failed or a device callback raised
    (a guest made the hypervisor misbehave either way); 2 for bad arguments or a bad
    config; 130 after Ctrl-C.  Every VM is powered off and cleaned up on every path.
    """
    parser = argparse.ArgumentParser(
        prog="ringsim fuzz guest",
        description="Throw seeded random guest accesses (every port and MMIO range, every size, string "
                    "accesses, PCI config pokes) at the VM and check ringsim's invariants after each chunk.",
    )
    parser.add_argument("--accesses", type=int, default=CHUNK_ACCESSES, help="how many accesses (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (default %(default)s)")
    parser.add_argument("--vcpus", type=int, default=1, help="vCPUs the accesses are spread over (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--config", help="VM config (TOML); default: the built-in PC")
    parser.add_argument("--chunk", type=int, default=CHUNK_ACCESSES, help="accesses per VM run (default %(default)s)")
    parser.add_argument("--allow-power-off", action="store_true",
                        help="let through the writes that power off or reset the VM (a chunk the guest powers off "
                             "goes on in another run)")
    args = parser.parse_args(argv)
    if args.accesses < 0 or args.chunk < 1 or not 1 <= args.vcpus <= 64:
        parser.error("--accesses must be >= 0, --chunk >= 1 and --vcpus in 1..64")

    def show_progress(chunk: int, report: FuzzReport) -> None:
        print(f"chunk {chunk}: {report.accesses} accesses, {len(report.findings)} finding(s), "
              f"{report.seconds:.1f} s", file=sys.stderr)

    try:
        config = api.load_config(args.config)
        report = fuzz_guest(
            args.accesses, args.seed, args.vcpus, config, chunk=args.chunk, allow_power_off=args.allow_power_off,
            progress=None if args.json else show_progress,
        )
    except (ConfigFileError, VBoxError) as exc:
        print(f"ringsim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ringsim: interrupted; the VM was powered off", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return EXIT_CLEAN if report.ok else EXIT_FINDINGS


if __name__ == "__main__":
    sys.exit(main())
