"""The 16550A UART in devices/serial.py: its registers, its ring-0/ring-3 split and its config."""

from __future__ import annotations

import ast
import ctypes
import sys
from pathlib import Path
from typing import Any

import pytest

from devices import serial
from devices.serial import (
    DLL,
    DLM,
    FCR,
    FCR_CLEAR_RX,
    FCR_ENABLE,
    IER,
    IER_MS,
    IER_RDA,
    IER_RLS,
    IER_THRE,
    IIR,
    IIR_FIFOS_ENABLED,
    IIR_MS,
    IIR_NONE,
    IIR_RDA,
    IIR_RLS,
    IIR_THRE,
    IIR_TIMEOUT,
    LCR,
    LCR_DLAB,
    LSR,
    LSR_DR,
    LSR_OE,
    LSR_TEMT,
    LSR_THRE,
    MCR,
    MCR_DTR,
    MCR_LOOP,
    MCR_OUT1,
    MCR_OUT2,
    MCR_RTS,
    MSR,
    MSR_CTS,
    MSR_DCD,
    MSR_DCTS,
    MSR_DDCD,
    MSR_DSR,
    MSR_RI,
    MSR_TERI,
    RBR,
    REGISTRATION,
    SCR,
    THR,
    SerialRing0,
    SerialRing3,
    SerialState,
)
from shared.devapi import (
    PDM_DEVREG_CLASS_SERIAL,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
)
from shared.status import (
    VERR_IOM_IOPORT_UNUSED,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_SUCCESS,
)

IO_HANDLE = 5


class MemoryDriver:
    """A character driver that records what it is sent and serves queued input."""

    def __init__(self, incoming: bytes = b"") -> None:
        self.written = bytearray()
        self.incoming = bytearray(incoming)

    def write(self, data: bytes) -> None:
        self.written += data

    def read(self, max_bytes: int) -> bytes:
        data = bytes(self.incoming[:max_bytes])
        del self.incoming[:max_bytes]
        return data

    def pending_input(self) -> int:
        return len(self.incoming)


class FakeRing3Helpers:
    def __init__(self, driver: MemoryDriver | None) -> None:
        self.instance = 0
        self.driver = driver
        self.mapped: list[tuple[int, int, str]] = []
        self.attached: list[tuple[int, str]] = []

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        assert callable(callbacks["out"]) and callable(callbacks["in_"])
        self.mapped.append((port, count, description))
        return IO_HANDLE

    def driver_attach(self, lun: int, description: str) -> MemoryDriver | None:
        self.attached.append((lun, description))
        return self.driver


class FakeRing0Helpers:
    def __init__(self) -> None:
        self.instance = 0
        self.contexts: list[int] = []

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        assert callable(callbacks["out"]) and callable(callbacks["in_"])
        self.contexts.append(handle)


def make_config(instance: int = 0, **overrides: Any) -> dict[str, Any]:
    """The validated config a device instance gets: defaults, then *overrides*, all checked."""
    keys = REGISTRATION.config_keys
    assert set(overrides) <= {key.name for key in keys}
    return {key.name: key.check(overrides.get(key.name, key.default_for(instance))) for key in keys}


class Uart:
    """One device instance: both halves on one state, with helpers to poke registers."""

    def __init__(self, driver: MemoryDriver | None = None, **config: Any) -> None:
        self.state = SerialState()
        self.config = make_config(**config)
        self.ring3_helpers = FakeRing3Helpers(driver)
        self.ring0_helpers = FakeRing0Helpers()
        self.ring3 = SerialRing3(self.ring3_helpers, self.state, self.config)
        self.ring0 = SerialRing0(self.ring0_helpers, self.state, self.config)

    def out3(self, reg: int, value: int) -> None:
        assert self.ring3.io_out(reg, value, 1) == VINF_SUCCESS

    def in3(self, reg: int) -> int:
        rc, value = self.ring3.io_in(reg, 1)
        assert rc == VINF_SUCCESS
        return value

    def out0(self, reg: int, value: int) -> int:
        return self.ring0.io_out(reg, value, 1)

    def in0(self, reg: int) -> tuple[int, int]:
        return self.ring0.io_in(reg, 1)


