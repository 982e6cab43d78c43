"""vga's legacy memory window, each half driven through fake helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from devices import vga
from devices.vga import TEXT_PAGE, WINDOW_SIZE, VgaRing0, VgaRing3, VgaState
from shared.devapi import (
    IOMMMIO_FLAGS_READ_MODE,
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_MODE,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
    PDM_DEVREG_CLASS_GRAPHICS,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
)
from shared.status import VINF_SUCCESS

HANDLE = 5


@dataclass
class FakeRing3Helpers:
    """PDMDEVHLPR3 reduced to the MMIO calls; records every one."""

    instance: int = 0
    created: list[dict[str, Any]] = field(default_factory=list)

    def mmio_create_and_map(self, address: int, size: int, *, description: str, **rest: Any) -> int:
        self.created.append({"address": address, "size": size, "description": description, **rest})
        return HANDLE


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def mmio_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))


@dataclass
class Vga:
    state: VgaState
    ring3: VgaRing3
    ring0: VgaRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers


def make_vga() -> Vga:
    state = VgaState()
    hlp3, hlp0 = FakeRing3Helpers(), FakeRing0Helpers()
    config = {key.name: key.default_for(0) for key in vga.REGISTRATION.config_keys}
    ring3 = VgaRing3(hlp3, state, config)
    ring0 = VgaRing0(hlp0, state, config)
    return Vga(state, ring3, ring0, hlp3, hlp0)


def put_text(state: VgaState, row: int, column: int, text: bytes, attribute: int = 0x07) -> None:
    cell = TEXT_PAGE + 2 * (80 * row + column)
    for i, char in enumerate(text):
        state.window[cell + 2 * i] = char
        state.window[cell + 2 * i + 1] = attribute


# -- registration and regions ---------------------------------------------------------------


def test_registration_is_a_single_graphics_device_with_ring0() -> None:
    reg = vga.REGISTRATION
    assert reg.name == "vga"
    assert reg.device_class == PDM_DEVREG_CLASS_GRAPHICS
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert reg.max_instances == 1
    assert (reg.shared_state, reg.ring3, reg.ring0) == (VgaState, VgaRing3, VgaRing0)


def test_mmio_base_is_fixed_at_0xa0000() -> None:
    key = vga.REGISTRATION.config_key("MMIOBase")
    assert key is not None
    assert key.default_for(0) == 0xA0000
    assert key.check(0xA0000) == 0xA0000
    for elsewhere in (0xB0000, 0x9F000, 0xA1000):
        with pytest.raises(ConfigError):
            key.check(elsewhere)


def test_ring3_maps_the_128k_window_passthru() -> None:
    dev = make_vga()
    (region,) = dev.hlp3.created
    assert (region["address"], region["size"]) == (0xA0000, 0x20000)
    flags = region["flags"]
    assert flags & IOMMMIO_FLAGS_READ_MODE == IOMMMIO_FLAGS_READ_PASSTHRU
    assert flags & IOMMMIO_FLAGS_WRITE_MODE == IOMMMIO_FLAGS_WRITE_PASSTHRU
    assert region["read"] == dev.ring3.window_read
    assert region["write"] == dev.ring3.window_write
    assert dev.state.mmio_handle == HANDLE


def test_ring0_sets_up_the_region_ring3_created() -> None:
    dev = make_vga()
    ((handle, callbacks),) = dev.hlp0.contexts
    assert handle == HANDLE
    assert callbacks == {"read": dev.ring0.window_read, "write": dev.ring0.window_write}


# -- the window -------------------------------------------------------------------------------


def test_window_reads_zero_initially() -> None:
    dev = make_vga()
    for offset, size in ((0, 1), (0x8000, 2), (0x18000, 4), (WINDOW_SIZE - 8, 8)):
        assert dev.ring0.window_read(offset, size) == (VINF_SUCCESS, 0)
        assert dev.ring3.window_read(offset, size) == (VINF_SUCCESS, 0)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 1, 3, 0x7FFF, 0x18000, WINDOW_SIZE - 8])
def test_window_reads_back_what_was_written_any_size(offset: int, size: int) -> None:
    dev = make_vga()
    value = 0x8877665544332211 & ((1 << (8 * size)) - 1)
    assert dev.ring0.window_write(offset, value, size) == VINF_SUCCESS
    assert dev.ring0.window_read(offset, size) == (VINF_SUCCESS, value)
    assert dev.ring3.window_read(offset, size) == (VINF_SUCCESS, value)  # one copy, shared by both tiers


def test_window_write_stores_little_endian_bytes() -> None:
    dev = make_vga()
    dev.ring3.window_write(0x100, 0x11223344, 4)
    assert bytes(dev.state.window[0x100:0x104]) == b"\x44\x33\x22\x11"
    assert dev.ring0.window_read(0x101, 2) == (VINF_SUCCESS, 0x2233)


def test_narrow_write_changes_only_its_own_bytes() -> None:
    dev = make_vga()
    dev.ring0.window_write(0x40, 0xAAAAAAAAAAAAAAAA, 8)
    dev.ring0.window_write(0x43, 0x5555, 2)
    assert dev.ring0.window_read(0x40, 8) == (VINF_SUCCESS, 0xAAAAAA5555AAAAAA)


def test_write_keeps_only_size_bytes_of_the_value() -> None:
    dev = make_vga()
    dev.ring0.window_write(0x10, 0x1FF, 1)
    assert bytes(dev.state.window[0x10:0x12]) == b"\xff\x00"


def test_access_past_the_window_end_keeps_the_part_inside() -> None:
    dev = make_vga()
    dev.ring0.window_write(WINDOW_SIZE - 2, 0x4433_2211, 4)
    assert bytes(dev.state.window[WINDOW_SIZE - 2 :]) == b"\x11\x22"
    assert dev.ring0.window_read(WINDOW_SIZE - 2, 4) == (VINF_SUCCESS, 0xFFFF_2211)


# -- text_screen ------------------------------------------------------------------------------


def test_text_screen_decodes_characters() -> None:
    dev = make_vga()
    put_text(dev.state, 0, 0, b"Hello, VGA")
    put_text(dev.state, 24, 70, b"bottom row")
    screen = dev.ring3.text_screen()
    assert len(screen) == 25
    assert screen[0] == "Hello, VGA"
    assert screen[1:24] == [""] * 23
    assert screen[24] == " " * 70 + "bottom row"


def test_text_screen_written_through_the_window() -> None:
    dev = make_vga()
    dev.ring0.window_write(TEXT_PAGE + 2 * 80, 0x1F69_1F48, 4)  # "Hi" on row 1, white on blue
    assert dev.ring3.text_screen()[1] == "Hi"


def test_text_screen_ignores_attributes_and_strips_trailing_blanks() -> None:
    dev = make_vga()
    put_text(dev.state, 2, 4, b"ok   ", attribute=0x4E)
    put_text(dev.state, 2, 20, b"\x00\x00", attribute=0x70)  # blank cells with a colour are still blank
    assert dev.ring3.text_screen()[2] == "    ok"


def test_text_screen_keeps_inner_blanks_and_a_full_row() -> None:
    dev = make_vga()
    put_text(dev.state, 3, 0, b"a" + b"\x00" * 5 + b"b")
    row = bytes(0x30 + i % 10 for i in range(80))
    put_text(dev.state, 4, 0, row)
    screen = dev.ring3.text_screen()
    assert screen[3] == "a     b"
    assert screen[4] == row.decode()


def test_text_screen_shows_code_page_437_glyphs() -> None:
    dev = make_vga()
    put_text(dev.state, 0, 0, b"\x01\x03\x10\x7f\xb0\xc9\xcd\xbb\xe1")
    assert dev.ring3.text_screen()[0] == "\u263a\u2665\u25ba\u2302\u2591\u2554\u2550\u2557\u00df"


def test_text_screen_reads_only_the_colour_text_page() -> None:
    dev = make_vga()
    dev.ring0.window_write(0x10000, 0x41414141, 4)  # 0xB0000, the monochrome page
    dev.ring0.window_write(TEXT_PAGE + 2 * 80 * 25, 0x4141, 2)  # just past the 80x25 page
    assert dev.ring3.text_screen() == [""] * 25
