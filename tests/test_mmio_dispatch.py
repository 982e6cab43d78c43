"""Ring-0 MMIO (fastpath/mmio.py) and ring-3 MMIO (slowpath/iom.py's Ring3MmioIO) in one process.

No workers: a plain ctypes registration table filled through ring-3's IomManager, one
statistics segment in a bytearray (the vCPU's ring-0 row and ring-3 row), real
cross-process device locks, and devices that record every call each tier makes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastpath.dispatch import CallbackError
from fastpath.mmio import MmioDispatcher, Ring0MmioCallbacks
from shared.devapi import IOMMMIO_FLAGS_READ_DWORD, IOMMMIO_FLAGS_WRITE_DWORD_ZEROED
from shared.iomtable import CB_IN, CB_OUT, PAGE_SIZE, IomTable, MmioLookup
from shared.locks import DeviceLock
from shared.stats import (
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_FAILED,
    G_MMIO_COMMITS_DIRECT,
    G_MMIO_COMMITS_PGM,
    G_MMIO_DEV_LOCK_CONTENTION_R0,
    G_MMIO_READS,
    G_MMIO_SPLIT,
    G_MMIO_STALE,
    G_MMIO_WRITES,
    G_RING0_HANDLED,
    G_RING3_ACCESSES,
    G_UNASSIGNED,
    L_CONTENTION_RZ_BUSY,
    M_COMMIT_RZ_TO_R3,
    M_COUNT,
    M_READ_RZ_TO_R3,
    M_READS_R3,
    M_READS_RZ,
    M_WRITE_RZ_TO_R3,
    M_WRITES_R3,
    M_WRITES_RZ,
    StatsLayout,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_IOM_MMIO_IPE_1,
    VERR_IOM_MMIO_IPE_2,
    VINF_EM_HALT,
    VINF_EM_RESET,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_READ_WRITE,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
)
from shared.vcpu import NO_REGION_HINT, VCpuShared
from slowpath.iom import IomManager, Ring3MmioIO

SPAWN = multiprocessing.get_context("spawn")
N_LOCKS = 3
N_MMIO = 8
LAYOUT = StatsLayout(1, 0, N_LOCKS, N_MMIO)
ROW0 = LAYOUT.row_base(0, ring3=False)
ROW3 = LAYOUT.row_base(0, ring3=True)
MMIO0 = LAYOUT.mmio_base(ROW0, 0)
MMIO3 = LAYOUT.mmio_base(ROW3, 0)
DEFERRAL_REASONS = (G_DEFER_NO_R0_HANDLER, G_DEFER_DEVICE_ASKED, G_DEFER_DEVICE_LOCK_BUSY, G_DEFER_IOM_LOCK_BUSY)
R3_STATUSES = (VINF_IOM_R3_MMIO_READ, VINF_IOM_R3_MMIO_WRITE, VINF_IOM_R3_MMIO_READ_WRITE)

A = 0x10000  # region A; region B follows it directly
B = A + PAGE_SIZE
C = 0x20000  # region C, with unassigned space on both sides
ELSEWHERE = 0x40000  # where a moved region goes

Call = tuple[int, ...]  # (offset, size) for a read, (offset, size, value) for a write


def ones(size: int) -> int:
    return (1 << (8 * size)) - 1


@dataclass
class Half:
    """One tier's callbacks of a device: they share its memory and record their own calls."""

    memory: bytearray
    calls: list[Call] = field(default_factory=list)
    read_status: dict[int, int] = field(default_factory=dict)  # offset -> status to answer
    write_status: dict[int, int] = field(default_factory=dict)

    def read(self, offset: int, size: int) -> tuple[int, int]:
        self.calls.append((offset, size))
        return self.read_status.get(offset, VINF_SUCCESS), int.from_bytes(self.memory[offset : offset + size], "little")

    def write(self, offset: int, value: int, size: int) -> int:
        self.calls.append((offset, size, value))
        status = self.write_status.get(offset, VINF_SUCCESS)
        if status not in R3_STATUSES:
            self.memory[offset : offset + size] = value.to_bytes(size, "little")
        return status


@dataclass
class Device:
    """A page of device memory filled with *tag* bytes, with a ring-0 and a ring-3 half."""

    tag: int
    memory: bytearray = field(init=False)
    ring0: Half = field(init=False)
    ring3: Half = field(init=False)

    def __post_init__(self) -> None:
        self.memory = bytearray([self.tag]) * PAGE_SIZE
        self.ring0 = Half(self.memory)
        self.ring3 = Half(self.memory)