@pytest.fixture
def driver() -> MemoryDriver:
    return MemoryDriver()


@pytest.fixture
def uart(driver: MemoryDriver) -> Uart:
    return Uart(driver)


# --- Registration and construction ------------------------------------------------------


def test_registration_record() -> None:
    assert REGISTRATION.name == "serial"
    assert REGISTRATION.device_class == PDM_DEVREG_CLASS_SERIAL
    assert REGISTRATION.flags == (
        PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    )
    assert REGISTRATION.max_instances == 4
    assert REGISTRATION.shared_state is SerialState
    assert REGISTRATION.ring3 is SerialRing3
    assert REGISTRATION.ring0 is SerialRing0


@pytest.mark.parametrize(
    ("instance", "io_base", "irq"), [(0, 0x3F8, 4), (1, 0x2F8, 3), (2, 0x3E8, 4), (3, 0x2E8, 3)]
)
def test_config_defaults_per_instance(instance: int, io_base: int, irq: int) -> None:
    config = make_config(instance)
    assert config == {"IOBase": io_base, "IRQ": irq, "UartType": "16550A", "YieldOnLSRRead": False}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IOBase", 0xFFF9),
        ("IOBase", -1),
        ("IOBase", "0x3f8"),
        ("IOBase", True),
        ("IRQ", 16),
        ("IRQ", -1),
        ("UartType", "16750"),
        ("UartType", 16550),
        ("YieldOnLSRRead", 1),
        ("YieldOnLSRRead", "yes"),
    ],
)
def test_config_rejects_invalid_values(name: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        make_config(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IOBase", 0),
        ("IOBase", 0xFFF8),
        ("IRQ", 0),
        ("IRQ", 15),
        ("UartType", "16450"),
        ("YieldOnLSRRead", True),
    ],
)
def test_config_accepts_range_limits_and_choices(name: str, value: Any) -> None:
    assert make_config(**{name: value})[name] == value


def test_ring3_maps_eight_ports_and_attaches_lun0(driver: MemoryDriver) -> None:
    uart = Uart(driver, IOBase=0x2F8)
    assert uart.ring3_helpers.mapped == [(0x2F8, 8, "SERIAL")]
    assert uart.state.io_handle == IO_HANDLE
    assert uart.ring3_helpers.attached == [(0, "UART")]
    assert uart.ring3.driver is driver


def test_ring0_sets_up_context_on_ring3_handle(uart: Uart) -> None:
    assert uart.ring0_helpers.contexts == [IO_HANDLE]


def test_power_on_values(uart: Uart) -> None:
    assert uart.in3(IER) == 0
    assert uart.in3(IIR) == IIR_NONE
    assert uart.in3(LCR) == 0
    assert uart.in3(MCR) == 0
    assert uart.in3(LSR) == LSR_THRE | LSR_TEMT
    assert uart.in3(MSR) == MSR_DCD | MSR_DSR | MSR_CTS
    assert uart.state.irq_level == 0
    uart.out3(LCR, LCR_DLAB)
    assert (uart.in3(DLL), uart.in3(DLM)) == (12, 0)


def test_reset_restores_power_on_values_and_keeps_io_handle(uart: Uart) -> None:
    uart.out3(FCR, FCR_ENABLE)
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x41)
    uart.out3(IER, IER_RDA)
    uart.out3(SCR, 0x99)
    assert uart.state.irq_level == 1
    uart.ring3.reset()
    assert uart.state.io_handle == IO_HANDLE
    assert uart.state.rx.count == 0
    assert uart.state.irq_level == 0
    assert uart.in3(LSR) == LSR_THRE | LSR_TEMT
    assert uart.in3(IIR) == IIR_NONE
    assert uart.in3(MCR) == 0
    assert uart.in3(SCR) == 0


def test_module_imports_only_stdlib_and_shared() -> None:
    tree = ast.parse(Path(serial.__file__).read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"shared"}


