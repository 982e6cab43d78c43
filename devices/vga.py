"""vga: the VGA adapter; for now only its legacy memory window at 0xA0000-0xBFFFF.

The window is 128 KiB of memory-like MMIO: whatever the guest stores, in bytes, words,
dwords or qwords at any alignment, it reads back.  Its region uses IOM's PASSTHRU modes,
so each access arrives with the guest's own size and offset.  Both halves serve every
access from the same bytes in shared memory; like VirtualBox's VGA, ring-0 never needs
ring-3 for the legacy window.  The colour text page sits at 0xB8000 (offset 0x18000):
80x25 cells of a character byte then an attribute byte; ring-3's :meth:`text_screen`
decodes it for reports and tests.

Not modelled yet: the VGA I/O ports, planes, graphics modes and the PCI function.  The
window code below stands alone (``VgaWindowCore``) so they can be added beside it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from shared.devapi import (
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
    PDM_DEVREG_CLASS_GRAPHICS,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_SUCCESS

WINDOW_BASE = 0xA0000  # fixed by the PC architecture; the only MMIOBase accepted
WINDOW_SIZE = 0x20000  # 128 KiB, 0xA0000-0xBFFFF
WINDOW_FLAGS = IOMMMIO_FLAGS_READ_PASSTHRU | IOMMMIO_FLAGS_WRITE_PASSTHRU

TEXT_PAGE = 0x18000  # 0xB8000: the colour text page (monochrome adapters use 0xB0000)
TEXT_COLUMNS = 80
TEXT_ROWS = 25

# Code page 437 draws glyphs, not control characters, for 0x01-0x1F and 0x7F, and a
# blank for 0x00 (the window's initial contents).
_CP437_CONTROL_GLYPHS = str.maketrans(
    dict(
        enumerate(
            " \u263a\u263b\u2665\u2666\u2663\u2660\u2022\u25d8\u25cb\u25d9\u2642\u2640\u266a\u266b\u263c"
            "\u25ba\u25c4\u2195\u203c\u00b6\u00a7\u25ac\u21a8\u2191\u2193\u2192\u2190\u221f\u2194\u25b2\u25bc"
        )
    )
    | {0x7F: "\u2302"}
)


class VgaState(ctypes.Structure):
    _fields_ = [
        ("mmio_handle", ctypes.c_uint16),  # the legacy window's MMIO region
        ("window", ctypes.c_uint8 * WINDOW_SIZE),  # what the guest stored at 0xA0000-0xBFFFF
    ]


class VgaWindowCore:
    """The legacy window, the same in both tiers: plain little-endian memory.

    An access that runs past the window's end (a guest qword at 0xBFFFC, say) keeps
    the part inside: the bytes beyond are dropped on writes and read as 0xFF.
    """

    def __init__(self, state: VgaState) -> None:
        self.state = state
        self.window_address = ctypes.addressof(state.window)

    def window_read(self, offset: int, size: int) -> tuple[int, int]:
        inside = max(0, min(size, WINDOW_SIZE - offset))
        data = ctypes.string_at(self.window_address + offset, inside) + b"\xff" * (size - inside)
        return VINF_SUCCESS, int.from_bytes(data, "little")

    def window_write(self, offset: int, value: int, size: int) -> int:
        inside = max(0, min(size, WINDOW_SIZE - offset))
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        ctypes.memmove(self.window_address + offset, data, inside)
        return VINF_SUCCESS


class VgaRing3(VgaWindowCore):
    """Ring-3 half: creates and maps the window and serves it when ring-0 is not enabled."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: VgaState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        state.mmio_handle = hlp.mmio_create_and_map(
            config["MMIOBase"],
            WINDOW_SIZE,
            description="VGA legacy window",
            read=self.window_read,
            write=self.window_write,
            flags=WINDOW_FLAGS,
        )

    def text_screen(self) -> list[str]:
        """The 80x25 colour text page as 25 lines, attributes ignored, trailing blanks stripped."""
        page = ctypes.string_at(self.window_address + TEXT_PAGE, 2 * TEXT_COLUMNS * TEXT_ROWS)
        characters = page[0::2].decode("cp437").translate(_CP437_CONTROL_GLYPHS)
        return [characters[row * TEXT_COLUMNS : (row + 1) * TEXT_COLUMNS].rstrip() for row in range(TEXT_ROWS)]


class VgaRing0(VgaWindowCore):
    """Ring-0 half: serves every window access itself."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: VgaState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.mmio_set_up_context(state.mmio_handle, read=self.window_read, write=self.window_write)


REGISTRATION = DeviceRegistration(
    name="vga",
    description="VGA adapter: for now only the legacy memory window 0xA0000-0xBFFFF",
    device_class=PDM_DEVREG_CLASS_GRAPHICS,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=VgaState,
    ring3=VgaRing3,
    ring0=VgaRing0,
    config_keys=(
        ConfigKey(
            "MMIOBase",
            int,
            WINDOW_BASE,
            "the legacy window's address (fixed at 0xA0000)",
            minimum=WINDOW_BASE,
            maximum=WINDOW_BASE,
        ),
    ),
)
