"""ioapic: an 82093AA-style I/O APIC, the PC's interrupt router, as one 4 KiB MMIO page.

The guest reaches 64 indirect registers through two direct ones: IOREGSEL (+0x00) selects
an index and IOWIN (+0x10) reads or writes the register it names.  Version 0x20 adds an
EOI register (+0x40): writing a vector ends the level-triggered interrupts with that vector
without the guest having to touch their redirection entries.  Each of the 24 input pins has
a 64-bit redirection entry saying how its interrupt is delivered, or that it is masked.

Both halves run the same register logic (:class:`IoApicCore`) on one :class:`IoApicState`
in shared memory.  Ring-0 serves every access itself, as VirtualBox's I/O APIC does, so a
guest's interrupt handling never leaves ring-0; ring-3 creates the region and resets.

There is no local APIC or interrupt wiring yet.  :meth:`IoApicCore.set_irq` is the input
(PDMDevHlpIoApicSetIrq): it records the pin's level in the shared state, and what would be
sent to a local APIC is recorded there too (a count and the last vector) instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    IOMMMIO_FLAGS_READ_DWORD,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD,
    PDM_DEVREG_CLASS_PIC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_IOM_MMIO_UNUSED_FF, VINF_SUCCESS

REGION_SIZE = 4096  # one page, though only the first 0x44 bytes hold registers

# --- Direct registers: offsets into the region.  IOM hands over aligned DWORDs only.
IOREGSEL = 0x00  # index of the indirect register IOWIN reaches (bits 0-7)
IOWIN = 0x10  # data window onto the selected indirect register
EOI = 0x40  # write a vector: clear Remote IRR of the level-triggered entries using it

# --- Indirect registers: IOREGSEL values.
REG_ID = 0x00  # the I/O APIC's ID, in bits 24-27
REG_VERSION = 0x01  # read-only
REG_ARBITRATION = 0x02  # read-only; the bus arbitration ID, which equals the ID here
REG_REDIRECTION = 0x10  # entry n: low DWORD at 0x10 + 2n, high DWORD at 0x11 + 2n

ID_SHIFT = 24
ID_MASK = 0x0F  # a 4-bit ID (xAPIC-era parts; later ones widen it to 8)

PIN_COUNT = 24
VERSION = 0x20  # 0x11 is the original 82093AA; 0x20 is the first with the EOI register
VERSION_VALUE = (PIN_COUNT - 1) << 16 | VERSION  # max redirection entry in bits 16-23: 0x00170020

# --- Redirection entry bits (64-bit).
RTE_VECTOR = 0xFF  # bits 0-7: the vector delivered
RTE_DELIVERY_MODE = 0x700  # bits 8-10: fixed, lowest priority, SMI, NMI, INIT, ExtINT
RTE_DEST_MODE = 0x800  # bit 11: logical (1) or physical (0) destination
RTE_DELIVERY_STATUS = 0x1000  # bit 12, read-only: a delivery is waiting to be sent
RTE_POLARITY = 0x2000  # bit 13: the pin is active low
RTE_REMOTE_IRR = 0x4000  # bit 14, read-only: a level interrupt was accepted, no EOI yet
RTE_TRIGGER_LEVEL = 0x8000  # bit 15: level-triggered (1) or edge-triggered (0)
RTE_MASKED = 0x10000  # bit 16: the pin's interrupts are not delivered
RTE_DESTINATION = 0xFF << 56  # bits 56-63: the destination APIC ID or logical set
RTE_WRITABLE = (
    RTE_VECTOR | RTE_DELIVERY_MODE | RTE_DEST_MODE | RTE_POLARITY | RTE_TRIGGER_LEVEL | RTE_MASKED | RTE_DESTINATION
)
RTE_AFTER_RESET = RTE_MASKED  # every pin masked, everything else zero

DWORD = 0xFFFFFFFF
ALL_ONES = DWORD  # what IOWIN reads for an indirect register that does not exist


class IoApicState(ctypes.Structure):
    _fields_ = [
        ("mmio_handle", ctypes.c_uint16),
        ("index", ctypes.c_uint8),  # IOREGSEL
        ("id", ctypes.c_uint8),  # the 4-bit ID
        ("redirection", ctypes.c_uint64 * PIN_COUNT),
        ("irq_level", ctypes.c_uint32),  # bit n: input pin n is asserted
        ("deliveries", ctypes.c_uint64),  # interrupts that would have gone to a local APIC
        ("last_vector", ctypes.c_uint8),  # the vector of the latest of them
    ]


class IoApicCore:
    """The registers and the pins, the same in both tiers."""

    def __init__(self, state: IoApicState) -> None:
        self.state = state

    def mmio_read(self, offset: int, size: int) -> tuple[int, int]:
        """Read a direct register.  VINF_IOM_MMIO_UNUSED_FF where there is none (EOI is write-only)."""
        if offset == IOREGSEL:
            return VINF_SUCCESS, self.state.index
        if offset == IOWIN:
            return VINF_SUCCESS, self.read_indirect(self.state.index)
        return VINF_IOM_MMIO_UNUSED_FF, 0

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        """Write a direct register.  Always VINF_SUCCESS; writes where there is none are dropped."""
        if offset == IOREGSEL:
            self.state.index = value & 0xFF
        elif offset == IOWIN:
            self.write_indirect(self.state.index, value)
        elif offset == EOI:
            self.end_of_interrupt(value & RTE_VECTOR)
        return VINF_SUCCESS

    def read_indirect(self, index: int) -> int:
        state = self.state
        if index in (REG_ID, REG_ARBITRATION):
            return int(state.id) << ID_SHIFT
        if index == REG_VERSION:
            return VERSION_VALUE
        pin, high = self._entry_half(index)
        if pin is None:
            return ALL_ONES
        return int(state.redirection[pin]) >> (32 if high else 0) & DWORD

    def write_indirect(self, index: int, value: int) -> None:
        """Write an indirect register; read-only ones and unknown indices ignore it."""
        if index == REG_ID:
            self.state.id = value >> ID_SHIFT & ID_MASK
            return
        pin, high = self._entry_half(index)
        if pin is not None:
            shift = 32 if high else 0
            self.write_entry(pin, (value & DWORD) << shift, DWORD << shift)

    def write_entry(self, pin: int, value: int, half: int) -> None:
        """Write the bits of *value* under *half* that the guest may change, keep the rest."""
        state = self.state
        old = int(state.redirection[pin])
        writable = RTE_WRITABLE & half
        new = old & ~writable | value & writable
        if not new & RTE_TRIGGER_LEVEL:
            # Hardware drops Remote IRR when an entry turns edge-triggered; guests without
            # the EOI register (version 0x11) end level interrupts that way.
            new &= ~RTE_REMOTE_IRR
        state.redirection[pin] = new
        self._deliver_held_level(pin)

    def end_of_interrupt(self, vector: int) -> None:
        """The EOI register: every level entry with *vector* is ready for its next interrupt."""
        state = self.state
        for pin in range(PIN_COUNT):
            entry = int(state.redirection[pin])
            if entry & RTE_TRIGGER_LEVEL and entry & RTE_REMOTE_IRR and entry & RTE_VECTOR == vector:
                state.redirection[pin] = entry & ~RTE_REMOTE_IRR
                self._deliver_held_level(pin)

    def set_irq(self, pin: int, asserted: bool) -> None:
        """An input pin changes level (PDMDevHlpIoApicSetIrq); *asserted* is logical, not electrical.

        An edge entry delivers on each rising edge, unless masked (the datasheet drops edges
        on a masked pin).  A level entry delivers while the pin is held asserted, once per
        EOI; a masked one delivers when unmasked if the pin is still asserted.  The polarity
        bit is kept for the guest but not applied, as in VirtualBox: callers give the
        asserted state, not the voltage.
        """
        state = self.state
        bit = 1 << pin
        rising = asserted and not state.irq_level & bit
        state.irq_level = state.irq_level | bit if asserted else state.irq_level & ~bit
        entry = int(state.redirection[pin])
        if entry & RTE_TRIGGER_LEVEL:
            self._deliver_held_level(pin)
        elif rising and not entry & RTE_MASKED:
            self._deliver(entry)

    def _deliver_held_level(self, pin: int) -> None:
        """Deliver a level entry's interrupt if its pin is asserted, it is unmasked and not in service."""
        state = self.state
        entry = int(state.redirection[pin])
        wants = RTE_TRIGGER_LEVEL
        if entry & (wants | RTE_MASKED | RTE_REMOTE_IRR) == wants and state.irq_level >> pin & 1:
            state.redirection[pin] = entry | RTE_REMOTE_IRR
            self._deliver(entry)

    def _deliver(self, entry: int) -> None:
        """Send the interrupt to a local APIC; there is none yet, so record it."""
        state = self.state
        state.deliveries += 1
        state.last_vector = entry & RTE_VECTOR

    @staticmethod
    def _entry_half(index: int) -> tuple[int | None, bool]:
        """The pin whose redirection entry *index* names, and whether it is the high DWORD."""
        entry_index = index - REG_REDIRECTION
        if 0 <= entry_index < 2 * PIN_COUNT:
            return entry_index // 2, bool(entry_index & 1)
        return None, False


