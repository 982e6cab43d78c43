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
from shared.iomtable import PortLookup, RegionInfo
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


# Hint slots (IOMCPU.idxIoPortLastRead, ...LastWrite, ...LastReadStr, ...LastWriteStr).
HINT_READ, HINT_WRITE, HINT_READ_STRING, HINT_WRITE_STRING = range(4)

# Why _enter could not hand an access to a ring-0 callback.
UNASSIGNED = 0  # no region holds the port: finished here, as IOM does for a miss
DEFERRED = 1  # IOM lock busy, no ring-0 callback, or device lock busy: counted, for ring-3


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
        self.hints = [0, 0, 0, 0]  # positions in the lookup table of the last hits
        self.callback_errors: list[CallbackError] = []

    # -- the steps every access shares ------------------------------------------------------
    def _enter(self, port: int, hint: int, writing: bool) -> tuple[Ring0Callbacks, RegionInfo, int, int] | int:
        """Find the port's region and take its device lock for a ring-0 call.

        Returns (callbacks, region, the port as the callback sees it, the port's
        statistics entry), or UNASSIGNED / DEFERRED with the outcome already counted.
        """
        c = self.counters
        row = self.row
        lookup = self.lookup
        if not lookup.refresh():
            c[row + G_DEFER_IOM_LOCK_BUSY] += 1
            return DEFERRED
        i = lookup.find(port, self.hints[hint])
        if i < 0:
            c[row + G_RING0_HANDLED] += 1
            c[row + G_UNASSIGNED] += 1
            return UNASSIGNED
        self.hints[hint] = i
        info = lookup.infos[i]
        offset = port - info.first
        stats = self.port_stats + (info.stats_index + offset) * P_COUNT
        r0 = self.ring0.get(info.handle)
        if r0 is None or (r0.out if writing else r0.in_) is None:
            c[stats + (P_OUT_RZ_TO_R3 if writing else P_IN_RZ_TO_R3)] += 1
            c[row + G_DEFER_NO_R0_HANDLER] += 1
            return DEFERRED
        if not r0.lock.try_enter_ring0():
            c[stats + (P_OUT_RZ_TO_R3 if writing else P_IN_RZ_TO_R3)] += 1
            c[row + G_DEFER_DEVICE_LOCK_BUSY] += 1
            return DEFERRED
        return r0, info, port if info.flags & IOM_IOPORT_F_ABS else offset, stats

    def _finish(self, info: RegionInfo, stats: int, writing: bool, started: int, device_deferred: bool) -> None:
        """Count a ring-0 callback's call: its time, and whether it finished or asked for ring-3."""
        c = self.counters
        if writing:
            c[stats + P_PROF_OUT_RZ_NS] += time.perf_counter_ns() - started
            c[stats + P_PROF_OUT_RZ_CALLS] += 1
        else:
            c[stats + P_PROF_IN_RZ_NS] += time.perf_counter_ns() - started
            c[stats + P_PROF_IN_RZ_CALLS] += 1
        if device_deferred:
            c[stats + (P_OUT_RZ_TO_R3 if writing else P_IN_RZ_TO_R3)] += 1
            c[self.row + G_DEFER_DEVICE_ASKED] += 1
        else:
            c[stats + (P_OUT_RZ if writing else P_IN_RZ)] += 1
            c[self.port_stats + info.stats_index * P_COUNT + P_TOTAL] += 1
            c[self.row + G_RING0_HANDLED] += 1

    def _invalid_size(self) -> int:
        c = self.counters
        c[self.row + G_RING0_HANDLED] += 1
        c[self.row + G_FAILED] += 1
        return VERR_IOM_INVALID_IOPORT_SIZE

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

    # -- IN, OUT, INS, OUTS ---------------------------------------------------------------------
    def read(self, port: int, size: int) -> tuple[int, int]:
        """IOMIOPortRead in ring-0.  Returns (status, value); VINF_IOM_R3_IOPORT_READ defers."""
        self.counters[self.row + G_IOPORT_IN] += 1
        if size not in ALL_ONES:
            return self._invalid_size(), 0
        entered = self._enter(port, HINT_READ, False)
        if isinstance(entered, int):
            return (VINF_SUCCESS, ALL_ONES[size]) if entered == UNASSIGNED else (VINF_IOM_R3_IOPORT_READ, 0)
        r0, info, where, stats = entered
        started = time.perf_counter_ns()
        try:
            rc, value = r0.in_(where, size)  # type: ignore[misc]  # _enter checked it is there
        except Exception as exc:
            rc, value = self._callback_failed(r0.device, port, exc), 0
        finally:
            r0.lock.release()
        self._finish(info, stats, False, started, rc == VINF_IOM_R3_IOPORT_READ)
        if rc == VINF_IOM_R3_IOPORT_READ:
            return rc, 0
        if rc == VERR_IOM_IOPORT_UNUSED:
            return VINF_SUCCESS, ALL_ONES[size]
        return rc, value & ALL_ONES[size]

    def write(self, port: int, value: int, size: int) -> int:
        """IOMIOPortWrite in ring-0.  VINF_IOM_R3_IOPORT_COMMIT_WRITE: a pending write was parked."""
        self.counters[self.row + G_IOPORT_OUT] += 1
        if size not in ALL_ONES:
            return self._invalid_size()
        entered = self._enter(port, HINT_WRITE, True)
        if isinstance(entered, int):
            return VINF_SUCCESS if entered == UNASSIGNED else self._write_pending(port, value, size)
        r0, info, where, stats = entered
        started = time.perf_counter_ns()
        try:
            rc = r0.out(where, value, size)  # type: ignore[misc]  # _enter checked it is there
        except Exception as exc:
            rc = self._callback_failed(r0.device, port, exc)
        finally:
            r0.lock.release()
        self._finish(info, stats, True, started, rc == VINF_IOM_R3_IOPORT_WRITE)
        if rc == VINF_IOM_R3_IOPORT_WRITE:
            return self._write_pending(port, value, size)
        return rc

    def read_string(self, port: int, size: int, count: int) -> tuple[int, bytes, int]:
        """IOMIOPortReadString in ring-0: the string callback first, then single INs.

        Returns (status, data read, units left).  With VINF_IOM_R3_IOPORT_READ the
        units left are for ring-3 to finish; with another status the caller restarts
        the instruction for them, as a CPU resumes an interrupted REP INS.
        """
        self.counters[self.row + G_IOPORT_INS] += 1
        if size not in ALL_ONES:
            return self._invalid_size(), b"", count
        entered = self._enter(port, HINT_READ_STRING, False)
        if isinstance(entered, int):
            if entered == UNASSIGNED:
                return VINF_SUCCESS, b"\xff" * (count * size), 0
            return VINF_IOM_R3_IOPORT_READ, b"", count
        r0, info, where, stats = entered
        started = time.perf_counter_ns()
        try:
            rc, data, left = read_units(r0.in_, r0.in_string, where, size, count, iom_success_r0)  # type: ignore[arg-type]
        except Exception as exc:
            rc, data, left = self._callback_failed(r0.device, port, exc), b"", count
        finally:
            r0.lock.release()
        self._finish(info, stats, False, started, rc == VINF_IOM_R3_IOPORT_READ)
        return rc, data, left

    def write_string(self, port: int, size: int, data: bytes) -> tuple[int, int]:
        """IOMIOPortWriteString in ring-0.  Returns (status, units done).

        VINF_IOM_R3_IOPORT_WRITE hands the units not done to ring-3; string writes are
        never turned into a pending write (VirtualBox converts only single OUTs).
        """
        self.counters[self.row + G_IOPORT_OUTS] += 1
        if size not in ALL_ONES:
            return self._invalid_size(), 0
        entered = self._enter(port, HINT_WRITE_STRING, True)
        if isinstance(entered, int):
            return (VINF_SUCCESS, len(data) // size) if entered == UNASSIGNED else (VINF_IOM_R3_IOPORT_WRITE, 0)
        r0, info, where, stats = entered
        started = time.perf_counter_ns()
        try:
            rc, done = write_units(r0.out, r0.out_string, where, size, data, iom_success_r0)  # type: ignore[arg-type]
        except Exception as exc:
            rc, done = self._callback_failed(r0.device, port, exc), 0
        finally:
            r0.lock.release()
        self._finish(info, stats, True, started, rc == VINF_IOM_R3_IOPORT_WRITE)
        return rc, done
