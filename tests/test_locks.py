"""shared/locks.py: the device critical section, tried by ring-0 and entered by ring-3, with its counters."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared import locks
from shared.locks import DeviceLock
from shared.stats import (
    L_CONTENTION_R3,
    L_CONTENTION_R3_WAIT_CALLS,
    L_CONTENTION_R3_WAIT_NS,
    L_CONTENTION_RZ_BUSY,
    L_COUNT,
    L_ENTERS_R3,
    L_ENTERS_RZ,
)

SPAWN = multiprocessing.get_context("spawn")
BASE = L_COUNT  # the lock's entry is the second one in the row: the base offset must be honoured
HOLD_SECONDS = 0.2


def hold_lock(lock: Any, held: Any, release: Any) -> None:
    """Child process: take the device lock, say so, and keep it until told to let go."""
    with lock:
        held.set()
        release.wait(30)


class Holder:
    """Another process holding the device lock until :meth:`let_go`."""

    def __init__(self, lock: Any) -> None:
        self._held = SPAWN.Event()
        self._release = SPAWN.Event()
        self.process = SPAWN.Process(target=hold_lock, args=(lock, self._held, self._release), daemon=True)
        self.process.start()
        assert self._held.wait(30), "the holder process never took the lock"

    def let_go(self) -> None:
        self._release.set()

    def join(self) -> None:
        self._release.set()
        self.process.join(30)
        assert self.process.exitcode == 0


@pytest.fixture
def counters() -> memoryview:
    """Two lock entries' worth of 64-bit counters, all zero."""
    return memoryview(bytearray(8 * 2 * L_COUNT)).cast("Q")


@pytest.fixture
def raw_lock() -> Any:
    return SPAWN.RLock()


@pytest.fixture
def device_lock(raw_lock: Any, counters: memoryview) -> DeviceLock:
    return DeviceLock("serial#0", raw_lock, counters, BASE)


@pytest.fixture
def holder(raw_lock: Any) -> Iterator[Holder]:
    """A spawn-context process that holds the lock; always released and joined."""
    other = Holder(raw_lock)
    try:
        yield other
    finally:
        other.join()


def entry(counters: memoryview) -> list[int]:
    """The lock's own entry of the row."""
    return counters[BASE : BASE + L_COUNT].tolist()


def untouched(counters: memoryview) -> bool:
    """The entry before the lock's (another lock's) was never written."""
    return counters[:BASE].tolist() == [0] * L_COUNT


# --- ring-0: try only ------------------------------------------------------------------
def test_try_enter_ring0_succeeds_on_a_free_lock_and_counts_an_enter(
    device_lock: DeviceLock, counters: memoryview
) -> None:
    assert device_lock.try_enter_ring0()
    device_lock.release()
    assert counters[BASE + L_ENTERS_RZ] == 1
    assert counters[BASE + L_CONTENTION_RZ_BUSY] == 0
    assert untouched(counters)


def test_try_enter_ring0_is_recursive_like_a_critical_section(
    device_lock: DeviceLock, counters: memoryview
) -> None:
    assert device_lock.try_enter_ring0()
    assert device_lock.try_enter_ring0()
    device_lock.release()
    device_lock.release()
    assert counters[BASE + L_ENTERS_RZ] == 2


def test_try_enter_ring0_fails_while_another_process_holds_it_and_counts_busy(
    device_lock: DeviceLock, counters: memoryview, holder: Holder
) -> None:
    assert not device_lock.try_enter_ring0()
    assert not device_lock.try_enter_ring0()
    assert counters[BASE + L_CONTENTION_RZ_BUSY] == 2
    assert counters[BASE + L_ENTERS_RZ] == 0
    assert untouched(counters)


def test_try_enter_ring0_never_waits(device_lock: DeviceLock, holder: Holder) -> None:
    started = time.monotonic()
    assert not device_lock.try_enter_ring0()
    assert time.monotonic() - started < HOLD_SECONDS


