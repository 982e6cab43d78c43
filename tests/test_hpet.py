"""The HPET alone: both halves driven through fake helpers sharing one virtual clock."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import pytest

from devices import hpet
from devices.hpet import (
    GCAP_ID,
    GEN_CONF,
    GINTR_STA,
    MAIN_COUNTER,
    REGION_SIZE,
    TIMER_COUNT,
    TN_32MODE_CNF,
    TN_INT_ENB_CNF,
    TN_TYPE_CNF,
    TN_VAL_SET_CNF,
    HpetRing0,
    HpetRing3,
    HpetState,
)
from shared.devapi import (
    IOMMMIO_FLAGS_READ_DWORD_QWORD,
    IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD,
    PDM_DEVREG_CLASS_PIT,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
)
from shared.status import VINF_IOM_MMIO_UNUSED_00, VINF_IOM_R3_MMIO_WRITE, VINF_SUCCESS

HANDLE = 9
START_NS = 5_000_000  # the VM has run a while before the device is built


def tn_conf(n: int) -> int:
    return 0x100 + 0x20 * n


def tn_comparator(n: int) -> int:
    return 0x108 + 0x20 * n


def tn_fsb_route(n: int) -> int:
    return 0x110 + 0x20 * n


class Clock:
    """The VM's virtual clock, moved by hand."""

    def __init__(self) -> None:
        self.now_ns = START_NS

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ns: int) -> None:
        self.now_ns += ns


@dataclass
class MmioRegion:
    address: int
    size: int
    description: str
    callbacks: dict[str, Any]
    flags: int


@dataclass
class FakeRing3Helpers:
    """PDMDEVHLPR3 reduced to what the HPET calls; records the region it makes."""

    clock: Clock
    instance: int = 0
    regions: list[MmioRegion] = field(default_factory=list)

    def mmio_create_and_map(
        self, address: int, size: int, *, description: str, flags: int = 0, **callbacks: Any
    ) -> int:
        self.regions.append(MmioRegion(address, size, description, callbacks, flags))
        return HANDLE

    def virtual_time_ns(self) -> int:
        return self.clock()


@dataclass
class FakeRing0Helpers:
    clock: Clock
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def mmio_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))

    def virtual_time_ns(self) -> int:
        return self.clock()


@dataclass
class Hpet:
    state: HpetState
    ring3: HpetRing3
    ring0: HpetRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers
    clock: Clock

    def read64(self, offset: int, tier: Any = None) -> int:
        status, value = (tier or self.ring0).mmio_read(offset, 8)
        assert status == VINF_SUCCESS
        return int(value)

    def read32(self, offset: int, tier: Any = None) -> int:
        status, value = (tier or self.ring0).mmio_read(offset, 4)
        assert status == VINF_SUCCESS
        return int(value)

    def write64(self, offset: int, value: int, tier: Any = None) -> None:
        assert (tier or self.ring3).mmio_write(offset, value, 8) == VINF_SUCCESS

    def write32(self, offset: int, value: int, tier: Any = None) -> None:
        assert (tier or self.ring3).mmio_write(offset, value, 4) == VINF_SUCCESS


def config(**overrides: Any) -> dict[str, Any]:
    values = {key.name: key.default_for(0) for key in hpet.REGISTRATION.config_keys}
    values.update(overrides)
    return values


def make_hpet(**overrides: Any) -> Hpet:
    clock = Clock()
    state = HpetState()
    hlp3, hlp0 = FakeRing3Helpers(clock), FakeRing0Helpers(clock)
    values = config(**overrides)
    ring3 = HpetRing3(hlp3, state, values)
    ring0 = HpetRing0(hlp0, state, values)
    return Hpet(state, ring3, ring0, hlp3, hlp0, clock)


def snapshot(state: HpetState) -> bytes:
    return bytes(ctypes.string_at(ctypes.addressof(state), ctypes.sizeof(state)))


# -- registration and regions --------------------------------------------------------------


def test_registration_is_a_single_ring0_capable_timer() -> None:
    reg = hpet.REGISTRATION
    assert (reg.name, reg.device_class, reg.max_instances) == ("hpet", PDM_DEVREG_CLASS_PIT, 1)
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert (reg.shared_state, reg.ring3, reg.ring0) == (HpetState, HpetRing3, HpetRing0)
    assert config() == {"MMIOBase": 0xFED00000}


def test_ring3_maps_one_page_at_mmio_base_with_dword_qword_accesses() -> None:
    dev = make_hpet(MMIOBase=0xFED01000)
    (region,) = dev.hlp3.regions
    assert (region.address, region.size, region.description) == (0xFED01000, 4096, "HPET")
    assert region.flags == IOMMMIO_FLAGS_READ_DWORD_QWORD | IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD
    assert region.callbacks == {"read": dev.ring3.mmio_read, "write": dev.ring3.mmio_write}
    assert dev.state.mmio_handle == HANDLE


