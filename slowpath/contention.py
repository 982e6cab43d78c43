"""Contention injection: ring-3 threads that hold device locks and move regions during a run.

People studying lock contention need contention they can dial in.  A :class:`LockHold`
has a ring-3 thread take a device's critical section for duty·period, let it go for the
rest of the period, and start again.  Ring-0's try-enter meanwhile finds it busy and
defers (ContentionRZLockBusy), and ring-3's commit of that deferral waits for the holder
(ContentionR3, ContentionR3Wait).  A :class:`Remap` moves a region back and forth at a
rate, as a guest reprogramming a BAR does.  Each move takes the IOM lock exclusively, so
a ring-0 lookup that runs meanwhile sees VERR_SEM_BUSY and defers.  An access already
past its lookup finds its mapping stale.  Between the unmap and the map the region is
nowhere, so its accesses are unassigned: reads give all ones and writes are dropped.

    with VM(config) as vm, ContentionInjector(vm, [LockHold("testdev#0", 0.5, 0.002)]) as injector:
        result = vm.run(shares)
    print(injector.report())

The injector owns its threads: leaving the ``with`` block, error or not, stops them,
releases every lock they hold and puts every region back where it was.

Timing (see :func:`_wait_until`), measured on this project's 2-CPU machine: duty 0.1, 0.5
and 0.9 at periods 1, 2, 5 and 10 ms, held on testdev's lock during runs of 20 000 ring-0
writes.  A plain sleep wakes 60-90 µs late, and that lateness lands in every phase: 0.1
came out at 0.12-0.21 (worst at 1 ms), and the mean error was 0.06.  A pure busy-wait got
the mean error to 0.045, but it keeps the GIL from the ring-3 server it is meant to contend
with.  The median run took 0.71 s instead of 0.40 s, and one run took 62 s.  So each phase
sleeps until SPIN_MARGIN_NS before its end and busy-waits the rest.  That is exact with
no run going (0.100 / 0.500 / 0.900 at 1 ms), and runs took as long as with plain sleeps.
During runs its mean error was 0.05: 0.1 gave 0.09-0.14 and 0.5 gave 0.42-0.51.  What it
cannot fix is the handoff at a release: ring-3's waiting commit takes the lock first, and
the holder needs the GIL back.  So a free phase of 100-200 µs stretches, and 0.9 gives
0.70-0.86.  The report gives the measured duty next to the one asked for.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from shared.iomtable import NIL_GCPHYS, PAGE_SIZE
from shared.stats import (
    L_CONTENTION_R3,
    L_CONTENTION_R3_WAIT_CALLS,
    L_CONTENTION_R3_WAIT_NS,
    L_CONTENTION_RZ_BUSY,
    L_ENTERS_R3,
    L_ENTERS_RZ,
)
from slowpath.pdm import DeviceInstance
from slowpath.vm import HOOK_LOCK_WAIT_S, VM

MAX_DUTY = 0.95  # the holder must let go sometimes, or ring-3's commits wait for ever
MAX_PERIOD_S = HOOK_LOCK_WAIT_S  # so a hold ends before power-off gives up waiting for the lock
MAX_RATE = 10_000.0  # moves per second; each one rewrites the lookup table in Python
SPIN_MARGIN_NS = 150_000  # a sleep's usual lateness here, plus room: busy-waited instead
ACQUIRE_POLL_S = 0.05  # how often a holder waiting for the lock looks at its stop flag
LAST_PORT = 0xFFFF

MMIO = "mmio"
IOPORT = "ioport"


class ContentionError(ValueError):
    """A contention spec that cannot be injected: a bad value, or a target the VM lacks."""


# -- the specs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LockHold:
    """Hold device *device*'s lock ("testdev#0") for duty·period, free it for the rest, repeat.

    What to expect with one vCPU in strict mode: a deferred access waits in ring-3 until
    the hold ends, so the vCPU meets at most one busy lock per hold.  The count of
    deferrals follows the number of holds during the workload, not duty·accesses.  The
    vCPU's time spent waiting is what follows the duty.  When the free phase is about
    one ring-0 to ring-3 round trip (0.9 at 1 ms), the vCPU gets about one access through
    per period.
    """

    device: str
    duty: float
    period_s: float = 0.002

    def __post_init__(self) -> None:
        if not 0.0 <= self.duty <= MAX_DUTY:
            raise ContentionError(f"hold {self.device}: duty {self.duty:g} is not in 0..{MAX_DUTY}")
        if not 0.0 < self.period_s <= MAX_PERIOD_S:
            raise ContentionError(f"hold {self.device}: period {self.period_s:g} s is not in (0, {MAX_PERIOD_S:g}]")


@dataclass(frozen=True)
class Remap:
    """Move a region between two addresses (ports, for an I/O port region) at *rate* moves per second.

    *region* is a handle in the *kind* table ("mmio" or "ioport"), or a device instance
    ("edu#0") with *which* choosing among that device's regions of that kind: an index in
    creation order, or the region's description.  *addresses* default to the region's
    current place and the next one up: current + size rounded up to a page for MMIO,
    current + count for I/O ports.  Both must be free of other regions.
    """

    region: int | str
    rate: float
    kind: str = MMIO
    which: int | str = 0
    addresses: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in (MMIO, IOPORT):
            raise ContentionError(f"remap {self.region}: kind {self.kind!r} is not {MMIO} or {IOPORT}")
        if not 0.0 < self.rate <= MAX_RATE:
            raise ContentionError(f"remap {self.region}: rate {self.rate:g} moves/s is not in (0, {MAX_RATE:g}]")
        if self.addresses is not None:
            first, second = self.addresses
            if first == second or min(first, second) < 0:
                raise ContentionError(
                    f"remap {self.region}: addresses {first:#x} and {second:#x} must be two different places"
                )


# -- what the ring counters say about each lock -------------------------------------------
def lock_report(vm: VM) -> dict[str, dict[str, int]]:
    """Every device lock's PDMCRITSECT counters, summed over all statistics rows of the run.

    ``busy_r0`` is ContentionRZLockBusy (ring-0 found the lock taken and deferred),
    ``contention_r3`` and ``wait_r3_ns`` are ContentionR3 and the ContentionR3Wait profile
    (ring-3 waited for it, mostly while committing those deferrals).
    """
    layout = vm.stats
    counters = vm.counters
    rows = [layout.row_base(vcpu, ring3) for vcpu in range(vm.vcpu_count) for ring3 in (False, True)]
    fields = {
        "enters_r0": L_ENTERS_RZ,
        "busy_r0": L_CONTENTION_RZ_BUSY,
        "enters_r3": L_ENTERS_R3,
        "contention_r3": L_CONTENTION_R3,
        "wait_r3_ns": L_CONTENTION_R3_WAIT_NS,
        "wait_r3_calls": L_CONTENTION_R3_WAIT_CALLS,
    }
    report = {}
    for instance in vm.instances:
        bases = [layout.lock_base(row, instance.index) for row in rows]
        report[instance.name] = {name: sum(counters[base + field] for base in bases) for name, field in fields.items()}
    return report


# -- waiting ----------------------------------------------------------------------------------
def _wait_until(deadline_ns: int, stop: threading.Event) -> bool:
    """Wait until perf_counter_ns() reaches *deadline_ns*; False if *stop* was set first.

    Sleeps (in ``stop.wait``, so a stop is seen at once) until SPIN_MARGIN_NS before the
    deadline, then busy-waits: the sleep's lateness falls inside the margin, and the
    busy-wait keeps the GIL only for that short tail.
    """
    sleep_ns = deadline_ns - time.perf_counter_ns() - SPIN_MARGIN_NS
    if sleep_ns > 0 and stop.wait(sleep_ns / 1e9):
        return False
    while time.perf_counter_ns() < deadline_ns:
        pass
    return not stop.is_set()


# -- the threads ------------------------------------------------------------------------------
class _Injection(ABC):
    """One spec's ring-3 thread; an error in it is kept for the injector to raise."""

    def __init__(self, name: str, stop: threading.Event) -> None:
        self.name = name
        self.stop = stop
        self.error: BaseException | None = None
        self.started_ns = 0
        self.ended_ns = 0
        self.thread = threading.Thread(target=self._run, name=f"ringsim-{name}", daemon=True)

    def _run(self) -> None:
        self.started_ns = time.perf_counter_ns()
        try:
            self.loop()
        except BaseException as exc:  # kept, raised in the injector's thread at stop
            self.error = exc
        finally:
            self.ended_ns = time.perf_counter_ns()

    @abstractmethod
    def loop(self) -> None:
        """The thread's work, until ``stop`` is set."""

    def elapsed_ns(self) -> int:
        if not self.started_ns:
            return 0
        return (self.ended_ns or time.perf_counter_ns()) - self.started_ns