class HookedLock:
    """A device's cross-process lock that can run one action just before its next acquisition.

    The action plays ring-3 changing the table while a vCPU is between its lookup and
    the device call: exactly the window a stale mapping comes from.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.before_next_acquire: Callable[[], None] | None = None

    def acquire(self, *args: Any) -> bool:
        action, self.before_next_acquire = self.before_next_acquire, None
        if action is not None:
            action()
        return bool(self.raw.acquire(*args))

    def release(self) -> None:
        self.raw.release()


class Rig:
    """A registration table, ring-3's IOM over it, one vCPU's ring-0 dispatcher and ring-3 MMIO."""

    def __init__(self) -> None:
        self.table = IomTable()
        self.iom = IomManager(self.table)
        self.counters = memoryview(bytearray(LAYOUT.size_bytes)).cast("Q")
        self.vcpu = VCpuShared()
        self.raw_locks: list[Any] = [SPAWN.RLock() for _ in range(N_LOCKS)]
        self.hooked = [HookedLock(raw) for raw in self.raw_locks]
        self.ring0_locks = [
            DeviceLock(f"dev{i}#0", lock, self.counters, LAYOUT.lock_base(ROW0, i))
            for i, lock in enumerate(self.hooked)
        ]
        ring3_locks = [
            DeviceLock(f"dev{i}#0", lock, self.counters, LAYOUT.lock_base(ROW3, i))
            for i, lock in enumerate(self.hooked)
        ]
        self.ring0: dict[int, Ring0MmioCallbacks] = {}
        self.callback_errors: list[CallbackError] = []
        self.dispatcher = MmioDispatcher(
            MmioLookup(self.table), self.ring0, self.table, self.vcpu, self.counters, ROW0, MMIO0, self.callback_errors
        )
        self.ring3 = Ring3MmioIO(self.iom, ring3_locks, self.counters, ROW3, MMIO3)

    def region(
        self,
        address: int | None,
        *,
        owner: int = 0,
        flags: int = 0,
        ring0_read: bool = True,
        ring0_write: bool = True,
        tag: int = 0x5A,
    ) -> tuple[int, Device]:
        """Create a one-page region (mapped at *address* unless None) with a recording device."""
        device = Device(tag)
        name = f"dev{owner}#0"
        handle = self.iom.mmio_create(
            owner, name, PAGE_SIZE, f"M{tag:02x}", flags=flags, read=device.ring3.read, write=device.ring3.write
        )
        if address is not None:
            self.iom.mmio_map(owner, handle, address)
        if ring0_read or ring0_write:
            self.iom.mmio_set_up_ring0(owner, handle, (CB_IN if ring0_read else 0) | (CB_OUT if ring0_write else 0))
            self.ring0[handle] = Ring0MmioCallbacks(
                name,
                self.ring0_locks[owner],
                read=device.ring0.read if ring0_read else None,
                write=device.ring0.write if ring0_write else None,
            )
        return handle, device

    def freeze(self) -> Rig:
        self.iom.freeze()
        return self

    def move(self, owner: int, handle: int, address: int) -> None:
        """Ring-3 moves a region (a PCI BAR reprogrammed): unmap, then map elsewhere."""
        self.iom.mmio_unmap(owner, handle)
        self.iom.mmio_map(owner, handle, address)

    def g(self, index: int, row: int = ROW0) -> int:
        return int(self.counters[row + index])

    def m(self, handle: int, index: int, base: int = MMIO0) -> int:
        return int(self.counters[base + self.table.mmio_entries[handle].stats_index * M_COUNT + index])

    def outcomes(self) -> int:
        """Ring-0 finishes plus deferrals, whatever the reason."""
        return self.g(G_RING0_HANDLED) + sum(self.g(reason) for reason in DEFERRAL_REASONS)

    def pending(self) -> tuple[int, bytes, int]:
        """The vCPU's pending MMIO write: (address, bytes, region hint)."""
        pending = self.vcpu.pending_mmio_write
        return int(pending.address), bytes(pending.data[: pending.size]), int(pending.region_hint)

    def commit(self) -> int:
        """IOMR3ProcessForceFlag's MMIO half: commit the pending write and clear it."""
        address, data, hint = self.pending()
        status = self.ring3.commit(address, data, hint)
        self.vcpu.pending_mmio_write.size = 0
        self.vcpu.force_flag_iom = 0
        return status

    @contextmanager
    def iom_lock_busy(self) -> Iterator[None]:
        """Ring-3 is in the middle of changing the table: the generation word is odd."""
        self.table.generation += 1
        try:
            yield
        finally:
            self.table.generation += 1


def set_pending(vcpu: VCpuShared, address: int, data: bytes, hint: int) -> None:
    """Put a pending MMIO write in place, as an earlier part of the same access would have."""
    pending = vcpu.pending_mmio_write
    pending.address = address
    pending.region_hint = hint
    ctypes.memmove(ctypes.addressof(pending.data), data, len(data))
    pending.size = len(data)
    vcpu.force_flag_iom = 1


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
        got = bool(lock.acquire(False))
        if got:
            lock.release()
        result.append(got)

    prober = threading.Thread(target=probe)
    prober.start()
    prober.join(10)
    return result[0]


