"""i8259: the PC's two cascaded 8259A interrupt controllers and the PIIX3's edge/level control registers.

The master answers at 0x20/0x21 and takes IRQ0-7; the slave answers at 0xA0/0xA1, takes
IRQ8-15 and drives the master's IR2 with its INT output (the PC wiring, whatever ICW3 says).
Each chip has three 8-bit registers: IRR (requests waiting), ISR (requests being served) and
IMR (masked inputs).  Software programs a chip with an initialization sequence (ICW1 on the
command port, then ICW2, ICW3 unless single, ICW4 if ICW1 asked for it, on the data port) and
then with operation commands: OCW1 (the IMR, on the data port), OCW2 (EOIs and priority
rotation) and OCW3 (IRR/ISR read select, poll, special mask mode), both on the command port.
A command-port read returns IRR or ISR as OCW3 last selected; a data-port read returns the IMR;
after a poll command the next read of either port is the poll word (bit 7: a request was
accepted, bits 0-2: its level) and acknowledges that request.

ELCR1/ELCR2 (0x4D0/0x4D1) make single inputs level-triggered.  IRQ0, 1, 2, 8 and 13 must stay
edge-triggered (PIIX3 datasheet), so those bits read as zero: the masks are 0xF8 and 0xDE.

Only the 8086 mode (ICW4 bit 0) is modelled: vectors are ICW2's bits 3-7 plus the level.  A
request stays in IRR after its edge even if the line drops before it is acknowledged (devices
may pulse their lines); a level-triggered request follows its line.

Every read here is deterministic; none is time-dependent.

:meth:`PicCore.set_irq` is the input side (PDMDevHlpISASetIrq's end point) and
:meth:`PicCore.acknowledge` the CPU's INTA cycle (PDMPicGetInterrupt), for the interrupt path
to come; the master's INT output is kept in the shared state.  Wider port accesses are split
into byte accesses, as the ISA bus does; bytes past the end of a region read as all ones.

Split: everything runs in ring-0, as VirtualBox's PIC does; ring-3 creates the ports and
owns reset.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_PIC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_SUCCESS

# --- Ports.
MASTER_BASE = 0x20
SLAVE_BASE = 0xA0
ELCR_BASE = 0x4D0  # ELCR1 (master inputs), then ELCR2 (slave inputs)
COMMAND = 0  # offset: ICW1, OCW2, OCW3; reads IRR, ISR or the poll word
DATA = 1  # offset: ICW2-ICW4, OCW1; reads IMR
PORT_COUNT = 2

MASTER = 0
SLAVE = 1
CASCADE_IRQ = 2  # the master input the slave's INT drives
IRQ_COUNT = 16
ELCR_MASKS = (0xF8, 0xDE)  # inputs that may be level-triggered: not IRQ0-2, 8, 13

# --- ICW1: a command-port write with bit 4 set.
ICW1_MARK = 0x10
ICW1_IC4 = 0x01  # ICW4 follows
ICW1_SNGL = 0x02  # single chip: no ICW3
ICW1_LTIM = 0x08  # every input level-triggered
# ICW2: bits 3-7 of the vectors.
ICW2_VECTOR_BASE = 0xF8
# ICW4.
ICW4_AEOI = 0x02  # automatic EOI: an acknowledge does not set ISR
ICW4_SFNM = 0x10  # special fully nested: the master lets the slave interrupt its own ISR level

# --- OCW2: a command-port write with bits 3 and 4 clear; bits 5-7 the command, 0-2 a level.
OCW2_COMMAND = 0xE0
OCW2_LEVEL = 0x07
OCW2_ROTATE_AEOI_CLEAR = 0x00
OCW2_NONSPECIFIC_EOI = 0x20
OCW2_NOP = 0x40
OCW2_SPECIFIC_EOI = 0x60
OCW2_ROTATE_AEOI_SET = 0x80
OCW2_ROTATE_NONSPECIFIC_EOI = 0xA0
OCW2_SET_PRIORITY = 0xC0  # the level becomes the lowest priority
OCW2_ROTATE_SPECIFIC_EOI = 0xE0

# --- OCW3: a command-port write with bit 3 set and bit 4 clear.
OCW3_MARK = 0x08
OCW3_RIS = 0x01  # with RR: read ISR (1) or IRR (0)
OCW3_RR = 0x02  # act on RIS
OCW3_POLL = 0x04  # the next read is the poll word
OCW3_SMM = 0x20  # with ESMM: special mask mode on (1) or off (0)
OCW3_ESMM = 0x40  # act on SMM

POLL_REQUEST = 0x80  # poll word: a request was accepted; bits 0-2 its level

# Where a chip is in its initialization sequence.
STEP_READY = 0
STEP_ICW2 = 1
STEP_ICW3 = 2
STEP_ICW4 = 3


class PicChip(ctypes.Structure):
    """One 8259A."""

    _fields_ = [
        ("irr", ctypes.c_uint8),
        ("isr", ctypes.c_uint8),
        ("imr", ctypes.c_uint8),
        ("lines", ctypes.c_uint8),  # the IR input levels (edge detection, level requests)
        ("elcr", ctypes.c_uint8),  # the PIIX3 edge/level register for these inputs
        ("init_step", ctypes.c_uint8),  # STEP_*
        ("needs_icw4", ctypes.c_uint8),
        ("single", ctypes.c_uint8),
        ("level_triggered", ctypes.c_uint8),  # ICW1 LTIM
        ("vector_base", ctypes.c_uint8),
        ("cascade", ctypes.c_uint8),  # ICW3 as written; the PC's wiring decides the cascade
        ("auto_eoi", ctypes.c_uint8),
        ("special_fully_nested", ctypes.c_uint8),
        ("rotate_on_auto_eoi", ctypes.c_uint8),
        ("lowest_priority", ctypes.c_uint8),  # the level with the lowest priority; the next has the highest
        ("read_isr", ctypes.c_uint8),  # command-port reads return ISR, else IRR
        ("poll", ctypes.c_uint8),  # the next read is the poll word
        ("special_mask", ctypes.c_uint8),
    ]


class PicState(ctypes.Structure):
    _fields_ = [
        ("master_handle", ctypes.c_uint16),
        ("slave_handle", ctypes.c_uint16),
        ("elcr_handle", ctypes.c_uint16),
        ("chips", PicChip * 2),
        ("int_output", ctypes.c_uint8),  # the master's INT pin: an interrupt awaits the CPU
    ]


def _read_bytes(read_byte: Callable[[int], int], offset: int, size: int) -> int:
    """A *size*-byte read as byte reads of a two-port region; bytes past its end read 0xFF."""
    value = 0
    for index in range(size):
        port = offset + index
        value |= (read_byte(port) if port < PORT_COUNT else 0xFF) << (8 * index)
    return value


class PicCore:
    """The two chips' logic, the same in both tiers."""

    def __init__(self, state: PicState) -> None:
        self.state = state

    # -- accesses as IOM hands them over ------------------------------------------------
    def master_in(self, offset: int, size: int) -> tuple[int, int]:
        """0x20/0x21.  Always VINF_SUCCESS."""
        return VINF_SUCCESS, _read_bytes(lambda port: self.read_port(MASTER, port), offset, size)

    def master_out(self, offset: int, value: int, size: int) -> int:
        """0x20/0x21.  Always VINF_SUCCESS."""
        for index in range(min(size, PORT_COUNT - offset)):
            self.write_port(MASTER, offset + index, value >> (8 * index) & 0xFF)
        return VINF_SUCCESS

    def slave_in(self, offset: int, size: int) -> tuple[int, int]:
        """0xA0/0xA1.  Always VINF_SUCCESS."""
        return VINF_SUCCESS, _read_bytes(lambda port: self.read_port(SLAVE, port), offset, size)

    def slave_out(self, offset: int, value: int, size: int) -> int:
        """0xA0/0xA1.  Always VINF_SUCCESS."""
        for index in range(min(size, PORT_COUNT - offset)):
            self.write_port(SLAVE, offset + index, value >> (8 * index) & 0xFF)
        return VINF_SUCCESS

    def elcr_in(self, offset: int, size: int) -> tuple[int, int]:
        """0x4D0/0x4D1.  Always VINF_SUCCESS."""
        return VINF_SUCCESS, _read_bytes(lambda index: int(self.state.chips[index].elcr), offset, size)

    def elcr_out(self, offset: int, value: int, size: int) -> int:
        """0x4D0/0x4D1.  Always VINF_SUCCESS."""
        for index in range(min(size, PORT_COUNT - offset)):
            self.write_elcr(offset + index, value >> (8 * index) & 0xFF)
        return VINF_SUCCESS

    # -- registers -----------------------------------------------------------------------
    def read_port(self, index: int, port: int) -> int:
        chip = self.state.chips[index]
        if chip.poll:
            chip.poll = 0
            return self._poll(index)
        if port == DATA:
            return int(chip.imr)
        return int(chip.isr if chip.read_isr else chip.irr)

    def write_port(self, index: int, port: int, value: int) -> None:
        chip = self.state.chips[index]
        if port == COMMAND:
            if value & ICW1_MARK:
                self._write_icw1(index, value)
            elif value & OCW3_MARK:
                self._write_ocw3(chip, value)
            else:
                self._write_ocw2(chip, value)
        elif chip.init_step == STEP_ICW2:
            chip.vector_base = value & ICW2_VECTOR_BASE
            chip.init_step = STEP_ICW3 if not chip.single else self._after_icw3(chip)
        elif chip.init_step == STEP_ICW3:
            chip.cascade = value
            chip.init_step = self._after_icw3(chip)
        elif chip.init_step == STEP_ICW4:
            chip.auto_eoi = 1 if value & ICW4_AEOI else 0
            chip.special_fully_nested = 1 if value & ICW4_SFNM else 0
            chip.init_step = STEP_READY
        else:
            chip.imr = value  # OCW1
        self._update()

    def write_elcr(self, index: int, value: int) -> None:
        """An input turned level-triggered requests while its line is high; one turned edge keeps IRR."""
        chip = self.state.chips[index]
        chip.elcr = value & ELCR_MASKS[index]
        level = self._level_inputs(chip)
        chip.irr = chip.irr & ~level | chip.lines & level
        self._update()

    # -- the interrupt path --------------------------------------------------------------
    def set_irq(self, line: int, level: bool) -> None:
        """Drive ISA interrupt line 0-15 (8-15 reach the slave).  Line 2 is the cascade: ValueError."""
        if not 0 <= line < IRQ_COUNT or line == CASCADE_IRQ:
            raise ValueError(f"IRQ{line} is not an input of the PC's PICs")
        index, irq = divmod(line, 8)
        self._set_input(index, irq, level)
        self._update()

    def acknowledge(self) -> int:
        """The CPU's interrupt acknowledge: accept the highest-priority request and return its vector.

        With no request the master answers with its IR7 vector and sets no ISR bit (a
        spurious interrupt); a cascade request the slave no longer has gives the slave's IR7.
        """
        chips = self.state.chips
        irq = self._pending_irq(MASTER)
        if irq is None:
            vector = chips[MASTER].vector_base | 7
        elif irq == CASCADE_IRQ:
            self._accept(MASTER, irq)
            slave_irq = self._pending_irq(SLAVE)
            if slave_irq is None:
                vector = chips[SLAVE].vector_base | 7
            else:
                self._accept(SLAVE, slave_irq)
                vector = chips[SLAVE].vector_base + slave_irq
        else:
            self._accept(MASTER, irq)
            vector = chips[MASTER].vector_base + irq
        self._update()
        return int(vector)

    # -- commands ------------------------------------------------------------------------
    def _write_icw1(self, index: int, value: int) -> None:
        """Start initialization: the chip forgets its state, and edge requests need a new edge."""
        chip = self.state.chips[index]
        chip.init_step = STEP_ICW2
        chip.needs_icw4 = 1 if value & ICW1_IC4 else 0
        chip.single = 1 if value & ICW1_SNGL else 0
        chip.level_triggered = 1 if value & ICW1_LTIM else 0
        chip.imr = 0
        chip.isr = 0
        chip.lowest_priority = 7
        chip.special_mask = 0
        chip.read_isr = 0
        chip.poll = 0
        # ICW4's functions are cleared, and stay so without an ICW4.
        chip.auto_eoi = 0
        chip.special_fully_nested = 0
        chip.rotate_on_auto_eoi = 0
        chip.irr = chip.lines & self._level_inputs(chip)

    @staticmethod
    def _after_icw3(chip: PicChip) -> int:
        return STEP_ICW4 if chip.needs_icw4 else STEP_READY

    def _write_ocw2(self, chip: PicChip, value: int) -> None:
        command = value & OCW2_COMMAND
        level = value & OCW2_LEVEL
        if command in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
            served = self._highest(chip, int(chip.isr))
            if served is not None:
                chip.isr &= ~(1 << served)
                if command == OCW2_ROTATE_NONSPECIFIC_EOI:
                    chip.lowest_priority = served
        elif command in (OCW2_SPECIFIC_EOI, OCW2_ROTATE_SPECIFIC_EOI):
            chip.isr &= ~(1 << level)
            if command == OCW2_ROTATE_SPECIFIC_EOI:
                chip.lowest_priority = level
        elif command == OCW2_SET_PRIORITY:
            chip.lowest_priority = level
        elif command == OCW2_ROTATE_AEOI_SET:
            chip.rotate_on_auto_eoi = 1
        elif command == OCW2_ROTATE_AEOI_CLEAR:
            chip.rotate_on_auto_eoi = 0
        # OCW2_NOP does nothing.

    @staticmethod
    def _write_ocw3(chip: PicChip, value: int) -> None:
        if value & OCW3_POLL:
            chip.poll = 1  # wins over a register select in the same OCW3
        if value & OCW3_RR:
            chip.read_isr = 1 if value & OCW3_RIS else 0
        if value & OCW3_ESMM:
            chip.special_mask = 1 if value & OCW3_SMM else 0

    def _poll(self, index: int) -> int:
        """The poll word; a request found is accepted as an acknowledge would."""
        irq = self._pending_irq(index)
        if irq is None:
            return 0
        self._accept(index, irq)
        self._update()
        return POLL_REQUEST | irq

    # -- priority logic ------------------------------------------------------------------
    @staticmethod
    def _rank(chip: PicChip, irq: int) -> int:
        """0 for the highest priority level, 7 for the lowest."""
        return int(irq - chip.lowest_priority - 1) & 7

    def _highest(self, chip: PicChip, bits: int) -> int | None:
        """The highest-priority level among *bits*, or None."""
        if not bits:
            return None
        return min((irq for irq in range(8) if bits >> irq & 1), key=lambda irq: self._rank(chip, irq))

    def _pending_irq(self, index: int) -> int | None:
        """The request the chip would signal now: unmasked, and above every level in service.

        In special mask mode masked levels in service do not count; in special fully nested
        mode the master does not let its cascade level in service hold back the slave.
        """
        chip = self.state.chips[index]
        request = self._highest(chip, chip.irr & ~chip.imr)
        if request is None:
            return None
        in_service = int(chip.isr)
        if chip.special_mask:
            in_service &= ~chip.imr
        if index == MASTER and chip.special_fully_nested:
            in_service &= ~(1 << CASCADE_IRQ)
        served = self._highest(chip, in_service)
        if served is not None and self._rank(chip, request) >= self._rank(chip, served):
            return None
        return request

    def _accept(self, index: int, irq: int) -> None:
        """An acknowledged request moves to ISR (not with automatic EOI); IRR keeps a held level."""
        chip = self.state.chips[index]
        bit = 1 << irq
        chip.irr = chip.irr & ~bit | chip.lines & self._level_inputs(chip) & bit
        if not chip.auto_eoi:
            chip.isr |= bit
        elif chip.rotate_on_auto_eoi:
            chip.lowest_priority = irq
        if index == SLAVE:
            # The acknowledge cycle resets the slave's INT, so a request still waiting on the
            # slave makes a new edge at the master's cascade input.
            self._set_input(MASTER, CASCADE_IRQ, False)

    @staticmethod
    def _level_inputs(chip: PicChip) -> int:
        return 0xFF if chip.level_triggered else int(chip.elcr)

    def _set_input(self, index: int, irq: int, level: bool) -> None:
        chip = self.state.chips[index]
        bit = 1 << irq
        if self._level_inputs(chip) & bit:
            chip.irr = chip.irr | bit if level else chip.irr & ~bit
        elif level and not chip.lines & bit:
            chip.irr |= bit
        chip.lines = chip.lines | bit if level else chip.lines & ~bit

    def _update(self) -> None:
        """Carry the slave's INT to the master's IR2 and recompute the master's INT."""
        self._set_input(MASTER, CASCADE_IRQ, self._pending_irq(SLAVE) is not None)
        self.state.int_output = 0 if self._pending_irq(MASTER) is None else 1