class _LockHolder(_Injection):
    """Takes the device's raw lock (its RLock, as ring-3's DeviceLock does) on a duty cycle."""

    def __init__(self, spec: LockHold, lock: Any, stop: threading.Event) -> None:
        super().__init__(f"hold-{spec.device}", stop)
        self.spec = spec
        self.lock = lock
        period_ns = round(spec.period_s * 1e9)
        self.hold_ns = round(spec.duty * period_ns)
        self.free_ns = period_ns - self.hold_ns
        self.holds = 0  # StatLocked's count, for the injected holds
        self.held_ns = 0  # StatLocked's time
        self.contended = 0  # the holder found the lock taken (by ring-0 or ring-3) and waited
        self.contended_ns = 0

    def _acquire(self) -> bool:
        """Take the lock, waiting for whoever has it; False if stopped meanwhile."""
        if self.lock.acquire(False):
            return True
        self.contended += 1
        started = time.perf_counter_ns()
        try:
            while not self.lock.acquire(True, ACQUIRE_POLL_S):
                if self.stop.is_set():
                    return False
            return True
        finally:
            self.contended_ns += time.perf_counter_ns() - started

    def loop(self) -> None:
        stop = self.stop
        if not self.hold_ns:
            stop.wait()
            return
        while not stop.is_set():
            if not self._acquire():
                return
            acquired = time.perf_counter_ns()
            try:
                _wait_until(acquired + self.hold_ns, stop)
            finally:
                released = time.perf_counter_ns()
                self.lock.release()
            self.holds += 1
            self.held_ns += released - acquired
            if not _wait_until(released + self.free_ns, stop):
                return

    def report(self) -> dict[str, Any]:
        elapsed = self.elapsed_ns()
        return {
            "duty_asked": self.spec.duty,
            "period_ns": self.hold_ns + self.free_ns,
            "holds": self.holds,
            "hold_ns": self.held_ns,
            "elapsed_ns": elapsed,
            "duty_measured": self.held_ns / elapsed if elapsed else 0.0,
            "holder_contended": self.contended,
            "holder_wait_ns": self.contended_ns,
        }


