"""i8254: the PC's 8254 Programmable Interval Timer (ports 0x40-0x43) and system control port B (0x61).

Three 16-bit down-counters run from one 1.193182 MHz clock.  Each is programmed through the
control register (0x43) with a mode (0-5), an access mode (low byte, high byte, or low then
high byte, each direction with its own byte flip-flop) and binary or BCD counting, then given
an initial count through its data port (0x40 + n).  The control register also takes the
counter latch command (freeze one counter's count for reading) and the 8254's read-back
command (latch the count and/or a status byte of several counters at once).

On a PC channel 0 drives IRQ0, channel 1 once timed DRAM refresh, and channel 2 feeds the
speaker; the gates of channels 0 and 1 are tied high, channel 2's gate is bit 0 of port 0x61.

The counters are not ticked.  Each running counter keeps the clock tick (of the VM's virtual
clock, 1,193,182 per second since time 0) at which its counting sequence started, and every
read derives the count and OUT from the ticks elapsed since, per the mode's rules.  A new
count written to a counting mode 2 or 3 counter waits, as on the chip, for the end of the
current period (mode 2) or half-period (mode 3); that switch is applied when the counter is
next looked at.

Time-dependent reads (a trace cannot match them exactly):

* a counter's count, read live or latched (by the latch command or read-back);
* OUT in a status byte, once a count is running (it is fixed right after a control word);
* port 0x61 bit 4 (refresh toggle, flips every 15.085 us) and bit 5 (channel 2's OUT).

Status bytes' other bits (null count, access mode, mode, BCD) and the byte order of the flip-
flops are deterministic.  Null count is set by a control word and by a count write, and clears
when the count reaches the counting element: at once for modes 0 and 4 and for the first count
of modes 2 and 3 (the chip takes one clock, 838 ns), at the end of the period for a later count
in modes 2 and 3, at the gate's trigger for modes 1 and 5.  (QEMU's 8254 never sets it.)

A control word resets the counter's control logic, as the 8254 datasheet says: both flip-flops
and any latched count or status.  The count register holds its last value; a counter that has
not been given a count since reads the count its counting element held when it stopped.

Port 0x61 reads back as QEMU's PC speaker returns it: gate 2, speaker data, refresh toggle and
OUT2 in bits 0, 1, 4 and 5, zeros elsewhere (parity and channel check are not modelled).

Wider port accesses are split into byte accesses, as the ISA bus does; bytes past the end of a
region read as all ones.

Split: both halves run every register (:class:`PitCore`).  No timer exists yet (no interrupt
controller wiring, so IRQ0 is not raised): reprogramming a counter arms nothing, so every
access, counter reads and port 0x61 (which firmware polls) included, is served in ring-0.
Ring-3 creates the ports and owns reset.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_PIT,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_SUCCESS

# --- Ports: offsets from IOBase.
COUNTER0 = 0  # channel 0's count (IRQ0)
COUNTER1 = 1  # channel 1's count (DRAM refresh)
COUNTER2 = 2  # channel 2's count (speaker)
CONTROL = 3  # control word, write-only (QEMU reads it as 0)
PORT_COUNT = 4
CHANNEL_COUNT = 3
SPEAKER_PORT = 0x61  # system control port B

# --- Control word fields.
CW_SELECT_SHIFT = 6  # bits 6-7: the counter, or READ_BACK
SELECT_READ_BACK = 3
CW_ACCESS_SHIFT = 4  # bits 4-5: one of the ACCESS_* values
ACCESS_LATCH = 0  # not an access mode: the counter latch command
ACCESS_LOBYTE = 1  # read/write the least significant byte only
ACCESS_HIBYTE = 2  # read/write the most significant byte only
ACCESS_WORD = 3  # least significant byte, then most significant byte
CW_MODE_SHIFT = 1  # bits 1-3: the mode; 6 and 7 are aliases of 2 and 3
CW_MODE_MASK = 0x7
CW_BCD = 0x01  # count in four BCD decades instead of binary

# --- Read-back command (control word with SELECT_READ_BACK).
RB_NO_COUNT = 0x20  # clear: latch the count of each selected counter
RB_NO_STATUS = 0x10  # clear: latch the status of each selected counter
RB_SELECT_SHIFT = 1  # bits 1-3: counters 0, 1, 2

# --- Status byte, as read-back latches it.
STATUS_OUT = 0x80  # the OUT pin
STATUS_NULL_COUNT = 0x40  # the last count written has not reached the counting element yet
STATUS_ACCESS_SHIFT = 4  # bits 4-5: access mode, bits 1-3: mode, bit 0: BCD, as programmed

# --- Port 0x61.
PORTB_GATE2 = 0x01  # channel 2's gate
PORTB_SPEAKER_DATA = 0x02  # speaker enable, ANDed with OUT2 on the way to the speaker
PORTB_REFRESH = 0x10  # read-only: toggles with every DRAM refresh request
PORTB_OUT2 = 0x20  # read-only: channel 2's OUT
REFRESH_HALF_PERIOD_NS = 15_085  # the refresh toggle flips this often

PIT_FREQUENCY_HZ = 1_193_182
NS_PER_SECOND = 1_000_000_000
BINARY_MODULUS = 0x10000  # a binary count of 0 means 65536
BCD_MODULUS = 10_000  # a BCD count of 0 means 10000


def _ticks(ns: int) -> int:
    """The PIT clock ticks from virtual time 0 to *ns*."""
    return ns * PIT_FREQUENCY_HZ // NS_PER_SECOND


def _from_bcd(raw: int) -> int:
    return sum(((raw >> shift) & 0xF) * place for shift, place in ((0, 1), (4, 10), (8, 100), (12, 1000)))


def _to_bcd(value: int) -> int:
    return sum((value // place % 10) << shift for shift, place in ((0, 1), (4, 10), (8, 100), (12, 1000)))


def _counting_kind(mode: int) -> int:
    """The mode that describes the counting: 6 and 7 count as 2 and 3."""
    return mode - 4 if mode >= 6 else mode


class PitChannel(ctypes.Structure):
    """One counter.  A raw count is as the guest wrote it (BCD digits in BCD mode)."""

    _fields_ = [
        ("mode", ctypes.c_uint8),  # as programmed, 0-7
        ("access", ctypes.c_uint8),  # ACCESS_LOBYTE, _HIBYTE or _WORD
        ("bcd", ctypes.c_uint8),
        ("count_register", ctypes.c_uint16),  # CR: the raw count last written
        ("write_lsb", ctypes.c_uint8),  # word access: the low byte, waiting for the high one
        ("write_msb_next", ctypes.c_uint8),  # the write flip-flop
        ("read_msb_next", ctypes.c_uint8),  # the read flip-flop
        ("count_latched", ctypes.c_uint8),
        ("latched_count", ctypes.c_uint16),  # raw
        ("status_latched", ctypes.c_uint8),
        ("latched_status", ctypes.c_uint8),
        ("null_count", ctypes.c_uint8),
        ("count_written", ctypes.c_uint8),  # a count was written since the last control word
        ("loaded", ctypes.c_uint8),  # a counting sequence exists (count loaded or triggered)
        ("counting", ctypes.c_uint8),  # the sequence advances with the clock (else it is held)
        ("initial", ctypes.c_uint16),  # raw count the sequence started from
        ("base_tick", ctypes.c_uint64),  # the tick at which the sequence's elapsed ticks were 0
        ("held_elapsed", ctypes.c_uint64),  # elapsed ticks of a held sequence
        ("held_count", ctypes.c_uint16),  # raw count read while no sequence is loaded
        ("pending", ctypes.c_uint8),  # modes 2, 3: count_register takes over at pending_tick
        ("pending_tick", ctypes.c_uint64),
        ("pending_low_half", ctypes.c_uint8),  # mode 3: the new sequence starts in its low half
        ("gate", ctypes.c_uint8),
    ]


class PitState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("speaker_handle", ctypes.c_uint16),
        ("speaker_data", ctypes.c_uint8),  # port 0x61 bit 1 as last written
        ("channels", PitChannel * CHANNEL_COUNT),
    ]


class PitCore:
    """The registers, the same in both tiers.  *clock* is the VM's virtual clock in ns."""

    def __init__(self, state: PitState, clock: Callable[[], int]) -> None:
        self.state = state
        self.clock = clock

    # -- accesses as IOM hands them over ------------------------------------------------
    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        """Ports 0x40-0x43, byte by byte.  Always VINF_SUCCESS."""
        value = 0
        for index in range(size):
            port = offset + index
            byte = self.read_port(port) if port < PORT_COUNT else 0xFF
            value |= byte << (8 * index)
        return VINF_SUCCESS, value

    def io_out(self, offset: int, value: int, size: int) -> int:
        """Ports 0x40-0x43, byte by byte.  Always VINF_SUCCESS."""
        for index in range(min(size, PORT_COUNT - offset)):
            self.write_port(offset + index, value >> (8 * index) & 0xFF)
        return VINF_SUCCESS

    def speaker_in(self, offset: int, size: int) -> tuple[int, int]:
        """Port 0x61; a wider read gets all ones above the first byte.  Always VINF_SUCCESS."""
        high_bytes = ((1 << (8 * size)) - 1) & ~0xFF
        return VINF_SUCCESS, high_bytes | self.read_port_b()

    def speaker_out(self, offset: int, value: int, size: int) -> int:
        """Port 0x61: only the first byte counts.  Always VINF_SUCCESS."""
        self.write_port_b(value & 0xFF)
        return VINF_SUCCESS

    # -- ports ---------------------------------------------------------------------------
    def read_port(self, port: int) -> int:
        if port == CONTROL:
            return 0
        return self.read_counter(port)

    def write_port(self, port: int, value: int) -> None:
        if port == CONTROL:
            self.write_control(value)
        else:
            self.write_counter(port, value)

    def read_port_b(self) -> int:
        state = self.state
        channel2 = state.channels[2]
        now = self._settle(channel2)
        value: int = channel2.gate * PORTB_GATE2 | state.speaker_data * PORTB_SPEAKER_DATA
        if self.clock() // REFRESH_HALF_PERIOD_NS & 1:
            value |= PORTB_REFRESH
        if self.out(2, now):
            value |= PORTB_OUT2
        return value

    def write_port_b(self, value: int) -> None:
        self.state.speaker_data = 1 if value & PORTB_SPEAKER_DATA else 0
        self.set_gate(2, bool(value & PORTB_GATE2))

    # -- counters ------------------------------------------------------------------------
    def read_counter(self, index: int) -> int:
        """The next byte of a latched status, a latched count or the live count."""
        channel = self.state.channels[index]
        now = self._settle(channel)
        if channel.status_latched:
            channel.status_latched = 0
            return int(channel.latched_status)
        count = int(channel.latched_count) if channel.count_latched else self.count(index, now)
        if channel.access == ACCESS_LOBYTE:
            byte = count & 0xFF
        elif channel.access == ACCESS_HIBYTE:
            byte = count >> 8
        elif not channel.read_msb_next:
            channel.read_msb_next = 1
            return count & 0xFF  # a latch holds until its second byte is read
        else:
            channel.read_msb_next = 0
            byte = count >> 8
        channel.count_latched = 0
        return byte

    def write_counter(self, index: int, value: int) -> None:
        """A byte of a new count; the count is complete after one byte, or two for word access."""
        channel = self.state.channels[index]
        now = self._settle(channel)
        if channel.access == ACCESS_LOBYTE:
            channel.count_register = value
        elif channel.access == ACCESS_HIBYTE:
            channel.count_register = value << 8
        elif not channel.write_msb_next:
            channel.write_lsb = value
            channel.write_msb_next = 1
            if _counting_kind(channel.mode) == 0:
                # Mode 0: the first byte stops the counter and OUT drops at once.
                self._unload(channel, index, now)
            return
        else:
            channel.count_register = value << 8 | channel.write_lsb
            channel.write_msb_next = 0
        self._count_written(channel, now)

    def write_control(self, value: int) -> None:
        select = value >> CW_SELECT_SHIFT
        if select == SELECT_READ_BACK:
            self.read_back(value)
            return
        channel = self.state.channels[select]
        now = self._settle(channel)
        access = value >> CW_ACCESS_SHIFT & 3
        if access == ACCESS_LATCH:
            self._latch_count(channel, select, now)
            return
        self._unload(channel, select, now)
        channel.access = access
        channel.mode = value >> CW_MODE_SHIFT & CW_MODE_MASK
        channel.bcd = value & CW_BCD
        channel.write_msb_next = 0
        channel.read_msb_next = 0
        channel.count_latched = 0
        channel.status_latched = 0
        channel.null_count = 1
        channel.count_written = 0

    def read_back(self, value: int) -> None:
        """Latch the count and/or status of every selected counter; a latch already held stays."""
        for index in range(CHANNEL_COUNT):
            if not value >> (RB_SELECT_SHIFT + index) & 1:
                continue
            channel = self.state.channels[index]
            now = self._settle(channel)
            if not value & RB_NO_COUNT:
                self._latch_count(channel, index, now)
            if not value & RB_NO_STATUS and not channel.status_latched:
                channel.latched_status = self.status(index, now)
                channel.status_latched = 1

    def set_gate(self, index: int, high: bool) -> None:
        """Drive a counter's GATE input (only channel 2's is wired to anything on a PC)."""
        channel = self.state.channels[index]
        now = self._settle(channel)
        level = 1 if high else 0
        if level == channel.gate:
            return
        channel.gate = level
        kind = _counting_kind(channel.mode)
        if level:
            if kind in (0, 4):
                if channel.loaded:
                    channel.base_tick = now - channel.held_elapsed
                    channel.counting = 1
            elif channel.count_written:
                # A rising edge triggers modes 1 and 5 and restarts modes 2 and 3.
                self._load(channel, now)
        elif kind != 1 and kind != 5:
            self._hold(channel, now)
            channel.pending = 0  # modes 2, 3: the rising edge will load the count register

    # -- what a counter shows ------------------------------------------------------------
    def count(self, index: int, now: int) -> int:
        """The raw count in the counting element at tick *now*."""
        channel = self.state.channels[index]
        if not channel.loaded:
            return int(channel.held_count)
        modulus = BCD_MODULUS if channel.bcd else BINARY_MODULUS
        initial = self._effective(int(channel.initial), channel.bcd)
        elapsed = self._elapsed(channel, now)
        kind = _counting_kind(channel.mode)
        if kind == 2:
            value = initial - elapsed % initial  # initial .. 1, then reloaded
        elif kind == 3:
            # Down by two each clock through a high half of ceil(N/2) clocks and a low half
            # of floor(N/2); an odd count starts each half at N - 1.
            phase = elapsed % initial
            high_half = (initial + 1) // 2
            value = (initial & ~1) - 2 * (phase if phase < high_half else phase - high_half)
        else:
            value = (initial - elapsed) % modulus  # wraps on through the terminal count
        return _to_bcd(value % BCD_MODULUS) if channel.bcd else value % BINARY_MODULUS

    def out(self, index: int, now: int) -> bool:
        """The OUT pin at tick *now*."""
        channel = self.state.channels[index]
        kind = _counting_kind(channel.mode)
        if not channel.loaded:
            return kind != 0  # a control word sets OUT low for mode 0, high for the others
        if kind in (2, 3) and not channel.gate:
            return True
        initial = self._effective(int(channel.initial), channel.bcd)
        elapsed = self._elapsed(channel, now)
        if kind in (0, 1):
            return elapsed >= initial  # goes high at the terminal count and stays there
        if kind == 2:
            return elapsed % initial != initial - 1  # low for the clock the count is 1
        if kind == 3:
            return elapsed % initial < (initial + 1) // 2
        return elapsed != initial  # modes 4 and 5: one low clock at the terminal count

    def status(self, index: int, now: int) -> int:
        channel = self.state.channels[index]
        value = channel.access << STATUS_ACCESS_SHIFT | channel.mode << CW_MODE_SHIFT | channel.bcd
        if self.out(index, now):
            value |= STATUS_OUT
        if channel.null_count:
            value |= STATUS_NULL_COUNT
        return int(value)

    # -- the counting element ------------------------------------------------------------
    @staticmethod
    def _effective(raw: int, bcd: int) -> int:
        """The number of clocks a raw count stands for: 0 means the full modulus."""
        if bcd:
            return _from_bcd(raw) % BCD_MODULUS or BCD_MODULUS
        return raw or BINARY_MODULUS

    @staticmethod
    def _elapsed(channel: PitChannel, now: int) -> int:
        return now - int(channel.base_tick) if channel.counting else int(channel.held_elapsed)

    def _settle(self, channel: PitChannel) -> int:
        """The tick now, after applying a mode 2/3 count switch that has come due."""
        now = _ticks(self.clock())
        if channel.pending and now >= channel.pending_tick:
            channel.initial = channel.count_register
            start = 0
            if channel.pending_low_half:
                start = (self._effective(int(channel.initial), channel.bcd) + 1) // 2
            channel.base_tick = channel.pending_tick - start
            channel.pending = 0
            channel.null_count = 0
        return now

    def _load(self, channel: PitChannel, now: int) -> None:
        """Start a counting sequence from the count register; it counts if the gate lets it."""
        channel.initial = channel.count_register
        channel.loaded = 1
        channel.null_count = 0
        channel.pending = 0
        if channel.gate or _counting_kind(channel.mode) in (1, 5):
            channel.base_tick = now
            channel.counting = 1
        else:
            channel.held_elapsed = 0
            channel.counting = 0

    def _hold(self, channel: PitChannel, now: int) -> None:
        """Stop the clock of the sequence, keeping how far it got."""
        if channel.counting:
            channel.held_elapsed = now - channel.base_tick
            channel.counting = 0

    def _unload(self, channel: PitChannel, index: int, now: int) -> None:
        """End the sequence; the counting element keeps the count it reached."""
        channel.held_count = self.count(index, now)
        self._hold(channel, now)
        channel.loaded = 0
        channel.pending = 0

    def _latch_count(self, channel: PitChannel, index: int, now: int) -> None:
        if not channel.count_latched:
            channel.latched_count = self.count(index, now)
            channel.count_latched = 1

    def _count_written(self, channel: PitChannel, now: int) -> None:
        """A complete count is in the count register: load it when the mode says."""
        channel.null_count = 1
        channel.count_written = 1
        kind = _counting_kind(channel.mode)
        if kind in (0, 4):
            self._load(channel, now)  # on the next clock, gate or not
        elif kind in (2, 3):
            if channel.loaded and channel.counting:
                self._switch_at_period_end(channel, kind, now)
            elif channel.gate:
                self._load(channel, now)
            # else the gate's rising edge loads it
        # modes 1 and 5 load at the gate's next rising edge

    def _switch_at_period_end(self, channel: PitChannel, kind: int, now: int) -> None:
        """Modes 2 and 3 finish the current period (mode 3: half-period) before a new count."""
        initial = self._effective(int(channel.initial), channel.bcd)
        elapsed = now - int(channel.base_tick)
        period_start = int(channel.base_tick) + elapsed - elapsed % initial
        high_half = (initial + 1) // 2
        if kind == 3 and elapsed % initial < high_half:
            channel.pending_tick = period_start + high_half
            channel.pending_low_half = 1
        else:
            channel.pending_tick = period_start + initial
            channel.pending_low_half = 0
        channel.pending = 1


