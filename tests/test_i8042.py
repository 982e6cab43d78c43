"""The 8042 keyboard controller and port 0x92 alone: both halves driven through fake helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devices import i8042
from devices.i8042 import (
    I8042Ring0,
    I8042Ring3,
    I8042State,
)
from shared.devapi import (
    PDM_DEVREG_CLASS_INPUT,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
)
from shared.status import VINF_EM_RESET, VINF_IOM_R3_IOPORT_WRITE, VINF_SUCCESS
from shared.trace import IN, OUT, read_trace

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRACE = REPO.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
DATA, COMMAND, PORT92 = 0x60, 0x64, 0x92
HANDLES = {DATA: 1, COMMAND: 2, PORT92: 3}

OBF, SYS, CMD, UNLOCKED, AUX_OBF = 0x01, 0x04, 0x08, 0x10, 0x20


@dataclass
class FakeRing3Helpers:
    instance: int = 0
    regions: dict[int, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        self.regions[port] = (count, description, callbacks)
        return HANDLES[port]


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts[handle] = callbacks


@dataclass
class Kbc:
    state: I8042State
    ring3: I8042Ring3
    ring0: I8042Ring0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers
    resets: int = 0

    def out(self, port: int, value: int, size: int = 1) -> int:
        """An OUT as IOM does it: ring-0 first, ring-3 when ring-0 asks; a reset runs the reset hook."""
        rc = self.hlp0.contexts[HANDLES[port]]["out"](0, value, size)
        if rc == VINF_IOM_R3_IOPORT_WRITE:
            rc = self.hlp3.regions[port][2]["out"](0, value, size)
        if rc == VINF_EM_RESET:
            self.resets += 1
            self.ring3.reset()
        return int(rc)

    def inb(self, port: int, size: int = 1) -> int:
        rc, value = self.hlp0.contexts[HANDLES[port]]["in_"](0, size)
        assert rc == VINF_SUCCESS
        return int(value)

    def command(self, command: int, *data: int) -> None:
        assert self.out(COMMAND, command) == VINF_SUCCESS
        for byte in data:
            assert self.out(DATA, byte) == VINF_SUCCESS

    def drain(self) -> list[int]:
        """Every byte waiting, as a guest polling status bit 0 would read them."""
        got = []
        while self.inb(COMMAND) & OBF:
            got.append(self.inb(DATA))
        return got

    def command_byte(self) -> int:
        self.command(0x20)
        return self.inb(DATA)


@pytest.fixture
def kbc() -> Kbc:
    state = I8042State()
    hlp3, hlp0 = FakeRing3Helpers(), FakeRing0Helpers()
    ring3 = I8042Ring3(hlp3, state, {})
    ring0 = I8042Ring0(hlp0, state, {})
    return Kbc(state, ring3, ring0, hlp3, hlp0)


# --- registration and set-up ---------------------------------------------------------------
def test_registration_is_an_input_device_with_a_ring0_half() -> None:
    reg = i8042.REGISTRATION
    assert reg.name == "i8042"
    assert reg.device_class == PDM_DEVREG_CLASS_INPUT
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE


def test_three_one_port_ranges_at_0x60_0x64_0x92_with_both_halves(kbc: Kbc) -> None:
    assert {port: count for port, (count, _, _) in kbc.hlp3.regions.items()} == {DATA: 1, COMMAND: 1, PORT92: 1}
    assert set(kbc.hlp0.contexts) == set(HANDLES.values())
    assert (kbc.state.data_handle, kbc.state.command_handle, kbc.state.port92_handle) == (1, 2, 3)


def test_ring0_constructor_writes_no_state() -> None:
    state = I8042State()
    I8042Ring0(FakeRing0Helpers(), state, {})
    assert bytes(state) == bytes(I8042State())


# --- status and controller commands -------------------------------------------------------------
def test_power_on_status_is_command_bit_and_unlocked(kbc: Kbc) -> None:
    assert kbc.inb(COMMAND) == CMD | UNLOCKED


def test_a_word_read_gives_the_register_then_all_ones(kbc: Kbc) -> None:
    assert kbc.inb(COMMAND, 2) == 0xFF00 | CMD | UNLOCKED
    kbc.out(PORT92, 0x02)
    assert kbc.inb(PORT92, 4) == 0xFFFFFF02


def test_self_test_answers_0x55_and_sets_the_system_flag(kbc: Kbc) -> None:
    kbc.command(0xAA)
    assert kbc.inb(COMMAND) == CMD | UNLOCKED | SYS | OBF
    assert kbc.inb(DATA) == 0x55
    assert kbc.inb(COMMAND) == CMD | UNLOCKED | SYS


@pytest.mark.parametrize("command", [0xAB, 0xA9])
def test_interface_tests_answer_0x00(kbc: Kbc, command: int) -> None:
    kbc.command(command)
    assert kbc.drain() == [0x00]


def test_command_bit_stays_set_after_a_data_write_as_qemu_does(kbc: Kbc) -> None:
    kbc.command(0x60, 0x30)
    assert kbc.inb(COMMAND) & CMD


def test_system_flag_is_not_copied_from_the_command_byte(kbc: Kbc) -> None:
    kbc.command(0x60, 0x04)
    assert not kbc.inb(COMMAND) & SYS


def test_command_byte_is_written_with_0x60_and_read_with_0x20(kbc: Kbc) -> None:
    assert kbc.command_byte() == 0x03
    kbc.command(0x60, 0x61)
    assert kbc.command_byte() == 0x61


def test_controller_ram_bytes_1_to_31_are_read_and_written_like_the_command_byte(kbc: Kbc) -> None:
    kbc.command(0x65, 0x5A)
    kbc.command(0x25)
    assert kbc.drain() == [0x5A]
    assert kbc.command_byte() == 0x03


@pytest.mark.parametrize(("command", "bit", "set_"), [(0xAD, 0x10, True), (0xAE, 0x10, False),
                                                       (0xA7, 0x20, True), (0xA8, 0x20, False)])
def test_disable_and_enable_commands_flip_the_interface_bits(kbc: Kbc, command: int, bit: int, set_: bool) -> None:
    kbc.command(0x60, 0x30 if not set_ else 0x00)
    kbc.command(command)
    assert bool(kbc.command_byte() & bit) == set_


def test_output_port_is_read_with_0xd0_and_written_with_0xd1(kbc: Kbc) -> None:
    kbc.command(0xD0)
    assert kbc.drain() == [0x03]
    kbc.command(0xD1, 0x01)
    assert kbc.state.a20_level == 0
    kbc.command(0xD0)
    assert kbc.drain() == [0x01]
    kbc.command(0xD1, 0x03)
    assert kbc.state.a20_level == 1


def test_output_port_shows_irq1_while_a_keyboard_byte_waits(kbc: Kbc) -> None:
    kbc.command(0xD2, 0x1C)  # the keyboard's byte, IRQ1 enabled by the command byte
    assert kbc.state.irq1_level == 1
    assert kbc.ring0.read_output_port() & 0x10


def test_read_input_port_says_the_keyboard_is_not_inhibited(kbc: Kbc) -> None:
    kbc.command(0xC0)
    assert kbc.drain() == [0x80]


def test_write_keyboard_and_mouse_buffers_come_back_with_their_status_bits(kbc: Kbc) -> None:
    kbc.command(0xD2, 0x1E)
    assert kbc.inb(COMMAND) & (OBF | AUX_OBF) == OBF
    assert kbc.inb(DATA) == 0x1E
    kbc.command(0xD3, 0x08)
    assert kbc.inb(COMMAND) & (OBF | AUX_OBF) == OBF | AUX_OBF
    assert kbc.state.irq12_level == 1
    assert kbc.inb(DATA) == 0x08
    assert kbc.state.irq12_level == 0


def test_reading_an_empty_output_buffer_returns_the_last_byte_again(kbc: Kbc) -> None:
    kbc.command(0xAA)
    assert kbc.inb(DATA) == 0x55
    assert kbc.inb(DATA) == 0x55
    assert not kbc.inb(COMMAND) & OBF


def test_irq1_follows_the_output_buffer_only_when_the_command_byte_enables_it(kbc: Kbc) -> None:
    kbc.command(0x60, 0x00)
    kbc.command(0xD2, 0x1E)
    assert kbc.state.irq1_level == 0
    kbc.command(0x60, 0x01)
    assert kbc.state.irq1_level == 1
    kbc.inb(DATA)
    assert kbc.state.irq1_level == 0


# --- the keyboard ---------------------------------------------------------------------------
def test_keyboard_reset_acks_then_passes_its_self_test(kbc: Kbc) -> None:
    kbc.out(DATA, 0xFF)
    assert kbc.drain() == [0xFA, 0xAA]


def test_keyboard_bytes_wait_while_its_interface_is_disabled(kbc: Kbc) -> None:
    kbc.out(DATA, 0xF2)
    kbc.command(0xAD)
    assert kbc.inb(DATA) == 0xFA  # already in the output buffer
    assert kbc.drain() == []
    kbc.command(0xAE)
    assert kbc.drain() == [0xAB, 0x83]


def test_controller_bytes_come_before_waiting_keyboard_bytes_and_ignore_the_disable_bits(kbc: Kbc) -> None:
    kbc.command(0x60, 0x70)  # both interfaces disabled, translation on
    kbc.out(DATA, 0xF2)  # enables the keyboard again: FA is loaded, AB 83 wait
    kbc.command(0xAD)
    kbc.command(0xD2, 0x02)
    kbc.command(0xD3, 0x08)
    assert kbc.inb(DATA) == 0xFA
    assert kbc.inb(COMMAND) & (OBF | AUX_OBF) == OBF
    assert kbc.inb(DATA) == 0x02  # not translated: it never came from the keyboard
    assert kbc.inb(COMMAND) & (OBF | AUX_OBF) == OBF | AUX_OBF
    assert kbc.drain() == [0x08]


def test_sending_to_the_keyboard_enables_its_interface(kbc: Kbc) -> None:
    kbc.command(0xAD)
    kbc.out(DATA, 0xF4)
    assert kbc.drain() == [0xFA]
    assert not kbc.command_byte() & 0x10


@pytest.mark.parametrize(("translate", "expected"), [(False, [0xFA, 0xAB, 0x83]), (True, [0xFA, 0xAB, 0x41])])
def test_identify_answers_mf2_translated_when_the_controller_translates(
    kbc: Kbc, translate: bool, expected: list[int]
) -> None:
    kbc.command(0x60, 0x40 if translate else 0x00)
    kbc.out(DATA, 0xF2)
    assert kbc.drain() == expected


def test_scan_code_set_is_set_and_reported(kbc: Kbc) -> None:
    kbc.command(0x60, 0x00)
    kbc.out(DATA, 0xF0)
    kbc.out(DATA, 0x02)
    assert kbc.drain() == [0xFA, 0xFA]
    kbc.out(DATA, 0xF0)
    kbc.out(DATA, 0x03)
    kbc.out(DATA, 0xF0)
    kbc.out(DATA, 0x00)
    assert kbc.drain() == [0xFA, 0xFA, 0xFA, 0xFA, 0x03]
    kbc.command(0x60, 0x40)
    kbc.out(DATA, 0xF0)
    kbc.out(DATA, 0x00)
    assert kbc.drain() == [0xFA, 0xFA, 0x3F]  # set 3 through translation


def test_set_leds_takes_an_argument_and_acks_both(kbc: Kbc) -> None:
    kbc.out(DATA, 0xED)
    kbc.out(DATA, 0x07)
    assert kbc.drain() == [0xFA, 0xFA]
    assert kbc.state.kbd_leds == 0x07


def test_enable_and_disable_scanning(kbc: Kbc) -> None:
    kbc.out(DATA, 0xF5)
    assert kbc.drain() == [0xFA]
    assert kbc.state.kbd_scanning == 0
    kbc.out(DATA, 0xF4)
    assert kbc.drain() == [0xFA]
    assert kbc.state.kbd_scanning == 1


def test_echo_resend_and_unknown_commands(kbc: Kbc) -> None:
    kbc.out(DATA, 0xEE)
    assert kbc.drain() == [0xEE]
    kbc.out(DATA, 0xFE)
    assert kbc.drain() == [0xEE]
    kbc.out(DATA, 0x42)
    assert kbc.drain() == [0xFE]


# --- the mouse ----------------------------------------------------------------------------
def test_mouse_reset_answers_ack_self_test_and_id(kbc: Kbc) -> None:
    kbc.command(0xD4, 0xFF)
    assert kbc.inb(COMMAND) & AUX_OBF
    assert kbc.drain() == [0xFA, 0xAA, 0x00]


def test_mouse_status_request_reports_its_settings(kbc: Kbc) -> None:
    kbc.command(0xD4, 0xF3)
    kbc.command(0xD4, 40)
    kbc.command(0xD4, 0xF4)
    assert kbc.drain() == [0xFA, 0xFA, 0xFA]
    kbc.command(0xD4, 0xE9)
    assert kbc.drain() == [0xFA, 0x20, 0x02, 40]


def test_mouse_bytes_wait_while_its_interface_is_disabled(kbc: Kbc) -> None:
    kbc.command(0xD4, 0xF2)
    kbc.command(0xA7)
    assert kbc.drain() == [0xFA]  # already in the output buffer
    kbc.command(0xA8)
    assert kbc.drain() == [0x00]


# --- A20 and reset -----------------------------------------------------------------------------
def test_port92_reads_its_a20_bit_and_nothing_else(kbc: Kbc) -> None:
    assert kbc.inb(PORT92) == 0x00
    assert kbc.out(PORT92, 0xF2) == VINF_SUCCESS
    assert kbc.inb(PORT92) == 0x02


def test_a20_is_on_while_either_the_output_port_or_port92_enables_it(kbc: Kbc) -> None:
    kbc.command(0xD1, 0x01)
    assert kbc.state.a20_level == 0
    kbc.out(PORT92, 0x02)
    assert kbc.state.a20_level == 1
    kbc.out(PORT92, 0x00)
    assert kbc.state.a20_level == 0


def test_port92_bit0_resets_the_machine_from_ring3(kbc: Kbc) -> None:
    before = bytes(kbc.state)
    assert kbc.ring0.port92_out(0, 0x03, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert bytes(kbc.state) == before
    assert kbc.ring3.port92_out(0, 0x03, 1) == VINF_EM_RESET


@pytest.mark.parametrize("command", [0xFE, 0xF0, 0xFC])
def test_pulsing_the_reset_line_resets_the_machine_from_ring3(kbc: Kbc, command: int) -> None:
    before = bytes(kbc.state)
    assert kbc.ring0.command_out(0, command, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert bytes(kbc.state) == before
    assert kbc.ring3.command_out(0, command, 1) == VINF_EM_RESET


def test_a_pulse_that_leaves_the_reset_line_alone_does_nothing(kbc: Kbc) -> None:
    before = bytes(kbc.state)
    assert kbc.out(COMMAND, 0xFF) == VINF_SUCCESS
    assert bytes(kbc.state) == before


def test_writing_the_output_port_with_reset_low_resets_from_ring3(kbc: Kbc) -> None:
    kbc.command(0xD1)
    assert kbc.ring0.data_out(0, 0x02, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert kbc.ring3.data_out(0, 0x02, 1) == VINF_EM_RESET


def test_reset_returns_the_controller_to_power_on(kbc: Kbc) -> None:
    kbc.command(0xAA)
    kbc.command(0x60, 0x61)
    kbc.out(PORT92, 0x02)
    assert kbc.out(COMMAND, 0xFE) == VINF_EM_RESET
    assert kbc.resets == 1
    assert kbc.inb(COMMAND) == CMD | UNLOCKED
    assert kbc.inb(PORT92) == 0
    assert kbc.command_byte() == 0x03


# --- the sample trace -------------------------------------------------------------------------------
@pytest.mark.skipif(not SAMPLE_TRACE.exists(), reason="the sample trace is not beside the repository")
def test_sample_trace_reads_of_0x60_0x64_0x92_match_qemu() -> None:
    state = I8042State()
    hlp3, hlp0 = FakeRing3Helpers(), FakeRing0Helpers()
    kbc = Kbc(state, I8042Ring3(hlp3, state, {}), I8042Ring0(hlp0, state, {}), hlp3, hlp0)
    checked = 0
    mismatches = []
    for op in read_trace(SAMPLE_TRACE):
        if op.address not in HANDLES:
            continue
        if op.kind == OUT:
            kbc.out(op.address, op.value, op.size)
        elif op.kind == IN and op.expected is not None:
            checked += 1
            got = kbc.inb(op.address, op.size)
            if got != op.expected:
                mismatches.append((op.line, hex(op.address), op.expected, got))
    assert mismatches == []
    assert checked == 443
    assert kbc.resets == 0