@dataclass(frozen=True)
class _Region:
    """A region a remapper moves, resolved against the VM's IOM."""

    kind: str
    handle: int
    owner: int
    label: str  # "edu#0/EDU"
    size: int  # bytes, or ports


class _Remapper(_Injection):
    """Moves one region between two places at a steady rate, through IOM's map and unmap."""

    def __init__(
        self, vm: VM, region: _Region, home: int, places: tuple[int, int], rate: float, stop: threading.Event
    ) -> None:
        super().__init__(f"remap-{region.label}", stop)
        self.vm = vm
        self.region = region
        self.home = home  # where the region was at start, and goes back to at stop
        self.places = places
        self.rate = rate
        self.moves = 0

    def _move(self, place: int) -> None:
        region = self.region
        if region.kind == MMIO:
            self.vm.remap_mmio(region.handle, place)
        else:
            self.vm.iom.unmap(region.owner, region.handle)
            self.vm.iom.map(region.owner, region.handle, place)

    def loop(self) -> None:
        interval_ns = round(1e9 / self.rate)
        due = time.perf_counter_ns() + interval_ns
        while not self.stop.wait(max(0, due - time.perf_counter_ns()) / 1e9):
            first, second = self.places
            self._move(second if _mapped_at(self.vm, self.region) == first else first)
            self.moves += 1
            # A late move does not bring a burst of catch-up moves after it.
            due = max(due + interval_ns, time.perf_counter_ns())

    def go_home(self) -> None:
        """Put the region back where it was at start, whatever the thread left (even unmapped)."""
        region = self.region
        place = _mapped_at(self.vm, region)
        if place == self.home:
            return
        iom = self.vm.iom
        if region.kind == MMIO:
            if place is not None:
                iom.mmio_unmap(region.owner, region.handle)
            iom.mmio_map(region.owner, region.handle, self.home)
        else:
            if place is not None:
                iom.unmap(region.owner, region.handle)
            iom.map(region.owner, region.handle, self.home)

    def report(self) -> dict[str, Any]:
        elapsed = self.elapsed_ns()
        return {
            "kind": self.region.kind,
            "handle": self.region.handle,
            "addresses": list(self.places),
            "home": self.home,
            "rate_asked": self.rate,
            "moves": self.moves,
            "elapsed_ns": elapsed,
            "rate_measured": self.moves * 1e9 / elapsed if elapsed else 0.0,
        }


