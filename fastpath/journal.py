"""The journey of each access, recorded on the vCPU for ``--explain`` and ``--timeline``.

A :class:`JournalingVCpu` is a :class:`VCpu` that notes, for its first ``limit`` accesses,
when the access started and ended, what ring-0 decided (read off the one outcome counter
the dispatcher bumped: handled, unassigned, or the deferral reason), and the request it
sent to ring-3, if any, with its sequence number so ring-3's own record can be matched.
Only a run that asks for it pays for it: the plain :class:`VCpu` is untouched.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from fastpath.dispatch import PortDispatcher
from fastpath.link import Ring3Link
from fastpath.mmio import MmioDispatcher
from fastpath.vcpu import VCpu, VCpuStopped
from shared.stats import (
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_DEFER_NO_R0_HANDLER,
    G_FAILED,
    G_RING0_HANDLED,
    G_UNASSIGNED,
)
from shared.trace import IN, INS, MMIO_READ, MMIO_WRITE, OUT, OUTS
from shared.vcpu import VmShared

# The counters whose change tells what ring-0 did with one access, most specific first.
OUTCOME_COUNTERS = (
    G_DEFER_NO_R0_HANDLER,
    G_DEFER_DEVICE_ASKED,
    G_DEFER_DEVICE_LOCK_BUSY,
    G_DEFER_IOM_LOCK_BUSY,
    G_FAILED,
    G_UNASSIGNED,
    G_RING0_HANDLED,
)


class RecordingLink:
    """The vCPU's link to ring-3, noting the request an access sent: (op, seq, sent, replied, args)."""

    def __init__(self, link: Ring3Link) -> None:
        self.link = link
        self.sent: tuple[int, int, int, int, tuple[Any, ...]] | None = None

    @property
    def messages(self) -> int:
        return self.link.messages

    def call(self, op: int, *args: Any) -> tuple[int, Any]:
        sent = time.monotonic_ns()
        try:
            return self.link.call(op, *args)
        finally:
            self.sent = (op, self.link.seq, sent, time.monotonic_ns(), args)


class JournalingVCpu(VCpu):
    def __init__(
        self,
        vcpu_id: int,
        dispatcher: PortDispatcher,
        mmio: MmioDispatcher,
        link: Ring3Link,
        vm: VmShared,
        limit: int,
    ) -> None:
        self.recorder = RecordingLink(link)
        super().__init__(vcpu_id, dispatcher, mmio, self.recorder, vm)  # type: ignore[arg-type]
        self.limit = limit
        self.entries: list[tuple[Any, ...]] = []
        counters = dispatcher.counters
        row = dispatcher.row
        self._outcome_slots = [(index, row + index) for index in OUTCOME_COUNTERS]
        self._counters = counters

    def _record(self, kind: int, address: int, size: int, value: Any, access: Any, *args: Any) -> Any:
        """Run one access, journalled while the limit allows."""
        if len(self.entries) >= self.limit:
            return access(*args)
        counters = self._counters
        before = [counters[slot] for _, slot in self._outcome_slots]
        self.recorder.sent = None
        started = time.monotonic_ns()
        result: Any = None
        status: int | None = None
        try:
            result = access(*args)
        except VCpuStopped as stop:
            status = stop.status
            raise
        finally:
            ended = time.monotonic_ns()
            changed = (index for (index, slot), old in zip(self._outcome_slots, before, strict=True)
                       if counters[slot] != old)
            outcome = next(changed, G_RING0_HANDLED)
            if status is None:
                status = result[0] if isinstance(result, tuple) else result
            got = result[1] if isinstance(result, tuple) else None
            self.entries.append((
                len(self.entries), kind, address, size, value, started, ended, outcome, self.recorder.sent, status, got,
            ))
        return result

    def port_read(self, port: int, size: int) -> tuple[int, int]:
        result: tuple[int, int] = self._record(IN, port, size, None, super().port_read, port, size)
        return result

    def port_write(self, port: int, value: int, size: int) -> int:
        result: int = self._record(OUT, port, size, value, super().port_write, port, value, size)
        return result

    def port_read_string(self, port: int, size: int, count: int) -> tuple[int, bytes]:
        result: tuple[int, bytes] = self._record(INS, port, size, count, super().port_read_string, port, size, count)
        return result

    def port_write_string(self, port: int, size: int, data: bytes) -> int:
        units = len(data) // size if size in (1, 2, 4) else 1
        result: int = self._record(OUTS, port, size, units, super().port_write_string, port, size, data)
        return result

    def mmio_read(self, address: int, size: int) -> tuple[int, int]:
        result: tuple[int, int] = self._record(MMIO_READ, address, size, None, super().mmio_read, address, size)
        return result

    def mmio_write(self, address: int, value: int, size: int) -> int:
        result: int = self._record(MMIO_WRITE, address, size, value, super().mmio_write, address, value, size)
        return result

    def save(self, path: str) -> None:
        with open(path, "wb") as file:
            pickle.dump(self.entries, file, protocol=pickle.HIGHEST_PROTOCOL)
