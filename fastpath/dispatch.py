"""Ring-0 port I/O: IOMAll.cpp's IN, OUT, INS and OUTS as compiled for ring-0.

An access is finished here when it can be: the port is unassigned, or its region has a
ring-0 callback, the IOM lock is not being written and the device lock is free, and the
callback does not itself ask for ring-3.  Otherwise it is deferred:

* a read returns VINF_IOM_R3_IOPORT_READ and the caller redoes it in ring-3;
* a write becomes the vCPU's single pending write (in shared memory) and returns
  VINF_IOM_R3_IOPORT_COMMIT_WRITE: the OUT retires, ring-3 commits the value;
* a string access returns VINF_IOM_R3_IOPORT_READ / _WRITE with the units not done.

Every decision point bumps a counter in this vCPU's ring-0 statistics row.  This is the
hot path: names are bound to locals and the code is kept flat on purpose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.devapi import IOM_IOPORT_F_ABS, PortIn, PortInString, PortOut, PortOutString
from shared.iomtable import PortLookup
from shared.locks import DeviceLock
from shared.portio import ALL_ONES, read_units, write_units
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
    P_COUNT,
    P_IN_RZ,
    P_IN_RZ_TO_R3,
    P_OUT_RZ,
    P_OUT_RZ_TO_R3,
    P_PROF_IN_RZ_CALLS,
    P_PROF_IN_RZ_NS,
    P_PROF_OUT_RZ_CALLS,
    P_PROF_OUT_RZ_NS,
    P_TOTAL,
)
from shared.status import (
    VERR_INTERNAL_ERROR,
    VERR_IOM_INVALID_IOPORT_SIZE,
    VERR_IOM_IOPORT_IPE_1,
    VERR_IOM_IOPORT_UNUSED,
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_SUCCESS,
    iom_success_r0,
)
from shared.vcpu import VCpuShared


@dataclass(slots=True)
class Ring0Callbacks:
    """What one region's ring-0 half set up (IOMIOPORTENTRYR0), and its device's lock."""

    device: str
    lock: DeviceLock
    in_: PortIn | None = None
    out: PortOut | None = None
    in_string: PortInString | None = None
    out_string: PortOutString | None = None


class CallbackError:
    """The last exception a device callback raised, kept for the vCPU's report."""

    __slots__ = ("device", "port", "error")

    def __init__(self, device: str, port: int, error: BaseException) -> None:
        self.device = device
        self.port = port
        self.error = error

    def __str__(self) -> str:
        return f"{self.device} port {self.port:#06x}: {type(self.error).__name__}: {self.error}"


