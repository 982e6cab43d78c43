"""edu: QEMU's teaching device (docs/specs/edu.rst), one 1 MiB MMIO region of dword registers.

A driver checks it is alive, has it compute factorials, and takes interrupts:

* ID (0x00, read-only) identifies the card: 0x010000ED (version 1.0, then 0xED).
* LIVENESS (0x04) reads back the bitwise inverse of the last value written.
* FACTORIAL (0x08): a write stores n and starts computing n! (a 32-bit wrapping
  product), unless a computation is running, in which case the write is dropped.  The
  result replaces n, STATUS_COMPUTING clears, and with STATUS_IRQ_FACTORIAL set the
  device raises FACTORIAL_IRQ.
* STATUS (0x20): STATUS_COMPUTING (read-only) and STATUS_IRQ_FACTORIAL (read/write).
* IRQ_STATUS (0x24, read-only); IRQ_RAISE (0x60) ORs its value into it and raises the
  line; IRQ_ACK (0x64) clears those bits, and the line drops once none are left.

Below 0x80 only dword accesses count, as in QEMU: other sizes read all ones and their
writes are dropped.  The region uses IOM's PASSTHRU modes so the device sees the guest's
own sizes.  The DMA engine (0x80-0x98) is not modelled: from 0x80 up reads give all ones
and writes are dropped.  There is no interrupt controller yet, so the line is only
recorded in ``irq_level``.

The split between the tiers: ring-0 serves every read and the LIVENESS, STATUS,
IRQ_RAISE and IRQ_ACK writes.  A FACTORIAL write goes to ring-3
(VINF_IOM_R3_MMIO_WRITE), which stands in for QEMU's worker thread: it starts the
computation and finishes it at once, raising the interrupt if asked.  Ring-3 may also
move the region, as a guest reprogramming BAR0 would (:meth:`EduRing3.move`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_IOM_MMIO_UNUSED_FF, VINF_IOM_R3_MMIO_WRITE, VINF_SUCCESS, VBoxError

ID = 0x00  # read-only identification
LIVENESS = 0x04  # reads the inverse of what was written
FACTORIAL = 0x08  # n in, n! out
STATUS = 0x20
IRQ_STATUS = 0x24  # read-only: the interrupt causes pending
IRQ_RAISE = 0x60  # write-only: OR the value into IRQ_STATUS
IRQ_ACK = 0x64  # write-only: clear the value's bits from IRQ_STATUS
REGISTERS_END = 0x80  # the DMA registers start here; not modelled
REGISTER_SIZE = 4  # below REGISTERS_END every other access size is ignored

IDENTIFICATION = 0x010000ED  # major 1, minor 0, then 0xED
STATUS_COMPUTING = 0x01  # FACTORIAL is busy; read-only
STATUS_IRQ_FACTORIAL = 0x80  # raise FACTORIAL_IRQ when a factorial is done
FACTORIAL_IRQ = 0x00000001  # the IRQ_STATUS bit a finished factorial sets

REGION_SIZE = 0x100000  # 1 MiB, BAR0 in QEMU
REGION_FLAGS = IOMMMIO_FLAGS_READ_PASSTHRU | IOMMMIO_FLAGS_WRITE_PASSTHRU
PAGE_SIZE = 0x1000
DWORD_MASK = 0xFFFFFFFF

# 34! holds 2**32 as a factor (17 + 8 + 4 + 2 + 1 twos), and so does every larger
# factorial: from there on the 32-bit product is 0, which spares ring-3 a loop of up
# to 2**32 multiplies that QEMU's worker thread would grind through.
FACTORIAL_WRAPS_TO_ZERO = 34


def factorial_u32(n: int) -> int:
    """n! as a product of wrapping 32-bit multiplies (QEMU's ``ret *= i`` on a uint32_t)."""
    if n >= FACTORIAL_WRAPS_TO_ZERO:
        return 0
    product = 1
    for factor in range(2, n + 1):
        product = product * factor & DWORD_MASK
    return product


def all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


class EduState(ctypes.Structure):
    _fields_ = [
        ("mmio_handle", ctypes.c_uint16),
        ("irq_level", ctypes.c_uint8),  # the interrupt line: 1 while IRQ_STATUS is not 0
        ("bar0", ctypes.c_uint64),  # where the region is mapped
        ("liveness", ctypes.c_uint32),  # the last value written to LIVENESS
        ("factorial", ctypes.c_uint32),  # n, then n! once computed
        ("status", ctypes.c_uint32),
        ("irq_status", ctypes.c_uint32),
    ]


class EduCore:
    """The registers, the same in both tiers; FACTORIAL writes are ring-3's alone."""

    def __init__(self, state: EduState) -> None:
        self.state = state

    def mmio_read(self, offset: int, size: int) -> tuple[int, int]:
        state = self.state
        if offset >= REGISTERS_END or size != REGISTER_SIZE:
            return VINF_IOM_MMIO_UNUSED_FF, all_ones(size)
        if offset == ID:
            return VINF_SUCCESS, IDENTIFICATION
        if offset == LIVENESS:
            return VINF_SUCCESS, ~state.liveness & DWORD_MASK
        if offset == FACTORIAL:
            return VINF_SUCCESS, state.factorial
        if offset == STATUS:
            return VINF_SUCCESS, state.status
        if offset == IRQ_STATUS:
            return VINF_SUCCESS, state.irq_status
        return VINF_IOM_MMIO_UNUSED_FF, all_ones(size)

    @staticmethod
    def is_register_write(offset: int, size: int) -> bool:
        """False for the writes the device drops: sizes other than a dword, DMA and beyond."""
        return offset < REGISTERS_END and size == REGISTER_SIZE

    def write_register(self, offset: int, value: int) -> None:
        """A dword write to any register but FACTORIAL; writes to read-only or unused offsets are dropped."""
        state = self.state
        value &= DWORD_MASK
        if offset == LIVENESS:
            state.liveness = value
        elif offset == STATUS:
            state.status = state.status & ~STATUS_IRQ_FACTORIAL | value & STATUS_IRQ_FACTORIAL
        elif offset == IRQ_RAISE:
            self.raise_irq(value)
        elif offset == IRQ_ACK:
            self.lower_irq(value)

    def raise_irq(self, causes: int) -> None:
        state = self.state
        state.irq_status |= causes
        if state.irq_status:
            state.irq_level = 1

    def lower_irq(self, causes: int) -> None:
        state = self.state
        state.irq_status &= ~causes & DWORD_MASK
        if not state.irq_status:
            state.irq_level = 0


class EduRing3(EduCore):
    """Ring-3 half: creates and maps the region, computes factorials, moves the BAR."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: EduState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        self.hlp = hlp
        address = config["MMIOBase"]
        if address % PAGE_SIZE:
            raise ConfigError(f"MMIOBase = {address:#x} is not page aligned")
        state.mmio_handle = hlp.mmio_create_and_map(
            address, REGION_SIZE, description="EDU", read=self.mmio_read, write=self.mmio_write, flags=REGION_FLAGS,
            posted=True,  # a later access to edu waits for posted writes first, so a read sees the factorial
        )
        state.bar0 = address

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        if not self.is_register_write(offset, size):
            return VINF_SUCCESS
        if offset == FACTORIAL:
            self.start_factorial(value & DWORD_MASK)
        else:
            self.write_register(offset, value)
        return VINF_SUCCESS

    def start_factorial(self, n: int) -> None:
        """Store *n* and compute its factorial, unless a computation is already running."""
        state = self.state
        if state.status & STATUS_COMPUTING:
            return
        state.factorial = n
        state.status |= STATUS_COMPUTING
        self.finish_factorial()

    def finish_factorial(self) -> None:
        """What QEMU's worker thread does, here run to completion at once."""
        state = self.state
        state.factorial = factorial_u32(state.factorial)
        state.status &= ~STATUS_COMPUTING
        if state.status & STATUS_IRQ_FACTORIAL:
            self.raise_irq(FACTORIAL_IRQ)

    def move(self, address: int) -> None:
        """Map the region at *address* instead, as after the guest reprograms BAR0.

        Raises what IOM's map raises (a conflict, an unaligned address); the region is
        then mapped back where it was.
        """
        state = self.state
        self.hlp.mmio_unmap(state.mmio_handle)
        try:
            self.hlp.mmio_map(state.mmio_handle, address)
        except VBoxError:
            self.hlp.mmio_map(state.mmio_handle, state.bar0)
            raise
        state.bar0 = address


class EduRing0(EduCore):
    """Ring-0 half: every read and every write but FACTORIAL's, which goes to ring-3."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: EduState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.mmio_set_up_context(state.mmio_handle, read=self.mmio_read, write=self.mmio_write)

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        """Returns VINF_IOM_R3_MMIO_WRITE for FACTORIAL: the computation is ring-3's."""
        if not self.is_register_write(offset, size):
            return VINF_SUCCESS
        if offset == FACTORIAL:
            return VINF_IOM_R3_MMIO_WRITE
        self.write_register(offset, value)
        return VINF_SUCCESS


REGISTRATION = DeviceRegistration(
    name="edu",
    description="QEMU's edu teaching device: identification, liveness, factorial and interrupt registers",
    device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=EduState,
    ring3=EduRing3,
    ring0=EduRing0,
    config_keys=(
        ConfigKey(
            "MMIOBase",
            int,
            0xFEA00000,
            "the 1 MiB region's address (page aligned; a 32-bit BAR, so below 4 GiB)",
            minimum=0,
            maximum=(1 << 32) - REGION_SIZE,
        ),
    ),
)
