"""The ring-0 port dispatcher in fastpath/dispatch.py: IOMAll.cpp's IN/OUT/INS/OUTS as compiled for ring-0.

One process, no workers: a plain ctypes registration table filled through ring-3's
IomManager, a statistics row in a bytearray, real cross-process device locks.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastpath.dispatch import PortDispatcher, Ring0Callbacks
from shared.devapi import IOM_IOPORT_F_ABS, PortIn, PortInString, PortOut, PortOutString
from shared.iomtable import IomTable, PortLookup
from shared.locks import DeviceLock
from shared.stats import (
    G_COUNT,
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_FAILED,
    G_IOPORT_IN,
    G_IOPORT_INS,
    G_IOPORT_OUT,
    G_IOPORT_OUTS,
    G_RING0_HANDLED,
    G_UNASSIGNED,
    L_CONTENTION_RZ_BUSY,
    L_ENTERS_RZ,
    P_COUNT,
    P_IN_RZ,
    P_IN_RZ_TO_R3,
    P_OUT_RZ,
    P_OUT_RZ_TO_R3,
    P_PROF_IN_RZ_CALLS,
    P_PROF_OUT_RZ_CALLS,
    P_TOTAL,
    StatsLayout,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_IOM_INVALID_IOPORT_SIZE,
    VERR_IOM_IOPORT_IPE_1,
    VERR_IOM_IOPORT_UNUSED,
    VINF_EM_HALT,
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_SUCCESS,
)
from shared.vcpu import VCpuShared
from slowpath.iom import IomManager

SPAWN = multiprocessing.get_context("spawn")
LAYOUT = StatsLayout(vcpus=1, port_entries=256, locks=4)
ROW = LAYOUT.row_base(0, ring3=False)
ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
DEFERRAL_REASONS = (
    G_DEFER_NO_R0_HANDLER,
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
)


def _ring3_out(offset: int, value: int, size: int) -> int:
    return VINF_SUCCESS


def _ring3_in(offset: int, size: int) -> tuple[int, int]:
    return VINF_SUCCESS, 0


@dataclass
class Recorder:
    """Ring-0 callbacks that record their calls and answer with fixed statuses."""

    in_status: int = VINF_SUCCESS
    in_value: int = 0x5A
    out_status: int = VINF_SUCCESS
    ins: list[tuple[int, int]] = field(default_factory=list)
    outs: list[tuple[int, int, int]] = field(default_factory=list)

    def in_(self, offset: int, size: int) -> tuple[int, int]:
        self.ins.append((offset, size))
        return self.in_status, self.in_value

    def out(self, offset: int, value: int, size: int) -> int:
        self.outs.append((offset, value, size))
        return self.out_status


class Rig:
    """A registration table, ring-3's IOM over it, a statistics row and one vCPU's dispatcher."""

    def __init__(self, owners: int = 2) -> None:
        self.table = IomTable()
        self.iom = IomManager(self.table)
        self.counters = memoryview(bytearray(LAYOUT.size_bytes)).cast("Q")
        self.vcpu = VCpuShared()
        self.raw_locks: list[Any] = [SPAWN.RLock() for _ in range(owners)]
        self.locks = [
            DeviceLock(f"dev{i}#0", raw, self.counters, LAYOUT.lock_base(ROW, i))
            for i, raw in enumerate(self.raw_locks)
        ]
        self.ring0: dict[int, Ring0Callbacks] = {}
        self.dispatcher = PortDispatcher(PortLookup(self.table), self.ring0, self.vcpu, self.counters, ROW)

    def region(
        self,
        port: int,
        count: int,
        *,
        owner: int = 0,
        flags: int = 0,
        in_: PortIn | None = None,
        out: PortOut | None = None,
        in_string: PortInString | None = None,
        out_string: PortOutString | None = None,
        ring0: bool = True,
    ) -> int:
        """Create and map a region; with *ring0*, give it the ring-0 callbacks passed."""
        handle = self.iom.create(
            owner, f"dev{owner}#0", count, f"R{port:04x}", flags=flags, in_=_ring3_in, out=_ring3_out
        )
        self.iom.map(owner, handle, port)
        if ring0:
            bits = (1 if in_ else 0) | (2 if out else 0) | (4 if in_string else 0) | (8 if out_string else 0)
            self.iom.set_up_ring0(owner, handle, bits)
            self.ring0[handle] = Ring0Callbacks(
                f"dev{owner}#0",
                self.locks[owner],
                in_=in_,
                out=out,
                in_string=in_string,
                out_string=out_string,
            )
        return handle

    def freeze(self) -> Rig:
        self.iom.freeze()
        return self

    def g(self, index: int) -> int:
        return int(self.counters[ROW + index])

    def port_stat(self, handle: int, offset: int, field_index: int) -> int:
        stats_index = self.table.entries[handle].stats_index
        return int(self.counters[ROW + G_COUNT + (stats_index + offset) * P_COUNT + field_index])

    def lock_stat(self, owner: int, field_index: int) -> int:
        return int(self.counters[LAYOUT.lock_base(ROW, owner) + field_index])

    def outcomes(self) -> int:
        """Ring-0 finishes plus deferrals, whatever the reason."""
        return self.g(G_RING0_HANDLED) + sum(self.g(reason) for reason in DEFERRAL_REASONS)

    @contextmanager
    def iom_lock_busy(self) -> Iterator[None]:
        """Ring-3 is in the middle of changing the table: the generation word is odd."""
        self.table.generation += 1
        try:
            yield
        finally:
            self.table.generation += 1


@contextmanager
def held_by_another_thread(lock: Any) -> Iterator[None]:
    """Hold *lock* from a second thread, so this thread's try-acquire fails."""
    taken = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        holder.join(10)


