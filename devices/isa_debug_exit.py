"""isa-debug-exit: QEMU's test device that ends the VM with a status the guest chooses.

A write of VALUE powers the VM off, and ``ringsim run`` exits with ``(VALUE << 1) | 1``,
as QEMU's process does, so a test guest can report success or failure to the shell.
The power-off travels as VirtualBox does it: the write returns VINF_EM_OFF, which ring-3
merges into the vCPU's status.  The device has no ring-0 half, so every write is
deferred to ring-3 as a pending write and committed there.  Reads are not decoded (IOM's
default: all ones).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    ConfigKey,
    DeviceRegistration,
    Ring3DeviceHelpers,
)
from shared.status import VINF_EM_OFF


class DebugExitState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("exit_requested", ctypes.c_uint8),
        ("last_value", ctypes.c_uint32),
    ]


class DebugExitRing3:
    def __init__(self, hlp: Ring3DeviceHelpers, state: DebugExitState, config: Mapping[str, Any]) -> None:
        self.hlp = hlp
        self.state = state
        state.io_handle = hlp.ioport_create_and_map(
            config["IOBase"], config["IOSize"], description="ISA-DEBUG-EXIT", out=self.io_out
        )

    def io_out(self, offset: int, value: int, size: int) -> int:
        """Any write: remember the exit status and power the VM off."""
        self.state.exit_requested = 1
        self.state.last_value = value
        self.hlp.set_exit_status((value << 1) | 1)
        return VINF_EM_OFF


REGISTRATION = DeviceRegistration(
    name="isa-debug-exit",
    description="QEMU isa-debug-exit: a write powers the VM off; ringsim exits with (value << 1) | 1",
    device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=DebugExitState,
    ring3=DebugExitRing3,
    config_keys=(
        ConfigKey("IOBase", int, 0xF4, "the first port", minimum=0, maximum=0xFFFF),
        ConfigKey("IOSize", int, 4, "how many ports", minimum=1, maximum=4),
    ),
)