class IoApicRing3(IoApicCore):
    """Ring-3 half: creates and maps the region, and owns reset."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: IoApicState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        self.apic_id = config["ApicId"]
        state.mmio_handle = hlp.mmio_create_and_map(
            config["MMIOBase"],
            REGION_SIZE,
            description="I/O APIC",
            read=self.mmio_read,
            write=self.mmio_write,
            flags=IOMMMIO_FLAGS_READ_DWORD | IOMMMIO_FLAGS_WRITE_ONLY_DWORD,
        )
        self.reset()

    def reset(self) -> None:
        """Power-on registers: the configured ID, index 0, every pin masked.

        Pin levels and the delivery record stay: the levels belong to the devices driving
        the pins, and the record is an observation, not a register.
        """
        state = self.state
        state.index = 0
        state.id = self.apic_id
        for pin in range(PIN_COUNT):
            state.redirection[pin] = RTE_AFTER_RESET


class IoApicRing0(IoApicCore):
    """Ring-0 half: every register access, with nothing deferred."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: IoApicState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.mmio_set_up_context(state.mmio_handle, read=self.mmio_read, write=self.mmio_write)


REGISTRATION = DeviceRegistration(
    name="ioapic",
    description="I/O APIC (82093AA-style, version 0x20): 24 redirection entries and an EOI register",
    device_class=PDM_DEVREG_CLASS_PIC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=IoApicState,
    ring3=IoApicRing3,
    ring0=IoApicRing0,
    config_keys=(
        ConfigKey(
            "MMIOBase",
            int,
            0xFEC00000,
            "page-aligned guest-physical base of the registers",
            minimum=0,
            maximum=0xFFFFFFFF - REGION_SIZE + 1,
        ),
        ConfigKey("ApicId", int, 0, "the I/O APIC's ID after reset", minimum=0, maximum=ID_MASK),
    ),
)