def free_for_another_thread(lock: Any) -> bool:
    """Whether a second thread can take *lock* right now (it gives it back at once)."""
    result: list[bool] = []

    def probe() -> None:
        got = lock.acquire(False)
        if got:
            lock.release()
        result.append(got)

    prober = threading.Thread(target=probe)
    prober.start()
    prober.join(10)
    return result[0]


# -- unassigned ports and sizes ---------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4])
def test_unassigned_port_read_returns_all_ones(size: int) -> None:
    rig = Rig()
    rig.region(0x100, 4, in_=Recorder().in_)
    rig.freeze()
    assert rig.dispatcher.read(0x80, size) == (VINF_SUCCESS, ALL_ONES[size])
    assert rig.g(G_UNASSIGNED) == 1
    assert rig.g(G_RING0_HANDLED) == 1


def test_unassigned_port_write_vanishes() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 4, out=device.out)
    rig.freeze()
    assert rig.dispatcher.write(0x104, 0x12, 1) == VINF_SUCCESS
    assert device.outs == []
    assert rig.vcpu.pending_port_write.size == 0
    assert rig.vcpu.force_flag_iom == 0
    assert rig.g(G_UNASSIGNED) == 1
    assert rig.g(G_RING0_HANDLED) == 1


@pytest.mark.parametrize("size", [1, 2, 4])
def test_unassigned_port_string_read_fills_all_ones(size: int) -> None:
    rig = Rig().freeze()
    assert rig.dispatcher.read_string(0x80, size, 3) == (VINF_SUCCESS, b"\xff" * (3 * size), 0)
    assert rig.g(G_UNASSIGNED) == 1


def test_unassigned_port_string_write_consumes_every_unit() -> None:
    rig = Rig().freeze()
    assert rig.dispatcher.write_string(0x80, 2, b"abcdef") == (VINF_SUCCESS, 3)
    assert rig.g(G_UNASSIGNED) == 1


INVALID_SIZE_ACCESSES: dict[str, Callable[[PortDispatcher, int, int], int]] = {
    "read": lambda d, port, size: d.read(port, size)[0],
    "write": lambda d, port, size: d.write(port, 0x41, size),
    "read_string": lambda d, port, size: d.read_string(port, size, 2)[0],
    "write_string": lambda d, port, size: d.write_string(port, size, b"\x41" * 6)[0],
}


@pytest.mark.parametrize("size", [0, 3, 8])
@pytest.mark.parametrize("access", sorted(INVALID_SIZE_ACCESSES))
@pytest.mark.parametrize("port", [0x100, 0x80], ids=["mapped", "unassigned"])
def test_invalid_size_is_verr_iom_invalid_ioport_size(access: str, size: int, port: int) -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 4, in_=device.in_, out=device.out)
    rig.freeze()
    assert INVALID_SIZE_ACCESSES[access](rig.dispatcher, port, size) == VERR_IOM_INVALID_IOPORT_SIZE
    assert device.ins == [] and device.outs == []
    assert rig.vcpu.pending_port_write.size == 0
    assert rig.g(G_FAILED) == 1


# -- what a ring-0 callback sees and returns ---------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4])
def test_ioport_unused_from_callback_reads_all_ones(size: int) -> None:
    rig = Rig()
    rig.region(0x100, 4, in_=Recorder(in_status=VERR_IOM_IOPORT_UNUSED, in_value=0).in_)
    rig.freeze()
    assert rig.dispatcher.read(0x101, size) == (VINF_SUCCESS, ALL_ONES[size])
    assert rig.g(G_RING0_HANDLED) == 1


