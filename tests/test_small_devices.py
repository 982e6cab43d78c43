"""The small devices: debugcon, testdev and isa-debug-exit, each half driven through fake helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from devices import debugcon, isa_debug_exit, testdev
from devices.debugcon import BUFFER_SIZE, DebugconRing0, DebugconRing3, DebugconState
from devices.isa_debug_exit import DebugExitRing3, DebugExitState
from devices.testdev import EM, NOP, NOP_R3, PATTERN, SCRATCH
from shared.status import (
    VERR_IOM_IOPORT_UNUSED,
    VINF_EM_HALT,
    VINF_EM_OFF,
    VINF_EM_RESET,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
)

MMIO_HANDLE = 9
HANDLE = 3


class MemoryDriver:
    """A character driver that keeps every write separately, to see how bytes were grouped."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def read(self, max_bytes: int) -> bytes:
        return b""

    def pending_input(self) -> int:
        return 0


@dataclass
class Region:
    port: int
    count: int
    description: str
    callbacks: dict[str, Any]


@dataclass
class FakeRing3Helpers:
    """PDMDEVHLPR3 reduced to what the small devices call; records everything."""

    driver: MemoryDriver | None = None
    instance: int = 0
    regions: list[Region] = field(default_factory=list)
    mmio_regions: list[Region] = field(default_factory=list)
    attached: list[tuple[int, str]] = field(default_factory=list)
    exit_statuses: list[int] = field(default_factory=list)

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        self.regions.append(Region(port, count, description, callbacks))
        return HANDLE

    def mmio_create_and_map(self, address: int, size: int, *, description: str, **callbacks: Any) -> int:
        self.mmio_regions.append(Region(address, size, description, callbacks))
        return MMIO_HANDLE

    def driver_attach(self, lun: int, description: str) -> MemoryDriver | None:
        self.attached.append((lun, description))
        return self.driver

    def set_exit_status(self, status: int) -> None:
        self.exit_statuses.append(status)

    def virtual_time_ns(self) -> int:
        return 0


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    mmio_contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))

    def mmio_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.mmio_contexts.append((handle, callbacks))

    def virtual_time_ns(self) -> int:
        return 0


def defaults(registration: Any, **overrides: Any) -> dict[str, Any]:
    """The device's config: its keys' defaults for instance 0, with *overrides*."""
    config = {key.name: key.default_for(0) for key in registration.config_keys}
    config.update(overrides)
    return config


# -- debugcon ------------------------------------------------------------------------------


@dataclass
class Debugcon:
    state: DebugconState
    driver: MemoryDriver
    ring3: DebugconRing3
    ring0: DebugconRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers


def make_debugcon(**config: Any) -> Debugcon:
    state = DebugconState()
    driver = MemoryDriver()
    hlp3 = FakeRing3Helpers(driver)
    hlp0 = FakeRing0Helpers()
    values = defaults(debugcon.REGISTRATION, **config)
    ring3 = DebugconRing3(hlp3, state, values)
    ring0 = DebugconRing0(hlp0, state, values)
    return Debugcon(state, driver, ring3, ring0, hlp3, hlp0)


def buffered(state: DebugconState) -> bytes:
    return bytes(state.buffer[: state.buffered])


def test_debugcon_ring3_maps_one_port_and_attaches_lun0() -> None:
    dev = make_debugcon(IOBase=0x402)
    (region,) = dev.hlp3.regions
    assert (region.port, region.count, region.description) == (0x402, 1, "DEBUGCON")
    assert set(region.callbacks) == {"out", "in_", "posted"}
    assert region.callbacks["posted"] is True  # printing never needs the guest to wait
    assert dev.state.io_handle == HANDLE
    assert dev.hlp3.attached == [(0, "debug console")]


def test_debugcon_ring0_sets_up_the_region_ring3_created() -> None:
    dev = make_debugcon()
    ((handle, callbacks),) = dev.hlp0.contexts
    assert handle == HANDLE
    assert set(callbacks) == {"out", "in_", "out_string"}


def test_debugcon_ring0_buffers_bytes() -> None:
    dev = make_debugcon()
    for byte in b"boot":
        assert dev.ring0.io_out(0, byte, 1) == VINF_SUCCESS
    assert buffered(dev.state) == b"boot"
    assert dev.driver.writes == []


