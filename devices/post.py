"""post: the POST diagnostic port 0x80, where firmware writes its progress codes.

A write keeps the code (the low byte of a wider write) and counts it, as a POST card's
display would show the last one.  A read returns the last code written (0 before any),
as the DMA page register that answers port 0x80 on PIIX chipsets does; with ``ReadBack``
false it returns all ones instead, as QEMU 7.2's ``pc`` machine does (its port 0x80 is a
dummy that drops writes).  The sample trace never touches port 0x80, so it decides
neither.  Bytes past 0x80 of a wider read read as all ones.

Nothing here depends on time.  Split: both halves do everything; ring-3 only sees the
accesses ring-0 could not take (its device lock was busy).
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
from shared.status import VERR_IOM_IOPORT_UNUSED, VINF_SUCCESS

POST_PORT = 0x80
ALL_ONES = 0xFF


class PostState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("read_back", ctypes.c_uint8),  # the ReadBack config, for both halves
        ("last_code", ctypes.c_uint8),
        ("codes_written", ctypes.c_uint64),
    ]


class PostCore:
    """The port, the same in both tiers."""

    def __init__(self, state: PostState) -> None:
        self.state = state

    def io_out(self, offset: int, value: int, size: int) -> int:
        """Keep the code.  Always VINF_SUCCESS."""
        self.state.last_code = value & ALL_ONES
        self.state.codes_written += 1
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        """The last code, or VERR_IOM_IOPORT_UNUSED (all ones) without ReadBack."""
        if not self.state.read_back:
            return VERR_IOM_IOPORT_UNUSED, 0
        return VINF_SUCCESS, ((1 << (8 * size)) - 1) & ~ALL_ONES | self.state.last_code


class PostRing3(PostCore):
    def __init__(self, hlp: Ring3DeviceHelpers, state: PostState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        state.read_back = 1 if config["ReadBack"] else 0
        state.io_handle = hlp.ioport_create_and_map(
            POST_PORT, 1, description="POST codes", out=self.io_out, in_=self.io_in
        )


class PostRing0(PostCore):
    def __init__(self, hlp: Ring0DeviceHelpers, state: PostState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.ioport_set_up_context(state.io_handle, out=self.io_out, in_=self.io_in)


REGISTRATION = DeviceRegistration(
    name="post",
    description="POST diagnostic port 0x80: keeps the last code written and counts them",
    device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=PostState,
    ring3=PostRing3,
    ring0=PostRing0,
    config_keys=(
        ConfigKey("ReadBack", bool, True, "reads return the last code (false: all ones, as QEMU's port 0x80)"),
    ),
)