# --- Access size ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 4])
def test_wrong_size_read_is_unused(uart: Uart, size: int) -> None:
    assert uart.ring3.io_in(SCR, size) == (VERR_IOM_IOPORT_UNUSED, 0)
    assert uart.ring0.io_in(SCR, size) == (VERR_IOM_IOPORT_UNUSED, 0)


@pytest.mark.parametrize("size", [2, 4])
def test_wrong_size_write_is_ignored(uart: Uart, driver: MemoryDriver, size: int) -> None:
    assert uart.ring3.io_out(SCR, 0x55, size) == VINF_SUCCESS
    assert uart.ring0.io_out(SCR, 0x66, size) == VINF_SUCCESS
    assert uart.ring3.io_out(THR, 0x41, size) == VINF_SUCCESS
    assert uart.in3(SCR) == 0
    assert driver.written == b""


# --- Register behaviour (ring-3, the complete model) ------------------------------------


def test_dlab_selects_divisor_latch(uart: Uart, driver: MemoryDriver) -> None:
    uart.out3(LCR, LCR_DLAB | 0x03)
    uart.out3(DLL, 0x01)
    uart.out3(DLM, 0x02)
    assert driver.written == b""  # DLL is not THR while DLAB is set
    assert (uart.in3(DLL), uart.in3(DLM)) == (0x01, 0x02)
    uart.out3(LCR, 0x03)
    assert uart.in3(IER) == 0  # DLM's value did not land in IER
    uart.out3(IER, IER_RDA)
    uart.out3(LCR, LCR_DLAB | 0x03)
    assert (uart.in3(DLL), uart.in3(DLM)) == (0x01, 0x02)


def test_ier_upper_nibble_reads_zero(uart: Uart) -> None:
    uart.out3(IER, 0xFF)
    assert uart.in3(IER) == 0x0F


def test_scratch_register_keeps_its_value(uart: Uart) -> None:
    uart.out3(SCR, 0xA5)
    assert uart.in3(SCR) == 0xA5


def test_thr_write_reaches_driver(uart: Uart, driver: MemoryDriver) -> None:
    for byte in b"hi\n":
        uart.out3(THR, byte)
    assert driver.written == b"hi\n"


def test_lsr_thre_temt_after_transmit(uart: Uart) -> None:
    uart.out3(THR, 0x41)
    assert uart.in3(LSR) & (LSR_THRE | LSR_TEMT) == LSR_THRE | LSR_TEMT


def test_transmit_without_driver_drops_the_byte() -> None:
    uart = Uart(None)
    uart.out3(THR, 0x41)
    assert uart.in3(LSR) == LSR_THRE | LSR_TEMT
    assert uart.in3(RBR) == 0


def test_rbr_read_pulls_from_driver() -> None:
    driver = MemoryDriver(b"ok")
    uart = Uart(driver)
    assert uart.in3(LSR) & LSR_DR
    assert uart.in3(RBR) == ord("o")
    assert uart.in3(RBR) == ord("k")
    assert driver.pending_input() == 0
    assert not uart.in3(LSR) & LSR_DR


def test_driver_input_fills_receive_fifo_up_to_its_size() -> None:
    driver = MemoryDriver(bytes(range(20)))
    uart = Uart(driver)
    uart.out3(FCR, FCR_ENABLE)
    assert uart.state.rx.count == 16
    assert uart.state.driver_has_input == 1
    assert [uart.in3(RBR) for _ in range(20)] == list(range(20))
    assert uart.state.driver_has_input == 0


def test_without_fifo_receiver_holds_one_byte() -> None:
    driver = MemoryDriver(b"abc")
    uart = Uart(driver)
    uart.in3(SCR)
    assert uart.state.rx.count == 1
    assert uart.state.driver_has_input == 1
    assert not uart.in3(LSR) & LSR_OE  # bytes wait in the driver; nothing is lost