def test_debugcon_ring0_keeps_only_the_low_byte() -> None:
    dev = make_debugcon()
    assert dev.ring0.io_out(0, 0x1241, 2) == VINF_SUCCESS
    assert buffered(dev.state) == b"A"


def test_debugcon_ring0_defers_on_a_newline() -> None:
    dev = make_debugcon()
    dev.ring0.io_out(0, ord("o"), 1)
    dev.ring0.io_out(0, ord("k"), 1)
    assert dev.ring0.io_out(0, ord("\n"), 1) == VINF_IOM_R3_IOPORT_WRITE
    assert buffered(dev.state) == b"ok"  # the newline is left for ring-3


def test_debugcon_ring0_defers_when_the_buffer_is_full() -> None:
    dev = make_debugcon()
    for i in range(BUFFER_SIZE):
        assert dev.ring0.io_out(0, 0x41 + i % 26, 1) == VINF_SUCCESS
    assert dev.state.buffered == BUFFER_SIZE
    assert dev.ring0.io_out(0, ord("!"), 1) == VINF_IOM_R3_IOPORT_WRITE
    assert dev.state.buffered == BUFFER_SIZE


def test_debugcon_ring3_flushes_buffer_then_byte_in_one_write() -> None:
    dev = make_debugcon()
    for byte in b"hello":
        dev.ring0.io_out(0, byte, 1)
    assert dev.ring3.io_out(0, ord("\n"), 1) == VINF_SUCCESS
    assert dev.driver.writes == [b"hello\n"]
    assert dev.state.buffered == 0
    dev.ring0.io_out(0, ord("x"), 1)
    dev.ring3.io_out(0, ord("y"), 1)
    assert dev.driver.writes == [b"hello\n", b"xy"]


def test_debugcon_full_buffer_goes_out_before_the_deferred_byte() -> None:
    dev = make_debugcon()
    text = bytes(0x41 + i % 26 for i in range(BUFFER_SIZE))
    for byte in text:
        dev.ring0.io_out(0, byte, 1)
    assert dev.ring0.io_out(0, ord("!"), 1) == VINF_IOM_R3_IOPORT_WRITE
    dev.ring3.io_out(0, ord("!"), 1)
    assert dev.driver.writes == [text + b"!"]


def test_debugcon_without_driver_drops_the_bytes() -> None:
    state = DebugconState()
    values = defaults(debugcon.REGISTRATION)
    ring3 = DebugconRing3(FakeRing3Helpers(None), state, values)
    ring0 = DebugconRing0(FakeRing0Helpers(), state, values)
    ring0.io_out(0, ord("a"), 1)
    assert ring3.io_out(0, ord("\n"), 1) == VINF_SUCCESS
    assert state.buffered == 0


def test_debugcon_power_off_flushes_what_ring0_buffered() -> None:
    dev = make_debugcon()
    for byte in b"bye":
        dev.ring0.io_out(0, byte, 1)
    dev.ring3.power_off()
    assert dev.driver.writes == [b"bye"]
    dev.ring3.power_off()
    assert dev.driver.writes == [b"bye"]  # nothing left: no empty write


def test_debugcon_string_callback_stops_before_the_newline() -> None:
    dev = make_debugcon()
    assert dev.ring0.io_out_string(0, b"ab\ncd", 1) == (VINF_IOM_R3_IOPORT_WRITE, 2)
    assert buffered(dev.state) == b"ab"


def test_debugcon_string_callback_starting_with_a_newline_takes_nothing() -> None:
    dev = make_debugcon()
    dev.ring0.io_out(0, ord("x"), 1)
    assert dev.ring0.io_out_string(0, b"\nmore", 1) == (VINF_IOM_R3_IOPORT_WRITE, 0)
    assert buffered(dev.state) == b"x"


def test_debugcon_string_callback_takes_a_whole_string_without_newline() -> None:
    dev = make_debugcon()
    dev.ring0.io_out(0, ord(">"), 1)
    assert dev.ring0.io_out_string(0, b"no newline", 1) == (VINF_SUCCESS, 10)
    assert buffered(dev.state) == b">no newline"


