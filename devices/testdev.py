"""testdev: a testing device in the spirit of VirtualBox's VMMDev testing ports.

It does no real work, so that both tiers can be measured on the same work:

* NOP (+0) is answered in ring-0; NOP_R3 (+1) is the same register, but its ring-0
  callback always asks for ring-3 (VINF_IOM_R3_IOPORT_READ / _WRITE).  A read of either
  returns VirtualBox's testing NOP value, 0x64726962 ('bird'), cut to the access size.
* PATTERN (+2) reads an incrementing byte; its ring-0 string callback serves a whole
  REP INSB in one call.
* EM (+3) asks ring-3 for a VM scheduling status: write 0 powers off (VINF_EM_OFF),
  1 resets (VINF_EM_RESET), 2 halts (VINF_EM_HALT).  Guests use it to end cleanly.
* SCRATCH (+4..+7) is a dword register a guest can write and read back, in ring-0.
* RING3_ONLY (+8) is a region of its own without ring-0 callbacks: ring-0 defers every
  access to it without touching the device, so in posted mode writes to it pipeline.

It also has one MMIO page (MMIOBase) with the same idea for memory-mapped I/O: a read
or write at MMIO_NOP (+0) is answered in ring-0, at MMIO_NOP_R3 (+8) always in ring-3;
reads return the NOP value.  The region passes accesses through as the guest made them.

The state counts the accesses each tier served, so a test can tell where work ran.
Its writes may be posted (posted mode): nothing it does needs the writer to wait.
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

NOP = 0  # answered wherever it lands
NOP_R3 = 1  # always answered in ring-3
PATTERN = 2  # reads an incrementing byte
EM = 3  # write: ask for a VM scheduling status
SCRATCH = 4  # 4 bytes, +4..+7
PORT_COUNT = 8
RING3_ONLY = 8  # +8: a second, one-port region with no ring-0 half at all (reads NOP, writes count)

MMIO_NOP = 0x0  # MMIO page: answered wherever it lands
MMIO_NOP_R3 = 0x8  # MMIO page: always answered in ring-3
MMIO_SIZE = 0x1000

NOP_VALUE = 0x64726962  # VMMDEV_TESTING_NOP_RET
EM_REQUESTS = {0: VINF_EM_OFF, 1: VINF_EM_RESET, 2: VINF_EM_HALT}
SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class TestdevState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("pattern", ctypes.c_uint8),  # next PATTERN byte
        ("scratch", ctypes.c_uint32),
        ("ring0_accesses", ctypes.c_uint64),
        ("ring3_accesses", ctypes.c_uint64),
        ("nop_writes", ctypes.c_uint64),  # NOP and NOP_R3 writes, whichever tier took them
        ("mmio_handle", ctypes.c_uint16),
        ("mmio_writes", ctypes.c_uint64),  # MMIO writes, whichever tier took them
        ("mmio_last_value", ctypes.c_uint64),
    ]


class TestdevCore:
    """The registers, the same in both tiers."""

    def __init__(self, state: TestdevState) -> None:
        self.state = state

    def read_register(self, offset: int, size: int) -> tuple[int, int]:
        state = self.state
        if offset in (NOP, NOP_R3):
            return VINF_SUCCESS, NOP_VALUE & SIZE_MASK.get(size, 0xFFFFFFFF)
        if offset == PATTERN:
            value = 0
            for shift in range(0, 8 * size, 8):
                value |= state.pattern << shift
                state.pattern = (state.pattern + 1) & 0xFF
            return VINF_SUCCESS, value
        if offset >= SCRATCH:
            shift = 8 * (offset - SCRATCH)
            return VINF_SUCCESS, (state.scratch >> shift) & SIZE_MASK.get(size, 0xFFFFFFFF)
        return VERR_IOM_IOPORT_UNUSED, 0

    def mmio_read(self, offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, NOP_VALUE & ((1 << (8 * size)) - 1)

    def mmio_write_register(self, offset: int, value: int, size: int) -> int:
        self.state.mmio_writes += 1
        self.state.mmio_last_value = value
        return VINF_SUCCESS

    def write_register(self, offset: int, value: int, size: int) -> None:
        state = self.state
        if offset in (NOP, NOP_R3):
            state.nop_writes += 1
        elif offset >= SCRATCH:
            shift = 8 * (offset - SCRATCH)
            mask = SIZE_MASK.get(size, 0xFFFFFFFF) << shift
            state.scratch = (state.scratch & ~mask | (value << shift) & mask) & 0xFFFFFFFF


class TestdevRing3(TestdevCore):
    def __init__(self, hlp: Ring3DeviceHelpers, state: TestdevState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        state.io_handle = hlp.ioport_create_and_map(
            config["IOBase"], PORT_COUNT, description="TESTDEV", out=self.io_out, in_=self.io_in, posted=True
        )
        hlp.ioport_create_and_map(
            config["IOBase"] + RING3_ONLY, 1, description="TESTDEV R3", out=self.io_out_ring3_only,
            in_=self.io_in_ring3_only, posted=True,
        )
        state.mmio_handle = hlp.mmio_create_and_map(
            config["MMIOBase"], MMIO_SIZE, description="TESTDEV MMIO", read=self.mmio_read, write=self.mmio_write,
            posted=True,
        )

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        self.state.ring3_accesses += 1
        return self.mmio_write_register(offset, value, size)

    def io_in_ring3_only(self, offset: int, size: int) -> tuple[int, int]:
        self.state.ring3_accesses += 1
        return self.read_register(NOP_R3, size)

    def io_out_ring3_only(self, offset: int, value: int, size: int) -> int:
        self.state.ring3_accesses += 1
        self.write_register(NOP_R3, value, size)
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        self.state.ring3_accesses += 1
        return self.read_register(offset, size)

    def io_out(self, offset: int, value: int, size: int) -> int:
        self.state.ring3_accesses += 1
        if offset == EM:
            return EM_REQUESTS.get(value, VINF_SUCCESS)
        self.write_register(offset, value, size)
        return VINF_SUCCESS

    def reset(self) -> None:
        self.state.pattern = 0
        self.state.scratch = 0


class TestdevRing0(TestdevCore):
    def __init__(self, hlp: Ring0DeviceHelpers, state: TestdevState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.ioport_set_up_context(state.io_handle, out=self.io_out, in_=self.io_in, in_string=self.io_in_string)
        hlp.mmio_set_up_context(state.mmio_handle, read=self.mmio_read_r0, write=self.mmio_write)

    def mmio_read_r0(self, offset: int, size: int) -> tuple[int, int]:
        if offset >= MMIO_NOP_R3:
            return VINF_IOM_R3_MMIO_READ, 0
        return self.mmio_read(offset, size)

    def mmio_write(self, offset: int, value: int, size: int) -> int:
        if offset >= MMIO_NOP_R3:
            return VINF_IOM_R3_MMIO_WRITE
        self.state.ring0_accesses += 1
        return self.mmio_write_register(offset, value, size)

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        if offset == NOP_R3:
            return VINF_IOM_R3_IOPORT_READ, 0
        self.state.ring0_accesses += 1
        return self.read_register(offset, size)

    def io_out(self, offset: int, value: int, size: int) -> int:
        if offset in (NOP_R3, EM):
            return VINF_IOM_R3_IOPORT_WRITE
        self.state.ring0_accesses += 1
        self.write_register(offset, value, size)
        return VINF_SUCCESS

    def io_in_string(self, offset: int, count: int, size: int) -> tuple[int, bytes]:
        """REP INS on PATTERN in one call; other registers fall back to single reads."""
        if offset != PATTERN:
            return VINF_SUCCESS, b""
        state = self.state
        state.ring0_accesses += 1
        start = state.pattern
        data = bytes((start + i) & 0xFF for i in range(count * size))
        state.pattern = (start + count * size) & 0xFF
        return VINF_SUCCESS, data


REGISTRATION = DeviceRegistration(
    name="testdev",
    description="testing ports: a NOP answered in ring-0, one answered in ring-3, and EM status requests",
    device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=TestdevState,
    ring3=TestdevRing3,
    ring0=TestdevRing0,
    config_keys=(
        ConfigKey(
            "IOBase", int, 0x540, "the first of its 9 ports (8 + the ring-3-only one)", minimum=0, maximum=0xFFF7
        ),
        ConfigKey("MMIOBase", int, 0xFEB00000, "its MMIO page (page aligned)", minimum=0, maximum=0xFFFFF000),
    ),
)
