"""pci: a small PCI framework: each function's configuration space, BAR decoding, and the host
bridge's configuration mechanism #1 (ports 0xCF8 and 0xCFC-0xCFF).

This module is not a device: a device module that presents PCI functions builds on it.
The pieces:

* :class:`PciFunctionLayout` describes one function as its datasheet does (IDs, class
  code, header type, BARs, device-specific registers with their reset values and
  writable bits).  It is plain Python, built the same way in both tiers.
* :class:`PciFunctionState` is the function's configuration space in the device's shared
  state: the 256 bytes, a write mask and a write-1-to-clear mask per byte (so read-only
  fields stay read-only, as QEMU keeps them), and per BAR the region behind it and where
  it is mapped.  A device embeds one per function in its own ``ctypes.Structure``.
* :class:`PciFunction` joins the two: the register rules both tiers share
  (:meth:`~PciFunction.read`, :meth:`~PciFunction.write`) and, for ring-3, decoding.
* :class:`ConfigMechanism1` is the host bridge's address and data ports in front of bus 0.

BARs and decoding.  A BAR's writable bits are its address bits above its size, so writing
all ones and reading back gives the size mask with the space and type bits (0xFFFFFFF1
for 16 I/O ports, 0xFF000008 for 16 MiB of prefetchable memory); the expansion ROM BAR
(0x30) also has its enable bit.  A BAR decodes while the command register enables its
space (I/O or memory; the ROM also needs its enable bit), its address is not 0 and the
whole range fits the space (below 64 KiB for I/O, below 4 GiB for memory).  The
framework owns no IOM region: the device creates one per BAR in its constructor and
attaches its handle (:meth:`PciFunction.attach_region`); when decoding changes, ring-3's
:meth:`PciFunction.update_decoding` calls the device's :class:`BarMapper` to unmap and
map it (:class:`IomBarMapper` does that with the device's own helpers).  A BAR without a
region (the VGA ROM here) is sized and stored but never mapped.

The split between the tiers: configuration reads and the address register are served in
ring-0 (firmware scans the bus there).  A write that may change a mapping -- the command
register's low byte (I/O and memory enable), a BAR that has a region, or a
device-specific register the layout marks ``ring3`` -- is sent to ring-3 by
:func:`ring0_config_write` (VINF_IOM_R3_IOPORT_WRITE), which redoes it, updates decoding
and runs the device's side effects.  Every other write (cache line size, interrupt line,
the command register's high byte, plain device-specific registers) is done in ring-0.

Configuration mechanism #1 as QEMU's ``pc`` machine has it: only a DWORD write to 0xCF8
sets CONFIG_ADDRESS; other writes to 0xCF8-0xCFB are dropped; reads of 0xCF8-0xCFB of any
width return the register's low bytes (QEMU's index region ignores the offset).  The
device, not this module, decides what else lives in that range (PIIX3's reset control
register at 0xCF9).  With the enable bit (31) set, 0xCFC-0xCFF reach byte 0-3 of the
selected DWORD register of the selected bus/device/function; with it clear, or for a
function nobody presents, or another bus (there are no bridges), reads give all ones and
writes are dropped.  Bits 1:0 of CONFIG_ADDRESS are stored but do not pick the byte: the
data port offset does.

Not modelled: 64-bit BARs, capability lists (a layout may still place registers at 0x34
and beyond), PCI interrupts (the pin and line registers are storage).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shared.devapi import Ring3DeviceHelpers
from shared.status import VERR_IOM_IOPORT_UNUSED, VINF_IOM_R3_IOPORT_WRITE, VINF_SUCCESS, VBoxError

CONFIG_SPACE_SIZE = 256

# --- Type 0 configuration header (PCI Local Bus 3.0, 6.1) ---------------------------------
VENDOR_ID = 0x00  # word, read-only
DEVICE_ID = 0x02  # word, read-only
COMMAND = 0x04  # word
STATUS = 0x06  # word: read-only bits and write-1-to-clear error bits
REVISION_ID = 0x08
CLASS_CODE = 0x09  # three bytes: programming interface, sub-class, base class
CACHE_LINE_SIZE = 0x0C  # read/write storage
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E  # bit 7: the device has more than one function
BIST = 0x0F
BAR0 = 0x10  # six DWORD base address registers, 0x10-0x27
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
ROM_ADDRESS = 0x30  # expansion ROM base address
CAPABILITIES_POINTER = 0x34
INTERRUPT_LINE = 0x3C  # read/write storage: which IRQ the firmware routed the pin to
INTERRUPT_PIN = 0x3D  # read-only: 0 none, 1-4 INTA#-INTD#
DEVICE_SPECIFIC = 0x40  # 0x40-0xFF: the function's own registers

COMMAND_IO = 0x0001  # decode the I/O BARs
COMMAND_MEMORY = 0x0002  # decode the memory BARs and the ROM
COMMAND_MASTER = 0x0004  # may master the bus (DMA)
COMMAND_SERR = 0x0100
COMMAND_INTX_DISABLE = 0x0400
COMMAND_WRITABLE = COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_SERR | COMMAND_INTX_DISABLE  # as QEMU

STATUS_FAST_BACK_TO_BACK = 0x0080
STATUS_DEVSEL_MEDIUM = 0x0200
STATUS_ERRORS = 0xF900  # parity, signalled/received aborts, SERR: write 1 to clear

HEADER_TYPE_MULTIFUNCTION = 0x80

BAR_COUNT = 6  # slots 0-5
ROM_SLOT = BAR_COUNT  # the expansion ROM is the slot after them in the state's BAR array
BAR_SPACE_IO = 0x1  # bit 0 of an I/O BAR
BAR_MEMORY_PREFETCHABLE = 0x8
ROM_ENABLE = 0x1  # bit 0 of the ROM BAR: decode the ROM (with COMMAND_MEMORY)
IO_SPACE_END = 0x10000
MEMORY_SPACE_END = 1 << 32

# --- Configuration mechanism #1 -----------------------------------------------------------
CONFIG_ADDRESS_PORT = 0xCF8  # CONFIG_ADDRESS, a DWORD register
CONFIG_DATA_PORT = 0xCFC  # CONFIG_DATA, 0xCFC-0xCFF
CONFIG_ADDRESS_ENABLE = 0x80000000  # bit 31: the data ports make configuration cycles
CONFIG_ADDRESS_BUS_SHIFT = 16  # bits 23:16
CONFIG_ADDRESS_DEVFN_SHIFT = 8  # bits 15:11 device, 10:8 function
CONFIG_ADDRESS_REGISTER = 0xFC  # bits 7:2: the DWORD register

SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


def devfn(device: int, function: int) -> int:
    """The 8-bit device/function number a configuration address carries in bits 15:8."""
    return device << 3 | function


@dataclass(frozen=True)
class PciBar:
    """One base address register: slot 0-5, or ROM_SLOT for the expansion ROM.

    ``backed`` says the device attaches an IOM region to it; an unbacked BAR is sized and
    stored, never mapped.
    """

    slot: int
    size: int
    io: bool = False
    prefetchable: bool = False
    backed: bool = True

    def __post_init__(self) -> None:
        if not (0 <= self.slot < BAR_COUNT or self.slot == ROM_SLOT):
            raise ValueError(f"BAR slot {self.slot} is not 0-5 or ROM_SLOT")
        if self.size & (self.size - 1) or not self.size:
            raise ValueError(f"BAR size {self.size:#x} is not a power of two")
        if self.slot == ROM_SLOT and (self.io or self.size < 0x800):
            raise ValueError("the expansion ROM is memory of at least 2 KiB")
        if self.io and not 4 <= self.size <= 0x100:
            raise ValueError(f"an I/O BAR is 4 to 256 ports, not {self.size:#x}")
        if not self.io and self.size < 16:
            raise ValueError(f"a memory BAR is at least 16 bytes, not {self.size:#x}")

    @property
    def offset(self) -> int:
        """Where the BAR sits in configuration space."""
        return ROM_ADDRESS if self.slot == ROM_SLOT else BAR0 + 4 * self.slot

    @property
    def type_bits(self) -> int:
        """The read-only low bits: space, memory type and prefetchability."""
        if self.io:
            return BAR_SPACE_IO
        return BAR_MEMORY_PREFETCHABLE if self.prefetchable else 0

    @property
    def write_mask(self) -> int:
        address_bits = ~(self.size - 1) & 0xFFFFFFFF
        return address_bits | ROM_ENABLE if self.slot == ROM_SLOT else address_bits


@dataclass(frozen=True)
class PciRegister:
    """A register of a function that is not plain read/write storage reset to 0.

    ``reset`` is its value at reset, ``write_mask`` the bits a write changes,
    ``clear_mask`` the bits a written 1 clears.  ``ring3`` marks writes with side effects
    (a mapping, a lock): ring-0 hands them to ring-3.
    """

    offset: int
    size: int
    reset: int
    write_mask: int
    clear_mask: int = 0
    ring3: bool = False

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 4) or not 0 <= self.offset <= CONFIG_SPACE_SIZE - self.size:
            raise ValueError(f"register at {self.offset:#x} of {self.size} bytes does not fit configuration space")


@dataclass(frozen=True)
class PciFunctionLayout:
    """What a function's configuration space holds at reset and which bits a guest may write.

    As in QEMU, the device-specific area 0x40-0xFF reads back what was written unless
    ``registers`` says otherwise (or ``device_area_writable`` is False).
    """

    name: str
    device: int
    function: int
    vendor_id: int
    device_id: int
    class_code: int  # base class, sub-class, programming interface: 0x010180
    revision: int = 0
    header_type: int = 0
    status: int = 0
    subsystem_vendor_id: int = 0
    subsystem_id: int = 0
    interrupt_pin: int = 0
    bars: tuple[PciBar, ...] = ()
    registers: tuple[PciRegister, ...] = ()
    device_area_writable: bool = True
    ring3_bytes: bytes = field(init=False, repr=False, compare=False)  # 1 where ring-0 defers a write
    decoding_bytes: bytes = field(init=False, repr=False, compare=False)  # 1 where a write can change decoding

    def __post_init__(self) -> None:
        if not (0 <= self.device < 32 and 0 <= self.function < 8):
            raise ValueError(f"{self.name}: device {self.device} function {self.function} is not a PCI address")
        slots = [bar.slot for bar in self.bars]
        if len(set(slots)) != len(slots):
            raise ValueError(f"{self.name}: two BARs in one slot")
        decoding = bytearray(CONFIG_SPACE_SIZE)
        decoding[COMMAND] = 1  # the I/O and memory enables are in the low byte
        for bar in self.bars:
            if bar.backed:
                decoding[bar.offset : bar.offset + 4] = b"\x01" * 4
        ring3 = bytearray(decoding)
        for register in self.registers:
            if register.ring3:
                ring3[register.offset : register.offset + register.size] = b"\x01" * register.size
        object.__setattr__(self, "decoding_bytes", bytes(decoding))
        object.__setattr__(self, "ring3_bytes", bytes(ring3))

    @property
    def devfn(self) -> int:
        return devfn(self.device, self.function)


class PciBarState(ctypes.Structure):
    """Where one BAR's region is, in shared memory so both tiers and reports see it."""

    _fields_ = [
        ("handle", ctypes.c_uint16),  # the device's IOM region behind the BAR
        ("has_region", ctypes.c_uint8),
        ("mapped", ctypes.c_uint8),
        ("address", ctypes.c_uint32),  # where it is mapped while mapped
        ("map_failures", ctypes.c_uint32),  # maps IOM refused (an overlap the guest programmed)
    ]