@pytest.mark.parametrize(("size", "expected"), [(1, 0x44), (2, 0x3344), (4, 0x11223344)])
def test_read_value_is_cut_to_the_access_size(size: int, expected: int) -> None:
    rig = Rig()
    rig.region(0x100, 4, in_=Recorder(in_value=0xFF11223344).in_)
    rig.freeze()
    assert rig.dispatcher.read(0x100, size) == (VINF_SUCCESS, expected)


def test_callback_gets_offset_into_its_region() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x3F8, 8, in_=device.in_, out=device.out)
    rig.freeze()
    rig.dispatcher.read(0x3FD, 1)
    rig.dispatcher.write(0x3FB, 0x83, 1)
    assert device.ins == [(5, 1)]
    assert device.outs == [(3, 0x83, 1)]


def test_abs_flag_passes_absolute_port() -> None:
    rig = Rig()
    device = Recorder()
    strings: list[int] = []

    def in_string(where: int, count: int, size: int) -> tuple[int, bytes]:
        strings.append(where)
        return VINF_SUCCESS, b"\x00" * (count * size)

    def out_string(where: int, data: bytes, size: int) -> tuple[int, int]:
        strings.append(where)
        return VINF_SUCCESS, len(data) // size

    rig.region(
        0x3F8,
        8,
        flags=IOM_IOPORT_F_ABS,
        in_=device.in_,
        out=device.out,
        in_string=in_string,
        out_string=out_string,
    )
    rig.freeze()
    rig.dispatcher.read(0x3FD, 1)
    rig.dispatcher.write(0x3FB, 0x83, 1)
    rig.dispatcher.read_string(0x3F9, 1, 2)
    rig.dispatcher.write_string(0x3FA, 1, b"ab")
    assert device.ins == [(0x3FD, 1)]
    assert device.outs == [(0x3FB, 0x83, 1)]
    assert strings == [0x3F9, 0x3FA]


def test_em_status_from_ring0_callback_is_returned_as_is() -> None:
    rig = Rig()
    rig.region(0x100, 1, out=Recorder(out_status=VINF_EM_HALT).out)
    rig.freeze()
    assert rig.dispatcher.write(0x100, 1, 1) == VINF_EM_HALT
    assert rig.vcpu.pending_port_write.size == 0
    assert rig.g(G_RING0_HANDLED) == 1


def test_callback_exception_becomes_failure_status() -> None:
    rig = Rig()

    def broken_in(offset: int, size: int) -> tuple[int, int]:
        raise ValueError("in exploded")

    def broken_out(offset: int, value: int, size: int) -> int:
        raise RuntimeError("out exploded")

    rig.region(0x100, 2, in_=broken_in, out=broken_out)
    rig.freeze()
    assert rig.dispatcher.read(0x101, 1) == (VERR_INTERNAL_ERROR, 0)
    assert rig.dispatcher.write(0x100, 7, 1) == VERR_INTERNAL_ERROR
    assert rig.dispatcher.read_string(0x100, 1, 3) == (VERR_INTERNAL_ERROR, b"", 3)
    assert rig.dispatcher.write_string(0x100, 1, b"xyz") == (VERR_INTERNAL_ERROR, 0)
    assert rig.g(G_FAILED) == 4
    assert rig.vcpu.pending_port_write.size == 0
    errors = [str(error) for error in rig.dispatcher.callback_errors]
    assert errors[0] == "dev0#0 port 0x0101: ValueError: in exploded"
    assert errors[1] == "dev0#0 port 0x0100: RuntimeError: out exploded"
    # The device lock was given back every time.
    assert free_for_another_thread(rig.raw_locks[0])


# -- deferrals -----------------------------------------------------------------------------


def test_iom_lock_busy_defers_read() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 4, in_=device.in_)
    rig.freeze()
    with rig.iom_lock_busy():
        assert rig.dispatcher.read(0x100, 1) == (VINF_IOM_R3_IOPORT_READ, 0)
        # Even a port no region covers: ring-0 cannot know that while the table changes.
        assert rig.dispatcher.read(0x80, 1) == (VINF_IOM_R3_IOPORT_READ, 0)
    assert device.ins == []
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 2
    assert rig.dispatcher.read(0x100, 1) == (VINF_SUCCESS, 0x5A)