# -- unassigned memory ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_unassigned_mmio_read_returns_all_ones(size: int) -> None:
    rig = Rig()
    _, device = rig.region(A)
    rig.freeze()
    assert rig.dispatcher.read(C, size) == (VINF_SUCCESS, ones(size))
    assert device.ring0.calls == device.ring3.calls == []
    assert (rig.g(G_MMIO_READS), rig.g(G_UNASSIGNED), rig.g(G_RING0_HANDLED)) == (1, 1, 1)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_unassigned_mmio_write_is_dropped(size: int) -> None:
    rig = Rig()
    _, device = rig.region(A)
    rig.freeze()
    assert rig.dispatcher.write(C + 8, 0x1122334455667788, size) == VINF_SUCCESS
    assert device.ring0.calls == device.ring3.calls == []
    assert rig.vcpu.pending_mmio_write.size == 0
    assert rig.vcpu.force_flag_iom == 0
    assert (rig.g(G_MMIO_WRITES), rig.g(G_UNASSIGNED), rig.g(G_RING0_HANDLED)) == (1, 1, 1)


# -- ring-0 handles what it has callbacks for -------------------------------------------------


def test_ring0_callback_handles_a_read() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    device.memory[0x10:0x14] = b"\x01\x02\x03\x04"
    assert rig.dispatcher.read(A + 0x10, 4) == (VINF_SUCCESS, 0x04030201)
    assert device.ring0.calls == [(0x10, 4)]
    assert device.ring3.calls == []
    assert rig.m(handle, M_READS_RZ) == 1
    assert (rig.g(G_RING0_HANDLED), rig.g(G_UNASSIGNED)) == (1, 0)


def test_ring0_callback_handles_a_write() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    assert rig.dispatcher.write(A + 0x18, 0x0102030405060708, 8) == VINF_SUCCESS
    assert device.ring0.calls == [(0x18, 8, 0x0102030405060708)]
    assert rig.vcpu.pending_mmio_write.size == 0
    assert rig.m(handle, M_WRITES_RZ) == 1
    assert rig.g(G_RING0_HANDLED) == 1


def test_ring0_applies_the_region_access_mode() -> None:
    rig = Rig()
    _, device = rig.region(A, flags=IOMMMIO_FLAGS_READ_DWORD | IOMMMIO_FLAGS_WRITE_DWORD_ZEROED)
    rig.freeze()
    rig.dispatcher.write(A + 0x21, 0xBEEF, 2)
    rig.dispatcher.read(A + 0x22, 1)
    assert device.ring0.calls == [(0x20, 4, 0x00BEEF00), (0x20, 4)]


# -- no ring-0 callback -----------------------------------------------------------------------


@pytest.mark.parametrize("ring0_write", [False, True], ids=["no-ring0-half", "ring0-write-only"])
def test_read_without_ring0_callback_is_deferred_to_ring3(ring0_write: bool) -> None:
    rig = Rig()
    handle, device = rig.region(A, ring0_read=False, ring0_write=ring0_write)
    rig.freeze()
    assert rig.dispatcher.read(A + 4, 2) == (VINF_IOM_R3_MMIO_READ, 0)
    assert device.ring0.calls == device.ring3.calls == []
    assert rig.g(G_DEFER_NO_R0_HANDLER) == 1
    assert rig.m(handle, M_READ_RZ_TO_R3) == 1
    # Ring-3 redoes it with its own callback.
    assert rig.ring3.read(A + 4, 2) == (VINF_SUCCESS, 0x5A5A)
    assert device.ring3.calls == [(4, 2)]
    assert rig.m(handle, M_READS_R3, MMIO3) == 1


@pytest.mark.parametrize("ring0_read", [False, True], ids=["no-ring0-half", "ring0-read-only"])
def test_write_without_ring0_callback_is_parked_as_pending_write(ring0_read: bool) -> None:
    rig = Rig()
    handle, device = rig.region(A, ring0_read=ring0_read, ring0_write=False)
    rig.freeze()
    assert rig.dispatcher.write(A + 0x30, 0xCAFE, 2) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device.ring0.calls == device.ring3.calls == []
    assert rig.pending() == (A + 0x30, b"\xfe\xca", handle)
    assert rig.vcpu.force_flag_iom == 1
    assert rig.g(G_DEFER_NO_R0_HANDLER) == 1
    assert rig.m(handle, M_COMMIT_RZ_TO_R3) == 1


# -- locks ------------------------------------------------------------------------------------


def test_busy_device_lock_defers_a_read() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    with held_by_another_thread(rig.raw_locks[0]):
        assert rig.dispatcher.read(A, 4) == (VINF_IOM_R3_MMIO_READ, 0)
    assert device.ring0.calls == []
    assert rig.g(G_DEFER_DEVICE_LOCK_BUSY) == 1
    assert rig.g(G_MMIO_DEV_LOCK_CONTENTION_R0) == 1
    assert rig.counters[LAYOUT.lock_base(ROW0, 0) + L_CONTENTION_RZ_BUSY] == 1
    assert rig.m(handle, M_READ_RZ_TO_R3) == 1