def test_ring0_sets_up_the_region_ring3_created() -> None:
    dev = make_hpet()
    ((handle, callbacks),) = dev.hlp0.contexts
    assert handle == HANDLE
    assert callbacks == {"read": dev.ring0.mmio_read, "write": dev.ring0.mmio_write}


# -- general capabilities and ID ---------------------------------------------------------


def test_capabilities_report_revision_three_timers_intel_and_a_10ns_period() -> None:
    dev = make_hpet()
    value = dev.read64(GCAP_ID)
    assert value & 0xFF == 1  # revision
    assert (value >> 8 & 0x1F) + 1 == TIMER_COUNT == 3
    assert value >> 13 & 1 == 1  # 64-bit counter
    assert value >> 14 & 1 == 0  # reserved
    assert value >> 15 & 1 == 1  # legacy replacement capable
    assert value >> 16 & 0xFFFF == 0x8086
    assert value >> 32 == 10_000_000  # femtoseconds: 100 MHz
    assert value == 0x00989680_8086A201


def test_capabilities_are_read_only() -> None:
    dev = make_hpet()
    dev.write64(GCAP_ID, 0, tier=dev.ring0)
    dev.write32(GCAP_ID + 4, 0, tier=dev.ring3)
    assert dev.read64(GCAP_ID) == 0x00989680_8086A201


def test_64bit_register_reads_as_two_dwords_or_one_qword() -> None:
    dev = make_hpet()
    assert dev.read32(GCAP_ID) == 0x8086A201
    assert dev.read32(GCAP_ID + 4) == 0x00989680
    dev.write64(tn_comparator(1), 0x12345678_9ABCDEF0)
    assert dev.read32(tn_comparator(1)) == 0x9ABCDEF0
    assert dev.read32(tn_comparator(1) + 4) == 0x12345678
    assert dev.read64(tn_comparator(1)) == 0x12345678_9ABCDEF0


def test_dword_write_at_plus_4_reaches_only_the_high_half() -> None:
    dev = make_hpet()
    dev.write64(tn_fsb_route(2), 0x11111111_22222222)
    dev.write32(tn_fsb_route(2) + 4, 0xAAAAAAAA)
    assert dev.read64(tn_fsb_route(2)) == 0xAAAAAAAA_22222222
    dev.write32(tn_fsb_route(2), 0xBBBBBBBB)
    assert dev.read64(tn_fsb_route(2)) == 0xAAAAAAAA_BBBBBBBB


@pytest.mark.parametrize("offset", [0x008, 0x018, 0x028, 0x0E8, 0x0F8, 0x118, 0x160, 0x200, REGION_SIZE - 8])
def test_unused_offsets_read_as_zeros(offset: int) -> None:
    dev = make_hpet()
    assert dev.ring0.mmio_read(offset, 8)[0] == VINF_IOM_MMIO_UNUSED_00
    assert dev.ring0.mmio_read(offset + 4, 4)[0] == VINF_IOM_MMIO_UNUSED_00


@pytest.mark.parametrize("offset", [0x008, 0x028, 0x0F8, 0x118, 0x160, REGION_SIZE - 8])
def test_writes_to_unused_offsets_change_nothing(offset: int) -> None:
    dev = make_hpet()
    before = snapshot(dev.state)
    dev.write64(offset, 0xFFFFFFFF_FFFFFFFF)
    assert snapshot(dev.state) == before


# -- general configuration and interrupt status --------------------------------------------


def test_general_config_keeps_only_enable_and_legacy_replacement() -> None:
    dev = make_hpet()
    dev.write64(GEN_CONF, 0xFFFFFFFF_FFFFFFFC, tier=dev.ring0)
    assert dev.read64(GEN_CONF) == 0
    dev.write32(GEN_CONF, 0xFFFFFFFF, tier=dev.ring0)
    assert dev.read64(GEN_CONF) == 0b11
    dev.write32(GEN_CONF + 4, 0, tier=dev.ring0)
    assert dev.read64(GEN_CONF) == 0b11


def test_interrupt_status_is_write_one_to_clear() -> None:
    dev = make_hpet()
    dev.state.isr = 0b111  # nothing raises these yet: set them as a firing timer would
    dev.write32(GINTR_STA, 0, tier=dev.ring0)
    assert dev.read64(GINTR_STA) == 0b111
    dev.write32(GINTR_STA, 0b010, tier=dev.ring0)
    assert dev.read64(GINTR_STA) == 0b101
    dev.write32(GINTR_STA + 4, 0xFFFFFFFF, tier=dev.ring0)
    assert dev.read64(GINTR_STA) == 0b101
    dev.write64(GINTR_STA, 0b101, tier=dev.ring0)
    assert dev.read64(GINTR_STA) == 0