def test_iom_lock_busy_turns_write_into_pending_write() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 4, out=device.out)
    rig.freeze()
    with rig.iom_lock_busy():
        assert rig.dispatcher.write(0x102, 0xBEEF, 2) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    pending = rig.vcpu.pending_port_write
    assert (pending.port, pending.value, pending.size) == (0x102, 0xBEEF, 2)
    assert rig.vcpu.force_flag_iom == 1
    assert device.outs == []
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 1


def test_iom_lock_busy_defers_string_accesses_without_pending_write() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 4, in_=device.in_, out=device.out)
    rig.freeze()
    with rig.iom_lock_busy():
        assert rig.dispatcher.read_string(0x100, 1, 4) == (VINF_IOM_R3_IOPORT_READ, b"", 4)
        assert rig.dispatcher.write_string(0x100, 1, b"abcd") == (VINF_IOM_R3_IOPORT_WRITE, 0)
    assert rig.vcpu.pending_port_write.size == 0
    assert device.ins == [] and device.outs == []
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 2


def test_table_change_is_seen_by_the_next_access() -> None:
    rig = Rig()
    device = Recorder()
    handle = rig.region(0x100, 4, in_=device.in_)
    rig.freeze()
    assert rig.dispatcher.read(0x100, 1) == (VINF_SUCCESS, 0x5A)
    rig.iom.unmap(0, handle)
    assert rig.dispatcher.read(0x100, 1) == (VINF_SUCCESS, 0xFF)
    rig.iom.map(0, handle, 0x200)
    assert rig.dispatcher.read(0x203, 1) == (VINF_SUCCESS, 0x5A)
    assert device.ins == [(0, 1), (3, 1)]


def test_no_ring0_callback_defers() -> None:
    rig = Rig()
    handle = rig.region(0x100, 4, ring0=False)
    rig.freeze()
    assert rig.dispatcher.read(0x101, 1) == (VINF_IOM_R3_IOPORT_READ, 0)
    assert rig.dispatcher.write(0x102, 0x33, 1) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    pending = rig.vcpu.pending_port_write
    assert (pending.port, pending.value, pending.size) == (0x102, 0x33, 1)
    assert rig.g(G_DEFER_NO_R0_HANDLER) == 2
    assert rig.port_stat(handle, 1, P_IN_RZ_TO_R3) == 1
    assert rig.port_stat(handle, 2, P_OUT_RZ_TO_R3) == 1


def test_no_ring0_callback_for_one_direction_defers_only_that_direction() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 1, in_=device.in_)  # ring-0 IN only
    rig.freeze()
    assert rig.dispatcher.read(0x100, 1) == (VINF_SUCCESS, 0x5A)
    assert rig.dispatcher.write(0x100, 1, 1) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    assert rig.dispatcher.write_string(0x100, 1, b"ab") == (VINF_IOM_R3_IOPORT_WRITE, 0)
    assert rig.g(G_DEFER_NO_R0_HANDLER) == 2
    assert rig.g(G_RING0_HANDLED) == 1


def test_string_read_without_ring0_in_callback_defers_even_with_string_callback() -> None:
    rig = Rig()
    calls: list[int] = []

    def in_string(where: int, count: int, size: int) -> tuple[int, bytes]:
        calls.append(count)
        return VINF_SUCCESS, b"\x00" * count

    rig.region(0x100, 1, in_string=in_string)
    rig.freeze()
    assert rig.dispatcher.read_string(0x100, 1, 3) == (VINF_IOM_R3_IOPORT_READ, b"", 3)
    assert calls == []


def test_device_lock_busy_defers_and_counts() -> None:
    rig = Rig()
    device = Recorder()
    handle = rig.region(0x100, 4, in_=device.in_, out=device.out)
    rig.freeze()
    with held_by_another_thread(rig.raw_locks[0]):
        assert rig.dispatcher.read(0x101, 1) == (VINF_IOM_R3_IOPORT_READ, 0)
        assert rig.dispatcher.write(0x102, 0x77, 1) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    assert device.ins == [] and device.outs == []
    pending = rig.vcpu.pending_port_write
    assert (pending.port, pending.value, pending.size) == (0x102, 0x77, 1)
    assert rig.g(G_DEFER_DEVICE_LOCK_BUSY) == 2
    assert rig.lock_stat(0, L_CONTENTION_RZ_BUSY) == 2
    assert rig.lock_stat(0, L_ENTERS_RZ) == 0
    assert rig.port_stat(handle, 1, P_IN_RZ_TO_R3) == 1
    assert rig.port_stat(handle, 2, P_OUT_RZ_TO_R3) == 1