def test_loopback_msr_mirrors_mcr(uart: Uart) -> None:
    uart.out3(MCR, MCR_LOOP)
    assert uart.in3(MSR) & 0xF0 == 0
    uart.out3(MCR, MCR_LOOP | MCR_RTS)
    assert uart.in3(MSR) & 0xF0 == MSR_CTS
    uart.out3(MCR, MCR_LOOP | MCR_DTR)
    assert uart.in3(MSR) & 0xF0 == MSR_DSR
    uart.out3(MCR, MCR_LOOP | MCR_OUT1)
    assert uart.in3(MSR) & 0xF0 == MSR_RI
    uart.out3(MCR, MCR_LOOP | MCR_OUT2)
    assert uart.in3(MSR) & 0xF0 == MSR_DCD
    uart.out3(MCR, 0)
    assert uart.in3(MSR) & 0xF0 == MSR_DCD | MSR_DSR | MSR_CTS


def test_msr_delta_bits_cleared_on_read(uart: Uart) -> None:
    uart.out3(MCR, MCR_LOOP | MCR_RTS | MCR_OUT2)
    uart.in3(MSR)
    uart.out3(MCR, MCR_LOOP | MCR_OUT1 | MCR_OUT2)  # CTS drops, RI rises
    assert uart.in3(MSR) == MSR_RI | MSR_DCD | MSR_DCTS
    assert uart.in3(MSR) == MSR_RI | MSR_DCD
    uart.out3(MCR, MCR_LOOP)  # RI and DCD fall: RI's trailing edge counts
    assert uart.in3(MSR) == MSR_TERI | MSR_DDCD


def test_loopback_transmitted_byte_returns_in_rbr(uart: Uart, driver: MemoryDriver) -> None:
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x5A)
    assert driver.written == b""
    assert uart.in3(LSR) & (LSR_DR | LSR_THRE | LSR_TEMT) == LSR_DR | LSR_THRE | LSR_TEMT
    assert uart.in3(RBR) == 0x5A
    assert not uart.in3(LSR) & LSR_DR


def test_loopback_cuts_receiver_off_from_driver(uart: Uart, driver: MemoryDriver) -> None:
    uart.out3(MCR, MCR_LOOP)
    driver.incoming += b"x"
    uart.out3(THR, 0x31)
    assert uart.in3(RBR) == 0x31
    assert not uart.in3(LSR) & LSR_DR
    assert uart.in3(RBR) == 0
    assert driver.pending_input() == 1
    uart.out3(MCR, 0)
    assert uart.in3(RBR) == ord("x")


def test_loopback_fifo_holds_sixteen_bytes_then_overruns(uart: Uart) -> None:
    uart.out3(FCR, FCR_ENABLE)
    uart.out3(MCR, MCR_LOOP)
    for byte in range(17):
        uart.out3(THR, byte)
    lsr = uart.in3(LSR)
    assert lsr & LSR_OE
    assert [uart.in3(RBR) for _ in range(16)] == list(range(16))
    assert not uart.in3(LSR) & (LSR_DR | LSR_OE)


def test_without_fifo_overrun_overwrites_rbr(uart: Uart) -> None:
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x01)
    uart.out3(THR, 0x02)
    assert uart.in3(RBR) == 0x02
    assert not uart.in3(LSR) & LSR_DR


def test_lsr_read_clears_overrun(uart: Uart) -> None:
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x01)
    uart.out3(THR, 0x02)
    assert uart.in3(LSR) & LSR_OE
    assert not uart.in3(LSR) & LSR_OE


def test_iir_shows_fifo_enabled_bits(uart: Uart) -> None:
    assert uart.in3(IIR) & IIR_FIFOS_ENABLED == 0
    uart.out3(FCR, FCR_ENABLE)
    assert uart.in3(IIR) == IIR_FIFOS_ENABLED | IIR_NONE
    uart.out3(FCR, 0)
    assert uart.in3(IIR) == IIR_NONE


def test_16450_has_no_fifo() -> None:
    uart = Uart(MemoryDriver(), UartType="16450")
    uart.out3(FCR, FCR_ENABLE)
    assert uart.in3(IIR) == IIR_NONE
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x01)
    uart.out3(THR, 0x02)
    assert uart.in3(LSR) & LSR_OE


