"""A 16550A UART (the PC serial port), split between ring-0 and ring-3 like VirtualBox's DevSerial.

Eight I/O ports at IOBase.  Both halves run the same register logic (:class:`UartCore`) on one
:class:`SerialState` in shared memory.  Only ring-3 has the character driver on LUN#0: it hands
each transmitted byte to the driver, moves waiting input into the receive FIFO and records in the
shared state whether more input is waiting.  Ring-0 does the pure register work itself and defers
to ring-3 whatever needs the driver or changes the line parameters.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_SERIAL,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    CharDriver,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import (
    VERR_IOM_IOPORT_UNUSED,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_SUCCESS,
)

# --- Registers: offsets from IOBase.  LCR.DLAB turns offsets 0 and 1 into the divisor latch.
RBR = 0  # receive buffer (read, DLAB=0)
THR = 0  # transmit holding register (write, DLAB=0)
DLL = 0  # divisor latch, low byte (DLAB=1)
IER = 1  # interrupt enable (DLAB=0)
DLM = 1  # divisor latch, high byte (DLAB=1)
IIR = 2  # interrupt identification (read)
FCR = 2  # FIFO control (write)
LCR = 3  # line control
MCR = 4  # modem control
LSR = 5  # line status
MSR = 6  # modem status
SCR = 7  # scratch: a byte the guest may keep here, nothing else
PORT_COUNT = 8

# IER: which conditions may raise the interrupt.
IER_RDA = 0x01  # received data available
IER_THRE = 0x02  # transmit holding register empty
IER_RLS = 0x04  # receiver line status (an error in LSR)
IER_MS = 0x08  # modem status (a delta bit in MSR)
IER_MASK = 0x0F  # the upper nibble reads as zero

# IIR: the highest-priority pending interrupt, in bits 0-3.
IIR_NONE = 0x01  # bit 0 set means nothing is pending
IIR_RLS = 0x06  # receiver line status: highest priority
IIR_RDA = 0x04  # received data available (FIFO at or above its trigger level)
IIR_TIMEOUT = 0x0C  # character timeout: data below the trigger level
IIR_THRE = 0x02  # transmit holding register empty
IIR_MS = 0x00  # modem status: lowest priority
IIR_FIFOS_ENABLED = 0xC0  # both bits set while FCR_ENABLE is on

# FCR: write-only; the two clear bits act once and are not stored.
FCR_ENABLE = 0x01  # turn the 16-byte FIFOs on; other bits count only while this is set
FCR_CLEAR_RX = 0x02  # empty the receive FIFO
FCR_CLEAR_TX = 0x04  # empty the transmit FIFO
FCR_TRIGGER = 0xC0  # receive trigger level, an index into RX_TRIGGER_LEVELS
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER_LEVELS = (1, 4, 8, 14)

# LCR: only DLAB matters to the model; the line format bits are stored as written.
LCR_DLAB = 0x80  # divisor latch access bit

# MCR: the modem outputs, and loopback.
MCR_DTR = 0x01  # data terminal ready
MCR_RTS = 0x02  # request to send
MCR_OUT1 = 0x04  # user output 1
MCR_OUT2 = 0x08  # user output 2 (gates the IRQ on a real PC; not modelled)
MCR_LOOP = 0x10  # loopback: the transmitter feeds the receiver, outputs feed MSR
MCR_MASK = 0x1F  # the upper bits read as zero

# LSR: read-only status.
LSR_DR = 0x01  # data ready: a received byte is waiting in RBR / the receive FIFO
LSR_OE = 0x02  # overrun error: a byte arrived with no room for it
LSR_PE = 0x04  # parity error
LSR_FE = 0x08  # framing error
LSR_BI = 0x10  # break interrupt
LSR_THRE = 0x20  # THR (or the transmit FIFO) can take another byte
LSR_TEMT = 0x40  # transmitter idle: THR and shift register both empty
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI  # cleared by reading LSR

# MSR: the modem inputs in the upper nibble, "changed since last read" in the lower.
MSR_DCTS = 0x01  # CTS changed
MSR_DDSR = 0x02  # DSR changed
MSR_TERI = 0x04  # RI went from on to off (trailing edge only)
MSR_DDCD = 0x08  # DCD changed
MSR_CTS = 0x10  # clear to send
MSR_DSR = 0x20  # data set ready
MSR_RI = 0x40  # ring indicator
MSR_DCD = 0x80  # data carrier detect
MSR_DELTAS = 0x0F  # cleared by reading MSR
# CharDriver cannot report status lines, so outside loopback the port sees a ready peer.
MSR_LINE_IDLE = MSR_DCD | MSR_DSR | MSR_CTS

FIFO_SIZE = 16
DEFAULT_DIVISOR = 12  # 115200 / 12 = 9600 baud, the usual power-on setting


class Fifo(ctypes.Structure):
    """A 16-byte ring buffer inside the shared state.  Callers check ``count`` before a push."""

    data: ctypes.Array[ctypes.c_uint8]
    head: int
    count: int
    _fields_ = [
        ("data", ctypes.c_uint8 * FIFO_SIZE),
        ("head", ctypes.c_uint8),  # index of the oldest byte
        ("count", ctypes.c_uint8),
    ]

    def push(self, byte: int) -> None:
        self.data[(self.head + self.count) % FIFO_SIZE] = byte
        self.count += 1

    def pop(self) -> int:
        byte = int(self.data[self.head])
        self.head = (self.head + 1) % FIFO_SIZE
        self.count -= 1
        return byte

    def clear(self) -> None:
        self.head = 0
        self.count = 0


class SerialState(ctypes.Structure):
    """What the two halves share: the register file, the FIFOs and the interrupt line."""

    _fields_ = [
        ("io_handle", ctypes.c_uint16),  # the I/O port region ring-3 created
        ("ier", ctypes.c_uint8),
        ("fcr", ctypes.c_uint8),  # FCR_ENABLE and FCR_TRIGGER as last written
        ("lcr", ctypes.c_uint8),
        ("mcr", ctypes.c_uint8),
        ("lsr", ctypes.c_uint8),
        ("msr", ctypes.c_uint8),
        ("scr", ctypes.c_uint8),
        ("dll", ctypes.c_uint8),
        ("dlm", ctypes.c_uint8),
        ("thre_pending", ctypes.c_uint8),  # THRE interrupt latched, until IIR reports it or THR is written
        ("driver_has_input", ctypes.c_uint8),  # ring-3's last look: the driver holds bytes the FIFO has not
        ("irq_level", ctypes.c_uint8),  # the interrupt line: 1 while IIR shows a pending interrupt
        ("rx", Fifo),
        ("tx", Fifo),
    ]


class UartCore:
    """The 16550A register logic both halves run on the shared state (VirtualBox's UartCore).

    It never calls the driver.  A byte written to THR outside loopback waits in the transmit
    FIFO for the ring-3 half to hand on; bytes from the line come in through :meth:`receive`.
    """

    def __init__(self, state: SerialState, config: Mapping[str, Any]) -> None:
        self.state = state
        self.has_fifo: bool = config["UartType"] == "16550A"
        self.yield_on_lsr_read: bool = config["YieldOnLSRRead"]

    def loopback(self) -> bool:
        return bool(self.state.mcr & MCR_LOOP)

    def data_ready(self) -> bool:
        """LSR.DR: a byte is in the receive FIFO, or the driver holds one ring-3 has yet to fetch."""
        return self.state.rx.count > 0 or bool(self.state.driver_has_input)

    def rx_capacity(self) -> int:
        """With FIFOs off the receiver holds a single byte, as a 16450's RBR does."""
        return FIFO_SIZE if self.state.fcr & FCR_ENABLE else 1

    def reset_registers(self) -> None:
        """Put every register at its power-on value.  The I/O port handle is not a register."""
        state = self.state
        state.ier = 0
        state.fcr = 0
        state.lcr = 0
        state.mcr = 0
        state.scr = 0
        state.dll = DEFAULT_DIVISOR & 0xFF
        state.dlm = DEFAULT_DIVISOR >> 8
        state.lsr = LSR_THRE | LSR_TEMT
        state.msr = MSR_LINE_IDLE
        state.rx.clear()
        state.tx.clear()
        state.thre_pending = 0
        state.driver_has_input = 0
        self._update_status()

    def write_register(self, reg: int, value: int) -> None:
        state = self.state
        divisor_latch = state.lcr & LCR_DLAB
        if reg == THR:
            if divisor_latch:
                state.dll = value
            else:
                self._transmit(value)
        elif reg == IER:
            if divisor_latch:
                state.dlm = value
            else:
                self._write_ier(value)
        elif reg == FCR:
            self._write_fcr(value)
        elif reg == LCR:
            state.lcr = value
        elif reg == MCR:
            state.mcr = value & MCR_MASK
            self._set_modem_inputs(self._modem_inputs())
        elif reg == SCR:
            state.scr = value
        # LSR and MSR are read-only: writing them does nothing.
        self._update_status()

    def read_register(self, reg: int) -> int:
        state = self.state
        divisor_latch = state.lcr & LCR_DLAB
        if reg == RBR:
            value = state.dll if divisor_latch else self._read_rbr()
        elif reg == IER:
            value = state.dlm if divisor_latch else state.ier
        elif reg == IIR:
            value = self._read_iir()
        elif reg == LCR:
            value = state.lcr
        elif reg == MCR:
            value = state.mcr
        elif reg == LSR:
            value = state.lsr
            state.lsr &= ~LSR_ERRORS
        elif reg == MSR:
            value = state.msr
            state.msr &= ~MSR_DELTAS
        else:
            value = state.scr
        self._update_status()
        return int(value)

    def receive(self, byte: int) -> None:
        """A byte arrives at the receiver, from the line or from the loop."""
        rx = self.state.rx
        if rx.count < self.rx_capacity():
            rx.push(byte)
        else:
            # No room: OE.  Without FIFOs the new byte overwrites RBR; with them the FIFO
            # keeps its bytes and the new one is lost in the shift register.
            self.state.lsr |= LSR_OE
            if not self.state.fcr & FCR_ENABLE:
                rx.clear()
                rx.push(byte)
        self._update_status()

    def transmitter_emptied(self) -> None:
        """The line took every byte from the transmit FIFO: THR is free, raise THRE."""
        self.state.lsr |= LSR_THRE | LSR_TEMT
        self.state.thre_pending = 1
        self._update_status()

    def interrupt_source(self) -> int:
        """IIR bits 0-3: the highest-priority interrupt that is both pending and enabled."""
        state = self.state
        if state.ier & IER_RLS and state.lsr & LSR_ERRORS:
            return IIR_RLS
        if state.ier & IER_RDA and self.data_ready():
            # No timer exists, so the character timeout fires as soon as data sits below
            # the trigger level: the guest is told at once, with the timeout code.
            trigger = RX_TRIGGER_LEVELS[state.fcr >> FCR_TRIGGER_SHIFT]
            if state.fcr & FCR_ENABLE and state.rx.count < trigger:
                return IIR_TIMEOUT
            return IIR_RDA
        if state.ier & IER_THRE and state.thre_pending:
            return IIR_THRE
        if state.ier & IER_MS and state.msr & MSR_DELTAS:
            return IIR_MS
        return IIR_NONE

    def _update_status(self) -> None:
        """Recompute LSR.DR and the interrupt line from the rest of the state."""
        state = self.state
        if self.data_ready():
            state.lsr |= LSR_DR
        else:
            state.lsr &= ~LSR_DR
        state.irq_level = 0 if self.interrupt_source() == IIR_NONE else 1

    def _transmit(self, byte: int) -> None:
        state = self.state
        state.thre_pending = 0
        state.tx.push(byte)
        state.lsr &= ~(LSR_THRE | LSR_TEMT)
        if self.loopback():
            self.receive(state.tx.pop())
            self.transmitter_emptied()

    def _write_ier(self, value: int) -> None:
        state = self.state
        newly_enabled = value & ~state.ier
        state.ier = value & IER_MASK
        # Enabling the THRE interrupt while THR is already empty raises it at once;
        # drivers rely on this to start transmitting.
        if newly_enabled & IER_THRE and state.lsr & LSR_THRE:
            state.thre_pending = 1

    def _write_fcr(self, value: int) -> None:
        if not self.has_fifo:
            return  # a 16450 has no FCR
        state = self.state
        if (value ^ state.fcr) & FCR_ENABLE:
            # Switching the FIFOs on or off empties both.
            state.rx.clear()
            state.tx.clear()
        if not value & FCR_ENABLE:
            state.fcr = 0
            return
        if value & FCR_CLEAR_RX:
            state.rx.clear()
        if value & FCR_CLEAR_TX:
            state.tx.clear()
        state.fcr = value & (FCR_ENABLE | FCR_TRIGGER)

    def _read_rbr(self) -> int:
        rx = self.state.rx
        return rx.pop() if rx.count else 0

    def _read_iir(self) -> int:
        state = self.state
        source = self.interrupt_source()
        if source == IIR_THRE:
            state.thre_pending = 0  # reading IIR is how the guest acknowledges THRE
        fifo_bits = IIR_FIFOS_ENABLED if state.fcr & FCR_ENABLE else 0
        return source | fifo_bits

    def _modem_inputs(self) -> int:
        """The MSR input lines: MCR's outputs turned around in loopback, else the line's."""
        mcr = self.state.mcr
        if not mcr & MCR_LOOP:
            return MSR_LINE_IDLE
        inputs = 0
        if mcr & MCR_RTS:
            inputs |= MSR_CTS
        if mcr & MCR_DTR:
            inputs |= MSR_DSR
        if mcr & MCR_OUT1:
            inputs |= MSR_RI
        if mcr & MCR_OUT2:
            inputs |= MSR_DCD
        return inputs

    def _set_modem_inputs(self, inputs: int) -> None:
        state = self.state
        old = state.msr
        changed = old ^ inputs
        deltas = old & MSR_DELTAS
        if changed & MSR_CTS:
            deltas |= MSR_DCTS
        if changed & MSR_DSR:
            deltas |= MSR_DDSR
        if old & MSR_RI and not inputs & MSR_RI:
            deltas |= MSR_TERI
        if changed & MSR_DCD:
            deltas |= MSR_DDCD
        state.msr = inputs | deltas


class SerialRing3(UartCore):
    """The ring-3 half: owns the I/O ports and the character driver, and can do every access.

    There is no driver-to-device notification, so ring-3 stands in for one
    (pfnDataAvailRdrNotify): it moves waiting input into the receive FIFO before every read,
    so the guest sees what has arrived, and after every write, which may end loopback or
    enlarge the FIFO.  ``driver_has_input`` then records whether the driver still holds more.
    """

    def __init__(self, hlp: Ring3DeviceHelpers, state: SerialState, config: Mapping[str, Any]) -> None:
        super().__init__(state, config)
        state.io_handle = hlp.ioport_create_and_map(
            config["IOBase"], PORT_COUNT, description="SERIAL", out=self.io_out, in_=self.io_in, posted=True
        )  # posted: a transmitted byte needs no answer; later accesses wait for it (ordering per device)
        # None is VirtualBox's "no unit": the port works and transmitted bytes are dropped.
        self.driver: CharDriver | None = hlp.driver_attach(0, "UART")
        self.reset()

    def reset(self) -> None:
        self.reset_registers()
        # Input the driver already holds shows as DR from the start; ring-0 then sends
        # the RBR read here, where the byte is fetched.
        self.state.driver_has_input = 1 if self.driver is not None and self.driver.pending_input() else 0
        self._update_status()

    def io_out(self, offset: int, value: int, size: int) -> int:
        """Write register *offset*.  Always VINF_SUCCESS; accesses wider than a byte are ignored."""
        if size != 1:
            return VINF_SUCCESS
        self.write_register(offset, value)
        self._hand_transmitted_bytes_to_driver()
        self._sync_with_driver()
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        """Read register *offset*: (VINF_SUCCESS, value); wider accesses give VERR_IOM_IOPORT_UNUSED."""
        if size != 1:
            return VERR_IOM_IOPORT_UNUSED, 0
        if offset == LSR and self.yield_on_lsr_read and not self.data_ready():
            # A guest polling LSR for input: give the driver's threads a turn (RTThreadYield).
            time.sleep(0)
        self._sync_with_driver()
        return VINF_SUCCESS, self.read_register(offset)

    def _sync_with_driver(self) -> None:
        state = self.state
        driver = self.driver
        if driver is None or self.loopback():
            state.driver_has_input = 0  # in loopback the receiver is cut off from the line
        else:
            room = self.rx_capacity() - state.rx.count
            if room > 0 and driver.pending_input() > 0:
                for byte in driver.read(room):
                    self.receive(byte)
            state.driver_has_input = 1 if driver.pending_input() > 0 else 0
        self._update_status()

    def _hand_transmitted_bytes_to_driver(self) -> None:
        """Transmission is instant: whatever THR took goes to the driver now."""
        tx = self.state.tx
        if tx.count == 0:
            return
        while tx.count:
            byte = tx.pop()
            if self.driver is not None:
                self.driver.write(bytes([byte]))
        self.transmitter_emptied()


class SerialRing0(UartCore):
    """The ring-0 half: the same register logic, minus anything that needs the driver.

    An access that needs ring-3 is refused before it changes any state, so ring-3 redoes it
    from the same starting point.
    """

    def __init__(self, hlp: Ring0DeviceHelpers, state: SerialState, config: Mapping[str, Any]) -> None:
        super().__init__(state, config)
        hlp.ioport_set_up_context(state.io_handle, out=self.io_out, in_=self.io_in)

    def io_out(self, offset: int, value: int, size: int) -> int:
        """Write register *offset*, or return VINF_IOM_R3_IOPORT_WRITE to have ring-3 do it.

        Deferred: THR outside loopback (the driver must get the byte), FCR, an LCR change
        beyond DLAB, a DLL/DLM/MCR write that changes the value.
        """
        if size != 1:
            return VINF_SUCCESS
        if self._write_needs_ring3(offset, value):
            return VINF_IOM_R3_IOPORT_WRITE
        self.write_register(offset, value)
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        """Read register *offset*, or return VINF_IOM_R3_IOPORT_READ to have ring-3 do it.

        Deferred: RBR with the receive FIFO empty while the driver has input, and with
        YieldOnLSRRead an LSR read that finds no data.
        """
        if size != 1:
            return VERR_IOM_IOPORT_UNUSED, 0
        if self._read_needs_ring3(offset):
            return VINF_IOM_R3_IOPORT_READ, 0
        return VINF_SUCCESS, self.read_register(offset)

    def _write_needs_ring3(self, reg: int, value: int) -> bool:
        state = self.state
        divisor_latch = state.lcr & LCR_DLAB
        if reg == THR:
            return value != state.dll if divisor_latch else not self.loopback()
        if reg == IER:
            return bool(divisor_latch) and value != state.dlm
        if reg == FCR:
            return True
        if reg == LCR:
            return bool((value ^ state.lcr) & ~LCR_DLAB)
        if reg == MCR:
            return bool(value & MCR_MASK != state.mcr)
        return False

    def _read_needs_ring3(self, reg: int) -> bool:
        state = self.state
        if reg == RBR and not state.lcr & LCR_DLAB:
            return state.rx.count == 0 and bool(state.driver_has_input)
        if reg == LSR:
            return self.yield_on_lsr_read and not self.data_ready()
        return False


_DEFAULT_IO_BASES = (0x3F8, 0x2F8, 0x3E8, 0x2E8)
_DEFAULT_IRQS = (4, 3, 4, 3)


def _default_io_base(instance: int) -> int:
    return _DEFAULT_IO_BASES[instance]


def _default_irq(instance: int) -> int:
    return _DEFAULT_IRQS[instance]


REGISTRATION = DeviceRegistration(
    name="serial",
    description="16550A UART (serial port)",
    device_class=PDM_DEVREG_CLASS_SERIAL,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=len(_DEFAULT_IO_BASES),
    shared_state=SerialState,
    ring3=SerialRing3,
    ring0=SerialRing0,
    config_keys=(
        ConfigKey("IOBase", int, _default_io_base, "first of the 8 I/O ports", minimum=0, maximum=0xFFF8),
        ConfigKey("IRQ", int, _default_irq, "ISA interrupt line", minimum=0, maximum=15),
        ConfigKey("UartType", str, "16550A", "UART model; a 16450 has no FIFOs", choices=("16450", "16550A")),
        ConfigKey("YieldOnLSRRead", bool, False, "an LSR read that finds no data goes to ring-3 and yields"),
    ),
)
