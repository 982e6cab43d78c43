"""The I/O APIC alone: both halves driven through fake helpers, one register rule per test."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import pytest

from devices import ioapic
from devices.ioapic import (
    EOI,
    IOREGSEL,
    IOWIN,
    PIN_COUNT,
    REG_ARBITRATION,
    REG_ID,
    REG_REDIRECTION,
    REG_VERSION,
    REGION_SIZE,
    RTE_DELIVERY_STATUS,
    RTE_MASKED,
    RTE_REMOTE_IRR,
    RTE_TRIGGER_LEVEL,
    IoApicRing0,
    IoApicRing3,
    IoApicState,
)
from shared.devapi import (
    IOMMMIO_FLAGS_READ_DWORD,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD,
    PDM_DEVREG_CLASS_PIC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
)
from shared.status import VINF_IOM_MMIO_UNUSED_FF, VINF_SUCCESS

HANDLE = 7
LEVEL = RTE_TRIGGER_LEVEL


@dataclass
class MmioRegion:
    address: int
    size: int
    description: str
    callbacks: dict[str, Any]
    flags: int


@dataclass
class FakeRing3Helpers:
    """PDMDEVHLPR3 reduced to what the I/O APIC calls; records the region it makes."""

    instance: int = 0
    regions: list[MmioRegion] = field(default_factory=list)

    def mmio_create_and_map(
        self, address: int, size: int, *, description: str, flags: int = 0, **callbacks: Any
    ) -> int:
        self.regions.append(MmioRegion(address, size, description, callbacks, flags))
        return HANDLE

    def virtual_time_ns(self) -> int:
        return 0


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def mmio_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))

    def virtual_time_ns(self) -> int:
        return 0


@dataclass
class IoApic:
    state: IoApicState
    ring3: IoApicRing3
    ring0: IoApicRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers

    def write_indirect(self, index: int, value: int, tier: Any = None) -> None:
        """Select *index* and write *value* through IOWIN, as a guest does (ring-0 by default)."""
        tier = tier or self.ring0
        assert tier.mmio_write(IOREGSEL, index, 4) == VINF_SUCCESS
        assert tier.mmio_write(IOWIN, value, 4) == VINF_SUCCESS

    def read_indirect(self, index: int, tier: Any = None) -> int:
        tier = tier or self.ring0
        assert tier.mmio_write(IOREGSEL, index, 4) == VINF_SUCCESS
        status, value = tier.mmio_read(IOWIN, 4)
        assert status == VINF_SUCCESS
        return int(value)

    def set_entry(self, pin: int, low: int, high: int = 0) -> None:
        self.write_indirect(REG_REDIRECTION + 2 * pin + 1, high)
        self.write_indirect(REG_REDIRECTION + 2 * pin, low)

    def entry_low(self, pin: int) -> int:
        return self.read_indirect(REG_REDIRECTION + 2 * pin)


def config(**overrides: Any) -> dict[str, Any]:
    values = {key.name: key.default_for(0) for key in ioapic.REGISTRATION.config_keys}
    values.update(overrides)
    return values


def make_ioapic(**overrides: Any) -> IoApic:
    state = IoApicState()
    hlp3, hlp0 = FakeRing3Helpers(), FakeRing0Helpers()
    values = config(**overrides)
    ring3 = IoApicRing3(hlp3, state, values)
    ring0 = IoApicRing0(hlp0, state, values)
    return IoApic(state, ring3, ring0, hlp3, hlp0)


def snapshot(state: IoApicState) -> bytes:
    return bytes(ctypes.string_at(ctypes.addressof(state), ctypes.sizeof(state)))


# -- registration and regions --------------------------------------------------------------


def test_registration_is_a_single_ring0_capable_pic() -> None:
    reg = ioapic.REGISTRATION
    assert (reg.name, reg.device_class, reg.max_instances) == ("ioapic", PDM_DEVREG_CLASS_PIC, 1)
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert (reg.shared_state, reg.ring3, reg.ring0) == (IoApicState, IoApicRing3, IoApicRing0)
    assert config() == {"MMIOBase": 0xFEC00000, "ApicId": 0}


def test_apic_id_config_is_limited_to_four_bits() -> None:
    key = ioapic.REGISTRATION.config_key("ApicId")
    assert key is not None
    assert key.check(15) == 15
    with pytest.raises(ConfigError):
        key.check(16)


def test_ring3_maps_one_page_at_mmio_base_with_dword_only_accesses() -> None:
    dev = make_ioapic(MMIOBase=0xFEC01000)
    (region,) = dev.hlp3.regions
    assert (region.address, region.size, region.description) == (0xFEC01000, 4096, "I/O APIC")
    assert region.flags == IOMMMIO_FLAGS_READ_DWORD | IOMMMIO_FLAGS_WRITE_ONLY_DWORD
    assert region.callbacks == {"read": dev.ring3.mmio_read, "write": dev.ring3.mmio_write}
    assert dev.state.mmio_handle == HANDLE


def test_ring0_sets_up_the_region_ring3_created() -> None:
    dev = make_ioapic()
    ((handle, callbacks),) = dev.hlp0.contexts
    assert handle == HANDLE
    assert callbacks == {"read": dev.ring0.mmio_read, "write": dev.ring0.mmio_write}


# -- direct registers ----------------------------------------------------------------------


def test_ioregsel_reads_back_the_selected_index_in_eight_bits() -> None:
    dev = make_ioapic()
    dev.ring0.mmio_write(IOREGSEL, 0x1234, 4)
    assert dev.ring0.mmio_read(IOREGSEL, 4) == (VINF_SUCCESS, 0x34)


@pytest.mark.parametrize("offset", [0x04, 0x08, 0x0C, 0x14, 0x20, 0x3C, EOI, 0x44, REGION_SIZE - 4])
def test_unused_offsets_and_the_write_only_eoi_read_as_unused_ff(offset: int) -> None:
    dev = make_ioapic()
    status, _ = dev.ring0.mmio_read(offset, 4)
    assert status == VINF_IOM_MMIO_UNUSED_FF


@pytest.mark.parametrize("offset", [0x04, 0x0C, 0x14, 0x20, 0x3C, 0x44, REGION_SIZE - 4])
def test_writes_to_unused_offsets_change_nothing(offset: int) -> None:
    dev = make_ioapic()
    before = snapshot(dev.state)
    assert dev.ring0.mmio_write(offset, 0xFFFFFFFF, 4) == VINF_SUCCESS
    assert snapshot(dev.state) == before


# -- ID, version, arbitration ------------------------------------------------------------


def test_id_register_starts_at_apic_id_in_bits_24_to_27() -> None:
    dev = make_ioapic(ApicId=5)
    assert dev.read_indirect(REG_ID) == 0x05000000


def test_id_register_keeps_only_four_bits_at_24_to_27() -> None:
    dev = make_ioapic()
    dev.write_indirect(REG_ID, 0xFF000000)
    assert dev.read_indirect(REG_ID) == 0x0F000000
    dev.write_indirect(REG_ID, 0x00FFFFFF)
    assert dev.read_indirect(REG_ID) == 0


def test_version_register_reports_0x20_and_24_entries() -> None:
    dev = make_ioapic()
    value = dev.read_indirect(REG_VERSION)
    assert value == 0x00170020
    assert value & 0xFF == 0x20
    assert (value >> 16 & 0xFF) + 1 == PIN_COUNT == 24


def test_version_register_is_read_only() -> None:
    dev = make_ioapic()
    dev.write_indirect(REG_VERSION, 0)
    assert dev.read_indirect(REG_VERSION) == 0x00170020


def test_arbitration_register_follows_the_id_and_is_read_only() -> None:
    dev = make_ioapic(ApicId=3)
    assert dev.read_indirect(REG_ARBITRATION) == 0x03000000
    dev.write_indirect(REG_ARBITRATION, 0x0A000000)
    assert dev.read_indirect(REG_ARBITRATION) == 0x03000000
    dev.write_indirect(REG_ID, 0x09000000)
    assert dev.read_indirect(REG_ARBITRATION) == 0x09000000


@pytest.mark.parametrize("index", [0x03, 0x0F, REG_REDIRECTION + 2 * PIN_COUNT, 0x80, 0xFF])
def test_unknown_indirect_registers_read_all_ones_and_ignore_writes(index: int) -> None:
    dev = make_ioapic()
    dev.ring0.mmio_write(IOREGSEL, index, 4)
    before = snapshot(dev.state)
    assert dev.ring0.mmio_write(IOWIN, 0, 4) == VINF_SUCCESS
    assert snapshot(dev.state) == before
    assert dev.ring0.mmio_read(IOWIN, 4) == (VINF_SUCCESS, 0xFFFFFFFF)


# -- redirection entries -----------------------------------------------------------------


def test_redirection_entries_are_masked_after_reset() -> None:
    dev = make_ioapic()
    for pin in range(PIN_COUNT):
        dev.set_entry(pin, 0x30 + pin, 0xFF000000)
    dev.ring3.reset()
    for pin in range(PIN_COUNT):
        assert dev.read_indirect(REG_REDIRECTION + 2 * pin) == 0x10000
        assert dev.read_indirect(REG_REDIRECTION + 2 * pin + 1) == 0


def test_redirection_entries_are_masked_at_power_on() -> None:
    dev = make_ioapic()
    assert [int(entry) for entry in dev.state.redirection] == [RTE_MASKED] * PIN_COUNT


def test_redirection_entry_n_is_at_0x10_plus_2n_low_and_0x11_plus_2n_high() -> None:
    dev = make_ioapic()
    dev.write_indirect(0x10 + 2 * 5, 0x0000A941)  # vector 0x41, lowest priority, logical, low active, level
    dev.write_indirect(0x11 + 2 * 5, 0x7E000000)
    assert dev.read_indirect(0x10 + 2 * 5) == 0x0000A941
    assert dev.read_indirect(0x11 + 2 * 5) == 0x7E000000
    assert dev.state.redirection[5] == 0x7E000000_0000A941
    assert dev.state.redirection[4] == dev.state.redirection[6] == RTE_MASKED


def test_last_redirection_entry_is_at_0x3e_and_0x3f() -> None:
    dev = make_ioapic()
    dev.write_indirect(0x3E, 0x51)
    dev.write_indirect(0x3F, 0x01000000)
    assert dev.state.redirection[PIN_COUNT - 1] == 0x01000000_00000051


def test_reserved_redirection_bits_read_as_zero() -> None:
    dev = make_ioapic()
    dev.set_entry(2, 0xFFFFFFFF, 0xFFFFFFFF)
    # Writable: vector, delivery mode, destination mode, polarity, trigger, mask; destination.
    assert dev.entry_low(2) == 0x0001AFFF
    assert dev.read_indirect(REG_REDIRECTION + 2 * 2 + 1) == 0xFF000000


def test_read_only_bits_survive_writes() -> None:
    dev = make_ioapic()
    dev.set_entry(1, LEVEL | 0x40)
    dev.ring0.set_irq(1, True)
    assert dev.entry_low(1) & RTE_REMOTE_IRR
    # Writing Remote IRR and Delivery Status as 0 keeps Remote IRR set ...
    dev.write_indirect(REG_REDIRECTION + 2, LEVEL | 0x41)
    assert dev.entry_low(1) == LEVEL | RTE_REMOTE_IRR | 0x41
    # ... and writing them as 1 sets neither by itself.
    dev.set_entry(3, RTE_DELIVERY_STATUS | RTE_REMOTE_IRR | LEVEL | RTE_MASKED | 0x42)
    assert dev.entry_low(3) == LEVEL | RTE_MASKED | 0x42


def test_switching_an_entry_to_edge_clears_remote_irr() -> None:
    dev = make_ioapic()
    dev.set_entry(4, LEVEL | 0x50)
    dev.ring0.set_irq(4, True)
    dev.ring0.set_irq(4, False)
    assert dev.entry_low(4) & RTE_REMOTE_IRR
    dev.write_indirect(REG_REDIRECTION + 8, 0x50)
    assert dev.entry_low(4) == 0x50


# -- pins, delivery and EOI --------------------------------------------------------------


def test_pin_levels_are_recorded_in_shared_state() -> None:
    dev = make_ioapic()
    dev.ring0.set_irq(3, True)
    dev.ring3.set_irq(17, True)
    assert dev.state.irq_level == 1 << 3 | 1 << 17
    dev.ring0.set_irq(3, False)
    assert dev.state.irq_level == 1 << 17


def test_level_interrupt_is_delivered_once_until_eoi() -> None:
    dev = make_ioapic()
    dev.set_entry(9, LEVEL | 0x61)
    dev.ring0.set_irq(9, True)
    dev.ring0.set_irq(9, True)
    assert (dev.state.deliveries, dev.state.last_vector) == (1, 0x61)
    assert dev.entry_low(9) & RTE_REMOTE_IRR


def test_masked_level_interrupt_is_delivered_when_unmasked_while_asserted() -> None:
    dev = make_ioapic()
    dev.set_entry(10, LEVEL | RTE_MASKED | 0x62)
    dev.ring0.set_irq(10, True)
    assert dev.state.deliveries == 0
    assert not dev.entry_low(10) & RTE_REMOTE_IRR
    dev.write_indirect(REG_REDIRECTION + 20, LEVEL | 0x62)
    assert (dev.state.deliveries, dev.state.last_vector) == (1, 0x62)
    assert dev.entry_low(10) & RTE_REMOTE_IRR


def test_edge_interrupt_is_delivered_on_each_rising_edge_and_dropped_while_masked() -> None:
    dev = make_ioapic()
    dev.set_entry(0, 0x20)
    dev.ring0.set_irq(0, True)
    dev.ring0.set_irq(0, True)  # still high: no new edge
    dev.ring0.set_irq(0, False)
    dev.ring0.set_irq(0, True)
    assert (dev.state.deliveries, dev.state.last_vector) == (2, 0x20)
    assert not dev.entry_low(0) & RTE_REMOTE_IRR
    dev.ring0.set_irq(0, False)
    dev.write_indirect(REG_REDIRECTION, RTE_MASKED | 0x20)
    dev.ring0.set_irq(0, True)
    dev.write_indirect(REG_REDIRECTION, 0x20)
    assert dev.state.deliveries == 2


def test_eoi_clears_remote_irr_of_matching_level_entry() -> None:
    dev = make_ioapic()
    dev.set_entry(5, LEVEL | 0x30)
    dev.set_entry(6, LEVEL | 0x31)
    for pin in (5, 6):
        dev.ring0.set_irq(pin, True)
        dev.ring0.set_irq(pin, False)
    assert dev.entry_low(5) & RTE_REMOTE_IRR and dev.entry_low(6) & RTE_REMOTE_IRR
    assert dev.ring0.mmio_write(EOI, 0x30, 4) == VINF_SUCCESS
    assert dev.entry_low(5) == LEVEL | 0x30
    assert dev.entry_low(6) == LEVEL | RTE_REMOTE_IRR | 0x31


def test_eoi_uses_only_the_low_eight_bits_as_the_vector() -> None:
    dev = make_ioapic()
    dev.set_entry(7, LEVEL | 0x33)
    dev.ring0.set_irq(7, True)
    dev.ring0.set_irq(7, False)
    dev.ring0.mmio_write(EOI, 0xFFFFFF33, 4)
    assert not dev.entry_low(7) & RTE_REMOTE_IRR


def test_eoi_ignores_edge_triggered_entries() -> None:
    dev = make_ioapic()
    # Hardware cannot get here (an edge entry loses Remote IRR); set it behind the guest's back.
    dev.state.redirection[8] = RTE_REMOTE_IRR | 0x34
    dev.ring0.mmio_write(EOI, 0x34, 4)
    assert dev.state.redirection[8] == RTE_REMOTE_IRR | 0x34


def test_eoi_redelivers_a_level_interrupt_still_asserted() -> None:
    dev = make_ioapic()
    dev.set_entry(11, LEVEL | 0x35)
    dev.ring0.set_irq(11, True)
    dev.ring0.mmio_write(EOI, 0x35, 4)
    assert dev.state.deliveries == 2
    assert dev.entry_low(11) & RTE_REMOTE_IRR


# -- the two tiers -----------------------------------------------------------------------


def test_both_halves_share_state() -> None:
    dev = make_ioapic()
    dev.ring0.mmio_write(IOREGSEL, REG_REDIRECTION + 6, 4)
    assert dev.ring3.mmio_read(IOREGSEL, 4) == (VINF_SUCCESS, REG_REDIRECTION + 6)
    dev.ring3.mmio_write(IOWIN, 0x77, 4)
    assert dev.ring0.mmio_read(IOWIN, 4) == (VINF_SUCCESS, 0x77)
    assert dev.state.redirection[3] == 0x77


def test_ring0_serves_every_register_access_itself() -> None:
    dev = make_ioapic()
    for index in range(0x100):
        dev.ring0.mmio_write(IOREGSEL, index, 4)
        assert dev.ring0.mmio_write(IOWIN, dev.ring0.mmio_read(IOWIN, 4)[1], 4) == VINF_SUCCESS
    assert dev.ring0.mmio_write(EOI, 0x40, 4) == VINF_SUCCESS
    for offset in range(0, REGION_SIZE, 4):
        status, _ = dev.ring0.mmio_read(offset, 4)
        assert status in (VINF_SUCCESS, VINF_IOM_MMIO_UNUSED_FF)


def test_ring0_construction_leaves_the_state_alone() -> None:
    dev = make_ioapic(ApicId=2)
    dev.set_entry(12, 0x44)
    before = snapshot(dev.state)
    IoApicRing0(FakeRing0Helpers(), dev.state, config(ApicId=2))
    assert snapshot(dev.state) == before


def test_reset_restores_id_and_index_and_keeps_pin_levels() -> None:
    dev = make_ioapic(ApicId=6)
    dev.write_indirect(REG_ID, 0x01000000)
    dev.ring0.set_irq(2, True)
    dev.ring0.mmio_write(IOREGSEL, 0x21, 4)
    dev.ring3.reset()
    assert dev.ring0.mmio_read(IOREGSEL, 4) == (VINF_SUCCESS, 0)
    assert dev.read_indirect(REG_ID) == 0x06000000
    assert dev.state.irq_level == 1 << 2