class PitRing3(PitCore):
    """Ring-3 half: creates and maps the ports and owns reset; serves accesses ring-0 hands over."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: PitState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns)
        state.io_handle = hlp.ioport_create_and_map(
            config["IOBase"], PORT_COUNT, description="i8254 PIT", out=self.io_out, in_=self.io_in
        )
        if config["SpeakerEnabled"]:
            state.speaker_handle = hlp.ioport_create_and_map(
                SPEAKER_PORT, 1, description="i8254 port B (speaker)", out=self.speaker_out, in_=self.speaker_in
            )
        self.reset()

    def reset(self) -> None:
        """Power-on as QEMU's PC has it: every counter in mode 3 with count 65536, gate 2 low.

        Counters 0 and 1 run at once (their gates are tied high); counter 2 waits for its gate.
        """
        state = self.state
        state.speaker_data = 0
        now = _ticks(self.clock())
        for index, channel in enumerate(state.channels):
            ctypes.memset(ctypes.addressof(channel), 0, ctypes.sizeof(channel))
            channel.mode = 3
            channel.access = ACCESS_WORD
            channel.gate = 0 if index == 2 else 1
            channel.count_written = 1
            self._load(channel, now)


class PitRing0(PitCore):
    """Ring-0 half: every access (nothing in the PIT needs ring-3 while no timer exists)."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: PitState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns)
        hlp.ioport_set_up_context(state.io_handle, out=self.io_out, in_=self.io_in)
        if config["SpeakerEnabled"]:
            hlp.ioport_set_up_context(state.speaker_handle, out=self.speaker_out, in_=self.speaker_in)


REGISTRATION = DeviceRegistration(
    name="i8254",
    description="Intel 8254 programmable interval timer and port 0x61 (no IRQ0 yet)",
    device_class=PDM_DEVREG_CLASS_PIT,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=PitState,
    ring3=PitRing3,
    ring0=PitRing0,
    config_keys=(
        ConfigKey("IOBase", int, 0x40, "the first of its 4 ports", minimum=0, maximum=0xFFFC),
        ConfigKey("SpeakerEnabled", bool, True, "also map system control port B at 0x61"),
    ),
)