def test_debugcon_string_callback_takes_only_what_fits() -> None:
    dev = make_debugcon()
    for _ in range(BUFFER_SIZE - 3):
        dev.ring0.io_out(0, ord("."), 1)
    assert dev.ring0.io_out_string(0, b"abcdef", 1) == (VINF_IOM_R3_IOPORT_WRITE, 3)
    assert dev.state.buffered == BUFFER_SIZE
    assert buffered(dev.state)[-4:] == b".abc"


def test_debugcon_string_callback_keeps_the_low_byte_of_each_word() -> None:
    dev = make_debugcon()
    assert dev.ring0.io_out_string(0, b"h\x00i\x00", 2) == (VINF_SUCCESS, 2)
    assert buffered(dev.state) == b"hi"


@pytest.mark.parametrize("size", [1, 2, 4])
def test_debugcon_read_returns_the_readback_value(size: int) -> None:
    dev = make_debugcon()
    assert dev.ring0.io_in(0, size) == (VINF_SUCCESS, 0xE9)
    assert dev.ring3.io_in(0, size) == (VINF_SUCCESS, 0xE9)
    custom = make_debugcon(Readback=0x5A)
    assert custom.ring0.io_in(0, size) == (VINF_SUCCESS, 0x5A)
    assert custom.ring3.io_in(0, size) == (VINF_SUCCESS, 0x5A)


# -- testdev -----------------------------------------------------------------------------


@dataclass
class TestdevHalves:
    """Both halves of one testdev over one shared state (not a pytest test class)."""

    __test__ = False

    state: testdev.TestdevState
    ring3: testdev.TestdevRing3
    ring0: testdev.TestdevRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers


def make_testdev(**config: Any) -> TestdevHalves:
    state = testdev.TestdevState()
    hlp3 = FakeRing3Helpers()
    hlp0 = FakeRing0Helpers()
    values = defaults(testdev.REGISTRATION, **config)
    ring3 = testdev.TestdevRing3(hlp3, state, values)
    ring0 = testdev.TestdevRing0(hlp0, state, values)
    return TestdevHalves(state, ring3, ring0, hlp3, hlp0)


def test_testdev_maps_eight_ports_and_sets_up_ring0() -> None:
    dev = make_testdev(IOBase=0x700)
    region, ring3_only = dev.hlp3.regions
    assert (region.port, region.count, region.description) == (0x700, 8, "TESTDEV")
    # The ring-3-only port has a region of its own, which the ring-0 half never sets up.
    assert (ring3_only.port, ring3_only.count, ring3_only.description) == (0x708, 1, "TESTDEV R3")
    assert dev.ring3.io_out_ring3_only(0, 5, 4) == VINF_SUCCESS and dev.state.nop_writes == 1
    ((handle, callbacks),) = dev.hlp0.contexts
    assert handle == HANDLE == dev.state.io_handle
    assert set(callbacks) == {"out", "in_", "in_string"}


def test_testdev_maps_an_mmio_page_with_a_ring0_and_a_ring3_register() -> None:
    dev = make_testdev(MMIOBase=0xFEB00000)
    (region,) = dev.hlp3.mmio_regions
    assert (region.port, region.count, region.description) == (0xFEB00000, 0x1000, "TESTDEV MMIO")
    ((handle, callbacks),) = dev.hlp0.mmio_contexts
    assert handle == MMIO_HANDLE == dev.state.mmio_handle
    assert set(callbacks) == {"read", "write"}
    assert dev.ring0.mmio_write(0, 0x11, 4) == VINF_SUCCESS
    assert dev.ring0.mmio_write(8, 0x22, 4) == VINF_IOM_R3_MMIO_WRITE
    assert dev.ring0.mmio_read_r0(8, 4) == (VINF_IOM_R3_MMIO_READ, 0)
    assert dev.ring3.mmio_write(8, 0x22, 4) == VINF_SUCCESS
    assert (dev.state.mmio_writes, dev.state.mmio_last_value) == (2, 0x22)
    assert (dev.state.ring0_accesses, dev.state.ring3_accesses) == (1, 1)
    assert dev.ring3.mmio_read(8, 2) == (VINF_SUCCESS, 0x6962)