def test_device_lock_busy_defers_string_accesses() -> None:
    rig = Rig()
    device = Recorder()
    rig.region(0x100, 4, in_=device.in_, out=device.out)
    rig.freeze()
    with held_by_another_thread(rig.raw_locks[0]):
        assert rig.dispatcher.read_string(0x100, 1, 2) == (VINF_IOM_R3_IOPORT_READ, b"", 2)
        assert rig.dispatcher.write_string(0x100, 1, b"ab") == (VINF_IOM_R3_IOPORT_WRITE, 0)
    assert rig.vcpu.pending_port_write.size == 0
    assert rig.g(G_DEFER_DEVICE_LOCK_BUSY) == 2
    assert rig.lock_stat(0, L_CONTENTION_RZ_BUSY) == 2


def test_busy_lock_of_another_device_does_not_defer() -> None:
    rig = Rig()
    rig.region(0x100, 1, owner=0, in_=Recorder().in_)
    rig.region(0x200, 1, owner=1, in_=Recorder(in_value=0x22).in_)
    rig.freeze()
    with held_by_another_thread(rig.raw_locks[0]):
        assert rig.dispatcher.read(0x200, 1) == (VINF_SUCCESS, 0x22)
    assert rig.lock_stat(1, L_ENTERS_RZ) == 1
    assert rig.lock_stat(0, L_CONTENTION_RZ_BUSY) == 0


def test_device_lock_is_held_during_callback_and_released_after() -> None:
    rig = Rig()
    seen: list[bool] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        seen.append(free_for_another_thread(rig.raw_locks[0]))
        return VINF_SUCCESS, 1

    rig.region(0x100, 1, in_=in_)
    rig.freeze()
    rig.dispatcher.read(0x100, 1)
    assert seen == [False]
    assert free_for_another_thread(rig.raw_locks[0])
    assert rig.lock_stat(0, L_ENTERS_RZ) == 1


def test_callback_asking_for_ring3_defers() -> None:
    rig = Rig()
    device = Recorder(in_status=VINF_IOM_R3_IOPORT_READ, in_value=0x99, out_status=VINF_IOM_R3_IOPORT_WRITE)
    handle = rig.region(0x100, 4, in_=device.in_, out=device.out)
    rig.freeze()
    assert rig.dispatcher.read(0x103, 2) == (VINF_IOM_R3_IOPORT_READ, 0)
    assert rig.dispatcher.write(0x101, 0xABCD, 2) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    assert device.ins == [(3, 2)] and device.outs == [(1, 0xABCD, 2)]
    pending = rig.vcpu.pending_port_write
    assert (pending.port, pending.value, pending.size) == (0x101, 0xABCD, 2)
    assert rig.g(G_DEFER_DEVICE_ASKED) == 2
    assert rig.port_stat(handle, 3, P_IN_RZ_TO_R3) == 1
    assert rig.port_stat(handle, 1, P_OUT_RZ_TO_R3) == 1
    assert rig.port_stat(handle, 3, P_IN_RZ) == 0
    assert rig.port_stat(handle, 1, P_OUT_RZ) == 0


def test_out_becomes_single_pending_write() -> None:
    rig = Rig()
    rig.region(0x3F8, 8, ring0=False)
    rig.freeze()
    assert rig.vcpu.force_flag_iom == 0
    assert rig.dispatcher.write(0x3FC, 0xDEADBEEF, 4) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    pending = rig.vcpu.pending_port_write
    # The absolute port, not the offset: ring-3 commits it through its own lookup.
    assert (pending.port, pending.value, pending.size) == (0x3FC, 0xDEADBEEF, 4)
    assert rig.vcpu.force_flag_iom == 1


def test_second_pending_write_is_ipe_1() -> None:
    rig = Rig()
    rig.region(0x100, 4, ring0=False)
    rig.freeze()
    assert rig.dispatcher.write(0x100, 0x11, 1) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    assert rig.dispatcher.write(0x103, 0x2222, 2) == VERR_IOM_IOPORT_IPE_1
    pending = rig.vcpu.pending_port_write
    assert (pending.port, pending.value, pending.size) == (0x100, 0x11, 1)