class PciFunctionState(ctypes.Structure):
    """One function's configuration space and BAR mappings, embedded in a device's state."""

    _fields_ = [
        ("config", ctypes.c_uint8 * CONFIG_SPACE_SIZE),
        ("write_mask", ctypes.c_uint8 * CONFIG_SPACE_SIZE),
        ("clear_mask", ctypes.c_uint8 * CONFIG_SPACE_SIZE),  # write 1 to clear
        ("bars", PciBarState * (ROM_SLOT + 1)),
    ]


class BarMapper(Protocol):
    """What a device's ring-3 half does for the framework when a BAR starts or stops decoding."""

    def map_bar(self, function: PciFunction, bar: PciBar, address: int) -> None:
        """Map the BAR's region at *address*; raise VBoxError if IOM refuses."""
        ...

    def unmap_bar(self, function: PciFunction, bar: PciBar) -> None: ...


class IomBarMapper:
    """A BarMapper that maps the attached region with the owning device's ring-3 helpers."""

    def __init__(self, hlp: Ring3DeviceHelpers) -> None:
        self.hlp = hlp

    def map_bar(self, function: PciFunction, bar: PciBar, address: int) -> None:
        handle = function.space.bars[bar.slot].handle
        if bar.io:
            self.hlp.ioport_map(handle, address)
        else:
            self.hlp.mmio_map(handle, address)

    def unmap_bar(self, function: PciFunction, bar: PciBar) -> None:
        handle = function.space.bars[bar.slot].handle
        if bar.io:
            self.hlp.ioport_unmap(handle)
        else:
            self.hlp.mmio_unmap(handle)


