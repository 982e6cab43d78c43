"""hpet: a High Precision Event Timer block (IA-PC HPET 1.0a) with three timers, as one 4 KiB page.

A 64-bit main counter ticks at 100 MHz (a 10,000,000 fs period, as QEMU's HPET) while
ENABLE_CNF is set.  It is not a running tick: the shared state keeps the counter's value
at the last enable or write, and the virtual time of that moment, and every read computes
``value + elapsed virtual ns / 10``.  Each timer has a configuration register, a
comparator and an FSB route.  Every register is 64 bits wide; IOM hands the device aligned
DWORDs or aligned QWORDs, and a DWORD at +4 reaches the register's high half.

Both halves run the same register logic (:class:`HpetCore`) on one :class:`HpetState`.
Ring-0 serves every read (the virtual clock is readable there) and every write except to
a timer's configuration or comparator, which arm the timer and so go to ring-3
(VINF_IOM_R3_MMIO_WRITE).  Ring-3 can do every access.

No timer interrupts are generated yet: there is no interrupt controller wiring and no
ring-3 timer service, so comparators are stored and never fire, and the general interrupt
status only changes when the guest clears bits in it.  The legacy replacement route
(LEG_RT_CNF) is stored for the same reason.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

from shared.devapi import (
    IOMMMIO_FLAGS_READ_DWORD_QWORD,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
    PDM_DEVREG_CLASS_PIT,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_IOM_MMIO_UNUSED_00, VINF_IOM_R3_MMIO_WRITE, VINF_SUCCESS

REGION_SIZE = 4096
TIMER_COUNT = 3

# --- General registers: offsets into the region, each 64 bits.
GCAP_ID = 0x000  # general capabilities and ID, read-only
GEN_CONF = 0x010  # general configuration
GINTR_STA = 0x020  # general interrupt status, write 1 to clear
MAIN_COUNTER = 0x0F0  # main counter value

# --- Timer n's registers: at TIMER_BASE + TIMER_STRIDE * n, plus these offsets.
TIMER_BASE = 0x100
TIMER_STRIDE = 0x20
TN_CONF = 0x00  # configuration and capabilities
TN_COMPARATOR = 0x08  # comparator value
TN_FSB_ROUTE = 0x10  # FSB interrupt route: stored only, nothing delivers through it

# --- GCAP_ID fields.
REVISION = 1  # bits 0-7
NUM_TIM_CAP_SHIFT = 8  # bits 8-12: number of timers minus one
COUNT_SIZE_CAP = 1 << 13  # the main counter is 64 bits wide
LEG_RT_CAP = 1 << 15  # legacy replacement routing is supported
VENDOR_ID = 0x8086  # bits 16-31
PERIOD_FS = 10_000_000  # bits 32-63: femtoseconds per tick, 10 ns = 100 MHz
NS_PER_TICK = PERIOD_FS // 1_000_000
CAPABILITIES = (
    PERIOD_FS << 32 | VENDOR_ID << 16 | LEG_RT_CAP | COUNT_SIZE_CAP | (TIMER_COUNT - 1) << NUM_TIM_CAP_SHIFT | REVISION
)

# --- GEN_CONF bits.
ENABLE_CNF = 1 << 0  # the main counter runs and timers may interrupt
LEG_RT_CNF = 1 << 1  # timers 0 and 1 take IRQ0 and IRQ8, whatever their own route says
GEN_CONF_WRITABLE = ENABLE_CNF | LEG_RT_CNF

GINTR_STA_BITS = (1 << TIMER_COUNT) - 1  # Tn_INT_STS: bit n for timer n

# --- Tn_CONF bits.
TN_INT_TYPE_CNF = 1 << 1  # level-triggered (1) or edge-triggered (0)
TN_INT_ENB_CNF = 1 << 2  # the timer may interrupt
TN_TYPE_CNF = 1 << 3  # periodic (1) or one-shot (0)
TN_PER_INT_CAP = 1 << 4  # read-only: periodic mode is supported
TN_SIZE_CAP = 1 << 5  # read-only: the comparator is 64 bits wide
TN_VAL_SET_CNF = 1 << 6  # the next comparator write in periodic mode sets the comparator too
TN_32MODE_CNF = 1 << 8  # behave as a 32-bit timer
TN_INT_ROUTE_SHIFT = 9
TN_INT_ROUTE_CNF = 0x1F << TN_INT_ROUTE_SHIFT  # bits 9-13: the I/O APIC input to use
TN_INT_ROUTE_CAP_SHIFT = 32  # bits 32-63, read-only: bit k set if input k may be used
TN_CONF_WRITABLE = TN_INT_TYPE_CNF | TN_INT_ENB_CNF | TN_TYPE_CNF | TN_VAL_SET_CNF | TN_32MODE_CNF | TN_INT_ROUTE_CNF

# The I/O APIC inputs a timer may be routed to: 16-23, the ones ISA devices never use.
INT_ROUTE_CAP = 0x00FF0000
TN_CONF_AFTER_RESET = INT_ROUTE_CAP << TN_INT_ROUTE_CAP_SHIFT | TN_SIZE_CAP | TN_PER_INT_CAP

DWORD = 0xFFFFFFFF
QWORD = 0xFFFFFFFFFFFFFFFF


class HpetTimerState(ctypes.Structure):
    _fields_ = [
        ("config", ctypes.c_uint64),  # Tn_CONF, capability bits included
        ("comparator", ctypes.c_uint64),
        ("period", ctypes.c_uint64),  # periodic mode: what a comparator write without VAL_SET sets
        ("fsb_route", ctypes.c_uint64),
    ]


class HpetState(ctypes.Structure):
    _fields_ = [
        ("mmio_handle", ctypes.c_uint16),
        ("config", ctypes.c_uint64),  # GEN_CONF
        ("isr", ctypes.c_uint64),  # GINTR_STA: the pending level interrupts
        ("counter_base", ctypes.c_uint64),  # the main counter at counter_base_ns (its value while halted)
        ("counter_base_ns", ctypes.c_uint64),  # virtual time the counter last started; read only while it runs
        ("timers", HpetTimerState * TIMER_COUNT),
    ]


def _merge(old: int, value: int, mask: int) -> int:
    """*old* with the bits under *mask* taken from *value*."""
    return old & ~mask | value & mask


class HpetCore:
    """The registers, the same in both tiers.  *clock* is the VM's virtual clock in ns."""

    def __init__(self, state: HpetState, clock: Callable[[], int]) -> None:
        self.state = state
        self.clock = clock

    # -- accesses as IOM hands them over ------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> tuple[int, int]:
        """Read a register, or half of one.  VINF_IOM_MMIO_UNUSED_00 where there is none.

        Reserved space reads as zeros, as the HPET specification has reserved bits read.
        """
        register, shift, mask = self._locate(offset, size)
        value = self.read_register(register)
        if value is None:
            return VINF_IOM_MMIO_UNUSED_00, 0
        return VINF_SUCCESS, (value & mask) >> shift

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        """Write a register, or half of one.  Always VINF_SUCCESS; read-only and reserved space drop it."""
        register, shift, mask = self._locate(offset, size)
        self.write_register(register, value << shift & mask, mask)
        return VINF_SUCCESS

    @staticmethod
    def _locate(offset: int, size: int) -> tuple[int, int, int]:
        """The 64-bit register an access reaches, the shift of its part, and the mask of that part."""
        if size == 8:
            return offset, 0, QWORD
        shift = 8 * (offset & 4)
        return offset & ~7, shift, DWORD << shift

    # -- whole registers ----------------------------------------------------------------
    def read_register(self, register: int) -> int | None:
        state = self.state
        if register == GCAP_ID:
            return CAPABILITIES
        if register == GEN_CONF:
            return int(state.config)
        if register == GINTR_STA:
            return int(state.isr)
        if register == MAIN_COUNTER:
            return self.counter()
        timer, timer_register = self._timer_register(register)
        if timer is None:
            return None
        if timer_register == TN_CONF:
            return int(timer.config)
        if timer_register == TN_COMPARATOR:
            return int(timer.comparator)
        if timer_register == TN_FSB_ROUTE:
            return int(timer.fsb_route)
        return None

    def write_register(self, register: int, value: int, mask: int) -> None:
        """Write the bits of *value* under *mask* into *register*, as its rules allow."""
        state = self.state
        if register == GEN_CONF:
            self.write_general_config(_merge(int(state.config), value, mask & GEN_CONF_WRITABLE))
        elif register == GINTR_STA:
            state.isr = state.isr & ~(value & mask)
        elif register == MAIN_COUNTER:
            # Software must halt the counter before writing it; a running counter keeps going.
            if not state.config & ENABLE_CNF:
                state.counter_base = _merge(int(state.counter_base), value, mask)
        else:
            timer, timer_register = self._timer_register(register)
            if timer is None:
                return
            if timer_register == TN_CONF:
                self.write_timer_config(timer, value, mask)
            elif timer_register == TN_COMPARATOR:
                self.write_comparator(timer, value, mask)
            elif timer_register == TN_FSB_ROUTE:
                timer.fsb_route = _merge(int(timer.fsb_route), value, mask)

    def counter(self) -> int:
        """The main counter now: frozen while halted, else ticking from the virtual clock."""
        state = self.state
        if not state.config & ENABLE_CNF:
            return int(state.counter_base)
        elapsed_ns = self.clock() - int(state.counter_base_ns)
        return (int(state.counter_base) + elapsed_ns // NS_PER_TICK) & QWORD

    def write_general_config(self, new: int) -> None:
        """Starting the counter notes the time; halting it freezes the value reached."""
        state = self.state
        started = new & ~state.config & ENABLE_CNF
        halted = state.config & ~new & ENABLE_CNF
        if halted:
            state.counter_base = self.counter()
        if started:
            state.counter_base_ns = self.clock()
        state.config = new

    def write_timer_config(self, timer: HpetTimerState, value: int, mask: int) -> None:
        """Tn_CONF: capability bits are read-only; a route the timer cannot use is not taken."""
        old = int(timer.config)
        new = _merge(old, value, mask & TN_CONF_WRITABLE)
        route = (new & TN_INT_ROUTE_CNF) >> TN_INT_ROUTE_SHIFT
        if not INT_ROUTE_CAP >> route & 1:
            # The specification's way of refusing: the route reads back unchanged.
            new = _merge(new, old, TN_INT_ROUTE_CNF)
        if new & TN_32MODE_CNF:
            timer.comparator = timer.comparator & DWORD
            timer.period = timer.period & DWORD
        timer.config = new

    def write_comparator(self, timer: HpetTimerState, value: int, mask: int) -> None:
        """Tn_COMPARATOR: in periodic mode a write sets the period, and the comparator only with VAL_SET.

        VAL_SET clears itself after every comparator write.  A 32-bit timer drops the high half.
        """
        config = int(timer.config)
        if config & TN_32MODE_CNF:
            mask &= DWORD
        periodic = config & TN_TYPE_CNF
        if periodic:
            timer.period = _merge(int(timer.period), value, mask)
        if not periodic or config & TN_VAL_SET_CNF:
            timer.comparator = _merge(int(timer.comparator), value, mask)
        timer.config = config & ~TN_VAL_SET_CNF

    def _timer_register(self, register: int) -> tuple[HpetTimerState | None, int]:
        """The timer whose block *register* falls in, and the register's offset in that block."""
        index, timer_register = divmod(register - TIMER_BASE, TIMER_STRIDE)
        if 0 <= index < TIMER_COUNT:
            return self.state.timers[index], timer_register
        return None, 0

    @staticmethod
    def arms_timer(offset: int) -> bool:
        """True for an access to a timer's configuration or comparator, which arm the timer."""
        index, timer_register = divmod((offset & ~7) - TIMER_BASE, TIMER_STRIDE)
        return 0 <= index < TIMER_COUNT and timer_register in (TN_CONF, TN_COMPARATOR)


class HpetRing3(HpetCore):
    """Ring-3 half: creates and maps the region, does every access, owns reset."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: HpetState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns)
        state.mmio_handle = hlp.mmio_create_and_map(
            config["MMIOBase"],
            REGION_SIZE,
            description="HPET",
            read=self.mmio_read,
            write=self.mmio_write,
            flags=IOMMMIO_FLAGS_READ_DWORD_QWORD | IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
        )
        self.reset()

    def reset(self) -> None:
        """Power-on state: halted at 0, no status, every timer off with its comparator all ones."""
        state = self.state
        state.config = 0
        state.isr = 0
        state.counter_base = 0
        state.counter_base_ns = self.clock()
        for timer in state.timers:
            timer.config = TN_CONF_AFTER_RESET
            timer.comparator = QWORD
            timer.period = 0
            timer.fsb_route = 0


class HpetRing0(HpetCore):
    """Ring-0 half: every read and most writes; a timer's configuration or comparator goes to ring-3."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: HpetState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns)
        hlp.mmio_set_up_context(state.mmio_handle, read=self.mmio_read, write=self.mmio_write)

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        """As in ring-3, or VINF_IOM_R3_MMIO_WRITE, before any change, for a write that arms a timer."""
        if self.arms_timer(offset):
            return VINF_IOM_R3_MMIO_WRITE
        return super().mmio_write(offset, value, size)


REGISTRATION = DeviceRegistration(
    name="hpet",
    description="High Precision Event Timer: a 100 MHz main counter and three timers (no interrupts yet)",
    device_class=PDM_DEVREG_CLASS_PIT,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=HpetState,
    ring3=HpetRing3,
    ring0=HpetRing0,
    config_keys=(
        ConfigKey(
            "MMIOBase",
            int,
            0xFED00000,
            "page-aligned guest-physical base of the registers",
            minimum=0,
            maximum=0xFFFFFFFF - REGION_SIZE + 1,
        ),
    ),
)