class PortDispatcher:
    """Ring-0 IOM for one vCPU: lookups with this vCPU's hints, counting in its row."""

    def __init__(
        self,
        lookup: PortLookup,
        ring0: dict[int, Ring0Callbacks],
        vcpu: VCpuShared,
        counters: memoryview,
        row_base: int,
    ) -> None:
        self.lookup = lookup
        self.ring0 = ring0
        self.vcpu = vcpu
        self.counters = counters
        self.row = row_base
        self.port_stats = row_base + G_COUNT
        # Per-vCPU lookup hints (IOMCPU.idxIoPortLast*): positions of the last hits.
        self.hint_read = 0
        self.hint_write = 0
        self.hint_read_string = 0
        self.hint_write_string = 0
        self.callback_errors: list[CallbackError] = []

    # -- helpers -----------------------------------------------------------------------
    def _callback_failed(self, device: str, port: int, error: BaseException) -> int:
        """A device callback raised: the access fails with a status, the vCPU goes on."""
        if len(self.callback_errors) < 20:
            self.callback_errors.append(CallbackError(device, port, error))
        self.counters[self.row + G_FAILED] += 1
        return VERR_INTERNAL_ERROR

    def _write_pending(self, port: int, value: int, size: int) -> int:
        """iomIOPortRing3WritePending: park the OUT for ring-3; the instruction retires."""
        pending = self.vcpu.pending_port_write
        if pending.size:
            return VERR_IOM_IOPORT_IPE_1
        pending.port = port
        pending.value = value
        pending.size = size
        self.vcpu.force_flag_iom = 1
        return VINF_IOM_R3_IOPORT_COMMIT_WRITE

    # -- IN ----------------------------------------------------------------------------
    def read(self, port: int, size: int) -> tuple[int, int]:
        """IOMIOPortRead in ring-0.  Returns (status, value); VINF_IOM_R3_IOPORT_READ defers."""
        c = self.counters
        row = self.row
        c[row + G_IOPORT_IN] += 1
        if size not in ALL_ONES:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_FAILED] += 1
            return VERR_IOM_INVALID_IOPORT_SIZE, 0
        lookup = self.lookup
        if not lookup.refresh():
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return VINF_IOM_R3_IOPORT_READ, 0
        i = lookup.find(port, self.hint_read)
        if i < 0:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_UNASSIGNED] += 1
            return VINF_SUCCESS, ALL_ONES[size]
        self.hint_read = i
        info = lookup.infos[i]
        offset = port - info.first
        stats = self.port_stats + (info.stats_index + offset) * P_COUNT
        r0 = self.ring0.get(info.handle)
        if r0 is None or r0.in_ is None:
            c[stats + P_IN_RZ_TO_R3] += 1
            c[row + G_DEFER_NO_R0_HANDLER] += 1
            return VINF_IOM_R3_IOPORT_READ, 0
        lock = r0.lock
        if not lock.try_enter_ring0():
            c[stats + P_IN_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_LOCK_BUSY] += 1
            return VINF_IOM_R3_IOPORT_READ, 0
        started = time.perf_counter_ns()
        try:
            rc, value = r0.in_(port if info.flags & IOM_IOPORT_F_ABS else offset, size)
        except Exception as exc:
            rc, value = self._callback_failed(r0.device, port, exc), 0
        finally:
            lock.release()
        c[stats + P_PROF_IN_RZ_NS] += time.perf_counter_ns() - started
        c[stats + P_PROF_IN_RZ_CALLS] += 1
        if rc == VINF_IOM_R3_IOPORT_READ:
            c[stats + P_IN_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_ASKED] += 1
            return rc, 0
        c[stats + P_IN_RZ] += 1
        c[self.port_stats + info.stats_index * P_COUNT + P_TOTAL] += 1
        c[row + G_RING0_HANDLED] += 1
        if rc == VERR_IOM_IOPORT_UNUSED:
            return VINF_SUCCESS, ALL_ONES[size]
        return rc, value & ALL_ONES[size]

    # -- OUT ---------------------------------------------------------------------------
    def write(self, port: int, value: int, size: int) -> int:
        """IOMIOPortWrite in ring-0.  VINF_IOM_R3_IOPORT_COMMIT_WRITE: a pending write was parked."""
        c = self.counters
        row = self.row
        c[row + G_IOPORT_OUT] += 1
        if size not in ALL_ONES:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_FAILED] += 1
            return VERR_IOM_INVALID_IOPORT_SIZE
        lookup = self.lookup
        if not lookup.refresh():
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return self._write_pending(port, value, size)
        i = lookup.find(port, self.hint_write)
        if i < 0:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_UNASSIGNED] += 1
            return VINF_SUCCESS
        self.hint_write = i
        info = lookup.infos[i]
        offset = port - info.first
        stats = self.port_stats + (info.stats_index + offset) * P_COUNT
        r0 = self.ring0.get(info.handle)
        if r0 is None or r0.out is None:
            c[stats + P_OUT_RZ_TO_R3] += 1
            c[row + G_DEFER_NO_R0_HANDLER] += 1
            return self._write_pending(port, value, size)
        lock = r0.lock
        if not lock.try_enter_ring0():
            c[stats + P_OUT_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_LOCK_BUSY] += 1
            return self._write_pending(port, value, size)
        started = time.perf_counter_ns()
        try:
            rc = r0.out(port if info.flags & IOM_IOPORT_F_ABS else offset, value, size)
        except Exception as exc:
            rc = self._callback_failed(r0.device, port, exc)
        finally:
            lock.release()
        c[stats + P_PROF_OUT_RZ_NS] += time.perf_counter_ns() - started
        c[stats + P_PROF_OUT_RZ_CALLS] += 1
        if rc == VINF_IOM_R3_IOPORT_WRITE:
            c[stats + P_OUT_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_ASKED] += 1
            return self._write_pending(port, value, size)
        c[stats + P_OUT_RZ] += 1
        c[self.port_stats + info.stats_index * P_COUNT + P_TOTAL] += 1
        c[row + G_RING0_HANDLED] += 1
        return rc

    # -- INS ---------------------------------------------------------------------------
    def read_string(self, port: int, size: int, count: int) -> tuple[int, bytes, int]:
        """IOMIOPortReadString in ring-0: the string callback first, then single INs.

        Returns (status, data read, units left).  With VINF_IOM_R3_IOPORT_READ the
        units left are for ring-3 to finish; with another status the caller restarts
        the instruction for them, as a CPU resumes an interrupted REP INS.
        """
        c = self.counters
        row = self.row
        c[row + G_IOPORT_INS] += 1
        if size not in ALL_ONES:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_FAILED] += 1
            return VERR_IOM_INVALID_IOPORT_SIZE, b"", count
        lookup = self.lookup
        if not lookup.refresh():
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return VINF_IOM_R3_IOPORT_READ, b"", count
        i = lookup.find(port, self.hint_read_string)
        if i < 0:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_UNASSIGNED] += 1
            return VINF_SUCCESS, b"\xff" * (count * size), 0
        self.hint_read_string = i
        info = lookup.infos[i]
        offset = port - info.first
        stats = self.port_stats + (info.stats_index + offset) * P_COUNT
        r0 = self.ring0.get(info.handle)
        if r0 is None or r0.in_ is None:
            c[stats + P_IN_RZ_TO_R3] += 1
            c[row + G_DEFER_NO_R0_HANDLER] += 1
            return VINF_IOM_R3_IOPORT_READ, b"", count
        lock = r0.lock
        if not lock.try_enter_ring0():
            c[stats + P_IN_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_LOCK_BUSY] += 1
            return VINF_IOM_R3_IOPORT_READ, b"", count
        where = port if info.flags & IOM_IOPORT_F_ABS else offset
        started = time.perf_counter_ns()
        try:
            rc, data, left = read_units(r0.in_, r0.in_string, where, size, count, iom_success_r0)
        except Exception as exc:
            rc, data, left = self._callback_failed(r0.device, port, exc), b"", count
        finally:
            lock.release()
        c[stats + P_PROF_IN_RZ_NS] += time.perf_counter_ns() - started
        c[stats + P_PROF_IN_RZ_CALLS] += 1
        if rc == VINF_IOM_R3_IOPORT_READ:
            c[stats + P_IN_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_ASKED] += 1
            return rc, data, left
        c[stats + P_IN_RZ] += 1
        c[self.port_stats + info.stats_index * P_COUNT + P_TOTAL] += 1
        c[row + G_RING0_HANDLED] += 1
        return rc, data, left

    # -- OUTS --------------------------------------------------------------------------
    def write_string(self, port: int, size: int, data: bytes) -> tuple[int, int]:
        """IOMIOPortWriteString in ring-0.  Returns (status, units done).

        VINF_IOM_R3_IOPORT_WRITE hands the units not done to ring-3; string writes are
        never turned into a pending write (VirtualBox converts only single OUTs).
        """
        c = self.counters
        row = self.row
        c[row + G_IOPORT_OUTS] += 1
        if size not in ALL_ONES:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_FAILED] += 1
            return VERR_IOM_INVALID_IOPORT_SIZE, 0
        lookup = self.lookup
        if not lookup.refresh():
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return VINF_IOM_R3_IOPORT_WRITE, 0
        i = lookup.find(port, self.hint_write_string)
        if i < 0:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_UNASSIGNED] += 1
            return VINF_SUCCESS, len(data) // size
        self.hint_write_string = i
        info = lookup.infos[i]
        offset = port - info.first
        stats = self.port_stats + (info.stats_index + offset) * P_COUNT
        r0 = self.ring0.get(info.handle)
        if r0 is None or r0.out is None:
            c[stats + P_OUT_RZ_TO_R3] += 1
            c[row + G_DEFER_NO_R0_HANDLER] += 1
            return VINF_IOM_R3_IOPORT_WRITE, 0
        lock = r0.lock
        if not lock.try_enter_ring0():
            c[stats + P_OUT_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_LOCK_BUSY] += 1
            return VINF_IOM_R3_IOPORT_WRITE, 0
        where = port if info.flags & IOM_IOPORT_F_ABS else offset
        started = time.perf_counter_ns()
        try:
            rc, done = write_units(r0.out, r0.out_string, where, size, data, iom_success_r0)
        except Exception as exc:
            rc, done = self._callback_failed(r0.device, port, exc), 0
        finally:
            lock.release()
        c[stats + P_PROF_OUT_RZ_NS] += time.perf_counter_ns() - started
        c[stats + P_PROF_OUT_RZ_CALLS] += 1
        if rc == VINF_IOM_R3_IOPORT_WRITE:
            c[stats + P_OUT_RZ_TO_R3] += 1
            c[row + G_DEFER_DEVICE_ASKED] += 1
            return rc, done
        c[stats + P_OUT_RZ] += 1
        c[self.port_stats + info.stats_index * P_COUNT + P_TOTAL] += 1
        c[row + G_RING0_HANDLED] += 1
        return rc, done