class PciFunction:
    """One function: its layout and its configuration space in shared memory.

    Reads and writes apply the masks and nothing else, so both tiers can run them;
    :meth:`reset_config`, :meth:`attach_region` and the decoding methods write state or
    call IOM and are ring-3's.
    """

    def __init__(self, layout: PciFunctionLayout, space: PciFunctionState) -> None:
        self.layout = layout
        self.space = space
        self.devfn = layout.devfn
        self._config = ctypes.addressof(space.config)

    # -- the register rules, both tiers ----------------------------------------------------
    def read(self, register: int, size: int) -> int:
        """*size* bytes from *register*, little-endian; bytes past the end read 0xFF."""
        inside = max(0, min(size, CONFIG_SPACE_SIZE - register))
        data = ctypes.string_at(self._config + register, inside) + b"\xff" * (size - inside)
        return int.from_bytes(data, "little")

    def write(self, register: int, value: int, size: int) -> None:
        """Write *size* bytes at *register* through the write and write-1-to-clear masks."""
        space = self.space
        for lane in range(min(size, CONFIG_SPACE_SIZE - register)):
            at = register + lane
            byte = value >> (8 * lane) & 0xFF
            writable = space.write_mask[at]
            cleared = byte & space.clear_mask[at]
            space.config[at] = space.config[at] & ~writable & ~cleared | byte & writable

    def write_needs_ring3(self, register: int, size: int) -> bool:
        """True when a write there can change a mapping or has a device side effect."""
        return any(self.layout.ring3_bytes[register : register + size])

    def write_touches_decoding(self, register: int, size: int) -> bool:
        return any(self.layout.decoding_bytes[register : register + size])

    def bar_address(self, bar: PciBar) -> int | None:
        """Where *bar* decodes now, or None when it does not."""
        command = self.space.config[COMMAND]
        raw = self.read(bar.offset, 4)
        if bar.io:
            enabled = command & COMMAND_IO
        elif bar.slot == ROM_SLOT:
            enabled = command & COMMAND_MEMORY and raw & ROM_ENABLE
        else:
            enabled = command & COMMAND_MEMORY
        address = raw & ~(bar.size - 1) & 0xFFFFFFFF
        end = IO_SPACE_END if bar.io else MEMORY_SPACE_END
        if not enabled or address == 0 or address + bar.size > end:
            return None
        return address

    # -- ring-3 ------------------------------------------------------------------------------
    def reset_config(self) -> None:
        """Put the configuration space in its reset state (ring-3; unmap the BARs first)."""
        layout, space = self.layout, self.space
        for array in (space.config, space.write_mask, space.clear_mask):
            ctypes.memset(array, 0, CONFIG_SPACE_SIZE)
        self._store(VENDOR_ID, 2, layout.vendor_id)
        self._store(DEVICE_ID, 2, layout.device_id)
        self._store(STATUS, 2, layout.status)
        self._store(REVISION_ID, 1, layout.revision)
        self._store(CLASS_CODE, 3, layout.class_code)
        self._store(HEADER_TYPE, 1, layout.header_type)
        self._store(SUBSYSTEM_VENDOR_ID, 2, layout.subsystem_vendor_id)
        self._store(SUBSYSTEM_ID, 2, layout.subsystem_id)
        self._store(INTERRUPT_PIN, 1, layout.interrupt_pin)
        self._store_mask(space.write_mask, COMMAND, 2, COMMAND_WRITABLE)
        self._store_mask(space.clear_mask, STATUS, 2, STATUS_ERRORS)
        space.write_mask[CACHE_LINE_SIZE] = 0xFF
        space.write_mask[INTERRUPT_LINE] = 0xFF
        if layout.device_area_writable:
            device_area = ctypes.addressof(space.write_mask) + DEVICE_SPECIFIC
            ctypes.memset(device_area, 0xFF, CONFIG_SPACE_SIZE - DEVICE_SPECIFIC)
        for bar in layout.bars:
            self._store(bar.offset, 4, bar.type_bits)
            self._store_mask(space.write_mask, bar.offset, 4, bar.write_mask)
        for register in layout.registers:
            self._store(register.offset, register.size, register.reset)
            self._store_mask(space.write_mask, register.offset, register.size, register.write_mask)
            self._store_mask(space.clear_mask, register.offset, register.size, register.clear_mask)

    def _store(self, register: int, size: int, value: int) -> None:
        self._store_mask(self.space.config, register, size, value)

    @staticmethod
    def _store_mask(array: ctypes.Array[ctypes.c_uint8], register: int, size: int, value: int) -> None:
        for lane in range(size):
            array[register + lane] = value >> (8 * lane) & 0xFF

    def attach_region(self, slot: int, handle: int) -> None:
        """Record the IOM region the device created for BAR *slot* (ring-3 constructor)."""
        bar = self.space.bars[slot]
        bar.handle = handle
        bar.has_region = 1
        bar.mapped = 0

    def update_decoding(self, mapper: BarMapper) -> None:
        """Unmap the regions whose BAR stopped decoding or moved, then map the ones that decode.

        Unmapping everything first lets two BARs swap addresses.  A map IOM refuses (the
        guest placed the BAR over another region) leaves that BAR unmapped and is counted
        in ``map_failures``; the next change of decoding tries again.
        """
        wanted = {bar.slot: self.bar_address(bar) for bar in self._backed_bars()}
        for bar in self._backed_bars():
            state = self.space.bars[bar.slot]
            if state.mapped and wanted[bar.slot] != state.address:
                mapper.unmap_bar(self, bar)
                state.mapped = 0
        for bar in self._backed_bars():
            state = self.space.bars[bar.slot]
            address = wanted[bar.slot]
            if state.mapped or address is None:
                continue
            try:
                mapper.map_bar(self, bar, address)
            except VBoxError:
                state.map_failures += 1
                continue
            state.mapped = 1
            state.address = address

    def unmap_all(self, mapper: BarMapper) -> None:
        """Unmap every mapped BAR (before a reset)."""
        for bar in self._backed_bars():
            state = self.space.bars[bar.slot]
            if state.mapped:
                mapper.unmap_bar(self, bar)
                state.mapped = 0

    def _backed_bars(self) -> Iterable[PciBar]:
        return (bar for bar in self.layout.bars if bar.backed and self.space.bars[bar.slot].has_region)


