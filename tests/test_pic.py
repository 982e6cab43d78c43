"""The two cascaded 8259A PICs and the ELCR alone, driven through fake helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devices import pic
from devices.pic import PicRing0, PicRing3, PicState
from shared.devapi import (
    PDM_DEVREG_CLASS_PIC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
)
from shared.status import VINF_SUCCESS
from shared.trace import IN, OUT, read_trace

TRACE = Path("/work/shared/traces/seabios-fwcfg-pio.trace.gz")
PIC_PORTS = (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1)

MASTER_VECTORS = 0x08
SLAVE_VECTORS = 0x70
EOI = 0x20
READ_IRR = 0x0A
READ_ISR = 0x0B
POLL = 0x0C


@dataclass
class FakeRing3Helpers:
    instance: int = 0
    regions: dict[int, tuple[int, int, str, dict[str, Any]]] = field(default_factory=dict)

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        handle = len(self.regions) + 1
        self.regions[handle] = (port, count, description, callbacks)
        return handle


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts[handle] = callbacks


class Pics:
    """One instance: ring-3 builds it, the guest's accesses go through ring-0's callbacks."""

    def __init__(self) -> None:
        self.state = PicState()
        self.r3_helpers = FakeRing3Helpers()
        self.r0_helpers = FakeRing0Helpers()
        self.ring3 = PicRing3(self.r3_helpers, self.state, {})
        self.ring0 = PicRing0(self.r0_helpers, self.state, {})

    def _region(self, port: int) -> tuple[int, dict[str, Any]]:
        for handle, (first, count, _, _) in self.r3_helpers.regions.items():
            if first <= port < first + count:
                return port - first, self.r0_helpers.contexts[handle]
        raise AssertionError(f"port {port:#x} is not mapped")

    def out(self, port: int, value: int, size: int = 1) -> None:
        offset, callbacks = self._region(port)
        assert callbacks["out"](offset, value, size) == VINF_SUCCESS

    def inb(self, port: int, size: int = 1) -> int:
        offset, callbacks = self._region(port)
        rc, value = callbacks["in_"](offset, size)
        assert rc == VINF_SUCCESS
        return int(value)

    def initialize(self, master_icw4: int = 0x01, slave_icw4: int = 0x01) -> None:
        """The PC BIOS sequence: edge-triggered, cascaded, ICW4 with 8086 mode; all unmasked."""
        self.out(0x20, 0x11)
        self.out(0xA0, 0x11)
        self.out(0x21, MASTER_VECTORS)
        self.out(0xA1, SLAVE_VECTORS)
        self.out(0x21, 0x04)
        self.out(0xA1, 0x02)
        self.out(0x21, master_icw4)
        self.out(0xA1, slave_icw4)

    def irr(self, command_port: int) -> int:
        self.out(command_port, READ_IRR)
        return self.inb(command_port)

    def isr(self, command_port: int) -> int:
        self.out(command_port, READ_ISR)
        return self.inb(command_port)

    def pulse(self, line: int) -> None:
        self.ring0.set_irq(line, True)
        self.ring0.set_irq(line, False)


@pytest.fixture
def pics() -> Pics:
    device = Pics()
    device.initialize()
    return device


# --- registration and set-up ------------------------------------------------------------


def test_registration_is_a_pic_with_a_ring0_half() -> None:
    reg = pic.REGISTRATION
    assert reg.name == "i8259"
    assert reg.device_class == PDM_DEVREG_CLASS_PIC
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert reg.ring0 is PicRing0 and reg.ring3 is PicRing3


def test_ring3_maps_master_slave_and_elcr_and_ring0_serves_them_all() -> None:
    device = Pics()
    mapped = {(port, count) for port, count, _, _ in device.r3_helpers.regions.values()}
    assert mapped == {(0x20, 2), (0xA0, 2), (0x4D0, 2)}
    state = device.state
    assert set(device.r0_helpers.contexts) == {state.master_handle, state.slave_handle, state.elcr_handle}


def test_ring0_constructor_does_not_write_the_state(pics: Pics) -> None:
    before = bytes(pics.state)
    PicRing0(FakeRing0Helpers(), pics.state, {})
    assert bytes(pics.state) == before


# --- initialization ----------------------------------------------------------------------


def test_icw_sequence_sets_the_vector_base_and_data_port_writes_then_reach_the_imr(pics: Pics) -> None:
    pics.out(0x21, 0xFB)  # all masked but the cascade, as SeaBIOS leaves it
    assert pics.inb(0x21) == 0xFB
    pics.ring0.set_irq(9, True)
    assert pics.ring0.acknowledge() == SLAVE_VECTORS + 1
    pics.ring0.set_irq(1, True)
    pics.out(0x21, 0x00)
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 1


def test_icw2_keeps_only_vector_bits_3_to_7() -> None:
    device = Pics()
    device.out(0x20, 0x13)  # single, ICW4 needed
    device.out(0x21, 0x27)
    device.out(0x21, 0x01)
    device.ring0.set_irq(3, True)
    assert device.ring0.acknowledge() == 0x23


def test_icw1_clears_imr_isr_and_selects_irr(pics: Pics) -> None:
    pics.out(0x21, 0xF0)
    pics.ring0.set_irq(0, True)
    pics.ring0.acknowledge()
    pics.out(0x20, READ_ISR)
    pics.out(0x20, 0x11)
    assert pics.inb(0x21) == 0
    assert pics.inb(0x20) == 0  # IRR (the edge request was accepted), not ISR
    assert pics.isr(0x20) == 0


def test_icw1_forgets_edge_requests_but_not_level_ones(pics: Pics) -> None:
    pics.out(0x4D0, 0x20)  # IRQ5 level-triggered
    pics.ring0.set_irq(3, True)
    pics.ring0.set_irq(5, True)
    pics.out(0x20, 0x11)
    assert pics.inb(0x20) == 0x20


def test_single_mode_skips_icw3() -> None:
    device = Pics()
    device.out(0x20, 0x13)
    device.out(0x21, 0x40)
    device.out(0x21, 0x02)  # ICW4: automatic EOI
    device.out(0x21, 0x5A)  # OCW1
    assert device.inb(0x21) == 0x5A
    device.ring0.set_irq(0, True)
    assert device.ring0.acknowledge() == 0x40
    assert device.isr(0x20) == 0


def test_without_ic4_there_is_no_icw4_and_its_functions_are_off(pics: Pics) -> None:
    pics.out(0x20, 0x10)  # no ICW4: automatic EOI off even though it was on
    pics.out(0x21, 0x08)
    pics.out(0x21, 0x04)
    pics.out(0x21, 0x55)  # already OCW1
    assert pics.inb(0x21) == 0x55


# --- requests: edge and level -------------------------------------------------------------


def test_edge_request_is_latched_on_the_rising_edge_even_after_the_line_drops(pics: Pics) -> None:
    pics.ring0.set_irq(4, True)
    assert pics.irr(0x20) == 0x10
    pics.ring0.set_irq(4, False)
    assert pics.irr(0x20) == 0x10
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 4
    pics.ring0.set_irq(4, False)
    assert pics.irr(0x20) == 0


def test_edge_line_held_high_requests_once(pics: Pics) -> None:
    pics.ring0.set_irq(3, True)
    pics.ring0.acknowledge()
    pics.ring0.set_irq(3, True)
    assert pics.irr(0x20) == 0


def test_level_request_follows_its_line_and_stays_after_acknowledge(pics: Pics) -> None:
    pics.out(0x4D1, 0x08)  # IRQ11 level-triggered
    pics.ring0.set_irq(11, True)
    assert pics.irr(0xA0) == 0x08
    assert pics.ring0.acknowledge() == SLAVE_VECTORS + 3
    assert pics.irr(0xA0) == 0x08
    pics.ring0.set_irq(11, False)
    assert pics.irr(0xA0) == 0


def test_ltim_makes_every_input_level_triggered() -> None:
    device = Pics()
    device.out(0x20, 0x19)
    device.out(0x21, 0x08)
    device.out(0x21, 0x04)
    device.out(0x21, 0x01)
    device.ring0.set_irq(6, True)
    device.ring0.set_irq(6, False)
    assert device.irr(0x20) == 0


def test_elcr_bits_for_irq0_1_2_8_13_stay_edge() -> None:
    device = Pics()
    device.out(0x4D0, 0xFF)
    device.out(0x4D1, 0xFF)
    assert device.inb(0x4D0) == 0xF8
    assert device.inb(0x4D1) == 0xDE


def test_elcr_switch_to_level_takes_the_line_as_it_is(pics: Pics) -> None:
    pics.ring0.set_irq(5, True)
    pics.ring0.acknowledge()
    pics.out(0x20, EOI)
    pics.ring0.set_irq(7, True)
    pics.ring0.set_irq(7, False)
    pics.out(0x4D0, 0xA0)  # IRQ5 (line high) and IRQ7 (line low) level-triggered
    assert pics.irr(0x20) == 0x20


def test_set_irq_refuses_the_cascade_line_and_lines_past_15(pics: Pics) -> None:
    for line in (2, 16, -1):
        with pytest.raises(ValueError):
            pics.ring0.set_irq(line, True)


# --- acknowledge and priority --------------------------------------------------------------


def test_acknowledge_serves_the_highest_priority_request_and_sets_isr(pics: Pics) -> None:
    pics.pulse(6)
    pics.pulse(3)
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 3
    assert pics.isr(0x20) == 0x08
    assert pics.irr(0x20) == 0x40


def test_masked_requests_wait_in_irr_and_nothing_pending_is_a_spurious_irq7(pics: Pics) -> None:
    pics.out(0x21, 0x01)
    pics.pulse(0)
    assert pics.state.int_output == 0
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 7
    assert pics.isr(0x20) == 0
    assert pics.irr(0x20) == 0x01
    pics.out(0x21, 0x00)
    assert pics.state.int_output == 1


def test_level_in_service_holds_back_equal_and_lower_levels_until_eoi(pics: Pics) -> None:
    pics.pulse(3)
    pics.ring0.acknowledge()
    pics.pulse(3)
    pics.pulse(5)
    assert pics.state.int_output == 0
    pics.out(0x20, EOI)
    assert pics.state.int_output == 1
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 3


def test_higher_priority_request_nests_over_a_level_in_service(pics: Pics) -> None:
    pics.pulse(5)
    pics.ring0.acknowledge()
    pics.pulse(1)
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 1
    assert pics.isr(0x20) == 0x22


def test_slave_request_cascades_through_irq2(pics: Pics) -> None:
    pics.pulse(12)
    assert pics.irr(0x20) == 0x04
    assert pics.state.int_output == 1
    assert pics.ring0.acknowledge() == SLAVE_VECTORS + 4
    assert pics.isr(0x20) == 0x04
    assert pics.isr(0xA0) == 0x10
    assert pics.irr(0x20) == 0 and pics.irr(0xA0) == 0


def test_masking_irq2_masks_the_whole_slave(pics: Pics) -> None:
    pics.out(0x21, 0x04)
    pics.pulse(8)
    assert pics.state.int_output == 0


def test_a_cascade_request_the_slave_has_withdrawn_gives_its_irq7_vector(pics: Pics) -> None:
    pics.pulse(10)
    pics.out(0xA1, 0x04)  # masked after the master latched IR2
    assert pics.ring0.acknowledge() == SLAVE_VECTORS + 7
    assert pics.isr(0xA0) == 0


def test_slave_request_waiting_behind_irq2_in_service_arrives_after_the_master_eoi(pics: Pics) -> None:
    pics.pulse(12)
    pics.pulse(9)
    assert pics.ring0.acknowledge() == SLAVE_VECTORS + 1
    pics.out(0xA0, EOI)
    assert pics.state.int_output == 0  # the master's IR2 is still in service
    pics.out(0x20, EOI)
    assert pics.ring0.acknowledge() == SLAVE_VECTORS + 4


def test_slave_still_requesting_after_an_acknowledge_makes_a_new_edge_at_irq2() -> None:
    device = Pics()
    device.initialize(slave_icw4=0x03)  # the slave ends its interrupts itself
    device.pulse(12)
    device.pulse(9)
    assert device.ring0.acknowledge() == SLAVE_VECTORS + 1
    assert device.irr(0x20) == 0x04  # IRQ12 still waits on the slave
    device.out(0x20, EOI)
    assert device.ring0.acknowledge() == SLAVE_VECTORS + 4


def test_int_output_follows_whether_a_request_can_be_delivered(pics: Pics) -> None:
    assert pics.state.int_output == 0
    pics.ring0.set_irq(14, True)
    assert pics.state.int_output == 1
    pics.ring0.acknowledge()
    assert pics.state.int_output == 0


# --- OCW2: EOIs and rotation ---------------------------------------------------------------


def test_nonspecific_eoi_ends_the_highest_priority_level_in_service(pics: Pics) -> None:
    pics.pulse(6)
    pics.ring0.acknowledge()
    pics.pulse(4)
    pics.ring0.acknowledge()
    pics.out(0x20, EOI)
    assert pics.isr(0x20) == 0x40


def test_specific_eoi_ends_the_named_level(pics: Pics) -> None:
    pics.pulse(6)
    pics.ring0.acknowledge()
    pics.pulse(4)
    pics.ring0.acknowledge()
    pics.out(0x20, 0x66)
    assert pics.isr(0x20) == 0x10


def test_rotate_on_nonspecific_eoi_makes_the_served_level_the_lowest(pics: Pics) -> None:
    pics.pulse(1)
    pics.ring0.acknowledge()
    pics.out(0x20, 0xA0)
    pics.pulse(1)
    pics.pulse(4)
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 4


def test_rotate_on_specific_eoi_and_set_priority_choose_the_lowest_level(pics: Pics) -> None:
    pics.pulse(3)
    pics.ring0.acknowledge()
    pics.out(0x20, 0xE3)  # end IR3 and make it lowest: IR4 is now highest
    assert pics.isr(0x20) == 0
    pics.pulse(0)
    pics.pulse(4)
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 4
    pics.out(0x20, 0xC5)  # set priority: IR5 lowest, IR6 highest
    pics.pulse(6)
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 6


def test_ocw2_nop_changes_nothing(pics: Pics) -> None:
    pics.pulse(3)
    pics.ring0.acknowledge()
    pics.out(0x20, 0x40)
    assert pics.isr(0x20) == 0x08


def test_automatic_eoi_leaves_isr_clear_and_can_rotate() -> None:
    device = Pics()
    device.initialize(master_icw4=0x03)
    device.pulse(1)
    assert device.ring0.acknowledge() == MASTER_VECTORS + 1
    assert device.isr(0x20) == 0
    device.out(0x20, 0x80)  # rotate in automatic EOI mode
    device.pulse(1)
    device.ring0.acknowledge()
    device.pulse(1)
    device.pulse(5)
    assert device.ring0.acknowledge() == MASTER_VECTORS + 5
    device.out(0x20, 0x00)  # rotation off again: IR5 stays lowest, IR6 highest
    device.pulse(7)
    device.pulse(6)
    assert device.ring0.acknowledge() == MASTER_VECTORS + 6
    assert device.ring0.acknowledge() == MASTER_VECTORS + 7


# --- OCW3: read select, poll, special mask ------------------------------------------------


def test_command_port_reads_irr_or_isr_as_ocw3_selected_and_data_port_reads_imr(pics: Pics) -> None:
    pics.pulse(2 + 1)
    pics.ring0.acknowledge()
    pics.pulse(7)
    pics.out(0x21, 0x81)
    pics.out(0x20, READ_ISR)
    assert pics.inb(0x20) == 0x08
    assert pics.inb(0x20) == 0x08  # the select stays
    assert pics.inb(0x21) == 0x81
    pics.out(0x20, 0x08)  # OCW3 without RR: no change
    assert pics.inb(0x20) == 0x08
    pics.out(0x20, READ_IRR)
    assert pics.inb(0x20) == 0x80


def test_poll_reads_the_level_and_acknowledges_it(pics: Pics) -> None:
    pics.pulse(5)
    pics.out(0x20, POLL)
    assert pics.inb(0x20) == 0x85
    assert pics.isr(0x20) == 0x20
    assert pics.irr(0x20) == 0


def test_poll_with_nothing_requested_reads_zero_and_applies_to_the_next_read_only(pics: Pics) -> None:
    pics.out(0x21, 0x3C)
    pics.out(0xA0, POLL)
    assert pics.inb(0xA1) == 0  # the poll word, whichever port is read
    assert pics.inb(0xA1) == 0
    pics.out(0x20, POLL)
    assert pics.inb(0x21) == 0
    assert pics.inb(0x21) == 0x3C


def test_poll_on_the_slave_serves_its_request(pics: Pics) -> None:
    pics.pulse(13)
    pics.out(0xA0, POLL)
    assert pics.inb(0xA0) == 0x85
    assert pics.isr(0xA0) == 0x20


def test_special_mask_mode_lets_lower_levels_past_a_masked_level_in_service(pics: Pics) -> None:
    pics.pulse(2 + 1)
    pics.ring0.acknowledge()
    pics.pulse(6)
    assert pics.state.int_output == 0
    pics.out(0x21, 0x08)
    pics.out(0x20, 0x68)  # set special mask mode
    assert pics.ring0.acknowledge() == MASTER_VECTORS + 6
    pics.out(0x20, 0x48)  # reset it
    pics.pulse(7)
    assert pics.state.int_output == 0


def test_special_fully_nested_master_lets_a_higher_slave_level_through(pics: Pics) -> None:
    device = Pics()
    device.initialize(master_icw4=0x11)
    device.pulse(12)
    assert device.ring0.acknowledge() == SLAVE_VECTORS + 4
    device.pulse(9)
    assert device.ring0.acknowledge() == SLAVE_VECTORS + 1
    assert device.isr(0xA0) == 0x12


def test_without_special_fully_nested_the_slave_waits_for_the_master_eoi(pics: Pics) -> None:
    pics.pulse(12)
    pics.ring0.acknowledge()
    pics.pulse(9)
    assert pics.state.int_output == 0


# --- reset, widths, halves -------------------------------------------------------------------


def test_reset_clears_every_register_but_keeps_the_input_lines(pics: Pics) -> None:
    pics.out(0x21, 0x12)
    pics.out(0x4D1, 0x02)
    pics.ring0.set_irq(9, True)
    pics.ring0.set_irq(4, True)
    pics.ring0.acknowledge()
    pics.ring3.reset()
    assert [pics.inb(port) for port in (0x21, 0xA1, 0x4D0, 0x4D1)] == [0, 0, 0, 0]
    assert pics.isr(0x20) == 0 and pics.irr(0x20) == 0 and pics.irr(0xA0) == 0
    assert pics.state.chips[1].lines == 0x02


def test_word_accesses_are_byte_accesses_to_consecutive_ports(pics: Pics) -> None:
    pics.out(0x4D0, 0x0C20, 2)
    assert pics.inb(0x4D0, 2) == 0x0C20
    pics.out(0xA1, 0x5A)
    assert pics.inb(0xA0, 2) == 0x5A00
    assert pics.inb(0xA1, 2) == 0xFF5A


def test_ring3_serves_the_same_registers_as_ring0(pics: Pics) -> None:
    callbacks = pics.r3_helpers.regions[pics.state.master_handle][3]
    assert callbacks["out"](1, 0x77, 1) == VINF_SUCCESS
    assert pics.inb(0x21) == 0x77
    assert callbacks["in_"](1, 1) == (VINF_SUCCESS, 0x77)


# --- the sample trace ---------------------------------------------------------------------


def test_sample_trace_reads_match_qemu() -> None:
    """Every read of 0x20/0x21/0xA0/0xA1/0x4D0/0x4D1 in SeaBIOS's boot, in order."""
    if not TRACE.exists():
        pytest.skip("the sample trace is not here")
    ops = [op for op in read_trace(TRACE) if op.kind in (IN, OUT) and op.address in PIC_PORTS]
    device = Pics()
    checked = 0
    mismatches = []
    for op in ops:
        if op.kind == OUT:
            device.out(op.address, op.value, op.size)
        else:
            got = device.inb(op.address, op.size)
            if op.expected is not None:
                checked += 1
                if got != op.expected:
                    mismatches.append((op.line, hex(op.address), op.expected, got))
    assert checked == 14
    assert mismatches == []
    assert [device.inb(port) for port in (0x21, 0xA1, 0x4D0, 0x4D1)] == [0xB8, 0x8E, 0x00, 0x0C]
    assert device.state.chips[0].vector_base == MASTER_VECTORS
    assert device.state.chips[1].vector_base == SLAVE_VECTORS