def test_pending_write_slot_is_reusable_once_ring3_clears_it() -> None:
    rig = Rig()
    rig.region(0x100, 4, ring0=False)
    rig.freeze()
    rig.dispatcher.write(0x100, 0x11, 1)
    rig.vcpu.pending_port_write.size = 0  # ring-3 committed it (IOMR3ProcessForceFlag)
    rig.vcpu.force_flag_iom = 0
    assert rig.dispatcher.write(0x101, 0x22, 1) == VINF_IOM_R3_IOPORT_COMMIT_WRITE
    pending = rig.vcpu.pending_port_write
    assert (pending.port, pending.value, pending.size) == (0x101, 0x22, 1)
    assert rig.vcpu.force_flag_iom == 1


# -- string I/O ------------------------------------------------------------------------


def test_string_callback_first_then_single_accesses() -> None:
    rig = Rig()
    order: list[str] = []
    counter = iter(range(0x10, 0x100))

    def in_(offset: int, size: int) -> tuple[int, int]:
        order.append("in")
        return VINF_SUCCESS, next(counter) | 0xA00

    def in_string(offset: int, count: int, size: int) -> tuple[int, bytes]:
        order.append(f"in_string({count})")
        return VINF_SUCCESS, b"\x01\x00\x02\x00"  # two of the five units

    written: list[int] = []

    def out(offset: int, value: int, size: int) -> int:
        order.append("out")
        written.append(value)
        return VINF_SUCCESS

    def out_string(offset: int, data: bytes, size: int) -> tuple[int, int]:
        order.append(f"out_string({len(data) // size})")
        return VINF_SUCCESS, 1

    rig.region(0x100, 1, in_=in_, in_string=in_string, out=out, out_string=out_string)
    rig.freeze()
    status, data, left = rig.dispatcher.read_string(0x100, 2, 5)
    assert (status, left) == (VINF_SUCCESS, 0)
    assert data == b"\x01\x00\x02\x00" + b"\x10\x0a\x11\x0a\x12\x0a"
    assert order == ["in_string(5)", "in", "in", "in"]
    order.clear()
    assert rig.dispatcher.write_string(0x100, 2, b"\x01\x00\x02\x00\x03\x00") == (VINF_SUCCESS, 3)
    assert order == ["out_string(3)", "out", "out"]
    assert written == [2, 3]


def test_string_access_without_string_callback_uses_single_accesses() -> None:
    rig = Rig()
    device = Recorder(in_value=0x41)
    rig.region(0x100, 1, in_=device.in_, out=device.out)
    rig.freeze()
    assert rig.dispatcher.read_string(0x100, 1, 3) == (VINF_SUCCESS, b"AAA", 0)
    assert rig.dispatcher.write_string(0x100, 1, b"xyz") == (VINF_SUCCESS, 3)
    assert device.outs == [(0, ord("x"), 1), (0, ord("y"), 1), (0, ord("z"), 1)]


def test_string_read_deferral_reports_units_left() -> None:
    rig = Rig()
    answers = iter([(VINF_SUCCESS, 0x33), (VINF_IOM_R3_IOPORT_READ, 0)])
    calls: list[int] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        calls.append(offset)
        return next(answers)

    def in_string(offset: int, count: int, size: int) -> tuple[int, bytes]:
        return VINF_SUCCESS, b"\x11\x22"

    handle = rig.region(0x100, 1, in_=in_, in_string=in_string)
    rig.freeze()
    # Six units: two from the string callback, one single IN, then the device wants ring-3.
    assert rig.dispatcher.read_string(0x100, 1, 6) == (VINF_IOM_R3_IOPORT_READ, b"\x11\x22\x33", 3)
    assert len(calls) == 2
    assert rig.g(G_DEFER_DEVICE_ASKED) == 1
    assert rig.port_stat(handle, 0, P_IN_RZ_TO_R3) == 1
    assert rig.port_stat(handle, 0, P_IN_RZ) == 0


def test_string_write_deferral_reports_units_done() -> None:
    rig = Rig()
    answers = iter([VINF_SUCCESS, VINF_SUCCESS, VINF_IOM_R3_IOPORT_WRITE])
    values: list[int] = []

    def out(offset: int, value: int, size: int) -> int:
        values.append(value)
        return next(answers)

    handle = rig.region(0x100, 1, out=out)
    rig.freeze()
    assert rig.dispatcher.write_string(0x100, 1, b"abcde") == (VINF_IOM_R3_IOPORT_WRITE, 2)
    assert values == [ord("a"), ord("b"), ord("c")]
    # String writes are never turned into the vCPU's pending write.
    assert rig.vcpu.pending_port_write.size == 0
    assert rig.g(G_DEFER_DEVICE_ASKED) == 1
    assert rig.port_stat(handle, 0, P_OUT_RZ_TO_R3) == 1