def test_busy_device_lock_parks_a_write() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    with held_by_another_thread(rig.raw_locks[0]):
        assert rig.dispatcher.write(A + 8, 0x11223344, 4) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device.ring0.calls == []
    assert rig.pending() == (A + 8, b"\x44\x33\x22\x11", handle)
    assert rig.vcpu.force_flag_iom == 1
    assert rig.g(G_DEFER_DEVICE_LOCK_BUSY) == 1
    assert rig.g(G_MMIO_DEV_LOCK_CONTENTION_R0) == 1


def test_busy_iom_lock_defers_a_read() -> None:
    rig = Rig()
    _, device = rig.region(A)
    rig.freeze()
    with rig.iom_lock_busy():
        assert rig.dispatcher.read(A, 4) == (VINF_IOM_R3_MMIO_READ, 0)
    assert device.ring0.calls == []
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 1


def test_busy_iom_lock_parks_a_write_with_the_last_hit_as_hint() -> None:
    rig = Rig()
    rig.region(A, owner=0)
    handle_c, device = rig.region(C, owner=1)
    rig.freeze()
    rig.dispatcher.read(C, 4)  # the vCPU's lookup hint is now region C
    with rig.iom_lock_busy():
        assert rig.dispatcher.write(C + 4, 0x77, 1) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device.ring0.calls == [(0, 4)]
    assert rig.pending() == (C + 4, b"\x77", handle_c)
    assert rig.vcpu.force_flag_iom == 1
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 1


def test_busy_iom_lock_before_any_lookup_parks_a_write_without_hint() -> None:
    rig = Rig()
    rig.region(A)
    rig.freeze()
    with rig.iom_lock_busy():
        assert rig.dispatcher.write(A, 0x77, 1) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert rig.pending() == (A, b"\x77", NO_REGION_HINT)


# -- the device asks for ring-3 ---------------------------------------------------------------


@pytest.mark.parametrize("asked", R3_STATUSES)
def test_device_asking_for_ring3_defers_a_read(asked: int) -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    device.ring0.read_status[0x40] = asked
    assert rig.dispatcher.read(A + 0x40, 4) == (VINF_IOM_R3_MMIO_READ, 0)
    assert device.ring0.calls == [(0x40, 4)]
    assert rig.g(G_DEFER_DEVICE_ASKED) == 1
    assert rig.m(handle, M_READ_RZ_TO_R3) == 1
    assert rig.m(handle, M_READS_RZ) == 0


@pytest.mark.parametrize("asked", R3_STATUSES)
def test_device_asking_for_ring3_parks_the_write_as_pending(asked: int) -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    device.ring0.write_status[0x40] = asked
    assert rig.dispatcher.write(A + 0x40, 0xAABBCCDD, 4) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device.ring0.calls == [(0x40, 4, 0xAABBCCDD)]
    assert rig.pending() == (A + 0x40, b"\xdd\xcc\xbb\xaa", handle)
    assert rig.vcpu.force_flag_iom == 1
    assert rig.g(G_DEFER_DEVICE_ASKED) == 1
    assert rig.m(handle, M_WRITE_RZ_TO_R3) == 0  # every ring-0 write deferral is a commit
    assert rig.m(handle, M_COMMIT_RZ_TO_R3) == 1
    assert rig.m(handle, M_WRITES_RZ) == 0


def test_device_asking_mid_complicated_write_parks_merged_dword_and_the_rest() -> None:
    rig = Rig()
    handle, device = rig.region(A, flags=IOMMMIO_FLAGS_WRITE_DWORD_ZEROED)
    rig.freeze()
    device.ring0.write_status[0x24] = VINF_IOM_R3_MMIO_WRITE
    # A QWORD at 0x22 touches DWORDs 0x20, 0x24 and 0x28; the one at 0x24 asks for ring-3.
    assert rig.dispatcher.write(A + 0x22, 0x0807060504030201, 8) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device.ring0.calls == [(0x20, 4, 0x02010000), (0x24, 4, 0x06050403)]
    assert rig.pending() == (A + 0x24, b"\x03\x04\x05\x06\x07\x08", handle)
    # Ring-3 finishes it: the merged DWORD whole, then the last two bytes zero-merged.
    assert rig.commit() == VINF_SUCCESS
    assert device.ring3.calls == [(0x24, 4, 0x06050403), (0x28, 4, 0x00000807)]


def test_em_status_before_a_ring3_request_in_a_complicated_write_is_kept() -> None:
    rig = Rig()
    handle, device = rig.region(A, flags=IOMMMIO_FLAGS_WRITE_DWORD_ZEROED)
    rig.freeze()
    device.ring0.write_status.update({0x20: VINF_EM_HALT, 0x24: VINF_IOM_R3_MMIO_WRITE})
    assert rig.dispatcher.write(A + 0x22, 0x0807060504030201, 8) == VINF_EM_HALT
    assert rig.pending() == (A + 0x24, b"\x03\x04\x05\x06\x07\x08", handle)
    assert rig.vcpu.force_flag_iom == 1