# -- resolving specs against a VM -----------------------------------------------------------
def _instance(vm: VM, name: str, what: str) -> DeviceInstance:
    for instance in vm.instances:
        if instance.name == name:
            return instance
    known = ", ".join(instance.name for instance in vm.instances)
    raise ContentionError(f"{what}: no device instance {name!r} (the VM has {known})")


def _mapped_at(vm: VM, region: _Region) -> int | None:
    """Where the region is mapped now: its first port or address, or None."""
    if region.kind == MMIO:
        mmio_entry = vm.iom.table.mmio_entries[region.handle]
        return int(mmio_entry.mapping) if mmio_entry.mapped else None
    entry = vm.iom.table.entries[region.handle]
    return int(entry.port) if entry.mapped else None


def _all_regions(vm: VM, kind: str) -> list[_Region]:
    if kind == MMIO:
        return [_Region(MMIO, r.handle, r.owner, f"{r.device}/{r.description}", r.size) for r in vm.iom.mmio_regions]
    return [_Region(IOPORT, r.handle, r.owner, f"{r.device}/{r.description}", r.count) for r in vm.iom.regions]


def _resolve_region(vm: VM, spec: Remap) -> _Region:
    regions = _all_regions(vm, spec.kind)
    if isinstance(spec.region, int):
        if not 0 <= spec.region < len(regions):
            raise ContentionError(
                f"remap {spec.region}: no {spec.kind} region with handle {spec.region} (the VM has {len(regions)})"
            )
        return regions[spec.region]
    owner = _instance(vm, spec.region, f"remap {spec.region}").index
    own = [region for region in regions if region.owner == owner]
    names = ", ".join(region.label.partition("/")[2] for region in own) or "none"
    if isinstance(spec.which, int):
        if not 0 <= spec.which < len(own):
            raise ContentionError(
                f"remap {spec.region}: it has {len(own)} {spec.kind} region(s) ({names}), no number {spec.which}"
            )
        return own[spec.which]
    for region in own:
        if region.label.partition("/")[2] == spec.which:
            return region
    raise ContentionError(f"remap {spec.region}: no {spec.kind} region {spec.which!r} (it has {names})")


def _span(region: _Region, place: int) -> tuple[int, int]:
    return place, place + region.size - 1


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _describe(region: _Region, span: tuple[int, int]) -> str:
    width = 4 if region.kind == IOPORT else 1
    return f"{region.label} at {span[0]:#0{width + 2}x}-{span[1]:#0{width + 2}x}"