# -- main counter ------------------------------------------------------------------------


def test_main_counter_runs_from_virtual_clock_only_when_enabled() -> None:
    dev = make_hpet()
    dev.clock.advance(1_000)
    assert dev.read64(MAIN_COUNTER) == 0  # halted since reset
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(1_000)
    assert dev.read64(MAIN_COUNTER) == 100  # 1000 ns at 10 ns a tick
    dev.clock.advance(500)
    dev.write32(GEN_CONF, 0, tier=dev.ring0)
    assert dev.read64(MAIN_COUNTER) == 150
    dev.clock.advance(10_000)
    assert dev.read64(MAIN_COUNTER) == 150  # halted: frozen
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(300)
    assert dev.read64(MAIN_COUNTER) == 180  # carries on from where it stopped


def test_main_counter_counts_whole_10ns_periods() -> None:
    dev = make_hpet()
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(19)
    assert dev.read64(MAIN_COUNTER) == 1
    dev.clock.advance(1)
    assert dev.read64(MAIN_COUNTER) == 2


def test_rewriting_enable_does_not_restart_the_count() -> None:
    dev = make_hpet()
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(1_000)
    dev.write32(GEN_CONF, 0b11, tier=dev.ring0)
    assert dev.read64(MAIN_COUNTER) == 100


def test_main_counter_is_writable_while_halted() -> None:
    dev = make_hpet()
    dev.write64(MAIN_COUNTER, 0x1_00000000, tier=dev.ring0)
    assert dev.read64(MAIN_COUNTER) == 0x1_00000000
    dev.write32(MAIN_COUNTER, 0xFFFFFFF0, tier=dev.ring0)
    assert dev.read64(MAIN_COUNTER) == 0x1_FFFFFFF0
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(200)
    assert dev.read64(MAIN_COUNTER) == 0x2_00000004  # carries into the high half
    assert (dev.read32(MAIN_COUNTER), dev.read32(MAIN_COUNTER + 4)) == (4, 2)


def test_main_counter_ignores_writes_while_running() -> None:
    dev = make_hpet()
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(100)
    dev.write64(MAIN_COUNTER, 0x5000, tier=dev.ring0)
    assert dev.read64(MAIN_COUNTER) == 10
    dev.write32(GEN_CONF, 0, tier=dev.ring0)
    assert dev.read64(MAIN_COUNTER) == 10


# -- timers ------------------------------------------------------------------------------


def test_timer_config_after_reset_shows_only_capabilities() -> None:
    dev = make_hpet()
    for n in range(TIMER_COUNT):
        # Periodic and 64-bit capable, routable to I/O APIC inputs 16-23, everything off.
        assert dev.read64(tn_conf(n)) == 0x00FF0000_00000030
        assert dev.read64(tn_comparator(n)) == 0xFFFFFFFF_FFFFFFFF


def test_timer_capability_bits_are_read_only() -> None:
    dev = make_hpet()
    dev.write64(tn_conf(0), 0)
    assert dev.read64(tn_conf(0)) == 0x00FF0000_00000030
    dev.write32(tn_conf(0) + 4, 0)
    assert dev.read32(tn_conf(0) + 4) == 0x00FF0000


def test_timer_config_keeps_only_its_writable_bits() -> None:
    dev = make_hpet()
    dev.write32(tn_conf(1), 0xFFFFC1FF | 20 << 9)
    # INT_TYPE, INT_ENB, TYPE, VAL_SET, 32MODE and the route; reserved bits and FSB_EN stay 0.
    assert dev.read32(tn_conf(1)) == 20 << 9 | TN_32MODE_CNF | 0b0111_1110


def test_timer_route_outside_its_capability_is_not_taken() -> None:
    dev = make_hpet()
    dev.write32(tn_conf(2), 20 << 9)
    assert dev.read32(tn_conf(2)) >> 9 & 0x1F == 20
    dev.write32(tn_conf(2), 5 << 9 | TN_INT_ENB_CNF)
    value = dev.read32(tn_conf(2))
    assert value >> 9 & 0x1F == 20  # reads back what it was: the spec's refusal
    assert value & TN_INT_ENB_CNF  # the rest of the write is taken


def test_one_shot_comparator_write_sets_the_comparator() -> None:
    dev = make_hpet()
    dev.write64(tn_comparator(0), 0x1000)
    assert dev.read64(tn_comparator(0)) == 0x1000
    assert dev.state.timers[0].period == 0


def test_periodic_comparator_write_sets_the_period_and_with_val_set_the_comparator() -> None:
    dev = make_hpet()
    dev.write32(tn_conf(0), TN_TYPE_CNF)
    dev.write64(tn_comparator(0), 500)
    assert (dev.state.timers[0].period, dev.read64(tn_comparator(0))) == (500, 0xFFFFFFFF_FFFFFFFF)
    dev.write32(tn_conf(0), TN_TYPE_CNF | TN_VAL_SET_CNF)
    dev.write64(tn_comparator(0), 700)
    assert (dev.state.timers[0].period, dev.read64(tn_comparator(0))) == (700, 700)
    assert not dev.read32(tn_conf(0)) & TN_VAL_SET_CNF  # used once, then cleared


