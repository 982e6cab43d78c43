"""i8042: the PC's keyboard controller, with a PS/2 keyboard and mouse behind it, and port 0x92.

Port 0x60 is the data port: reads take the output buffer, writes go to the keyboard, or
to the controller when a controller command waits for its data byte.  Port 0x64 reads
the status register and takes controller commands.  Port 0x92 is the chipset's "fast
A20 and reset" register (PS/2 system control port A): bit 1 drives A20, writing bit 0
set resets the machine, and a read returns the A20 bit alone.

The controller answers at once: the input buffer is never full, and a reply is in the
output buffer by the next status read.  Bytes wait in three queues (first the
controller's: its replies and the bytes written with 0xD2 / 0xD3; then the keyboard's;
then the mouse's) and move into the output buffer one at a time as the guest reads port
0x60, a device's bytes only while its interface is enabled in the command byte.  Sending
a byte to a device enables its interface again, as QEMU does.  The status register is
QEMU's: the command/data bit (3) stays set whichever port was written last, and the
system flag (2) is set by the self-test only, not copied from the command byte (the
sample trace shows both).  With translation on (command byte bit 6) the controller turns
the keyboard's set-2 bytes into set 1; the table holds only the bytes this keyboard
sends (its ID and scan code set numbers), as there is no key input: no driver feeds the
keyboard or the mouse.

A20 and the IRQ lines are kept in the state as levels (``a20_level``: the output port's
A20 bit or port 0x92's; ``irq1_level``, ``irq12_level``), since nothing is wired to them.

Nothing here depends on time.

Split: ring-0 does every read and every command, except those that reset the machine
(command 0xFE or another 0xF0-0xFF pulse with bit 0 clear, an output port write with bit 0
clear, port 0x92 with bit 0 set): those go to ring-3 (VINF_IOM_R3_IOPORT_WRITE), whose
callback returns VINF_EM_RESET, merged into the guest's OUT.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_INPUT,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_EM_RESET, VINF_IOM_R3_IOPORT_WRITE, VINF_SUCCESS

DATA_PORT = 0x60
COMMAND_PORT = 0x64  # reads: status
SYSTEM_CONTROL_PORT = 0x92
ALL_ONES = 0xFF

# --- Status register (port 0x64 reads).
STATUS_OBF = 0x01  # output buffer full: port 0x60 has a byte for the guest
STATUS_IBF = 0x02  # input buffer full: never, the controller takes bytes at once
STATUS_SYSTEM = 0x04  # system flag: set once the self-test passed
STATUS_COMMAND = 0x08  # last write was to port 0x64; QEMU keeps it set, and so do we
STATUS_UNLOCKED = 0x10  # the keyboard lock switch is off
STATUS_AUX_OBF = 0x20  # the byte in the output buffer is the mouse's
STATUS_TIMEOUT = 0x40
STATUS_PARITY_ERROR = 0x80
POWER_ON_STATUS = STATUS_COMMAND | STATUS_UNLOCKED

# --- Command byte (controller RAM byte 0).
CMD_KBD_INT = 0x01  # IRQ1 when the keyboard's byte is in the output buffer
CMD_AUX_INT = 0x02  # IRQ12 when the mouse's byte is
CMD_SYSTEM = 0x04  # the system flag as software last set it (stored only; see the docstring)
CMD_KBD_DISABLE = 0x10  # keyboard interface off: its bytes wait
CMD_AUX_DISABLE = 0x20  # mouse interface off
CMD_TRANSLATE = 0x40  # translate keyboard bytes from scan code set 2 to set 1
POWER_ON_COMMAND_BYTE = CMD_KBD_INT | CMD_AUX_INT
RAM_SIZE = 32

# --- Output port (commands 0xD0 / 0xD1).
OUT_RESET = 0x01  # the CPU's reset line, active low: writing 0 resets the machine
OUT_A20 = 0x02  # the A20 gate
OUT_KBD_IRQ = 0x10  # read-only here: IRQ1 (keyboard byte in the output buffer)
OUT_AUX_IRQ = 0x20  # read-only here: IRQ12 (mouse byte in the output buffer)
OUT_IRQ_BITS = OUT_KBD_IRQ | OUT_AUX_IRQ
POWER_ON_OUTPUT_PORT = OUT_RESET | OUT_A20

INPUT_PORT = 0x80  # command 0xC0: the keyboard is not inhibited

PORT92_RESET = 0x01  # write 1: reset the machine
PORT92_A20 = 0x02

# --- Controller commands (port 0x64).
CCMD_READ_RAM = 0x20  # 0x20-0x3F: read RAM byte (cmd & 0x1F); 0x20 is the command byte
CCMD_WRITE_RAM = 0x60  # 0x60-0x7F: the next data byte goes to RAM byte (cmd & 0x1F)
CCMD_AUX_DISABLE = 0xA7
CCMD_AUX_ENABLE = 0xA8
CCMD_AUX_TEST = 0xA9  # test the mouse interface: 0x00 is "no fault"
CCMD_SELF_TEST = 0xAA  # 0x55 is "passed"
CCMD_KBD_TEST = 0xAB  # test the keyboard interface: 0x00 is "no fault"
CCMD_KBD_DISABLE = 0xAD
CCMD_KBD_ENABLE = 0xAE
CCMD_READ_INPUT_PORT = 0xC0
CCMD_READ_OUTPUT_PORT = 0xD0
CCMD_WRITE_OUTPUT_PORT = 0xD1
CCMD_WRITE_KBD_BUFFER = 0xD2  # the next data byte comes back at once as if the keyboard sent it
CCMD_WRITE_AUX_BUFFER = 0xD3  # the same, as if from the mouse
CCMD_WRITE_AUX = 0xD4  # the next data byte goes to the mouse
CCMD_PULSE = 0xF0  # 0xF0-0xFF: pulse the output port bits that are 0 in the low nibble
SELF_TEST_PASSED = 0x55
INTERFACE_OK = 0x00
COMMANDS_WITH_DATA = frozenset((CCMD_WRITE_OUTPUT_PORT, CCMD_WRITE_KBD_BUFFER, CCMD_WRITE_AUX_BUFFER, CCMD_WRITE_AUX))

# --- Replies a PS/2 device sends.
ACK = 0xFA
RESEND = 0xFE
SELF_TEST_OK = 0xAA  # basic assurance test passed, after a reset
ECHO = 0xEE

# --- Keyboard commands (port 0x60).
KBD_SET_LEDS = 0xED  # one argument
KBD_ECHO = 0xEE
KBD_SCAN_CODE_SET = 0xF0  # one argument: 0 asks for the current set, 1-3 select one
KBD_IDENTIFY = 0xF2
KBD_TYPEMATIC = 0xF3  # one argument
KBD_ENABLE = 0xF4
KBD_DISABLE = 0xF5  # also restores the defaults
KBD_DEFAULTS = 0xF6
KBD_SET3_FIRST, KBD_SET3_LAST = 0xF7, 0xFD  # scan code set 3 key types: acknowledged, no effect
KBD_RESEND = 0xFE
KBD_RESET = 0xFF
KBD_ID = (0xAB, 0x83)  # an MF2 keyboard
KBD_DEFAULT_TYPEMATIC = 0x2B  # 10.9 characters/s after 500 ms
KBD_DEFAULT_SCAN_CODE_SET = 2
# Translation to set 1, for the bytes this keyboard sends that it changes.
TRANSLATED = {0x01: 0x43, 0x02: 0x41, 0x03: 0x3F, 0x83: 0x41}

# --- Mouse commands (after 0xD4).
AUX_SET_SCALING_1_1 = 0xE6
AUX_SET_SCALING_2_1 = 0xE7
AUX_SET_RESOLUTION = 0xE8  # one argument
AUX_STATUS_REQUEST = 0xE9  # three bytes: status, resolution, sample rate
AUX_SET_STREAM_MODE = 0xEA
AUX_READ_DATA = 0xEB  # one movement packet
AUX_RESET_WRAP_MODE = 0xEC
AUX_SET_REMOTE_MODE = 0xF0
AUX_GET_ID = 0xF2
AUX_SET_SAMPLE_RATE = 0xF3  # one argument
AUX_ENABLE = 0xF4
AUX_DISABLE = 0xF5
AUX_DEFAULTS = 0xF6
AUX_RESEND = 0xFE
AUX_RESET = 0xFF
AUX_ID = 0x00  # a standard PS/2 mouse
AUX_DEFAULT_SAMPLE_RATE = 100
AUX_DEFAULT_RESOLUTION = 2  # 4 counts per mm
AUX_STATUS_REMOTE = 0x40
AUX_STATUS_ENABLED = 0x20
AUX_STATUS_SCALING_2_1 = 0x10
AUX_EMPTY_PACKET = (0x08, 0x00, 0x00)  # no buttons, no movement (bit 3 is always set)
AUX_ACKED = frozenset((AUX_SET_STREAM_MODE, AUX_RESET_WRAP_MODE, AUX_SET_REMOTE_MODE, AUX_SET_SCALING_1_1,
                       AUX_SET_SCALING_2_1, AUX_ENABLE, AUX_DISABLE, AUX_DEFAULTS))

QUEUE_SIZE = 16


FROM_AUX = 0x100  # a controller queue entry that reaches the guest as the mouse's byte


class ByteQueue(ctypes.Structure):
    """A 16-entry ring buffer in the shared state; an entry pushed into a full queue is lost.

    Entries are bytes, plus FROM_AUX in the controller's queue.
    """

    data: ctypes.Array[ctypes.c_uint16]
    head: int
    count: int
    _fields_ = [
        ("data", ctypes.c_uint16 * QUEUE_SIZE),
        ("head", ctypes.c_uint8),
        ("count", ctypes.c_uint8),
    ]

    def push(self, byte: int) -> None:
        if self.count < QUEUE_SIZE:
            self.data[(self.head + self.count) % QUEUE_SIZE] = byte
            self.count += 1

    def pop(self) -> int:
        byte = int(self.data[self.head])
        self.head = (self.head + 1) % QUEUE_SIZE
        self.count -= 1
        return byte

    def clear(self) -> None:
        self.head = 0
        self.count = 0


class I8042State(ctypes.Structure):
    _fields_ = [
        ("data_handle", ctypes.c_uint16),
        ("command_handle", ctypes.c_uint16),
        ("port92_handle", ctypes.c_uint16),
        ("status", ctypes.c_uint8),
        ("output_buffer", ctypes.c_uint8),  # what port 0x60 reads (the last byte again once read)
        ("ram", ctypes.c_uint8 * RAM_SIZE),  # byte 0 is the command byte
        ("output_port", ctypes.c_uint8),  # as written; the IRQ bits are added on reads
        ("pending_command", ctypes.c_uint8),  # a controller command waiting for its data byte, or 0
        ("controller_queue", ByteQueue),
        ("kbd_queue", ByteQueue),
        ("aux_queue", ByteQueue),
        # The keyboard.
        ("kbd_pending_command", ctypes.c_uint8),  # a command waiting for its argument, or 0
        ("kbd_scanning", ctypes.c_uint8),
        ("kbd_leds", ctypes.c_uint8),
        ("kbd_typematic", ctypes.c_uint8),
        ("kbd_scan_code_set", ctypes.c_uint8),
        ("kbd_last_sent", ctypes.c_uint8),  # for a resend request
        # The mouse.
        ("aux_pending_command", ctypes.c_uint8),
        ("aux_reporting", ctypes.c_uint8),
        ("aux_remote_mode", ctypes.c_uint8),
        ("aux_scaling_2_1", ctypes.c_uint8),
        ("aux_resolution", ctypes.c_uint8),
        ("aux_sample_rate", ctypes.c_uint8),
        ("aux_last_sent", ctypes.c_uint8),
        # Port 0x92 and the lines.
        ("port92", ctypes.c_uint8),  # its A20 bit
        ("a20_level", ctypes.c_uint8),
        ("irq1_level", ctypes.c_uint8),
        ("irq12_level", ctypes.c_uint8),
    ]


def resets_machine(command: int) -> bool:
    """A 0xF0-0xFF command pulses the reset line when its bit 0 is clear (0xFE is the usual one)."""
    return command & CCMD_PULSE == CCMD_PULSE and not command & OUT_RESET


class I8042Core:
    """The controller, keyboard and mouse, the same in both tiers.

    The methods that would reset the machine return True; the caller (ring-3) turns that
    into VINF_EM_RESET.
    """

    def __init__(self, state: I8042State) -> None:
        self.state = state

    # -- port 0x60 / 0x64 / 0x92 -----------------------------------------------------------
    def read_data(self) -> int:
        """Port 0x60: the output buffer.  Reading empties it and lets the next queued byte in."""
        state = self.state
        value = int(state.output_buffer)
        state.status &= ~(STATUS_OBF | STATUS_AUX_OBF)
        self.fill_output_buffer()
        return value

    def read_status(self) -> int:
        return int(self.state.status)

    def write_data(self, value: int) -> bool:
        """Port 0x60: the data byte of a pending controller command, else a byte for the keyboard."""
        state = self.state
        command = int(state.pending_command)
        state.pending_command = 0
        reset = False
        if command & 0xE0 == CCMD_WRITE_RAM:
            self.write_ram(command & (RAM_SIZE - 1), value)
        elif command == CCMD_WRITE_OUTPUT_PORT:
            reset = self.write_output_port(value)
        elif command == CCMD_WRITE_KBD_BUFFER:
            state.controller_queue.push(value)
        elif command == CCMD_WRITE_AUX_BUFFER:
            state.controller_queue.push(value | FROM_AUX)
        elif command == CCMD_WRITE_AUX:
            state.ram[0] &= ~CMD_AUX_DISABLE  # sending to the mouse enables its interface
            self.aux_receive(value)
        else:
            state.ram[0] &= ~CMD_KBD_DISABLE  # sending to the keyboard enables its interface
            self.kbd_receive(value)
        self.fill_output_buffer()
        return reset

    def write_command(self, command: int) -> bool:
        """Port 0x64: a controller command.  Unknown commands are ignored."""
        state = self.state
        reply: int | None = None
        if command & 0xE0 == CCMD_READ_RAM:
            reply = int(state.ram[command & (RAM_SIZE - 1)])
        elif command & 0xE0 == CCMD_WRITE_RAM or command in COMMANDS_WITH_DATA:
            state.pending_command = command
        elif command == CCMD_AUX_DISABLE:
            state.ram[0] |= CMD_AUX_DISABLE
        elif command == CCMD_AUX_ENABLE:
            state.ram[0] &= ~CMD_AUX_DISABLE
        elif command in (CCMD_AUX_TEST, CCMD_KBD_TEST):
            reply = INTERFACE_OK
        elif command == CCMD_SELF_TEST:
            state.status |= STATUS_SYSTEM
            reply = SELF_TEST_PASSED
        elif command == CCMD_KBD_DISABLE:
            state.ram[0] |= CMD_KBD_DISABLE
        elif command == CCMD_KBD_ENABLE:
            state.ram[0] &= ~CMD_KBD_DISABLE
        elif command == CCMD_READ_INPUT_PORT:
            reply = INPUT_PORT
        elif command == CCMD_READ_OUTPUT_PORT:
            reply = self.read_output_port()
        elif resets_machine(command):
            return True
        if reply is not None:
            state.controller_queue.push(reply)
        self.fill_output_buffer()
        return False

    def read_port92(self) -> int:
        return int(self.state.port92)

    def write_port92(self, value: int) -> bool:
        self.state.port92 = value & PORT92_A20
        self.update_a20()
        return bool(value & PORT92_RESET)

    # -- the controller's inside --------------------------------------------------------
    def write_ram(self, address: int, value: int) -> None:
        self.state.ram[address] = value
        if address == 0:
            self.fill_output_buffer()  # an interface may be enabled, an IRQ newly allowed

    def read_output_port(self) -> int:
        state = self.state
        value = state.output_port & ~OUT_IRQ_BITS
        if state.irq1_level:
            value |= OUT_KBD_IRQ
        if state.irq12_level:
            value |= OUT_AUX_IRQ
        return int(value)

    def write_output_port(self, value: int) -> bool:
        self.state.output_port = value & ~OUT_IRQ_BITS
        self.update_a20()
        return not value & OUT_RESET

    def update_a20(self) -> None:
        state = self.state
        state.a20_level = 1 if (state.output_port & OUT_A20) or (state.port92 & PORT92_A20) else 0

    def fill_output_buffer(self) -> None:
        """Move the next waiting byte into an empty output buffer, then set the IRQ lines."""
        state = self.state
        if not state.status & STATUS_OBF:
            command_byte = int(state.ram[0])
            if state.controller_queue.count:
                entry = state.controller_queue.pop()
                self._load_output_buffer(entry & ALL_ONES, aux=bool(entry & FROM_AUX))
            elif state.kbd_queue.count and not command_byte & CMD_KBD_DISABLE:
                byte = state.kbd_queue.pop()
                if command_byte & CMD_TRANSLATE:
                    byte = TRANSLATED.get(byte, byte)
                self._load_output_buffer(byte, aux=False)
            elif state.aux_queue.count and not command_byte & CMD_AUX_DISABLE:
                self._load_output_buffer(state.aux_queue.pop(), aux=True)
        self.update_irqs()

    def _load_output_buffer(self, byte: int, aux: bool) -> None:
        state = self.state
        state.output_buffer = byte
        state.status |= STATUS_OBF | (STATUS_AUX_OBF if aux else 0)

    def update_irqs(self) -> None:
        state = self.state
        full = state.status & STATUS_OBF
        aux = state.status & STATUS_AUX_OBF
        state.irq1_level = 1 if full and not aux and state.ram[0] & CMD_KBD_INT else 0
        state.irq12_level = 1 if full and aux and state.ram[0] & CMD_AUX_INT else 0

    # -- the keyboard -------------------------------------------------------------------
    def kbd_send(self, *replies: int) -> None:
        for byte in replies:
            self.state.kbd_queue.push(byte)
            if byte != RESEND:
                self.state.kbd_last_sent = byte

    def kbd_defaults(self) -> None:
        state = self.state
        state.kbd_typematic = KBD_DEFAULT_TYPEMATIC
        state.kbd_scan_code_set = KBD_DEFAULT_SCAN_CODE_SET

    def kbd_receive(self, byte: int) -> None:
        """A byte from the controller: a command, or the argument of the last one."""
        state = self.state
        command = int(state.kbd_pending_command)
        state.kbd_pending_command = 0
        if command == KBD_SET_LEDS:
            state.kbd_leds = byte & 0x07
            self.kbd_send(ACK)
        elif command == KBD_TYPEMATIC:
            state.kbd_typematic = byte & 0x7F
            self.kbd_send(ACK)
        elif command == KBD_SCAN_CODE_SET:
            if byte == 0:
                self.kbd_send(ACK, int(state.kbd_scan_code_set))
            elif byte in (1, 2, 3):
                state.kbd_scan_code_set = byte
                self.kbd_send(ACK)
            else:
                self.kbd_send(RESEND)
        elif byte in (KBD_SET_LEDS, KBD_TYPEMATIC, KBD_SCAN_CODE_SET):
            state.kbd_pending_command = byte
            self.kbd_send(ACK)
        elif byte == KBD_ECHO:
            self.kbd_send(ECHO)
        elif byte == KBD_IDENTIFY:
            self.kbd_send(ACK, *KBD_ID)
        elif byte == KBD_ENABLE:
            state.kbd_queue.clear()
            state.kbd_scanning = 1
            self.kbd_send(ACK)
        elif byte in (KBD_DISABLE, KBD_DEFAULTS):
            self.kbd_defaults()
            if byte == KBD_DISABLE:
                state.kbd_scanning = 0
            self.kbd_send(ACK)
        elif KBD_SET3_FIRST <= byte <= KBD_SET3_LAST:
            self.kbd_send(ACK)
        elif byte == KBD_RESEND:
            self.kbd_send(int(state.kbd_last_sent))
        elif byte == KBD_RESET:
            self.kbd_power_on()
            self.kbd_send(ACK, SELF_TEST_OK)
        else:
            self.kbd_send(RESEND)

    def kbd_power_on(self) -> None:
        state = self.state
        state.kbd_queue.clear()
        state.kbd_pending_command = 0
        state.kbd_scanning = 1
        state.kbd_leds = 0
        state.kbd_last_sent = 0
        self.kbd_defaults()

    # -- the mouse ----------------------------------------------------------------------
    def aux_send(self, *replies: int) -> None:
        for byte in replies:
            self.state.aux_queue.push(byte)
            if byte != RESEND:
                self.state.aux_last_sent = byte

    def aux_defaults(self) -> None:
        state = self.state
        state.aux_reporting = 0
        state.aux_scaling_2_1 = 0
        state.aux_resolution = AUX_DEFAULT_RESOLUTION
        state.aux_sample_rate = AUX_DEFAULT_SAMPLE_RATE

    def aux_receive(self, byte: int) -> None:
        """A byte for the mouse: a command, or the argument of the last one."""
        state = self.state
        command = int(state.aux_pending_command)
        state.aux_pending_command = 0
        if command == AUX_SET_RESOLUTION:
            state.aux_resolution = byte & 0x03
            self.aux_send(ACK)
        elif command == AUX_SET_SAMPLE_RATE:
            state.aux_sample_rate = byte
            self.aux_send(ACK)
        elif byte in (AUX_SET_RESOLUTION, AUX_SET_SAMPLE_RATE):
            state.aux_pending_command = byte
            self.aux_send(ACK)
        elif byte in AUX_ACKED:
            self._aux_setting(byte)
            self.aux_send(ACK)
        elif byte == AUX_STATUS_REQUEST:
            status = (
                (AUX_STATUS_REMOTE if state.aux_remote_mode else 0)
                | (AUX_STATUS_ENABLED if state.aux_reporting else 0)
                | (AUX_STATUS_SCALING_2_1 if state.aux_scaling_2_1 else 0)
            )
            self.aux_send(ACK, status, int(state.aux_resolution), int(state.aux_sample_rate))
        elif byte == AUX_READ_DATA:
            self.aux_send(ACK, *AUX_EMPTY_PACKET)
        elif byte == AUX_GET_ID:
            self.aux_send(ACK, AUX_ID)
        elif byte == AUX_RESEND:
            self.aux_send(int(state.aux_last_sent))
        elif byte == AUX_RESET:
            self.aux_power_on()
            self.aux_send(ACK, SELF_TEST_OK, AUX_ID)
        else:
            self.aux_send(RESEND)

    def _aux_setting(self, command: int) -> None:
        state = self.state
        if command in (AUX_SET_STREAM_MODE, AUX_SET_REMOTE_MODE):
            state.aux_remote_mode = 1 if command == AUX_SET_REMOTE_MODE else 0
        elif command in (AUX_SET_SCALING_1_1, AUX_SET_SCALING_2_1):
            state.aux_scaling_2_1 = 1 if command == AUX_SET_SCALING_2_1 else 0
        elif command in (AUX_ENABLE, AUX_DISABLE):
            state.aux_reporting = 1 if command == AUX_ENABLE else 0
        elif command == AUX_DEFAULTS:
            self.aux_defaults()
        # AUX_RESET_WRAP_MODE: wrap mode is not modelled, so there is nothing to leave.

    def aux_power_on(self) -> None:
        state = self.state
        state.aux_queue.clear()
        state.aux_pending_command = 0
        state.aux_remote_mode = 0
        state.aux_last_sent = 0
        self.aux_defaults()

    # -- the whole device ---------------------------------------------------------------
    def power_on(self) -> None:
        state = self.state
        state.status = POWER_ON_STATUS
        state.output_buffer = 0
        for address in range(RAM_SIZE):
            state.ram[address] = 0
        state.ram[0] = POWER_ON_COMMAND_BYTE
        state.output_port = POWER_ON_OUTPUT_PORT
        state.pending_command = 0
        state.controller_queue.clear()
        state.port92 = 0
        self.kbd_power_on()
        self.aux_power_on()
        self.update_a20()
        self.update_irqs()


def _low_byte_read(value: int, size: int) -> int:
    """A wider read of a 1-port register: the register's byte, then all ones (nothing else answers here)."""
    return ((1 << (8 * size)) - 1) & ~ALL_ONES | value