def test_try_enter_ring0_succeeds_once_the_holder_lets_go(
    device_lock: DeviceLock, counters: memoryview, holder: Holder
) -> None:
    assert not device_lock.try_enter_ring0()
    holder.join()
    assert device_lock.try_enter_ring0()
    device_lock.release()
    assert entry(counters)[L_ENTERS_RZ] == 1 and entry(counters)[L_CONTENTION_RZ_BUSY] == 1


# --- ring-3: waits ---------------------------------------------------------------------
def test_enter_ring3_on_a_free_lock_counts_an_enter_and_no_contention(
    device_lock: DeviceLock, counters: memoryview
) -> None:
    device_lock.enter_ring3()
    device_lock.release()
    expected = [0] * L_COUNT
    expected[L_ENTERS_R3] = 1
    assert entry(counters) == expected
    assert untouched(counters)


def test_enter_ring3_waits_for_the_holder_and_counts_contention_and_wait_time(
    device_lock: DeviceLock, counters: memoryview, holder: Holder
) -> None:
    timer = threading.Timer(HOLD_SECONDS, holder.let_go)
    timer.start()
    try:
        started = time.perf_counter_ns()
        device_lock.enter_ring3()
        waited = time.perf_counter_ns() - started
        device_lock.release()
    finally:
        timer.cancel()
    assert waited >= HOLD_SECONDS * 1e9 * 0.5
    assert counters[BASE + L_CONTENTION_R3] == 1
    assert counters[BASE + L_CONTENTION_R3_WAIT_CALLS] == 1
    assert HOLD_SECONDS * 1e9 * 0.5 <= counters[BASE + L_CONTENTION_R3_WAIT_NS] <= waited
    assert counters[BASE + L_ENTERS_R3] == 1
    assert counters[BASE + L_ENTERS_RZ] == counters[BASE + L_CONTENTION_RZ_BUSY] == 0
    assert untouched(counters)


def test_enter_ring3_calls_on_stall_while_it_waits(
    raw_lock: Any, counters: memoryview, holder: Holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "STALL_CHECK_S", 0.02)
    stalls: list[float] = []
    device_lock = DeviceLock(
        "serial#0", raw_lock, counters, BASE, on_stall=lambda: stalls.append(time.monotonic())
    )
    timer = threading.Timer(HOLD_SECONDS, holder.let_go)
    timer.start()
    try:
        device_lock.enter_ring3()
        device_lock.release()
    finally:
        timer.cancel()
    assert len(stalls) >= 2
    assert counters[BASE + L_CONTENTION_R3] == counters[BASE + L_CONTENTION_R3_WAIT_CALLS] == 1
    assert counters[BASE + L_ENTERS_R3] == 1


def test_on_stall_that_raises_ends_the_wait_without_entering(
    raw_lock: Any, counters: memoryview, holder: Holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "STALL_CHECK_S", 0.02)

    def holder_died() -> None:
        raise RuntimeError("the lock holder died")

    device_lock = DeviceLock("serial#0", raw_lock, counters, BASE, on_stall=holder_died)
    with pytest.raises(RuntimeError, match="holder died"):
        device_lock.enter_ring3()
    assert counters[BASE + L_CONTENTION_R3] == 1
    assert counters[BASE + L_ENTERS_R3] == counters[BASE + L_CONTENTION_R3_WAIT_CALLS] == 0


def test_context_manager_enters_in_ring3_and_releases(
    device_lock: DeviceLock, raw_lock: Any, counters: memoryview
) -> None:
    with device_lock as entered:
        assert entered is device_lock
    assert counters[BASE + L_ENTERS_R3] == 1
    # Released: another process can take it now.
    other = Holder(raw_lock)
    other.join()


def test_context_manager_releases_on_error(device_lock: DeviceLock, raw_lock: Any) -> None:
    with pytest.raises(RuntimeError), device_lock:
        raise RuntimeError("device callback failed")
    other = Holder(raw_lock)
    other.join()