class PicRing3(PicCore):
    """Ring-3 half: creates and maps the ports and owns reset; serves accesses ring-0 hands over."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: PicState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        state.master_handle = hlp.ioport_create_and_map(
            MASTER_BASE, PORT_COUNT, description="i8259 master", out=self.master_out, in_=self.master_in
        )
        state.slave_handle = hlp.ioport_create_and_map(
            SLAVE_BASE, PORT_COUNT, description="i8259 slave", out=self.slave_out, in_=self.slave_in
        )
        state.elcr_handle = hlp.ioport_create_and_map(
            ELCR_BASE, PORT_COUNT, description="i8259 ELCR", out=self.elcr_out, in_=self.elcr_in
        )
        self.reset()

    def reset(self) -> None:
        """Every register cleared, every input edge-triggered; the input lines stay as driven."""
        for chip in self.state.chips:
            lines = int(chip.lines)
            ctypes.memset(ctypes.addressof(chip), 0, ctypes.sizeof(chip))
            chip.lines = lines
            chip.lowest_priority = 7
        self._update()


class PicRing0(PicCore):
    """Ring-0 half: every access, as VirtualBox's PIC."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: PicState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.ioport_set_up_context(state.master_handle, out=self.master_out, in_=self.master_in)
        hlp.ioport_set_up_context(state.slave_handle, out=self.slave_out, in_=self.slave_in)
        hlp.ioport_set_up_context(state.elcr_handle, out=self.elcr_out, in_=self.elcr_in)


REGISTRATION = DeviceRegistration(
    name="i8259",
    description="two cascaded Intel 8259A interrupt controllers and the PIIX3 ELCR",
    device_class=PDM_DEVREG_CLASS_PIC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=PicState,
    ring3=PicRing3,
    ring0=PicRing0,
)