def test_em_status_of_a_split_write_part_before_a_parked_part_is_kept() -> None:
    rig = Rig()
    _, device_a = rig.region(A, owner=0)
    handle_b, _ = rig.region(B, owner=1, ring0_write=False)
    rig.freeze()
    device_a.ring0.write_status[PAGE_SIZE - 4] = VINF_EM_HALT
    assert rig.dispatcher.write(B - 4, 0x0807060504030201, 8) == VINF_EM_HALT
    assert rig.pending() == (B, b"\x05\x06\x07\x08", handle_b)


# -- joining pending writes -------------------------------------------------------------------


def test_second_contiguous_part_is_appended_to_the_pending_write() -> None:
    rig = Rig()
    handle_a, device_a = rig.region(A, owner=0, ring0_write=False)
    rig.region(B, owner=1, ring0_write=False)
    rig.freeze()
    # A QWORD across A's end: A's half is parked, B's half follows on exactly.
    assert rig.dispatcher.write(B - 4, 0x0807060504030201, 8) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert rig.pending() == (B - 4, bytes(range(1, 9)), handle_a)
    assert device_a.ring0.calls == []
    assert rig.g(G_DEFER_NO_R0_HANDLER) == 1


def test_later_access_following_on_is_appended_to_the_pending_write() -> None:
    rig = Rig()
    handle, _ = rig.region(A, ring0_write=False)
    rig.freeze()
    set_pending(rig.vcpu, A + 0x100, b"\x01\x02", handle)
    assert rig.dispatcher.write(A + 0x102, 0x0403, 2) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert rig.pending() == (A + 0x100, b"\x01\x02\x03\x04", handle)


@pytest.mark.parametrize("gap", [-2, 2])
def test_non_contiguous_part_is_ipe_1(gap: int) -> None:
    rig = Rig()
    handle, _ = rig.region(A, ring0_write=False)
    rig.freeze()
    set_pending(rig.vcpu, A + 0x100, b"\x01\x02", handle)
    assert rig.dispatcher.write(A + 0x102 + gap, 0x0403, 2) == VERR_IOM_MMIO_IPE_1
    assert rig.pending() == (A + 0x100, b"\x01\x02", handle)


@pytest.mark.parametrize(("already", "status"), [(120, VINF_IOM_R3_MMIO_COMMIT_WRITE), (124, VERR_IOM_MMIO_IPE_2)])
def test_pending_write_holds_at_most_128_bytes(already: int, status: int) -> None:
    rig = Rig()
    handle, _ = rig.region(A, ring0_write=False)
    rig.freeze()
    set_pending(rig.vcpu, A, bytes(already), handle)
    assert rig.dispatcher.write(A + already, 0x0807060504030201, 8) == status
    expected = bytes(already) + bytes(range(1, 9)) if status == VINF_IOM_R3_MMIO_COMMIT_WRITE else bytes(already)
    assert rig.pending() == (A, expected, handle)


# -- accesses past a region's end -------------------------------------------------------------


def test_read_past_region_end_into_the_next_region_is_split() -> None:
    rig = Rig()
    handle_a, device_a = rig.region(A, owner=0, tag=0xAA)
    handle_b, device_b = rig.region(B, owner=1, tag=0xBB)
    rig.freeze()
    assert rig.dispatcher.read(B - 4, 8) == (VINF_SUCCESS, 0xBBBBBBBBAAAAAAAA)
    assert device_a.ring0.calls == [(PAGE_SIZE - 4, 4)]
    assert device_b.ring0.calls == [(0, 4)]
    assert (rig.g(G_MMIO_SPLIT), rig.g(G_RING0_HANDLED), rig.g(G_MMIO_READS)) == (1, 1, 1)
    assert (rig.m(handle_a, M_READS_RZ), rig.m(handle_b, M_READS_RZ)) == (1, 1)


def test_write_past_region_end_into_the_next_region_is_split() -> None:
    rig = Rig()
    _, device_a = rig.region(A, owner=0)
    _, device_b = rig.region(B, owner=1)
    rig.freeze()
    assert rig.dispatcher.write(B - 2, 0x0807060504030201, 8) == VINF_SUCCESS
    assert device_a.ring0.calls == [(PAGE_SIZE - 2, 2, 0x0201)]
    # B's six bytes are not a size a device takes: they arrive in natural pieces.
    assert device_b.ring0.calls == [(0, 4, 0x06050403), (4, 2, 0x0807)]
    assert (rig.g(G_MMIO_SPLIT), rig.g(G_RING0_HANDLED)) == (1, 1)