def test_fcr_clear_rx_empties_receive_fifo(uart: Uart) -> None:
    uart.out3(FCR, FCR_ENABLE)
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x01)
    uart.out3(THR, 0x02)
    uart.out3(FCR, FCR_ENABLE | FCR_CLEAR_RX)
    assert not uart.in3(LSR) & LSR_DR
    assert uart.state.fcr == FCR_ENABLE  # the clear bit acts once and is not kept


def test_switching_fifo_mode_empties_fifos(uart: Uart) -> None:
    uart.out3(FCR, FCR_ENABLE)
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x01)
    uart.out3(FCR, 0)
    assert uart.state.rx.count == 0


def test_fifo_below_trigger_level_reports_character_timeout(uart: Uart) -> None:
    uart.out3(FCR, FCR_ENABLE | 0x40)  # trigger at 4 bytes
    uart.out3(MCR, MCR_LOOP)
    uart.out3(IER, IER_RDA)
    uart.out3(THR, 0x01)
    assert uart.in3(IIR) == IIR_FIFOS_ENABLED | IIR_TIMEOUT
    for byte in range(3):
        uart.out3(THR, byte)
    assert uart.in3(IIR) == IIR_FIFOS_ENABLED | IIR_RDA


def test_interrupt_priority_order(uart: Uart) -> None:
    uart.out3(IER, IER_RLS | IER_RDA | IER_THRE | IER_MS)
    uart.out3(MCR, MCR_LOOP)  # CTS/DSR/DCD drop: modem status pending
    uart.out3(THR, 0x01)
    uart.out3(THR, 0x02)  # overrun: line status pending; data ready; THRE pending
    assert uart.in3(IIR) == IIR_RLS
    uart.in3(LSR)
    assert uart.in3(IIR) == IIR_RDA
    uart.in3(RBR)
    assert uart.in3(IIR) == IIR_THRE
    assert uart.in3(IIR) == IIR_MS
    uart.in3(MSR)
    assert uart.in3(IIR) == IIR_NONE
    assert uart.state.irq_level == 0


def test_reading_iir_clears_thre_interrupt(uart: Uart) -> None:
    uart.out3(IER, IER_THRE)
    uart.out3(THR, 0x41)
    assert uart.state.irq_level == 1
    assert uart.in3(IIR) == IIR_THRE
    assert uart.in3(IIR) == IIR_NONE
    assert uart.state.irq_level == 0


def test_enabling_thre_interrupt_with_empty_thr_raises_it(uart: Uart) -> None:
    assert uart.state.irq_level == 0
    uart.out3(IER, IER_THRE)
    assert uart.state.irq_level == 1
    assert uart.in3(IIR) == IIR_THRE


def test_irq_level_follows_ier_mask(uart: Uart) -> None:
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x41)
    assert uart.state.irq_level == 0  # data ready, but no interrupt enabled
    uart.out3(IER, IER_RDA)
    assert uart.state.irq_level == 1
    uart.out3(IER, 0)
    assert uart.state.irq_level == 0
    uart.out3(IER, IER_RDA)
    uart.in3(RBR)
    assert uart.state.irq_level == 0


def test_modem_status_interrupt_until_msr_read(uart: Uart) -> None:
    uart.out3(IER, IER_MS)
    uart.out3(MCR, MCR_LOOP | MCR_RTS)
    assert uart.state.irq_level == 1
    assert uart.in3(IIR) == IIR_MS
    uart.in3(MSR)
    assert uart.state.irq_level == 0


def test_yield_on_lsr_read_in_ring3_sees_new_input() -> None:
    driver = MemoryDriver()
    uart = Uart(driver, YieldOnLSRRead=True)
    assert not uart.in3(LSR) & LSR_DR
    driver.incoming += b"z"
    assert uart.in3(LSR) & LSR_DR
    assert uart.in3(RBR) == ord("z")


# --- The ring-0 half: what it does itself, what it sends to ring-3 -----------------------


