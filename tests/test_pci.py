"""The PCI framework: configuration-space rules, BAR sizing and decoding, configuration mechanism #1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from devices.pci import (
    BAR0,
    CACHE_LINE_SIZE,
    CLASS_CODE,
    COMMAND,
    COMMAND_IO,
    COMMAND_MEMORY,
    CONFIG_ADDRESS_ENABLE,
    DEVICE_ID,
    HEADER_TYPE,
    INTERRUPT_LINE,
    INTERRUPT_PIN,
    LATENCY_TIMER,
    REVISION_ID,
    ROM_ADDRESS,
    ROM_SLOT,
    STATUS,
    SUBSYSTEM_ID,
    SUBSYSTEM_VENDOR_ID,
    VENDOR_ID,
    ConfigMechanism1,
    IomBarMapper,
    PciBar,
    PciFunction,
    PciFunctionLayout,
    PciFunctionState,
    PciHostBridgeState,
    PciRegister,
    ring0_config_write,
    ring3_config_write,
)
from shared.status import (
    VERR_IOM_IOPORT_UNUSED,
    VERR_IOM_MMIO_RANGE_CONFLICT,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_SUCCESS,
    VBoxError,
)

IO_HANDLE = 3
MMIO_HANDLE = 5
ROM_HANDLE = 6

LAYOUT = PciFunctionLayout(
    "test function", 3, 0, 0x1B36, 0x0005, 0x00FF00, revision=0x07, header_type=0x80, status=0x0280,
    subsystem_vendor_id=0x1AF4, subsystem_id=0x1100, interrupt_pin=1,
    bars=(
        PciBar(0, 0x20, io=True),
        PciBar(1, 0x1000),
        PciBar(2, 0x100000, prefetchable=True, backed=False),
        PciBar(ROM_SLOT, 0x10000),
    ),
    registers=(
        PciRegister(0x40, 2, 0x0001, 0xFFC0, ring3=True),  # a base register with a read-only bit 0
        PciRegister(0x44, 1, 0x00, 0x00, clear_mask=0x0F),  # status bits a device sets
    ),
)


@dataclass
class FakeMapper:
    """A BarMapper that records calls and refuses the addresses in *conflicts*."""

    conflicts: set[int] = field(default_factory=set)
    calls: list[tuple[str, int, int | None]] = field(default_factory=list)

    def map_bar(self, function: PciFunction, bar: PciBar, address: int) -> None:
        self.calls.append(("map", bar.slot, address))
        if address in self.conflicts:
            raise VBoxError(VERR_IOM_MMIO_RANGE_CONFLICT, "taken")

    def unmap_bar(self, function: PciFunction, bar: PciBar) -> None:
        self.calls.append(("unmap", bar.slot, None))


def make_function(layout: PciFunctionLayout = LAYOUT) -> PciFunction:
    function = PciFunction(layout, PciFunctionState())
    function.reset_config()
    function.attach_region(0, IO_HANDLE)
    function.attach_region(1, MMIO_HANDLE)
    function.attach_region(ROM_SLOT, ROM_HANDLE)
    return function


def guest_write(function: PciFunction, mapper: FakeMapper, register: int, value: int, size: int = 4) -> None:
    """A config write as the two tiers do it: ring-0 first, ring-3 when ring-0 defers."""
    if ring0_config_write(function, register, value, size) == VINF_IOM_R3_IOPORT_WRITE:
        ring3_config_write(function, register, value, size, mapper)


# -- the configuration space ---------------------------------------------------------------------


def test_reset_fills_the_header_from_the_layout() -> None:
    function = make_function()
    assert function.read(VENDOR_ID, 4) == 0x00051B36
    assert function.read(REVISION_ID, 4) == 0x00FF0007
    assert function.read(CLASS_CODE, 3) == 0x00FF00
    assert function.read(HEADER_TYPE, 1) == 0x80
    assert function.read(STATUS, 2) == 0x0280
    assert (function.read(SUBSYSTEM_VENDOR_ID, 2), function.read(SUBSYSTEM_ID, 2)) == (0x1AF4, 0x1100)
    assert function.read(INTERRUPT_PIN, 1) == 1
    assert function.read(COMMAND, 2) == 0


def test_identification_registers_are_read_only() -> None:
    function = make_function()
    for register in (VENDOR_ID, DEVICE_ID, REVISION_ID, HEADER_TYPE & ~3, INTERRUPT_LINE & ~3):
        function.write(register, 0, 4)
    assert function.read(VENDOR_ID, 4) == 0x00051B36
    assert function.read(REVISION_ID, 4) == 0x00FF0007
    assert function.read(HEADER_TYPE, 1) == 0x80
    assert function.read(INTERRUPT_PIN, 1) == 1


def test_command_register_writable_bits_are_qemus() -> None:
    function = make_function()
    function.write(COMMAND, 0xFFFF, 2)
    assert function.read(COMMAND, 2) == 0x0507  # I/O, memory, master, SERR, INTx disable


def test_status_error_bits_are_write_one_to_clear() -> None:
    function = make_function()
    function.space.config[STATUS + 1] |= 0xF9  # errors latched by the device
    function.write(STATUS, 0x2000, 2)
    assert function.read(STATUS, 2) == 0xDB80
    function.write(STATUS, 0xFFFF, 2)
    assert function.read(STATUS, 2) == 0x0280  # DEVSEL timing and fast back-to-back stay


def test_cache_line_and_interrupt_line_are_storage_latency_is_not() -> None:
    function = make_function()
    function.write(CACHE_LINE_SIZE, 0xFFFF, 2)
    function.write(INTERRUPT_LINE, 0x0B, 1)
    assert function.read(CACHE_LINE_SIZE, 1) == 0xFF
    assert function.read(LATENCY_TIMER, 1) == 0
    assert function.read(INTERRUPT_LINE, 1) == 0x0B


def test_device_area_reads_back_what_was_written() -> None:
    function = make_function()
    function.write(0x80, 0xCAFEF00D, 4)
    assert function.read(0x80, 4) == 0xCAFEF00D
    assert function.read(0x82, 2) == 0xCAFE


def test_device_area_can_be_read_only() -> None:
    layout = PciFunctionLayout("fixed", 0, 0, 1, 2, 0, device_area_writable=False)
    function = PciFunction(layout, PciFunctionState())
    function.reset_config()
    function.write(0x80, 0xFFFFFFFF, 4)
    assert function.read(0x80, 4) == 0


def test_register_write_mask_keeps_read_only_bits() -> None:
    function = make_function()
    assert function.read(0x40, 2) == 0x0001
    function.write(0x40, 0xFFFF, 2)
    assert function.read(0x40, 2) == 0xFFC1
    function.write(0x40, 0x0600, 2)
    assert function.read(0x40, 2) == 0x0601


def test_register_clear_mask_clears_on_one() -> None:
    function = make_function()
    function.space.config[0x44] = 0x0B
    function.write(0x44, 0x03, 1)
    assert function.read(0x44, 1) == 0x08


def test_read_past_the_end_gives_all_ones() -> None:
    function = make_function()
    function.write(0xFC, 0x11223344, 4)
    assert function.read(0xFE, 4) == 0xFFFF1122


# -- BAR sizing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("register", "initial", "sized"),
    [
        (BAR0, 0x00000001, 0xFFFFFFE1),  # 32 I/O ports
        (BAR0 + 4, 0x00000000, 0xFFFFF000),  # 4 KiB memory
        (BAR0 + 8, 0x00000008, 0xFFF00008),  # 1 MiB prefetchable memory
        (BAR0 + 12, 0x00000000, 0x00000000),  # no BAR here
        (ROM_ADDRESS, 0x00000000, 0xFFFF0001),  # 64 KiB ROM and its enable bit
    ],
)
def test_writing_all_ones_reads_back_the_size_mask_with_type_bits(register: int, initial: int, sized: int) -> None:
    function = make_function()
    assert function.read(register, 4) == initial
    function.write(register, 0xFFFFFFFF, 4)
    assert function.read(register, 4) == sized


def test_bar_address_keeps_type_bits() -> None:
    function = make_function()
    function.write(BAR0 + 8, 0xFEB00000, 4)
    assert function.read(BAR0 + 8, 4) == 0xFEB00008


@pytest.mark.parametrize(
    ("bar", "problem"),
    [
        (dict(slot=7, size=0x1000), "slot"),
        (dict(slot=0, size=0x1800), "power of two"),
        (dict(slot=0, size=0x200, io=True), "I/O BAR"),
        (dict(slot=0, size=8), "memory BAR"),
        (dict(slot=ROM_SLOT, size=0x400), "ROM"),
    ],
)
def test_bar_layout_is_checked(bar: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PciBar(**bar)


def test_layout_rejects_two_bars_in_one_slot() -> None:
    with pytest.raises(ValueError, match="two BARs"):
        PciFunctionLayout("twice", 0, 0, 1, 2, 0, bars=(PciBar(0, 0x1000), PciBar(0, 0x2000)))


def test_layout_rejects_a_register_outside_configuration_space() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        PciRegister(0xFE, 4, 0, 0)


# -- decoding ---------------------------------------------------------------------------------


def test_bars_do_not_decode_until_the_command_register_enables_them() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0, 0xC000)
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    assert mapper.calls == []


def test_io_enable_maps_only_the_io_bar_memory_enable_the_memory_bar() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0, 0xC000)
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    guest_write(function, mapper, COMMAND, COMMAND_IO, 2)
    assert mapper.calls == [("map", 0, 0xC000)]
    guest_write(function, mapper, COMMAND, COMMAND_IO | COMMAND_MEMORY, 2)
    assert mapper.calls[1:] == [("map", 1, 0xFEBF0000)]
    assert (function.space.bars[1].mapped, function.space.bars[1].address) == (1, 0xFEBF0000)


def test_disabling_decoding_unmaps() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    guest_write(function, mapper, COMMAND, 0, 2)
    assert mapper.calls == [("map", 1, 0xFEBF0000), ("unmap", 1, None)]
    assert function.space.bars[1].mapped == 0


def test_new_bar_address_while_enabled_remaps_at_runtime() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    guest_write(function, mapper, BAR0 + 4, 0xE0000000)
    assert mapper.calls[1:] == [("unmap", 1, None), ("map", 1, 0xE0000000)]
    assert function.space.bars[1].address == 0xE0000000


def test_rewriting_the_same_address_or_command_does_not_remap() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY | 0x0100, 2)
    assert mapper.calls == [("map", 1, 0xFEBF0000)]


def test_two_bars_can_swap_addresses() -> None:
    layout = PciFunctionLayout("two", 0, 0, 1, 2, 0, bars=(PciBar(0, 0x1000), PciBar(1, 0x1000)))
    function, mapper = PciFunction(layout, PciFunctionState()), FakeMapper()
    function.reset_config()
    function.attach_region(0, 1)
    function.attach_region(1, 2)
    function.write(BAR0, 0xA000_0000, 4)
    function.write(BAR0 + 4, 0xB000_0000, 4)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    function.write(BAR0, 0xB000_0000, 4)
    function.write(BAR0 + 4, 0xA000_0000, 4)
    function.update_decoding(mapper)
    assert mapper.calls[2:] == [("unmap", 0, None), ("unmap", 1, None), ("map", 0, 0xB0000000), ("map", 1, 0xA0000000)]


def test_a_bar_at_address_zero_is_not_decoded() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, COMMAND, COMMAND_IO | COMMAND_MEMORY, 2)
    assert mapper.calls == []


def test_a_bar_that_does_not_fit_its_space_is_not_decoded() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0, 0x0001FFE0)  # past 64 KiB of I/O
    guest_write(function, mapper, COMMAND, COMMAND_IO, 2)
    assert function.read(BAR0, 4) == 0x0001FFE1
    assert mapper.calls == []


def test_sizing_with_decoding_on_maps_at_the_top_of_the_space() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    guest_write(function, mapper, BAR0 + 4, 0xFFFFFFFF)
    assert mapper.calls == [("map", 1, 0xFFFFF000)]


def test_a_refused_map_leaves_the_bar_unmapped_and_is_retried() -> None:
    function, mapper = make_function(), FakeMapper(conflicts={0xFEC00000})
    guest_write(function, mapper, BAR0 + 4, 0xFEC00000)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    state = function.space.bars[1]
    assert (state.mapped, state.map_failures) == (0, 1)
    guest_write(function, mapper, BAR0 + 4, 0xFEBF0000)
    assert (state.mapped, state.address) == (1, 0xFEBF0000)


def test_an_unbacked_bar_is_sized_but_never_mapped() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0 + 8, 0xE0000000)
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    assert function.read(BAR0 + 8, 4) == 0xE0000008
    assert all(slot != 2 for _, slot, _ in mapper.calls)


def test_the_rom_decodes_only_with_its_enable_bit() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, COMMAND, COMMAND_MEMORY, 2)
    guest_write(function, mapper, ROM_ADDRESS, 0xFEBE0000)
    assert mapper.calls == []
    guest_write(function, mapper, ROM_ADDRESS, 0xFEBE0001)
    assert mapper.calls == [("map", ROM_SLOT, 0xFEBE0000)]
    guest_write(function, mapper, ROM_ADDRESS, 0xFEBE0000)
    assert mapper.calls[1:] == [("unmap", ROM_SLOT, None)]


def test_unmap_all_unmaps_what_is_mapped() -> None:
    function, mapper = make_function(), FakeMapper()
    guest_write(function, mapper, BAR0, 0xC000)
    guest_write(function, mapper, COMMAND, COMMAND_IO, 2)
    function.unmap_all(mapper)
    assert mapper.calls == [("map", 0, 0xC000), ("unmap", 0, None)]
    assert function.space.bars[0].mapped == 0


def test_iom_bar_mapper_uses_the_regions_handle_and_space() -> None:
    calls: list[tuple[str, int, int | None]] = []

    class Helpers:
        def ioport_map(self, handle: int, port: int) -> None:
            calls.append(("ioport_map", handle, port))

        def ioport_unmap(self, handle: int) -> None:
            calls.append(("ioport_unmap", handle, None))

        def mmio_map(self, handle: int, address: int) -> None:
            calls.append(("mmio_map", handle, address))

        def mmio_unmap(self, handle: int) -> None:
            calls.append(("mmio_unmap", handle, None))

    function = make_function()
    mapper = IomBarMapper(Helpers())  # type: ignore[arg-type]
    io_bar, memory_bar = LAYOUT.bars[0], LAYOUT.bars[1]
    mapper.map_bar(function, io_bar, 0xC000)
    mapper.map_bar(function, memory_bar, 0xFEBF0000)
    mapper.unmap_bar(function, io_bar)
    mapper.unmap_bar(function, memory_bar)
    assert calls == [
        ("ioport_map", IO_HANDLE, 0xC000),
        ("mmio_map", MMIO_HANDLE, 0xFEBF0000),
        ("ioport_unmap", IO_HANDLE, None),
        ("mmio_unmap", MMIO_HANDLE, None),
    ]


# -- the ring-0/ring-3 split ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("register", "size"),
    [(COMMAND, 2), (COMMAND, 1), (BAR0, 4), (BAR0 + 4 + 2, 2), (ROM_ADDRESS, 4), (0x40, 2), (0x41, 1)],
)
def test_ring0_defers_writes_that_can_change_a_mapping_without_changing_anything(register: int, size: int) -> None:
    function = make_function()
    assert ring0_config_write(function, register, 0xFFFFFFFF, size) == VINF_IOM_R3_IOPORT_WRITE
    assert bytes(function.space.config) == bytes(make_function().space.config)


@pytest.mark.parametrize(
    ("register", "size"),
    [(COMMAND + 1, 1), (CACHE_LINE_SIZE, 1), (INTERRUPT_LINE, 1), (BAR0 + 8, 4), (BAR0 + 12, 4), (0x80, 4)],
)
def test_ring0_does_plain_writes_itself(register: int, size: int) -> None:
    function = make_function()
    assert ring0_config_write(function, register, 0x5A5A5A5A, size) == VINF_SUCCESS


def test_ring0_plain_write_changes_the_register() -> None:
    function = make_function()
    assert ring0_config_write(function, INTERRUPT_LINE, 0x0B, 1) == VINF_SUCCESS
    assert function.read(INTERRUPT_LINE, 1) == 0x0B


# -- configuration mechanism #1 ---------------------------------------------------------------


@dataclass
class Bridge:
    state: PciHostBridgeState
    mechanism: ConfigMechanism1
    function: PciFunction
    writes: list[tuple[int, int, int, int]]


def make_bridge() -> Bridge:
    function = make_function()
    state = PciHostBridgeState()
    writes: list[tuple[int, int, int, int]] = []

    def write_config(target: PciFunction, register: int, value: int, size: int) -> int:
        writes.append((target.devfn, register, value, size))
        target.write(register, value, size)
        return VINF_SUCCESS

    return Bridge(state, ConfigMechanism1(state, [function], write_config), function, writes)


def select(bridge: Bridge, device: int, function: int, register: int, bus: int = 0) -> None:
    address = CONFIG_ADDRESS_ENABLE | bus << 16 | device << 11 | function << 8 | register
    assert bridge.mechanism.address_write(0, address, 4) == VINF_SUCCESS


def test_a_dword_write_to_cf8_sets_the_address_register() -> None:
    bridge = make_bridge()
    select(bridge, 3, 0, 0x08)
    assert bridge.mechanism.address_read(0, 4) == (VINF_SUCCESS, 0x80001808)


def test_byte_and_word_writes_to_the_address_ports_are_not_config_cycles() -> None:
    bridge = make_bridge()
    select(bridge, 3, 0, 0)
    for offset, size in ((0, 1), (0, 2), (2, 2), (3, 1), (2, 1)):
        bridge.mechanism.address_write(offset, 0, size)
    assert bridge.state.config_address == 0x80001800


def test_narrow_reads_of_the_address_ports_give_its_low_bytes_as_qemu() -> None:
    bridge = make_bridge()
    bridge.state.config_address = 0x80001234
    assert bridge.mechanism.address_read(0, 1) == (VINF_SUCCESS, 0x34)
    assert bridge.mechanism.address_read(2, 2) == (VINF_SUCCESS, 0x1234)


def test_data_port_reads_the_selected_register_at_its_byte_lane() -> None:
    bridge = make_bridge()
    select(bridge, 3, 0, 0x00)
    assert bridge.mechanism.data_read(0, 4) == (VINF_SUCCESS, 0x00051B36)
    assert bridge.mechanism.data_read(2, 2) == (VINF_SUCCESS, 0x0005)
    assert bridge.mechanism.data_read(1, 1) == (VINF_SUCCESS, 0x1B)
    select(bridge, 3, 0, 0x0C)
    assert bridge.mechanism.data_read(2, 1) == (VINF_SUCCESS, 0x80)  # header type at 0x0E


def test_data_port_writes_reach_the_register_at_the_byte_lane() -> None:
    bridge = make_bridge()
    select(bridge, 3, 0, 0x3C)
    assert bridge.mechanism.data_write(0, 0x0A, 1) == VINF_SUCCESS
    assert bridge.writes == [(3 << 3, 0x3C, 0x0A, 1)]
    select(bridge, 3, 0, 0x80)
    bridge.mechanism.data_write(3, 0x77, 1)
    assert bridge.function.read(0x80, 4) == 0x77000000


def test_address_bits_1_0_do_not_pick_the_byte() -> None:
    bridge = make_bridge()
    select(bridge, 3, 0, 0x02)
    assert bridge.mechanism.data_read(0, 2) == (VINF_SUCCESS, 0x1B36)


@pytest.mark.parametrize(
    "address",
    [
        0x00001800,  # enable bit clear
        CONFIG_ADDRESS_ENABLE | 4 << 11,  # no device 4
        CONFIG_ADDRESS_ENABLE | 3 << 11 | 1 << 8,  # no function 1
        CONFIG_ADDRESS_ENABLE | 1 << 16 | 3 << 11,  # bus 1: there are no bridges
    ],
)
def test_nothing_selected_reads_all_ones_and_drops_writes(address: int) -> None:
    bridge = make_bridge()
    bridge.state.config_address = address | 0x3C
    assert bridge.mechanism.data_read(0, 2) == (VERR_IOM_IOPORT_UNUSED, 0)
    assert bridge.mechanism.data_write(0, 0x0B, 1) == VINF_SUCCESS
    assert bridge.writes == []
    assert bridge.function.read(INTERRUPT_LINE, 1) == 0


def test_two_functions_at_one_address_are_refused() -> None:
    state = PciHostBridgeState()
    with pytest.raises(ValueError, match="two functions"):
        ConfigMechanism1(state, [make_function(), make_function()], ring0_config_write)


def test_ring0_writer_through_the_data_port_defers_a_bar_write() -> None:
    function = make_function()
    state = PciHostBridgeState()
    mechanism = ConfigMechanism1(state, [function], ring0_config_write)
    mechanism.address_write(0, CONFIG_ADDRESS_ENABLE | 3 << 11 | BAR0, 4)
    assert mechanism.data_write(0, 0xFFFFFFFF, 4) == VINF_IOM_R3_IOPORT_WRITE
    assert function.read(BAR0, 4) == 0x00000001