def test_string_callback_status_other_than_success_skips_single_accesses() -> None:
    rig = Rig()
    device = Recorder()

    def in_string(offset: int, count: int, size: int) -> tuple[int, bytes]:
        return VINF_EM_HALT, b"\x07"

    rig.region(0x100, 1, in_=device.in_, in_string=in_string)
    rig.freeze()
    assert rig.dispatcher.read_string(0x100, 1, 4) == (VINF_EM_HALT, b"\x07", 3)
    assert device.ins == []


def test_string_read_turns_ioport_unused_into_all_ones() -> None:
    rig = Rig()
    rig.region(0x100, 1, in_=Recorder(in_status=VERR_IOM_IOPORT_UNUSED).in_)
    rig.freeze()
    assert rig.dispatcher.read_string(0x100, 2, 2) == (VINF_SUCCESS, b"\xff" * 4, 0)


def test_string_callback_returning_too_many_units_does_not_start_single_reads() -> None:
    rig = Rig()
    single_reads: list[int] = []

    def in_(offset: int, size: int) -> tuple[int, int]:
        single_reads.append(offset)
        if len(single_reads) > 100:  # keep the test finite: the loop has no end of its own
            raise RuntimeError("the single-IN loop is still running")
        return VINF_SUCCESS, 0

    def in_string(offset: int, count: int, size: int) -> tuple[int, bytes]:
        return VINF_SUCCESS, b"\x01" * (count + 1)  # one unit more than asked

    rig.region(0x100, 1, in_=in_, in_string=in_string)
    rig.freeze()
    status, _, left = rig.dispatcher.read_string(0x100, 1, 2)
    assert single_reads == []
    assert left <= 0 or status != VINF_SUCCESS


# -- lookup hints ------------------------------------------------------------------------


def test_lookup_hint_is_per_direction() -> None:
    rig = Rig()
    for port in (0x100, 0x200, 0x300):
        rig.region(port, 1, in_=Recorder().in_, out=Recorder().out)
    rig.freeze()
    d = rig.dispatcher
    d.read(0x300, 1)
    assert tuple(d.hints) == (2, 0, 0, 0)
    d.write(0x200, 1, 1)
    assert tuple(d.hints) == (2, 1, 0, 0)
    d.read_string(0x200, 1, 1)
    d.write_string(0x300, 1, b"x")
    assert tuple(d.hints) == (2, 1, 1, 2)
    # A miss leaves the hint where the last hit put it.
    d.read(0x180, 1)
    assert d.hints[0] == 2


def test_lookup_finds_the_right_region_whatever_the_hint() -> None:
    rig = Rig(owners=1)
    starts = [0x10, 0x20, 0x28, 0x60, 0x61, 0x80, 0xF0]
    for start in reversed(starts):  # mapped out of order on purpose
        answer = (VINF_SUCCESS, start)
        rig.region(start, 4 if start != 0x60 else 1, in_=lambda offset, size, answer=answer: answer)
    rig.freeze()
    expected = {}
    for port in range(0x100):
        region = next((s for s in starts if s <= port < s + (4 if s != 0x60 else 1)), None)
        expected[port] = 0xFF if region is None else region
    # Walk the ports in an order that moves the hint around: forwards, backwards, strided.
    for port in [*range(0x100), *reversed(range(0x100)), *range(0, 0x100, 7), *range(0xFF, 0, -13)]:
        assert rig.dispatcher.read(port, 1) == (VINF_SUCCESS, expected[port]), hex(port)


# -- statistics --------------------------------------------------------------------------