def _places(vm: VM, region: _Region, spec: Remap) -> tuple[int, tuple[int, int]]:
    """Where the region is now, and the two places it alternates between, checked to be valid and free."""
    current = _mapped_at(vm, region)
    if current is None:
        raise ContentionError(f"remap {region.label}: the region is not mapped, so it cannot be moved")
    if spec.addresses is not None:
        places = spec.addresses
    elif region.kind == MMIO:
        places = (current, current + -(-region.size // PAGE_SIZE) * PAGE_SIZE)
    else:
        places = (current, current + region.size)
    for place in places:
        first, last = _span(region, place)
        if region.kind == MMIO and (place % PAGE_SIZE or last >= NIL_GCPHYS):
            raise ContentionError(f"remap {region.label}: {place:#x} is not a page-aligned address it fits at")
        if region.kind == IOPORT and last > LAST_PORT:
            raise ContentionError(f"remap {region.label}: ports {first:#06x}-{last:#06x} run past {LAST_PORT:#x}")
        for other in _all_regions(vm, region.kind):
            other_place = _mapped_at(vm, other)
            if other.handle == region.handle or other_place is None:
                continue
            if _overlaps((first, last), _span(other, other_place)):
                raise ContentionError(
                    f"remap {region.label}: {first:#x}-{last:#x} is not free: "
                    f"{_describe(other, _span(other, other_place))}"
                )
    return current, places


# -- the injector ---------------------------------------------------------------------------
class ContentionInjector:
    """Lock holders and region movers for one VM; a context manager around ``vm.run``.

    Specs are checked against the VM when the injector is made (ContentionError);
    threads start on enter and stop on exit.  The ring-0 and ring-3 counters restart
    with each run, so use one injector per run for a report that matches.
    """

    def __init__(self, vm: VM, holds: Sequence[LockHold] = (), remaps: Sequence[Remap] = ()) -> None:
        self.vm = vm
        self._stop = threading.Event()
        self._holders: list[_LockHolder] = []
        self._remappers: list[_Remapper] = []
        self._ring_counters: dict[str, dict[str, int]] | None = None
        self._running = False
        for hold in holds:
            instance = _instance(vm, hold.device, f"hold {hold.device}")
            if any(holder.spec.device == hold.device for holder in self._holders):
                raise ContentionError(f"hold {hold.device}: the lock is held by another spec already")
            self._holders.append(_LockHolder(hold, instance.lock, self._stop))
        taken: list[tuple[_Region, tuple[int, int]]] = []
        for remap in remaps:
            region = _resolve_region(vm, remap)
            home, places = _places(vm, region, remap)
            for other, other_places in taken:
                if other.kind != region.kind:
                    continue
                if other.handle == region.handle:
                    raise ContentionError(f"remap {region.label}: the region is moved by another spec already")
                for mine in places:
                    for theirs in other_places:
                        if _overlaps(_span(region, mine), _span(other, theirs)):
                            raise ContentionError(
                                f"remap {region.label}: {_describe(region, _span(region, mine))} would collide "
                                f"with the moves of {_describe(other, _span(other, theirs))}"
                            )
            taken.append((region, places))
            self._remappers.append(_Remapper(vm, region, home, places, remap.rate, self._stop))

    @property
    def _injections(self) -> list[_Injection]:
        return [*self._holders, *self._remappers]

    def start(self) -> None:
        if self._running or self._stop.is_set():
            raise RuntimeError("a ContentionInjector runs once")
        self._running = True
        try:
            for injection in self._injections:
                injection.thread.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every thread (each releases the lock it holds), then put every region back.

        Raises the first error a thread met, once everything is back in place.
        """
        self._stop.set()
        errors: list[tuple[str, BaseException]] = []
        try:
            for injection in self._injections:
                if injection.thread.ident is not None:
                    injection.thread.join()
        finally:
            for remapper in self._remappers:
                try:
                    remapper.go_home()
                except Exception as exc:  # the other regions still go home
                    errors.append((f"putting {remapper.region.label} back at {remapper.home:#x}", exc))
            if self._running and getattr(self.vm, "counters", None) is not None:
                self._ring_counters = lock_report(self.vm)
            self._running = False
        errors = [(injection.name, injection.error) for injection in self._injections if injection.error] + errors
        if errors:
            what, error = errors[0]
            raise ContentionError(f"{what} failed: {error}") from error

    def __enter__(self) -> ContentionInjector:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        except ContentionError as failure:
            if exc is None:
                raise
            exc.add_note(f"contention injection: {failure}")  # the run's own error is the one raised

    def report(self) -> dict[str, Any]:
        """What was injected and what it caused, JSON-ready.

        ``locks``: per held lock, the injected holds and hold time (StatLocked for the
        holder), the duty cycle measured over the thread's life (which starts before the
        run's workers are spawned), how often the holder itself had to wait for the lock,
        and the ring counters for that lock (see :func:`lock_report`).  ``remaps``: per
        region, the moves done.  Ring counters are read at stop, or now while running;
        they are the VM's counters of its latest run.
        """
        ring = self._ring_counters
        if ring is None:
            ring = lock_report(self.vm) if getattr(self.vm, "counters", None) is not None else {}
        return {
            "locks": {h.spec.device: {**h.report(), **ring.get(h.spec.device, {})} for h in self._holders},
            "remaps": {r.region.label: r.report() for r in self._remappers},
            "timing": f"sleep, then busy-wait the last {SPIN_MARGIN_NS // 1000} us of each phase",
        }


# -- the CLI's specs --------------------------------------------------------------------------
_INSTANCE = re.compile(r"^[A-Za-z0-9_.-]+#\d+$")
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+(?:e-?\d+)?)(ns|us|ms|s)?$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}


def _options(spec: str, parts: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in parts:
        key, equals, value = part.partition("=")
        if not equals or not value:
            raise ContentionError(f"contention spec {spec!r}: {part!r} is not key=value")
        if key not in allowed:
            raise ContentionError(f"contention spec {spec!r}: unknown option {key!r} (takes {', '.join(allowed)})")
        if key in options:
            raise ContentionError(f"contention spec {spec!r}: {key}= given twice")
        options[key] = value
    return options


def _number(spec: str, key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ContentionError(f"contention spec {spec!r}: {key}={text!r} is not a number") from None


def _integer(spec: str, what: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ContentionError(f"contention spec {spec!r}: {what} {text!r} is not a number (0x hex, decimal)") from None


def _seconds(spec: str, text: str) -> float:
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ContentionError(f"contention spec {spec!r}: period={text!r} is not a duration (2ms, 500us, 0.01s)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _instance_name(spec: str, text: str) -> str:
    if not _INSTANCE.match(text):
        raise ContentionError(f"contention spec {spec!r}: {text!r} is not a device instance (name#number)")
    return text


def _hold(spec: str, parts: list[str]) -> LockHold:
    if not parts:
        raise ContentionError(f"contention spec {spec!r}: hold needs a device instance (hold:testdev#0:duty=0.5)")
    device = _instance_name(spec, parts[0])
    options = _options(spec, parts[1:], ("duty", "period"))
    if "duty" not in options:
        raise ContentionError(f"contention spec {spec!r}: duty= is required")
    duty = _number(spec, "duty", options["duty"])
    period = _seconds(spec, options["period"]) if "period" in options else LockHold.period_s
    try:
        return LockHold(device, duty, period)
    except ContentionError as exc:
        raise ContentionError(f"contention spec {spec!r}: {exc}") from None


def _remap(spec: str, parts: list[str]) -> Remap:
    if not parts:
        raise ContentionError(f"contention spec {spec!r}: remap needs a region (remap:edu#0:rate=200)")
    target, _, which_text = parts[0].partition("/")
    options = _options(spec, parts[1:], ("rate", "kind", "at"))
    region: int | str
    if "#" in target:
        region = _instance_name(spec, target)
    elif target.isdigit():
        region = int(target)
        if which_text:
            raise ContentionError(f"contention spec {spec!r}: '/{which_text}' only follows a device instance")
    else:
        raise ContentionError(
            f"contention spec {spec!r}: {target!r} is not a device instance (name#number) or a region handle"
        )
    which: int | str = int(which_text) if which_text.isdigit() else which_text or 0
    if "rate" not in options:
        raise ContentionError(f"contention spec {spec!r}: rate= is required")
    rate = _number(spec, "rate", options["rate"])
    addresses = None
    if "at" in options:
        texts = options["at"].split(",")
        if len(texts) != 2:
            raise ContentionError(f"contention spec {spec!r}: at={options['at']!r} is not two addresses (at=A,B)")
        addresses = (_integer(spec, "address", texts[0]), _integer(spec, "address", texts[1]))
    try:
        return Remap(region, rate, options.get("kind", MMIO), which, addresses)
    except ContentionError as exc:
        raise ContentionError(f"contention spec {spec!r}: {exc}") from None


def parse_contention(specs: list[str]) -> tuple[list[LockHold], list[Remap]]:
    """The CLI's ``--contention`` specs, e.g. ``hold:testdev#0:duty=0.5:period=2ms`` and
    ``remap:edu#0:rate=200`` (also ``remap:testdev#0/TESTDEV:kind=ioport:rate=50:at=0x540,0x560``).

    Raises ContentionError naming the spec and the part that is wrong.
    """
    holds: list[LockHold] = []
    remaps: list[Remap] = []
    for spec in specs:
        what, *parts = spec.split(":")
        if what == "hold":
            holds.append(_hold(spec, parts))
        elif what == "remap":
            remaps.append(_remap(spec, parts))
        else:
            raise ContentionError(f"contention spec {spec!r}: {what!r} is not hold or remap")
    return holds, remaps
