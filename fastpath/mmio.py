"""Ring-0 MMIO: IOMAllMmioNew.cpp's read and write as compiled for ring-0.

An access goes to the ring-0 callback of the region holding it when it can.  It cannot
when the IOM lock is being written, the region has no ring-0 callback for the
direction, the device lock is taken, the region moved under the access (a stale
mapping), or the device itself answers VINF_IOM_R3_MMIO_*.  Then:

* a read returns VINF_IOM_R3_MMIO_READ and the vCPU has ring-3 redo it;
* a write is parked as the vCPU's pending MMIO write (up to 128 bytes, with the region
  as a hint; a second, contiguous part is appended) and returns
  VINF_IOM_R3_MMIO_COMMIT_WRITE (or a more urgent EM status the bytes already written
  returned): the instruction retires, ring-3 commits the bytes.  Every ring-0 write
  deferral is such a commit, so Write-RZtoR3-Commit counts them (Write-RZtoR3 stays 0).

An access that runs past its region's end is cut into parts per region (and counted);
each part is handled on its own, and once one part of a write is pending the parts
after it are appended too, so the device sees them in order.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

from fastpath.dispatch import CallbackError
from shared.devapi import MmioRead, MmioWrite
from shared.iomtable import IomTable, MmioLookup, MmioRegionInfo
from shared.locks import DeviceLock
from shared.mmio import MAX_PENDING_MMIO_WRITE, MMIO_SIZES, RING3_STATUSES, all_ones, do_read, do_write, split_parts
from shared.stats import (
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_FAILED,
    G_MMIO_DEV_LOCK_CONTENTION_R0,
    G_MMIO_READS,
    G_MMIO_SPLIT,
    G_MMIO_STALE,
    G_MMIO_WRITES,
    G_RING0_HANDLED,
    G_UNASSIGNED,
    M_COMMIT_RZ_TO_R3,
    M_COUNT,
    M_PROF_READ_RZ_CALLS,
    M_PROF_READ_RZ_NS,
    M_PROF_WRITE_RZ_CALLS,
    M_PROF_WRITE_RZ_NS,
    M_READ_RZ_TO_R3,
    M_READS_RZ,
    M_WRITES_RZ,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_IOM_MMIO_IPE_1,
    VERR_IOM_MMIO_IPE_2,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_SUCCESS,
    is_em_status,
)
from shared.vcpu import VCpuShared

HANDLED = 0  # a part finished in ring-0; any other value is the G_DEFER_* counter of why not


@dataclass(slots=True)
class Ring0MmioCallbacks:
    """What one MMIO region's ring-0 half set up (IOMMMIOENTRYR0), and its device's lock."""

    device: str
    lock: DeviceLock
    read: MmioRead | None = None
    write: MmioWrite | None = None


class MmioDispatcher:
    """Ring-0 MMIO for one vCPU: its lookup hint, its pending MMIO write, its statistics row."""

    def __init__(
        self,
        lookup: MmioLookup,
        ring0: dict[int, Ring0MmioCallbacks],
        table: IomTable,
        vcpu: VCpuShared,
        counters: memoryview,
        row_base: int,
        mmio_stats: int,
        callback_errors: list[CallbackError],
    ) -> None:
        self.lookup = lookup
        self.ring0 = ring0
        self.table = table
        self.vcpu = vcpu
        self.counters = counters
        self.row = row_base
        self.mmio_stats = mmio_stats  # statistics entry 0 of this row
        self.hint = 0  # IOMCPU.idxMmioLastPhysHandler
        self.callback_errors = callback_errors

    # -- a part of an access, in one region -----------------------------------------------
    def _enter(self, info: MmioRegionInfo, writing: bool) -> tuple[Ring0MmioCallbacks, int] | int:
        """Take the region's device lock for a ring-0 call: (callbacks, stats) or the G_DEFER_* why not."""
        c = self.counters
        stats = self.mmio_stats + info.stats_index * M_COUNT
        r0 = self.ring0.get(info.handle)
        if r0 is None or (r0.write if writing else r0.read) is None:
            return G_DEFER_NO_R0_HANDLER
        if not r0.lock.try_enter_ring0():
            c[self.row + G_MMIO_DEV_LOCK_CONTENTION_R0] += 1
            return G_DEFER_DEVICE_LOCK_BUSY
        table = self.table
        if table.generation != self.lookup.generation and table.mmio_entries[info.handle].mapping != info.first:
            # Ring-3 moved the region after our lookup: ring-0 leaves it to ring-3.
            r0.lock.release()
            c[self.row + G_MMIO_STALE] += 1
            return G_DEFER_IOM_LOCK_BUSY
        return r0, stats

    def _failed(self, device: str, address: int, error: BaseException) -> int:
        if len(self.callback_errors) < 20:
            self.callback_errors.append(CallbackError(device, address, error))
        self.counters[self.row + G_FAILED] += 1
        return VERR_INTERNAL_ERROR

    def _read_part(self, info: MmioRegionInfo, address: int, size: int) -> tuple[int, int, int]:
        """(HANDLED or why deferred, status, value) for one region's part of a read."""
        entered = self._enter(info, False)
        if isinstance(entered, int):
            self.counters[self.mmio_stats + info.stats_index * M_COUNT + M_READ_RZ_TO_R3] += 1
            return entered, VINF_IOM_R3_MMIO_READ, 0
        r0, stats = entered
        c = self.counters
        started = time.perf_counter_ns()
        try:
            rc, value = do_read(r0.read, info.flags, address, address - info.first, size, c, stats)
        except Exception as exc:
            rc, value = self._failed(r0.device, address, exc), 0
        finally:
            r0.lock.release()
        c[stats + M_PROF_READ_RZ_NS] += time.perf_counter_ns() - started
        c[stats + M_PROF_READ_RZ_CALLS] += 1
        if rc in RING3_STATUSES:
            c[stats + M_READ_RZ_TO_R3] += 1
            return G_DEFER_DEVICE_ASKED, VINF_IOM_R3_MMIO_READ, 0
        c[stats + M_READS_RZ] += 1
        return HANDLED, rc, value

    def _write_part(self, info: MmioRegionInfo, address: int, data: bytes) -> tuple[int, int, int, bytes]:
        """(HANDLED or why deferred, status, address, bytes ring-3 must still write) for one part."""
        entered = self._enter(info, True)
        if isinstance(entered, int):
            return entered, VINF_SUCCESS, address, data
        r0, stats = entered
        c = self.counters
        started = time.perf_counter_ns()
        try:
            rc, left_at, left = do_write(r0.write, r0.read, info.flags, address, address - info.first, data, c, stats)
        except Exception as exc:
            rc, left_at, left = self._failed(r0.device, address, exc), address, b""
        finally:
            r0.lock.release()
        c[stats + M_PROF_WRITE_RZ_NS] += time.perf_counter_ns() - started
        c[stats + M_PROF_WRITE_RZ_CALLS] += 1
        if left:  # the device asked for ring-3; rc is what the bytes before them returned
            return G_DEFER_DEVICE_ASKED, rc, left_at, left
        c[stats + M_WRITES_RZ] += 1
        return HANDLED, rc, address, b""

    def _write_pending(self, address: int, data: bytes, region_hint: int) -> int:
        """iomMmioRing3WritePending: park bytes for ring-3; a later part must follow on exactly."""
        pending = self.vcpu.pending_mmio_write
        size = pending.size
        if size:
            if address != pending.address + size:
                return VERR_IOM_MMIO_IPE_1
            if size + len(data) > MAX_PENDING_MMIO_WRITE:
                return VERR_IOM_MMIO_IPE_2
        else:
            pending.address = address
            pending.region_hint = region_hint
        ctypes.memmove(ctypes.addressof(pending.data) + size, data, len(data))
        pending.size = size + len(data)
        self.vcpu.force_flag_iom = 1
        return VINF_IOM_R3_MMIO_COMMIT_WRITE

    # -- the accesses ---------------------------------------------------------------------
    def _locate(self, address: int, size: int) -> list[tuple[int, int, int]] | None:
        """The parts of an access, or None when the IOM lock is being written."""
        lookup = self.lookup
        if not lookup.refresh():
            return None
        i = lookup.find(address, self.hint)
        if i >= 0:
            self.hint = i
            if address + size - 1 <= lookup.lasts[i]:
                return [(i, address, size)]  # the usual case: one region holds it all
        parts = split_parts(lookup.firsts, lookup.lasts, address, size, i)
        if len(parts) > 1:
            self.counters[self.row + G_MMIO_SPLIT] += 1
        return parts

    def read(self, address: int, size: int) -> tuple[int, int]:
        """An MMIO read in ring-0: (status, value); VINF_IOM_R3_MMIO_READ has ring-3 redo it."""
        c = self.counters
        row = self.row
        c[row + G_MMIO_READS] += 1
        if size not in MMIO_SIZES:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_FAILED] += 1
            return VERR_IOM_MMIO_IPE_2, 0
        parts = self._locate(address, size)
        if parts is None:
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return VINF_IOM_R3_MMIO_READ, 0
        infos = self.lookup.infos
        status = VINF_SUCCESS
        value = 0
        unassigned = True
        for at, start, length in parts:
            if at < 0:
                part = all_ones(length)
            else:
                unassigned = False
                why, rc, part = self._read_part(infos[at], start, length)
                if why != HANDLED:
                    c[row + why] += 1
                    return VINF_IOM_R3_MMIO_READ, 0
                if rc < 0:
                    c[row + G_RING0_HANDLED] += 1
                    return rc, 0
                if is_em_status(rc):
                    status = rc if status == VINF_SUCCESS else min(status, rc)
            value |= part << (8 * (start - address))
        c[row + G_RING0_HANDLED] += 1
        if unassigned:
            c[row + G_UNASSIGNED] += 1
        return status, value

    def write(self, address: int, value: int, size: int) -> int:
        """An MMIO write in ring-0.  VINF_IOM_R3_MMIO_COMMIT_WRITE: bytes were parked for ring-3."""
        c = self.counters
        row = self.row
        c[row + G_MMIO_WRITES] += 1
        if size not in MMIO_SIZES:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_FAILED] += 1
            return VERR_IOM_MMIO_IPE_2
        data = (value & all_ones(size)).to_bytes(size, "little")
        parts = self._locate(address, size)
        if parts is None:
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return self._write_pending(address, data, self._hint_handle(address))
        infos = self.lookup.infos
        status = VINF_SUCCESS
        deferred_because = HANDLED
        unassigned = True
        for at, start, length in parts:
            if at < 0:
                continue  # a write to nothing vanishes
            unassigned = False
            info = infos[at]
            chunk = data[start - address : start - address + length]
            if deferred_because == HANDLED:
                why, rc, left_at, left = self._write_part(info, start, chunk)
            else:
                why, rc, left_at, left = deferred_because, VINF_SUCCESS, start, chunk  # keep the order
            if rc < 0:
                c[row + (G_RING0_HANDLED if deferred_because == HANDLED and why == HANDLED else why)] += 1
                return rc
            if is_em_status(rc):
                status = rc if status == VINF_SUCCESS else min(status, rc)
            if why != HANDLED:
                c[self.mmio_stats + info.stats_index * M_COUNT + M_COMMIT_RZ_TO_R3] += 1
                deferred_because = why
                parked = self._write_pending(left_at, left, info.handle)
                if parked != VINF_IOM_R3_MMIO_COMMIT_WRITE:
                    c[row + why] += 1
                    return parked
        if deferred_because != HANDLED:
            c[row + deferred_because] += 1
            # An EM status from the bytes already written outranks the commit code;
            # VMCPU_FF_IOM still makes the vCPU commit the parked bytes.
            return status if status != VINF_SUCCESS else VINF_IOM_R3_MMIO_COMMIT_WRITE
        c[row + G_RING0_HANDLED] += 1
        if unassigned:
            c[row + G_UNASSIGNED] += 1
        return status

    def _hint_handle(self, address: int) -> int:
        """The region a write was aimed at when the lookup could not run: the last hit's."""
        infos = self.lookup.infos
        return infos[self.hint].handle if self.hint < len(infos) else 0xFFFFFFFF