def test_split_passthru_read_reaches_the_device_in_natural_sizes() -> None:
    rig = Rig()
    _, device_a = rig.region(A, owner=0, tag=0xAA)
    _, device_b = rig.region(B, owner=1, tag=0xBB)
    rig.freeze()
    assert rig.dispatcher.read(B - 2, 8) == (VINF_SUCCESS, 0xBBBBBBBBBBBBAAAA)
    assert device_a.ring0.calls == [(PAGE_SIZE - 2, 2)]
    assert device_b.ring0.calls == [(0, 4), (4, 2)]


def test_read_past_region_end_into_unassigned_space_is_split() -> None:
    rig = Rig()
    _, device = rig.region(C, tag=0xCC)
    rig.freeze()
    assert rig.dispatcher.read(C + PAGE_SIZE - 4, 8) == (VINF_SUCCESS, 0xFFFFFFFFCCCCCCCC)
    assert rig.dispatcher.read(C - 4, 8) == (VINF_SUCCESS, 0xCCCCCCCCFFFFFFFF)
    assert device.ring0.calls == [(PAGE_SIZE - 4, 4), (0, 4)]
    assert (rig.g(G_MMIO_SPLIT), rig.g(G_RING0_HANDLED)) == (2, 2)


def test_write_past_region_end_into_unassigned_space_is_split() -> None:
    rig = Rig()
    _, device = rig.region(C)
    rig.freeze()
    assert rig.dispatcher.write(C + PAGE_SIZE - 4, 0x0807060504030201, 8) == VINF_SUCCESS
    assert rig.dispatcher.write(C - 4, 0x0807060504030201, 8) == VINF_SUCCESS
    assert device.ring0.calls == [(PAGE_SIZE - 4, 4, 0x04030201), (0, 4, 0x08070605)]
    assert rig.vcpu.pending_mmio_write.size == 0
    assert (rig.g(G_MMIO_SPLIT), rig.g(G_RING0_HANDLED)) == (2, 2)


def test_split_write_parks_only_the_part_ring0_cannot_do() -> None:
    rig = Rig()
    _, device_a = rig.region(A, owner=0)
    handle_b, device_b = rig.region(B, owner=1, ring0_write=False)
    rig.freeze()
    assert rig.dispatcher.write(B - 4, 0x0807060504030201, 8) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device_a.ring0.calls == [(PAGE_SIZE - 4, 4, 0x04030201)]
    assert rig.pending() == (B, b"\x05\x06\x07\x08", handle_b)
    assert rig.commit() == VINF_SUCCESS
    assert device_b.ring3.calls == [(0, 4, 0x08070605)]
    assert device_a.ring3.calls == []


def test_split_read_keeps_the_most_urgent_em_status() -> None:
    rig = Rig()
    _, device_a = rig.region(A, owner=0)
    _, device_b = rig.region(B, owner=1)
    rig.freeze()
    device_a.ring0.read_status[PAGE_SIZE - 4] = VINF_EM_HALT
    device_b.ring0.read_status[0] = VINF_EM_RESET
    assert rig.dispatcher.read(B - 4, 8)[0] == VINF_EM_RESET


# -- stale mappings: the region moved between the lookup and the device call ------------------


def test_region_moved_under_a_ring0_read_is_stale_and_deferred() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    rig.dispatcher.read(A, 4)  # the vCPU's lookup copy is current
    rig.hooked[0].before_next_acquire = lambda: rig.move(0, handle, ELSEWHERE)
    assert rig.dispatcher.read(A + 8, 4) == (VINF_IOM_R3_MMIO_READ, 0)
    assert device.ring0.calls == [(0, 4)]  # only the first read reached the device
    assert rig.g(G_MMIO_STALE) == 1
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 1
    assert rig.m(handle, M_READ_RZ_TO_R3) == 1
    # Ring-3 redoes it with a fresh lookup: the address is unassigned now.
    assert rig.ring3.read(A + 8, 4) == (VINF_SUCCESS, 0xFFFFFFFF)
    assert device.ring3.calls == []


def test_region_moved_under_a_ring0_write_is_stale_and_parked() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    rig.hooked[0].before_next_acquire = lambda: rig.move(0, handle, ELSEWHERE)
    assert rig.dispatcher.write(A + 8, 0x44, 1) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert device.ring0.calls == []
    assert rig.pending() == (A + 8, b"\x44", handle)
    assert rig.g(G_MMIO_STALE) == 1
    assert rig.g(G_DEFER_IOM_LOCK_BUSY) == 1


def test_region_remapped_at_the_same_address_is_not_stale() -> None:
    rig = Rig()
    handle, device = rig.region(A)
    rig.freeze()
    rig.hooked[0].before_next_acquire = lambda: rig.move(0, handle, A)
    assert rig.dispatcher.read(A + 8, 4) == (VINF_SUCCESS, 0x5A5A5A5A)
    assert device.ring0.calls == [(8, 4)]
    assert rig.g(G_MMIO_STALE) == 0