class I8042Ring3(I8042Core):
    """Ring-3 half: creates the three port ranges, does every access, turns reset requests into VINF_EM_RESET."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: I8042State, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        state.data_handle = hlp.ioport_create_and_map(
            DATA_PORT, 1, description="i8042 data", out=self.data_out, in_=self.data_in
        )
        state.command_handle = hlp.ioport_create_and_map(
            COMMAND_PORT, 1, description="i8042 status/command", out=self.command_out, in_=self.status_in
        )
        state.port92_handle = hlp.ioport_create_and_map(
            SYSTEM_CONTROL_PORT, 1, description="port 92 (fast A20 and reset)", out=self.port92_out, in_=self.port92_in
        )
        self.power_on()

    def reset(self) -> None:
        self.power_on()

    def data_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, _low_byte_read(self.read_data(), size)

    def status_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, _low_byte_read(self.read_status(), size)

    def port92_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, _low_byte_read(self.read_port92(), size)

    def data_out(self, offset: int, value: int, size: int) -> int:
        """VINF_EM_RESET when the byte writes the output port with the reset line low."""
        return VINF_EM_RESET if self.write_data(value & ALL_ONES) else VINF_SUCCESS

    def command_out(self, offset: int, value: int, size: int) -> int:
        """VINF_EM_RESET for a command that pulses the reset line."""
        return VINF_EM_RESET if self.write_command(value & ALL_ONES) else VINF_SUCCESS

    def port92_out(self, offset: int, value: int, size: int) -> int:
        """VINF_EM_RESET when bit 0 is set (the A20 bit is taken first)."""
        return VINF_EM_RESET if self.write_port92(value & ALL_ONES) else VINF_SUCCESS


class I8042Ring0(I8042Core):
    """Ring-0 half: every read and command; a write that resets the machine goes to ring-3."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: I8042State, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.ioport_set_up_context(state.data_handle, out=self.data_out, in_=self.data_in)
        hlp.ioport_set_up_context(state.command_handle, out=self.command_out, in_=self.status_in)
        hlp.ioport_set_up_context(state.port92_handle, out=self.port92_out, in_=self.port92_in)

    def data_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, _low_byte_read(self.read_data(), size)

    def status_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, _low_byte_read(self.read_status(), size)

    def port92_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, _low_byte_read(self.read_port92(), size)

    def data_out(self, offset: int, value: int, size: int) -> int:
        """VINF_IOM_R3_IOPORT_WRITE for an output port write with the reset line low."""
        value &= ALL_ONES
        if self.state.pending_command == CCMD_WRITE_OUTPUT_PORT and not value & OUT_RESET:
            return VINF_IOM_R3_IOPORT_WRITE
        self.write_data(value)
        return VINF_SUCCESS

    def command_out(self, offset: int, value: int, size: int) -> int:
        """VINF_IOM_R3_IOPORT_WRITE for a command that pulses the reset line."""
        value &= ALL_ONES
        if resets_machine(value):
            return VINF_IOM_R3_IOPORT_WRITE
        self.write_command(value)
        return VINF_SUCCESS

    def port92_out(self, offset: int, value: int, size: int) -> int:
        """VINF_IOM_R3_IOPORT_WRITE when bit 0 (reset) is set."""
        value &= ALL_ONES
        if value & PORT92_RESET:
            return VINF_IOM_R3_IOPORT_WRITE
        self.write_port92(value)
        return VINF_SUCCESS


REGISTRATION = DeviceRegistration(
    name="i8042",
    description="8042 keyboard controller with a PS/2 keyboard and mouse (ports 0x60, 0x64) and port 0x92",
    device_class=PDM_DEVREG_CLASS_INPUT,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=I8042State,
    ring3=I8042Ring3,
    ring0=I8042Ring0,
)
