"""debugcon: QEMU's ISA debug console, a write-only port that prints what the guest writes.

Firmware (SeaBIOS, OVMF) and test kernels write their log one byte at a time to port
0xe9 (or 0x402).  The ring-0 half collects the bytes in a buffer in shared memory and
only goes to ring-3, where the character driver lives, when a line ends or the buffer is
full: one trip per line instead of one per byte.  A read returns the readback value
(0xe9), which guests use to detect the device.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_IOM_R3_IOPORT_WRITE, VINF_SUCCESS

BUFFER_SIZE = 256  # bytes ring-0 may hold before ring-3 must flush them
NEWLINE = 0x0A  # a line end makes ring-0 hand the line to ring-3


class DebugconState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("buffered", ctypes.c_uint16),  # bytes waiting in `buffer`
        ("buffer", ctypes.c_uint8 * BUFFER_SIZE),
    ]


class DebugconRing3:
    """Ring-3 half: flushes the shared buffer and the new byte to the driver on LUN#0."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: DebugconState, config: Mapping[str, Any]) -> None:
        self.state = state
        self.readback = config["Readback"]
        state.io_handle = hlp.ioport_create_and_map(
            config["IOBase"], 1, description="DEBUGCON", out=self.io_out, in_=self.io_in, posted=True
        )  # posted: printing never needs the guest to wait
        self.driver = hlp.driver_attach(0, "debug console")

    def io_out(self, offset: int, value: int, size: int) -> int:
        self.flush(bytes([value & 0xFF]))
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, self.readback

    def flush(self, tail: bytes = b"") -> None:
        """Hand what ring-0 buffered, then *tail*, to the driver."""
        state = self.state
        data = bytes(state.buffer[: state.buffered]) + tail
        state.buffered = 0
        if data and self.driver is not None:
            self.driver.write(data)

    def power_off(self) -> None:
        self.flush()


class DebugconRing0:
    """Ring-0 half: buffers bytes; a line end or a full buffer goes to ring-3."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: DebugconState, config: Mapping[str, Any]) -> None:
        self.state = state
        self.readback = config["Readback"]
        hlp.ioport_set_up_context(
            state.io_handle, out=self.io_out, in_=self.io_in, out_string=self.io_out_string
        )

    def io_out(self, offset: int, value: int, size: int) -> int:
        state = self.state
        byte = value & 0xFF
        if byte == NEWLINE or state.buffered >= BUFFER_SIZE:
            return VINF_IOM_R3_IOPORT_WRITE
        state.buffer[state.buffered] = byte
        state.buffered += 1
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, self.readback

    def io_out_string(self, offset: int, data: bytes, size: int) -> tuple[int, int]:
        """REP OUTSB: take bytes up to the next line end; ring-3 does the rest."""
        state = self.state
        stop = data.find(NEWLINE)
        room = BUFFER_SIZE - state.buffered
        take = min(len(data) if stop < 0 else stop, room) // size * size
        start = state.buffered
        ctypes.memmove(ctypes.addressof(state.buffer) + start, data[:take:size], take // size)
        state.buffered = start + take // size
        units = take // size
        return (VINF_SUCCESS if units * size == len(data) else VINF_IOM_R3_IOPORT_WRITE), units


REGISTRATION = DeviceRegistration(
    name="debugcon",
    description="ISA debug console (QEMU isa-debugcon): bytes written to one port are printed",
    device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=4,
    shared_state=DebugconState,
    ring3=DebugconRing3,
    ring0=DebugconRing0,
    config_keys=(
        ConfigKey("IOBase", int, 0xE9, "the port", minimum=0, maximum=0xFFFF),
        ConfigKey("Readback", int, 0xE9, "what a read of the port returns", minimum=0, maximum=0xFF),
    ),
)