def test_ring0_defers_thr_write_to_ring3(uart: Uart, driver: MemoryDriver) -> None:
    assert uart.out0(THR, 0x41) == VINF_IOM_R3_IOPORT_WRITE
    assert uart.state.tx.count == 0  # refused before touching the state
    assert driver.written == b""
    uart.out3(THR, 0x41)  # ring-3 redoes the access
    assert driver.written == b"A"


def test_ring0_handles_loopback_thr_write(uart: Uart, driver: MemoryDriver) -> None:
    uart.out3(MCR, MCR_LOOP)
    assert uart.out0(THR, 0x42) == VINF_SUCCESS
    assert uart.in0(RBR) == (VINF_SUCCESS, 0x42)
    assert driver.written == b""


def test_ring0_handles_scratch_register(uart: Uart) -> None:
    assert uart.out0(SCR, 0x77) == VINF_SUCCESS
    assert uart.in0(SCR) == (VINF_SUCCESS, 0x77)


def test_ring0_handles_ier(uart: Uart) -> None:
    assert uart.out0(IER, IER_THRE) == VINF_SUCCESS
    assert uart.state.irq_level == 1
    assert uart.in0(IIR) == (VINF_SUCCESS, IIR_THRE)
    assert uart.state.irq_level == 0


def test_ring0_defers_fcr(uart: Uart) -> None:
    assert uart.out0(FCR, FCR_ENABLE) == VINF_IOM_R3_IOPORT_WRITE
    assert uart.state.fcr == 0


def test_ring0_handles_dlab_toggle_but_defers_other_lcr_changes(uart: Uart) -> None:
    assert uart.out0(LCR, LCR_DLAB) == VINF_SUCCESS
    assert uart.state.lcr == LCR_DLAB
    assert uart.out0(LCR, 0) == VINF_SUCCESS
    assert uart.out0(LCR, 0x03) == VINF_IOM_R3_IOPORT_WRITE
    assert uart.out0(LCR, LCR_DLAB | 0x03) == VINF_IOM_R3_IOPORT_WRITE
    assert uart.state.lcr == 0