@pytest.mark.parametrize(("size", "value"), [(1, 0x62), (2, 0x6962), (4, 0x64726962)])
def test_testdev_nop_reads_bird_cut_to_the_size(size: int, value: int) -> None:
    dev = make_testdev()
    assert dev.ring0.io_in(NOP, size) == (VINF_SUCCESS, value)
    assert dev.ring3.io_in(NOP, size) == (VINF_SUCCESS, value)
    assert dev.ring3.io_in(NOP_R3, size) == (VINF_SUCCESS, value)


def test_testdev_nop_is_answered_in_ring0() -> None:
    dev = make_testdev()
    assert dev.ring0.io_out(NOP, 0x12, 1) == VINF_SUCCESS
    dev.ring0.io_in(NOP, 1)
    assert (dev.state.ring0_accesses, dev.state.ring3_accesses, dev.state.nop_writes) == (2, 0, 1)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_testdev_nop_r3_always_defers_in_ring0(size: int) -> None:
    dev = make_testdev()
    assert dev.ring0.io_in(NOP_R3, size) == (VINF_IOM_R3_IOPORT_READ, 0)
    assert dev.ring0.io_out(NOP_R3, 0x55, size) == VINF_IOM_R3_IOPORT_WRITE
    assert (dev.state.ring0_accesses, dev.state.nop_writes) == (0, 0)
    assert dev.ring3.io_out(NOP_R3, 0x55, size) == VINF_SUCCESS
    assert (dev.state.ring3_accesses, dev.state.nop_writes) == (1, 1)


def test_testdev_pattern_reads_an_incrementing_byte() -> None:
    dev = make_testdev()
    assert [dev.ring0.io_in(PATTERN, 1)[1] for _ in range(3)] == [0, 1, 2]
    assert dev.ring3.io_in(PATTERN, 1) == (VINF_SUCCESS, 3)
    assert dev.ring0.io_in(PATTERN, 2) == (VINF_SUCCESS, 0x0504)
    assert dev.ring3.io_in(PATTERN, 4) == (VINF_SUCCESS, 0x09080706)


def test_testdev_pattern_wraps_after_0xff() -> None:
    dev = make_testdev()
    dev.state.pattern = 0xFE
    assert dev.ring0.io_in(PATTERN, 4) == (VINF_SUCCESS, 0x0100FFFE)
    assert dev.state.pattern == 2


def test_testdev_pattern_string_callback_continues_the_sequence() -> None:
    dev = make_testdev()
    dev.ring0.io_in(PATTERN, 1)
    dev.ring0.io_in(PATTERN, 1)
    assert dev.ring0.io_in_string(PATTERN, 5, 1) == (VINF_SUCCESS, bytes([2, 3, 4, 5, 6]))
    assert dev.ring0.io_in_string(PATTERN, 2, 2) == (VINF_SUCCESS, bytes([7, 8, 9, 10]))
    assert dev.ring0.io_in(PATTERN, 1) == (VINF_SUCCESS, 11)
    dev.state.pattern = 0xFE
    assert dev.ring0.io_in_string(PATTERN, 4, 1) == (VINF_SUCCESS, bytes([0xFE, 0xFF, 0x00, 0x01]))


@pytest.mark.parametrize("offset", [NOP, NOP_R3, EM, SCRATCH])
def test_testdev_string_callback_leaves_other_registers_to_single_reads(offset: int) -> None:
    dev = make_testdev()
    assert dev.ring0.io_in_string(offset, 4, 1) == (VINF_SUCCESS, b"")
    assert dev.state.pattern == 0


def test_testdev_scratch_by_byte_word_and_dword() -> None:
    dev = make_testdev()
    assert dev.ring0.io_out(SCRATCH, 0x11223344, 4) == VINF_SUCCESS
    assert [dev.ring0.io_in(SCRATCH + i, 1)[1] for i in range(4)] == [0x44, 0x33, 0x22, 0x11]
    dev.ring0.io_out(SCRATCH + 1, 0xAA, 1)
    assert dev.state.scratch == 0x1122AA44
    dev.ring3.io_out(SCRATCH + 2, 0xBEEF, 2)
    assert dev.state.scratch == 0xBEEFAA44
    assert dev.ring0.io_in(SCRATCH, 2) == (VINF_SUCCESS, 0xAA44)
    assert dev.ring3.io_in(SCRATCH + 2, 2) == (VINF_SUCCESS, 0xBEEF)
    assert dev.ring3.io_in(SCRATCH, 4) == (VINF_SUCCESS, 0xBEEFAA44)