ConfigWriter = Callable[[PciFunction, int, int, int], int]
"""write_config(function, register, value, size) -> status: how a tier performs a config write."""


def ring0_config_write(function: PciFunction, register: int, value: int, size: int) -> int:
    """Ring-0's config writer: plain writes here; returns VINF_IOM_R3_IOPORT_WRITE for the rest."""
    if function.write_needs_ring3(register, size):
        return VINF_IOM_R3_IOPORT_WRITE
    function.write(register, value, size)
    return VINF_SUCCESS


def ring3_config_write(function: PciFunction, register: int, value: int, size: int, mapper: BarMapper) -> None:
    """Ring-3's part of any config write: the masks, then the BAR mappings if they can change."""
    function.write(register, value, size)
    if function.write_touches_decoding(register, size):
        function.update_decoding(mapper)


class PciHostBridgeState(ctypes.Structure):
    _fields_ = [("config_address", ctypes.c_uint32)]  # CONFIG_ADDRESS (0xCF8), as last written


class ConfigMechanism1:
    """CONFIG_ADDRESS and CONFIG_DATA in front of bus 0's functions.

    Offsets are relative to 0xCF8 for the address register and to 0xCFC for the data
    port; the device routes its port callbacks here.  *write_config* performs a data-port
    write in the calling tier (:func:`ring0_config_write`, or the device's ring-3 writer).
    """

    def __init__(
        self, state: PciHostBridgeState, functions: Iterable[PciFunction], write_config: ConfigWriter
    ) -> None:
        self.state = state
        self.write_config = write_config
        self.functions: dict[int, PciFunction] = {}
        for function in functions:
            if function.devfn in self.functions:
                raise ValueError(f"two functions at devfn {function.devfn:#04x}")
            self.functions[function.devfn] = function

    def address_read(self, offset: int, size: int) -> tuple[int, int]:
        """Any width, any offset: CONFIG_ADDRESS's low bytes, as QEMU's index region answers."""
        return VINF_SUCCESS, self.state.config_address & SIZE_MASK.get(size, 0xFFFFFFFF)

    def address_write(self, offset: int, value: int, size: int) -> int:
        """Only a DWORD write at 0xCF8 sets CONFIG_ADDRESS; narrower writes are not config cycles."""
        if offset == 0 and size == 4:
            self.state.config_address = value
        return VINF_SUCCESS

    def target(self, offset: int) -> tuple[PciFunction, int] | None:
        """The function and register the data port at *offset* reaches now, or None."""
        address = self.state.config_address
        if not address & CONFIG_ADDRESS_ENABLE or address >> CONFIG_ADDRESS_BUS_SHIFT & 0xFF:
            return None
        function = self.functions.get(address >> CONFIG_ADDRESS_DEVFN_SHIFT & 0xFF)
        if function is None:
            return None
        return function, (address & CONFIG_ADDRESS_REGISTER) + offset

    def data_read(self, offset: int, size: int) -> tuple[int, int]:
        """Returns VERR_IOM_IOPORT_UNUSED (all ones) when no function answers."""
        found = self.target(offset)
        if found is None:
            return VERR_IOM_IOPORT_UNUSED, 0
        function, register = found
        return VINF_SUCCESS, function.read(register, size)

    def data_write(self, offset: int, value: int, size: int) -> int:
        """Returns what *write_config* returns (VINF_IOM_R3_IOPORT_WRITE from ring-0's)."""
        found = self.target(offset)
        if found is None:
            return VINF_SUCCESS
        function, register = found
        return self.write_config(function, register, value, size)