def test_every_access_counts_exactly_one_outcome() -> None:
    rig = Rig()
    asks = Recorder(in_status=VINF_IOM_R3_IOPORT_READ, out_status=VINF_IOM_R3_IOPORT_WRITE)
    rig.region(0x100, 4, owner=0, in_=Recorder().in_, out=Recorder().out)
    rig.region(0x200, 4, owner=0, ring0=False)
    rig.region(0x300, 4, owner=1, in_=asks.in_, out=asks.out)
    rig.freeze()
    d = rig.dispatcher

    def clear_pending() -> None:
        rig.vcpu.pending_port_write.size = 0

    accesses: list[Callable[[], object]] = [
        lambda: d.read(0x100, 1),
        lambda: d.write(0x101, 1, 1),
        lambda: d.read(0x80, 2),
        lambda: d.write(0x80, 1, 4),
        lambda: d.read(0x100, 3),
        lambda: d.read(0x200, 1),
        lambda: d.write(0x201, 1, 1),
        lambda: d.read(0x300, 1),
        lambda: d.write(0x301, 1, 1),
        lambda: d.read_string(0x100, 1, 4),
        lambda: d.write_string(0x100, 1, b"ab"),
        lambda: d.read_string(0x200, 1, 4),
        lambda: d.write_string(0x300, 1, b"ab"),
        lambda: d.read_string(0x80, 1, 4),
    ]
    for access in accesses:
        before = rig.outcomes()
        access()
        clear_pending()
        assert rig.outcomes() == before + 1
    with rig.iom_lock_busy():
        for access in accesses[:2]:
            before = rig.outcomes()
            access()
            clear_pending()
            assert rig.outcomes() == before + 1
    with held_by_another_thread(rig.raw_locks[0]):
        for access in accesses[:2]:
            before = rig.outcomes()
            access()
            clear_pending()
            assert rig.outcomes() == before + 1
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 2
    assert rig.g(G_DEFER_DEVICE_LOCK_BUSY) == 2
    assert rig.g(G_DEFER_NO_R0_HANDLER) == 3
    assert rig.g(G_DEFER_DEVICE_ASKED) == 3


def test_global_counters_count_each_instruction_kind() -> None:
    rig = Rig()
    rig.region(0x100, 1, in_=Recorder().in_, out=Recorder().out)
    rig.freeze()
    d = rig.dispatcher
    d.read(0x100, 1)
    d.read(0x80, 1)
    d.write(0x100, 1, 1)
    d.read_string(0x100, 1, 5)
    d.read_string(0x100, 1, 5)
    d.read_string(0x100, 1, 5)
    d.write_string(0x100, 1, b"abcd")
    d.write_string(0x100, 1, b"abcd")
    d.write_string(0x100, 1, b"abcd")
    d.write_string(0x100, 1, b"abcd")
    counts = [rig.g(index) for index in (G_IOPORT_IN, G_IOPORT_OUT, G_IOPORT_INS, G_IOPORT_OUTS)]
    assert counts == [2, 1, 3, 4]


def test_per_port_statistics_land_on_the_accessed_port() -> None:
    rig = Rig()
    rig.region(0x60, 5, in_=Recorder().in_)  # so that the region under test does not start at entry 0
    device = Recorder()
    handle = rig.region(0x300, 4, owner=1, in_=device.in_, out=device.out)
    rig.freeze()
    assert rig.table.entries[handle].stats_index == 5
    d = rig.dispatcher
    d.read(0x302, 1)
    d.read(0x302, 1)
    d.write(0x301, 1, 1)
    d.read_string(0x303, 1, 2)
    d.write_string(0x300, 1, b"ab")
    device.in_status = VINF_IOM_R3_IOPORT_READ
    device.out_status = VINF_IOM_R3_IOPORT_WRITE
    d.read(0x301, 1)
    d.write(0x303, 1, 1)
    fields = (P_IN_RZ, P_OUT_RZ, P_IN_RZ_TO_R3, P_OUT_RZ_TO_R3)
    table = {offset: tuple(rig.port_stat(handle, offset, f) for f in fields) for offset in range(4)}
    assert table == {
        0: (0, 1, 0, 0),
        1: (0, 1, 1, 0),
        2: (2, 0, 0, 0),
        3: (1, 0, 0, 1),
    }
    # The finished accesses add to the range's Total (its first port's entry); deferred ones do not.
    assert rig.port_stat(handle, 0, P_TOTAL) == 5
    assert [rig.port_stat(handle, offset, P_TOTAL) for offset in (1, 2, 3)] == [0, 0, 0]
    # Ring-0 profiles count every callback that ran, finished or not.
    assert rig.port_stat(handle, 2, P_PROF_IN_RZ_CALLS) == 2
    assert rig.port_stat(handle, 1, P_PROF_IN_RZ_CALLS) == 1
    assert rig.port_stat(handle, 3, P_PROF_OUT_RZ_CALLS) == 1
    # The neighbouring region's entries were not touched.
    first_entries = rig.counters[ROW + G_COUNT : ROW + G_COUNT + 5 * P_COUNT]
    assert not any(first_entries)


def test_ring3_row_is_never_written_by_ring0() -> None:
    rig = Rig()
    rig.region(0x100, 1, in_=Recorder().in_)
    rig.region(0x200, 1, ring0=False)
    rig.freeze()
    rig.dispatcher.read(0x100, 1)
    rig.dispatcher.write(0x200, 1, 1)
    ring3 = LAYOUT.row_base(0, ring3=True)
    assert not any(rig.counters[ring3 : ring3 + LAYOUT.row_words])