def test_testdev_scratch_write_only_touches_its_bytes() -> None:
    dev = make_testdev()
    dev.ring0.io_out(SCRATCH, 0xFFFFFFFF, 4)
    dev.ring0.io_out(SCRATCH + 2, 0x1200, 1)  # a byte write keeps only the low byte
    assert dev.state.scratch == 0xFF00FFFF


@pytest.mark.parametrize(
    ("value", "status"), [(0, VINF_EM_OFF), (1, VINF_EM_RESET), (2, VINF_EM_HALT), (3, VINF_SUCCESS)]
)
def test_testdev_em_port_returns_em_status_from_ring3(value: int, status: int) -> None:
    dev = make_testdev()
    assert dev.ring3.io_out(EM, value, 1) == status
    assert dev.state.ring3_accesses == 1


@pytest.mark.parametrize("value", [0, 1, 2, 3])
def test_testdev_em_port_always_defers_in_ring0(value: int) -> None:
    dev = make_testdev()
    assert dev.ring0.io_out(EM, value, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert dev.state.ring0_accesses == 0


def test_testdev_em_port_read_is_unused() -> None:
    dev = make_testdev()
    assert dev.ring0.io_in(EM, 1)[0] == VERR_IOM_IOPORT_UNUSED
    assert dev.ring3.io_in(EM, 1)[0] == VERR_IOM_IOPORT_UNUSED


def test_testdev_counts_accesses_per_tier() -> None:
    dev = make_testdev()
    dev.ring0.io_in(NOP, 1)
    dev.ring0.io_out(SCRATCH, 1, 1)
    dev.ring0.io_in_string(PATTERN, 8, 1)
    dev.ring3.io_in(NOP_R3, 1)
    assert (dev.state.ring0_accesses, dev.state.ring3_accesses) == (3, 1)


def test_testdev_reset_clears_pattern_and_scratch() -> None:
    dev = make_testdev()
    dev.ring0.io_in(PATTERN, 4)
    dev.ring0.io_out(SCRATCH, 0x1234, 2)
    dev.ring3.reset()
    assert (dev.state.pattern, dev.state.scratch) == (0, 0)


# -- isa-debug-exit ------------------------------------------------------------------------


def make_debug_exit(**config: Any) -> tuple[DebugExitState, DebugExitRing3, FakeRing3Helpers]:
    state = DebugExitState()
    hlp = FakeRing3Helpers()
    ring3 = DebugExitRing3(hlp, state, defaults(isa_debug_exit.REGISTRATION, **config))
    return state, ring3, hlp


def test_isa_debug_exit_maps_iosize_write_only_ports() -> None:
    state, _, hlp = make_debug_exit(IOBase=0x501, IOSize=2)
    (region,) = hlp.regions
    assert (region.port, region.count, region.description) == (0x501, 2, "ISA-DEBUG-EXIT")
    assert set(region.callbacks) == {"out"}  # reads are IOM's all-ones default
    assert state.io_handle == HANDLE


def test_isa_debug_exit_has_no_ring0_half() -> None:
    assert isa_debug_exit.REGISTRATION.ring0 is None


@pytest.mark.parametrize(("value", "status"), [(0, 1), (1, 3), (0x31, 0x63), (0xFF, 0x1FF)])
def test_isa_debug_exit_write_sets_exit_status_and_powers_off(value: int, status: int) -> None:
    state, ring3, hlp = make_debug_exit()
    assert ring3.io_out(0, value, 1) == VINF_EM_OFF
    assert hlp.exit_statuses == [status]
    assert (state.exit_requested, state.last_value) == (1, value)


def test_isa_debug_exit_any_of_its_ports_powers_off() -> None:
    _, ring3, hlp = make_debug_exit()
    assert ring3.io_out(3, 0x1234, 2) == VINF_EM_OFF
    assert hlp.exit_statuses == [(0x1234 << 1) | 1]