def test_ring0_defers_divisor_change_only(uart: Uart) -> None:
    uart.out0(LCR, LCR_DLAB)
    assert uart.out0(DLL, 12) == VINF_SUCCESS
    assert uart.out0(DLM, 0) == VINF_SUCCESS
    assert uart.out0(DLL, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert uart.out0(DLM, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert (uart.state.dll, uart.state.dlm) == (12, 0)
    assert uart.in0(DLL) == (VINF_SUCCESS, 12)
    assert uart.in0(DLM) == (VINF_SUCCESS, 0)


def test_ring0_defers_mcr_change_only(uart: Uart) -> None:
    assert uart.out0(MCR, 0) == VINF_SUCCESS
    assert uart.out0(MCR, MCR_LOOP) == VINF_IOM_R3_IOPORT_WRITE
    assert uart.state.mcr == 0
    uart.out3(MCR, MCR_LOOP | MCR_DTR)
    assert uart.out0(MCR, 0xE0 | MCR_LOOP | MCR_DTR) == VINF_SUCCESS  # same value once masked


@pytest.mark.parametrize("reg", [IER, IIR, LCR, MCR, LSR, MSR, SCR])
def test_ring0_handles_status_reads(uart: Uart, reg: int) -> None:
    rc, _ = uart.in0(reg)
    assert rc == VINF_SUCCESS


def test_ring0_reads_clear_like_ring3(uart: Uart) -> None:
    uart.out3(MCR, MCR_LOOP)
    uart.out3(THR, 0x01)
    uart.out3(THR, 0x02)
    assert uart.in0(LSR)[1] & LSR_OE
    assert not uart.in0(LSR)[1] & LSR_OE
    assert uart.in0(MSR)[1] & MSR_DDCD
    assert not uart.in0(MSR)[1] & MSR_DDCD


def test_ring0_reads_rbr_from_nonempty_fifo() -> None:
    driver = MemoryDriver(b"ab")
    uart = Uart(driver)
    uart.out3(FCR, FCR_ENABLE)
    assert uart.in0(RBR) == (VINF_SUCCESS, ord("a"))
    assert uart.in0(RBR) == (VINF_SUCCESS, ord("b"))
    assert uart.in0(RBR) == (VINF_SUCCESS, 0)  # empty, and the driver has nothing: no deferral


def test_ring0_defers_rbr_when_fifo_empty_and_driver_has_input() -> None:
    driver = MemoryDriver(b"abc")
    uart = Uart(driver)
    uart.in3(SCR)  # ring-3 runs: one byte into RBR, two left in the driver
    assert uart.in0(LSR) == (VINF_SUCCESS, LSR_THRE | LSR_TEMT | LSR_DR)
    assert uart.in0(RBR) == (VINF_SUCCESS, ord("a"))
    assert uart.in0(LSR)[1] & LSR_DR  # the driver's bytes still count as data ready
    assert uart.in0(RBR) == (VINF_IOM_R3_IOPORT_READ, 0)
    assert uart.in3(RBR) == ord("b")


def test_ring0_reads_dll_not_rbr_while_dlab_set() -> None:
    uart = Uart(MemoryDriver(b"abc"))
    uart.out3(LCR, LCR_DLAB)
    uart.state.rx.clear()  # receive FIFO empty, driver holding input: an RBR read would defer
    assert uart.state.driver_has_input == 1
    assert uart.in0(DLL) == (VINF_SUCCESS, 12)


def test_ring0_lsr_read_defers_with_yield_and_no_data() -> None:
    uart = Uart(MemoryDriver(), YieldOnLSRRead=True)
    assert uart.in0(LSR) == (VINF_IOM_R3_IOPORT_READ, 0)
    uart.out3(MCR, MCR_LOOP)
    uart.out0(THR, 0x01)
    assert uart.in0(LSR)[0] == VINF_SUCCESS


def test_ring0_lsr_read_without_yield_stays_in_ring0(uart: Uart) -> None:
    assert uart.in0(LSR) == (VINF_SUCCESS, LSR_THRE | LSR_TEMT)


def test_ring0_and_ring3_share_state(uart: Uart) -> None:
    uart.out3(SCR, 0x11)
    assert uart.in0(SCR) == (VINF_SUCCESS, 0x11)
    uart.out0(IER, IER_RDA | IER_THRE)
    assert uart.in3(IER) == IER_RDA | IER_THRE
    uart.out0(LCR, LCR_DLAB)
    assert uart.in3(DLL) == 12
    uart.out3(LCR, 0)
    uart.out3(MCR, MCR_LOOP)
    uart.out0(THR, 0x99)
    assert uart.in3(RBR) == 0x99


def test_ring0_has_no_fifo_bits_on_16450() -> None:
    uart = Uart(MemoryDriver(), UartType="16450")
    uart.out3(FCR, FCR_ENABLE)
    assert uart.in0(IIR) == (VINF_SUCCESS, IIR_NONE)


def test_halves_keep_register_state_only_in_shared_memory(driver: MemoryDriver) -> None:
    # Two views of one buffer, as the VM process and a vCPU worker each map the segment.
    memory = bytearray(ctypes.sizeof(SerialState))
    config = make_config()
    ring3 = SerialRing3(FakeRing3Helpers(driver), SerialState.from_buffer(memory), config)
    ring0 = SerialRing0(FakeRing0Helpers(), SerialState.from_buffer(memory), config)
    assert ring0.io_in(LSR, 1) == (VINF_SUCCESS, LSR_THRE | LSR_TEMT)
    assert ring3.io_out(FCR, FCR_ENABLE, 1) == VINF_SUCCESS
    assert ring3.io_out(MCR, MCR_LOOP, 1) == VINF_SUCCESS
    assert ring0.io_out(THR, 0x10, 1) == VINF_SUCCESS
    assert ring0.io_out(THR, 0x20, 1) == VINF_SUCCESS
    assert ring3.io_in(RBR, 1) == (VINF_SUCCESS, 0x10)
    assert ring0.io_in(IIR, 1) == (VINF_SUCCESS, IIR_FIFOS_ENABLED | IIR_NONE)
    assert ring0.io_in(RBR, 1) == (VINF_SUCCESS, 0x20)