def test_32bit_mode_truncates_the_comparator_and_drops_high_half_writes() -> None:
    dev = make_hpet()
    dev.write32(tn_conf(1), TN_32MODE_CNF)
    assert dev.read64(tn_comparator(1)) == 0xFFFFFFFF
    dev.write64(tn_comparator(1), 0x5_00000006)
    assert dev.read64(tn_comparator(1)) == 6
    dev.write32(tn_comparator(1) + 4, 7)
    assert dev.read64(tn_comparator(1)) == 6


# -- the two tiers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "size"),
    [(tn_conf(0), 4), (tn_conf(0) + 4, 4), (tn_conf(2), 8), (tn_comparator(1), 8), (tn_comparator(2) + 4, 4)],
)
def test_ring0_defers_timer_config_and_comparator_writes(offset: int, size: int) -> None:
    dev = make_hpet()
    before = snapshot(dev.state)
    assert dev.ring0.mmio_write(offset, 0x1234, size) == VINF_IOM_R3_MMIO_WRITE
    assert snapshot(dev.state) == before  # refused before touching anything


def test_ring0_defers_timer_comparator_writes() -> None:
    dev = make_hpet()
    assert dev.ring0.mmio_write(tn_comparator(0), 0x4000, 8) == VINF_IOM_R3_MMIO_WRITE
    assert dev.read64(tn_comparator(0)) == 0xFFFFFFFF_FFFFFFFF
    assert dev.ring3.mmio_write(tn_comparator(0), 0x4000, 8) == VINF_SUCCESS  # ring-3 redoes it
    assert dev.read64(tn_comparator(0)) == 0x4000


def test_ring0_handles_general_status_counter_and_fsb_writes() -> None:
    dev = make_hpet()
    dev.state.isr = 0b1
    assert dev.ring0.mmio_write(GINTR_STA, 1, 4) == VINF_SUCCESS
    assert dev.ring0.mmio_write(MAIN_COUNTER, 42, 8) == VINF_SUCCESS
    assert dev.ring0.mmio_write(tn_fsb_route(0), 0xFEE00000, 4) == VINF_SUCCESS
    assert dev.ring0.mmio_write(GEN_CONF, 1, 4) == VINF_SUCCESS
    assert (dev.state.isr, dev.state.counter_base, dev.state.timers[0].fsb_route) == (0, 42, 0xFEE00000)
    assert dev.state.config == 1


def test_ring0_serves_every_read_as_ring3_would() -> None:
    dev = make_hpet()
    dev.write32(GEN_CONF, 1)
    dev.clock.advance(12_340)
    for offset in range(0, REGION_SIZE, 4):
        assert dev.ring0.mmio_read(offset, 4) == dev.ring3.mmio_read(offset, 4)
    for offset in range(0, REGION_SIZE, 8):
        assert dev.ring0.mmio_read(offset, 8) == dev.ring3.mmio_read(offset, 8)


def test_both_halves_share_state() -> None:
    dev = make_hpet()
    dev.write32(GEN_CONF, 1, tier=dev.ring0)
    dev.clock.advance(2_000)
    assert dev.read64(MAIN_COUNTER, tier=dev.ring3) == 200
    dev.write64(tn_comparator(2), 0x9999, tier=dev.ring3)
    assert dev.read64(tn_comparator(2), tier=dev.ring0) == 0x9999


def test_ring0_construction_leaves_the_state_alone() -> None:
    dev = make_hpet()
    dev.write32(GEN_CONF, 1)
    dev.write64(tn_comparator(0), 77)
    before = snapshot(dev.state)
    HpetRing0(FakeRing0Helpers(dev.clock), dev.state, config())
    assert snapshot(dev.state) == before


def test_reset_restores_power_on_state() -> None:
    dev = make_hpet()
    fresh = snapshot(dev.state)
    dev.write32(GEN_CONF, 0b11)
    dev.state.isr = 0b100
    dev.write32(tn_conf(1), TN_TYPE_CNF | TN_INT_ENB_CNF | 16 << 9)
    dev.write64(tn_comparator(1), 5)
    dev.write64(tn_fsb_route(1), 6)
    dev.clock.advance(1_000)
    dev.ring3.reset()
    assert dev.read64(GEN_CONF) == dev.read64(GINTR_STA) == dev.read64(MAIN_COUNTER) == 0
    dev.state.counter_base_ns = START_NS  # the only field that differs: when reset happened
    assert snapshot(dev.state) == fresh