def test_region_moved_under_a_ring3_read_reads_all_ones() -> None:
    rig = Rig()
    handle, device = rig.region(A, ring0_read=False, ring0_write=False)
    rig.freeze()
    rig.hooked[0].before_next_acquire = lambda: rig.move(0, handle, ELSEWHERE)
    assert rig.ring3.read(A + 8, 4) == (VINF_SUCCESS, 0xFFFFFFFF)
    assert device.ring3.calls == []
    assert rig.g(G_MMIO_STALE, ROW3) == 1
    assert rig.g(G_RING3_ACCESSES, ROW3) == 0


def test_region_moved_under_a_ring3_write_drops_it() -> None:
    rig = Rig()
    handle, device = rig.region(A, ring0_read=False, ring0_write=False)
    rig.freeze()
    rig.hooked[0].before_next_acquire = lambda: rig.move(0, handle, ELSEWHERE)
    assert rig.ring3.write(A + 8, b"\x01\x02\x03\x04") == VINF_SUCCESS
    assert device.ring3.calls == []
    assert rig.g(G_MMIO_STALE, ROW3) == 1


# -- ring-3 commits the pending write ---------------------------------------------------------


def test_commit_goes_direct_while_the_hinted_region_holds_the_write() -> None:
    rig = Rig()
    handle, device = rig.region(A, ring0_write=False)
    rig.freeze()
    assert rig.dispatcher.write(A + 0x30, 0xCAFE, 2) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert rig.commit() == VINF_SUCCESS
    assert device.ring3.calls == [(0x30, 2, 0xCAFE)]
    assert device.ring0.calls == []
    assert (rig.g(G_MMIO_COMMITS_DIRECT, ROW3), rig.g(G_MMIO_COMMITS_PGM, ROW3)) == (1, 0)
    assert rig.m(handle, M_WRITES_R3, MMIO3) == 1


def test_commit_after_the_region_moved_goes_through_a_full_lookup() -> None:
    rig = Rig()
    handle_a, device_a = rig.region(A, owner=0, ring0_write=False)
    handle_b, device_b = rig.region(None, owner=1)
    rig.freeze()
    assert rig.dispatcher.write(A + 0x30, 0xCAFE, 2) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert rig.pending()[2] == handle_a
    # The BAR moves before ring-3 gets to the commit, and another region takes its place.
    rig.move(0, handle_a, ELSEWHERE)
    rig.iom.mmio_map(1, handle_b, A)
    assert rig.commit() == VINF_SUCCESS
    assert device_a.ring3.calls == device_a.ring0.calls == []
    assert device_b.ring3.calls == [(0x30, 2, 0xCAFE)]
    assert (rig.g(G_MMIO_COMMITS_DIRECT, ROW3), rig.g(G_MMIO_COMMITS_PGM, ROW3)) == (0, 1)


def test_commit_spanning_two_regions_goes_through_a_full_lookup() -> None:
    rig = Rig()
    _, device_a = rig.region(A, owner=0, ring0_write=False)
    _, device_b = rig.region(B, owner=1, ring0_write=False)
    rig.freeze()
    assert rig.dispatcher.write(B - 4, 0x0807060504030201, 8) == VINF_IOM_R3_MMIO_COMMIT_WRITE
    assert rig.commit() == VINF_SUCCESS
    assert device_a.ring3.calls == [(PAGE_SIZE - 4, 4, 0x04030201)]
    assert device_b.ring3.calls == [(0, 4, 0x08070605)]
    assert (rig.g(G_MMIO_COMMITS_DIRECT, ROW3), rig.g(G_MMIO_COMMITS_PGM, ROW3)) == (0, 1)


def test_commit_of_a_write_parked_without_hint_goes_through_a_full_lookup() -> None:
    rig = Rig()
    _, device = rig.region(A)
    rig.freeze()
    with rig.iom_lock_busy():
        rig.dispatcher.write(A + 4, 0x99, 1)
    assert rig.commit() == VINF_SUCCESS
    assert device.ring3.calls == [(4, 1, 0x99)]
    assert rig.g(G_MMIO_COMMITS_PGM, ROW3) == 1


def test_each_pending_write_is_committed_exactly_once() -> None:
    rig = Rig()
    _, device = rig.region(A, ring0_write=False)
    rig.freeze()
    for i in range(3):
        assert rig.dispatcher.write(A + 4 * i, i, 4) == VINF_IOM_R3_MMIO_COMMIT_WRITE
        assert rig.commit() == VINF_SUCCESS
    assert device.ring3.calls == [(0, 4, 0), (4, 4, 1), (8, 4, 2)]
    assert rig.g(G_MMIO_COMMITS_DIRECT, ROW3) == 3


# -- every access has exactly one outcome -----------------------------------------------------


def _raise(offset: int, size: int) -> tuple[int, int]:
    raise RuntimeError("device bug")


