"""The device critical section: one cross-process lock per device instance.

PDM enters a device's lock around every callback.  Ring-0 only *tries* it (VirtualBox's
6.1 model, where ring-0 cannot block inside the exit handler): busy means the caller's
rcBusy status and the access is deferred.  Ring-3 enters it blocking.  Both count what
happened in their own statistics row, as PDMCRITSECT's STAM counters do.

The lock is a ``multiprocessing`` RLock (a POSIX semaphore underneath): the cheapest
cross-process try-lock measured here, and recursive like a PDM critical section.
Ring-3 creates it before the workers are spawned and hands it to them at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.stats import (
    L_CONTENTION_R3,
    L_CONTENTION_R3_WAIT_CALLS,
    L_CONTENTION_R3_WAIT_NS,
    L_CONTENTION_RZ_BUSY,
    L_ENTERS_R3,
    L_ENTERS_RZ,
)

STALL_CHECK_S = 0.5


class DeviceLock:
    """A device instance's critical section, seen from one writer's statistics row."""

    __slots__ = ("name", "_lock", "_acquire", "release", "_counters", "_base", "_on_stall")

    def __init__(
        self,
        name: str,
        lock: Any,
        counters: memoryview,
        base: int,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._lock = lock
        self._acquire = lock.acquire
        self.release = lock.release
        self._counters = counters
        self._base = base
        self._on_stall = on_stall

    def try_enter_ring0(self) -> bool:
        """PDMCritSectEnter from ring-0 with an rcBusy: never waits."""
        if self._acquire(False):
            self._counters[self._base + L_ENTERS_RZ] += 1
            return True
        self._counters[self._base + L_CONTENTION_RZ_BUSY] += 1
        return False

    def enter_ring3(self) -> None:
        """PDMCritSectEnter from ring-3: waits, and counts the wait when there was one.

        While it waits, ``on_stall`` is called every STALL_CHECK_S: a holder that died
        (a killed worker never releases) must end the run, not hang it.
        """
        counters = self._counters
        base = self._base
        if not self._acquire(False):
            counters[base + L_CONTENTION_R3] += 1
            started = time.perf_counter_ns()
            while not self._acquire(True, STALL_CHECK_S):
                if self._on_stall is not None:
                    self._on_stall()
            counters[base + L_CONTENTION_R3_WAIT_NS] += time.perf_counter_ns() - started
            counters[base + L_CONTENTION_R3_WAIT_CALLS] += 1
        counters[base + L_ENTERS_R3] += 1

    def __enter__(self) -> DeviceLock:
        self.enter_ring3()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
