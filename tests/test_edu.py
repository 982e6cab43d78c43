"""edu, QEMU's teaching device: each register against its spec, each half through fake helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from devices import edu
from devices.edu import (
    FACTORIAL,
    FACTORIAL_IRQ,
    ID,
    IRQ_ACK,
    IRQ_RAISE,
    IRQ_STATUS,
    LIVENESS,
    STATUS,
    STATUS_COMPUTING,
    STATUS_IRQ_FACTORIAL,
    EduRing0,
    EduRing3,
    EduState,
)
from shared.devapi import (
    IOMMMIO_FLAGS_READ_MODE,
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_MODE,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
)
from shared.status import (
    VERR_IOM_MMIO_RANGE_CONFLICT,
    VINF_IOM_MMIO_UNUSED_FF,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
    VBoxError,
)

HANDLE = 7
ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


@dataclass
class FakeRing3Helpers:
    """PDMDEVHLPR3 reduced to the MMIO calls; records every one, refuses maps at *conflicts*."""

    instance: int = 0
    conflicts: set[int] = field(default_factory=set)
    created: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def mmio_create_and_map(self, address: int, size: int, *, description: str, **rest: Any) -> int:
        self.created.append({"address": address, "size": size, "description": description, **rest})
        return HANDLE

    def mmio_map(self, handle: int, address: int) -> None:
        self.calls.append(("map", handle, address))
        if address in self.conflicts:
            raise VBoxError(VERR_IOM_MMIO_RANGE_CONFLICT, f"{address:#x} is taken")

    def mmio_unmap(self, handle: int) -> None:
        self.calls.append(("unmap", handle))


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def mmio_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))


@dataclass
class Edu:
    state: EduState
    ring3: EduRing3
    ring0: EduRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers


def config(**overrides: Any) -> dict[str, Any]:
    values = {key.name: key.default_for(0) for key in edu.REGISTRATION.config_keys}
    values.update(overrides)
    return values


def make_edu(**overrides: Any) -> Edu:
    state = EduState()
    hlp3, hlp0 = FakeRing3Helpers(), FakeRing0Helpers()
    values = config(**overrides)
    ring3 = EduRing3(hlp3, state, values)
    ring0 = EduRing0(hlp0, state, values)
    return Edu(state, ring3, ring0, hlp3, hlp0)


def read(half: EduRing0 | EduRing3, offset: int) -> int:
    """A dword read that must succeed; its value."""
    rc, value = half.mmio_read(offset, 4)
    assert rc == VINF_SUCCESS
    return value


def ring0_write(dev: Edu, offset: int, value: int) -> None:
    """A dword write ring-0 must take itself."""
    assert dev.ring0.mmio_write(offset, value, 4) == VINF_SUCCESS


def ring3_write(dev: Edu, offset: int, value: int) -> None:
    assert dev.ring3.mmio_write(offset, value, 4) == VINF_SUCCESS


def guest_write(dev: Edu, offset: int, value: int, size: int = 4) -> None:
    """What IOM does with a write: ring-0 first, ring-3 if ring-0 defers it."""
    rc = dev.ring0.mmio_write(offset, value, size)
    if rc == VINF_IOM_R3_MMIO_WRITE:
        rc = dev.ring3.mmio_write(offset, value, size)
    assert rc == VINF_SUCCESS


# -- registration and the region ------------------------------------------------------------


def test_registration_is_a_single_misc_device_with_ring0() -> None:
    reg = edu.REGISTRATION
    assert reg.name == "edu"
    assert reg.device_class == PDM_DEVREG_CLASS_MISC
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert reg.max_instances == 1
    assert (reg.shared_state, reg.ring3, reg.ring0) == (EduState, EduRing3, EduRing0)


def test_region_is_1mib_at_0xfea00000_passthru() -> None:
    dev = make_edu()
    (region,) = dev.hlp3.created
    assert (region["address"], region["size"]) == (0xFEA00000, 0x100000)
    assert region["flags"] & IOMMMIO_FLAGS_READ_MODE == IOMMMIO_FLAGS_READ_PASSTHRU
    assert region["flags"] & IOMMMIO_FLAGS_WRITE_MODE == IOMMMIO_FLAGS_WRITE_PASSTHRU
    assert (region["read"], region["write"]) == (dev.ring3.mmio_read, dev.ring3.mmio_write)
    assert dev.state.mmio_handle == HANDLE
    assert dev.state.bar0 == 0xFEA00000


def test_mmio_base_from_config() -> None:
    dev = make_edu(MMIOBase=0xE0001000)
    assert dev.hlp3.created[0]["address"] == 0xE0001000
    assert dev.state.bar0 == 0xE0001000


def test_mmio_base_must_be_page_aligned() -> None:
    with pytest.raises(ConfigError, match="page aligned"):
        EduRing3(FakeRing3Helpers(), EduState(), config(MMIOBase=0xFEA00800))


def test_mmio_base_must_leave_the_region_below_4g() -> None:
    key = edu.REGISTRATION.config_key("MMIOBase")
    assert key is not None
    assert key.check(0xFFF00000) == 0xFFF00000
    with pytest.raises(ConfigError):
        key.check(0xFFF01000)


def test_ring0_sets_up_the_region_ring3_created() -> None:
    dev = make_edu()
    ((handle, callbacks),) = dev.hlp0.contexts
    assert handle == HANDLE
    assert callbacks == {"read": dev.ring0.mmio_read, "write": dev.ring0.mmio_write}


# -- the registers ------------------------------------------------------------------------------


def test_identification_is_0x010000ed() -> None:
    dev = make_edu()
    assert read(dev.ring0, ID) == 0x010000ED
    assert read(dev.ring3, ID) == 0x010000ED


def test_identification_is_read_only() -> None:
    dev = make_edu()
    ring0_write(dev, ID, 0)
    ring3_write(dev, ID, 0x12345678)
    assert read(dev.ring0, ID) == 0x010000ED


def test_liveness_check_inverts() -> None:
    dev = make_edu()
    assert read(dev.ring0, LIVENESS) == 0xFFFFFFFF  # nothing written yet: the inverse of 0
    ring0_write(dev, LIVENESS, 0x12345678)
    assert read(dev.ring0, LIVENESS) == 0xEDCBA987
    ring3_write(dev, LIVENESS, 0xFFFF0000)
    assert read(dev.ring3, LIVENESS) == 0x0000FFFF
    assert read(dev.ring0, LIVENESS) == 0x0000FFFF


def test_factorial_computed_in_ring3_and_ring0_defers_it() -> None:
    dev = make_edu()
    assert dev.ring0.mmio_write(FACTORIAL, 5, 4) == VINF_IOM_R3_MMIO_WRITE
    assert read(dev.ring0, FACTORIAL) == 0  # ring-0 left the register alone
    assert dev.state.status == 0
    ring3_write(dev, FACTORIAL, 5)
    assert read(dev.ring0, FACTORIAL) == 120
    assert read(dev.ring0, STATUS) & STATUS_COMPUTING == 0


@pytest.mark.parametrize("n", [*range(40), 0xFFFFFFFF])
def test_factorial_is_a_32_bit_wrapping_product(n: int) -> None:
    dev = make_edu()
    guest_write(dev, FACTORIAL, n)
    assert read(dev.ring0, FACTORIAL) == math.factorial(min(n, 40)) % 2**32


def test_factorial_write_is_dropped_while_computing() -> None:
    dev = make_edu()
    guest_write(dev, FACTORIAL, 4)
    dev.state.status |= STATUS_COMPUTING  # as if QEMU's worker thread were still running
    ring3_write(dev, FACTORIAL, 6)
    assert read(dev.ring0, FACTORIAL) == 24
    assert read(dev.ring0, STATUS) & STATUS_COMPUTING


def test_factorial_raises_interrupt_when_asked() -> None:
    dev = make_edu()
    guest_write(dev, STATUS, STATUS_IRQ_FACTORIAL)
    guest_write(dev, FACTORIAL, 3)
    assert read(dev.ring0, FACTORIAL) == 6
    assert read(dev.ring0, IRQ_STATUS) == FACTORIAL_IRQ == 0x00000001
    assert dev.state.irq_level == 1
    assert read(dev.ring0, STATUS) == STATUS_IRQ_FACTORIAL  # computing is clear, the request stays


def test_factorial_raises_no_interrupt_unless_asked() -> None:
    dev = make_edu()
    guest_write(dev, FACTORIAL, 3)
    assert read(dev.ring0, FACTORIAL) == 6
    assert read(dev.ring0, IRQ_STATUS) == 0
    assert dev.state.irq_level == 0


def test_factorial_interrupt_adds_to_pending_causes() -> None:
    dev = make_edu()
    guest_write(dev, IRQ_RAISE, 0x100)
    guest_write(dev, STATUS, STATUS_IRQ_FACTORIAL)
    guest_write(dev, FACTORIAL, 2)
    assert read(dev.ring0, IRQ_STATUS) == 0x101


def test_status_interrupt_request_bit_is_read_write_and_computing_is_read_only() -> None:
    dev = make_edu()
    ring0_write(dev, STATUS, 0xFFFFFFFF)
    assert read(dev.ring0, STATUS) == STATUS_IRQ_FACTORIAL
    ring3_write(dev, STATUS, 0)
    assert read(dev.ring0, STATUS) == 0
    dev.state.status = STATUS_COMPUTING | STATUS_IRQ_FACTORIAL
    ring0_write(dev, STATUS, 0)
    assert read(dev.ring0, STATUS) == STATUS_COMPUTING


def test_interrupt_raise_and_acknowledge() -> None:
    dev = make_edu()
    ring0_write(dev, IRQ_RAISE, 0x5)
    assert (read(dev.ring0, IRQ_STATUS), dev.state.irq_level) == (0x5, 1)
    ring3_write(dev, IRQ_RAISE, 0x30)
    assert read(dev.ring3, IRQ_STATUS) == 0x35
    ring0_write(dev, IRQ_ACK, 0x31)
    assert (read(dev.ring0, IRQ_STATUS), dev.state.irq_level) == (0x4, 1)  # a cause is left: the line stays up
    ring3_write(dev, IRQ_ACK, 0x4)
    assert (read(dev.ring0, IRQ_STATUS), dev.state.irq_level) == (0, 0)


def test_interrupt_raise_of_nothing_leaves_the_line_down() -> None:
    dev = make_edu()
    ring0_write(dev, IRQ_RAISE, 0)
    assert dev.state.irq_level == 0


def test_interrupt_status_is_read_only() -> None:
    dev = make_edu()
    ring0_write(dev, IRQ_RAISE, 0x2)
    ring0_write(dev, IRQ_STATUS, 0)
    ring3_write(dev, IRQ_STATUS, 0xFF)
    assert read(dev.ring0, IRQ_STATUS) == 0x2


@pytest.mark.parametrize("offset", [IRQ_RAISE, IRQ_ACK])
def test_write_only_registers_read_all_ones(offset: int) -> None:
    dev = make_edu()
    ring0_write(dev, IRQ_RAISE, 0x1)
    assert dev.ring0.mmio_read(offset, 4) == (VINF_IOM_MMIO_UNUSED_FF, 0xFFFFFFFF)
    assert dev.ring3.mmio_read(offset, 4) == (VINF_IOM_MMIO_UNUSED_FF, 0xFFFFFFFF)


@pytest.mark.parametrize("offset", [0x0C, 0x10, 0x28, 0x5C, 0x68, 0x7C, 0x02, 0x09])
def test_unused_and_unaligned_offsets_read_all_ones(offset: int) -> None:
    dev = make_edu()
    assert dev.ring0.mmio_read(offset, 4) == (VINF_IOM_MMIO_UNUSED_FF, 0xFFFFFFFF)


# -- access sizes and the DMA range ------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 8])
@pytest.mark.parametrize("offset", [ID, LIVENESS, FACTORIAL, STATUS, IRQ_STATUS])
def test_non_dword_access_below_0x80_reads_all_ones(offset: int, size: int) -> None:
    dev = make_edu()
    assert dev.ring0.mmio_read(offset, size) == (VINF_IOM_MMIO_UNUSED_FF, ONES[size])
    assert dev.ring3.mmio_read(offset, size) == (VINF_IOM_MMIO_UNUSED_FF, ONES[size])


@pytest.mark.parametrize("size", [1, 2, 8])
def test_non_dword_write_below_0x80_is_ignored_in_both_tiers(size: int) -> None:
    dev = make_edu()
    for half in (dev.ring0, dev.ring3):
        for offset, value in ((LIVENESS, 0x1234), (STATUS, STATUS_IRQ_FACTORIAL), (IRQ_RAISE, 1), (FACTORIAL, 3)):
            assert half.mmio_write(offset, value, size) == VINF_SUCCESS  # ring-0 does not defer it either
    assert read(dev.ring0, LIVENESS) == 0xFFFFFFFF
    assert read(dev.ring0, FACTORIAL) == 0
    assert (dev.state.status, dev.state.irq_status, dev.state.irq_level) == (0, 0, 0)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0x80, 0x88, 0x90, 0x98, 0x40000, 0xFFFFC])
def test_dma_registers_and_beyond_read_all_ones_and_ignore_writes(offset: int, size: int) -> None:
    dev = make_edu()
    for half in (dev.ring0, dev.ring3):
        assert half.mmio_write(offset, 0x1000, size) == VINF_SUCCESS
        assert half.mmio_read(offset, size) == (VINF_IOM_MMIO_UNUSED_FF, ONES[size])
    assert (dev.state.liveness, dev.state.factorial, dev.state.status, dev.state.irq_status) == (0, 0, 0, 0)


# -- moving the region ----------------------------------------------------------------------------


def test_move_remaps_the_region() -> None:
    dev = make_edu()
    dev.ring3.move(0xE0000000)
    assert dev.hlp3.calls == [("unmap", HANDLE), ("map", HANDLE, 0xE0000000)]
    assert dev.state.bar0 == 0xE0000000
    dev.ring3.move(0xFEA00000)
    assert dev.hlp3.calls[2:] == [("unmap", HANDLE), ("map", HANDLE, 0xFEA00000)]
    assert dev.state.bar0 == 0xFEA00000


def test_move_keeps_the_registers() -> None:
    dev = make_edu()
    ring0_write(dev, LIVENESS, 0x0F0F0F0F)
    ring0_write(dev, IRQ_RAISE, 0x8)
    dev.ring3.move(0xE0000000)
    assert read(dev.ring0, LIVENESS) == 0xF0F0F0F0
    assert (read(dev.ring0, IRQ_STATUS), dev.state.irq_level) == (0x8, 1)


def test_failed_move_maps_the_region_back() -> None:
    dev = make_edu()
    dev.hlp3.conflicts.add(0xE0000000)
    with pytest.raises(VBoxError) as caught:
        dev.ring3.move(0xE0000000)
    assert caught.value.rc == VERR_IOM_MMIO_RANGE_CONFLICT
    assert dev.hlp3.calls == [("unmap", HANDLE), ("map", HANDLE, 0xE0000000), ("map", HANDLE, 0xFEA00000)]
    assert dev.state.bar0 == 0xFEA00000