def _scenario_rig(*, ring0_read: bool = True, ring0_write: bool = True) -> tuple[Rig, int, Device]:
    rig = Rig()
    handle, device = rig.region(A, owner=0, ring0_read=ring0_read, ring0_write=ring0_write)
    rig.region(B, owner=1, ring0_write=False)
    rig.freeze()
    return rig, handle, device


def _lock_busy(access: Callable[[Rig], object]) -> Callable[[Rig], object]:
    def run(rig: Rig) -> object:
        with held_by_another_thread(rig.raw_locks[0]):
            return access(rig)

    return run


def _iom_busy(access: Callable[[Rig], object]) -> Callable[[Rig], object]:
    def run(rig: Rig) -> object:
        with rig.iom_lock_busy():
            return access(rig)

    return run


def _stale(access: Callable[[Rig], object]) -> Callable[[Rig], object]:
    def run(rig: Rig) -> object:
        rig.hooked[0].before_next_acquire = lambda: rig.move(0, 0, ELSEWHERE)
        return access(rig)

    return run


def _asking(access: Callable[[Rig], object]) -> Callable[[Rig], object]:
    def run(rig: Rig) -> object:
        rig.ring0[0].read = lambda offset, size: (VINF_IOM_R3_MMIO_READ, 0)
        rig.ring0[0].write = lambda offset, value, size: VINF_IOM_R3_MMIO_WRITE
        return access(rig)

    return run


def _raising(access: Callable[[Rig], object]) -> Callable[[Rig], object]:
    def run(rig: Rig) -> object:
        rig.ring0[0].read = _raise
        return access(rig)

    return run


def _read(rig: Rig) -> object:
    return rig.dispatcher.read(A + 4, 4)


def _write(rig: Rig) -> object:
    return rig.dispatcher.write(A + 4, 1, 4)


# name -> (ring0 callbacks of region A (read, write), the access, the outcome counted)
OUTCOMES: dict[str, tuple[tuple[bool, bool], Callable[[Rig], object], int]] = {
    "unassigned-read": ((True, True), lambda rig: rig.dispatcher.read(C, 4), G_RING0_HANDLED),
    "unassigned-write": ((True, True), lambda rig: rig.dispatcher.write(C, 1, 4), G_RING0_HANDLED),
    "bad-size-read": ((True, True), lambda rig: rig.dispatcher.read(A, 3), G_RING0_HANDLED),
    "ring0-read": ((True, True), _read, G_RING0_HANDLED),
    "ring0-write": ((True, True), _write, G_RING0_HANDLED),
    "callback-raises": ((True, True), _raising(_read), G_RING0_HANDLED),
    "no-ring0-read": ((False, True), _read, G_DEFER_NO_R0_HANDLER),
    "no-ring0-write": ((True, False), _write, G_DEFER_NO_R0_HANDLER),
    "lock-busy-read": ((True, True), _lock_busy(_read), G_DEFER_DEVICE_LOCK_BUSY),
    "lock-busy-write": ((True, True), _lock_busy(_write), G_DEFER_DEVICE_LOCK_BUSY),
    "iom-busy-read": ((True, True), _iom_busy(_read), G_DEFER_IOM_LOCK_BUSY),
    "iom-busy-write": ((True, True), _iom_busy(_write), G_DEFER_IOM_LOCK_BUSY),
    "device-asks-read": ((True, True), _asking(_read), G_DEFER_DEVICE_ASKED),
    "device-asks-write": ((True, True), _asking(_write), G_DEFER_DEVICE_ASKED),
    "stale-read": ((True, True), _stale(_read), G_DEFER_IOM_LOCK_BUSY),
    "stale-write": ((True, True), _stale(_write), G_DEFER_IOM_LOCK_BUSY),
    "split-read": ((True, True), lambda rig: rig.dispatcher.read(B - 4, 8), G_RING0_HANDLED),
    "split-write-second-part-parked": (
        (True, True),
        lambda rig: rig.dispatcher.write(B - 4, 1, 8),
        G_DEFER_NO_R0_HANDLER,
    ),
}


@pytest.mark.parametrize("name", list(OUTCOMES))
def test_every_mmio_access_counts_exactly_one_outcome(name: str) -> None:
    (ring0_read, ring0_write), access, outcome = OUTCOMES[name]
    rig, _, _ = _scenario_rig(ring0_read=ring0_read, ring0_write=ring0_write)
    access(rig)
    assert rig.g(outcome) == 1
    assert rig.outcomes() == 1
    assert rig.g(G_MMIO_READS) + rig.g(G_MMIO_WRITES) == 1


def test_callback_that_raises_fails_the_access_and_is_recorded() -> None:
    rig, handle, _ = _scenario_rig()
    rig.ring0[handle].read = _raise
    assert rig.dispatcher.read(A + 4, 4) == (VERR_INTERNAL_ERROR, 0)
    assert rig.g(G_FAILED) == 1
    assert [(error.device, error.port) for error in rig.callback_errors] == [("dev0#0", A + 4)]
    assert free_for_another_thread(rig.raw_locks[0])  # the device lock was released
