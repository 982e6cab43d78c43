"""The POST diagnostic port alone: both halves driven through fake helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devices import post
from devices.post import PostRing0, PostRing3, PostState
from shared.devapi import (
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
)
from shared.status import VERR_IOM_IOPORT_UNUSED, VINF_SUCCESS
from shared.trace import IN, INS, OUT, OUTS, read_trace

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRACE = REPO.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
HANDLE = 4


@dataclass
class FakeRing3Helpers:
    instance: int = 0
    regions: list[tuple[int, int, str, dict[str, Any]]] = field(default_factory=list)

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        self.regions.append((port, count, description, callbacks))
        return HANDLE


@dataclass
class FakeRing0Helpers:
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))


def make_post(read_back: bool = True) -> tuple[PostState, PostRing3, PostRing0, FakeRing3Helpers, FakeRing0Helpers]:
    state = PostState()
    hlp3, hlp0 = FakeRing3Helpers(), FakeRing0Helpers()
    ring3 = PostRing3(hlp3, state, {"ReadBack": read_back})
    ring0 = PostRing0(hlp0, state, {"ReadBack": read_back})
    return state, ring3, ring0, hlp3, hlp0


def test_registration_is_a_misc_device_with_a_ring0_half() -> None:
    reg = post.REGISTRATION
    assert reg.name == "post"
    assert reg.device_class == PDM_DEVREG_CLASS_MISC
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    key = reg.config_key("ReadBack")
    assert key is not None and key.default is True


def test_one_port_at_0x80_with_both_halves() -> None:
    state, _, _, hlp3, hlp0 = make_post()
    (port, count, _description, callbacks), = hlp3.regions
    assert (port, count) == (0x80, 1) and set(callbacks) == {"out", "in_"}
    (handle, r0_callbacks), = hlp0.contexts
    assert handle == HANDLE == state.io_handle and set(r0_callbacks) == {"out", "in_"}


def test_ring0_keeps_the_last_code_and_counts_writes() -> None:
    state, _, ring0, _, _ = make_post()
    for code in (0x01, 0x2A, 0xFF):
        assert ring0.io_out(0, code, 1) == VINF_SUCCESS
    assert (state.last_code, state.codes_written) == (0xFF, 3)


def test_a_wider_write_keeps_its_low_byte_as_the_code() -> None:
    state, ring3, _, _, _ = make_post()
    assert ring3.io_out(0, 0xBEEF, 2) == VINF_SUCCESS
    assert (state.last_code, state.codes_written) == (0xEF, 1)


def test_a_read_returns_the_last_code_written_in_either_half() -> None:
    _, ring3, ring0, _, _ = make_post()
    assert ring0.io_in(0, 1) == (VINF_SUCCESS, 0x00)
    ring0.io_out(0, 0x55, 1)
    assert ring0.io_in(0, 1) == (VINF_SUCCESS, 0x55)
    assert ring3.io_in(0, 1) == (VINF_SUCCESS, 0x55)
    assert ring0.io_in(0, 2) == (VINF_SUCCESS, 0xFF55)


def test_without_read_back_a_read_is_all_ones_as_qemu_returns() -> None:
    _, ring3, ring0, _, _ = make_post(read_back=False)
    ring0.io_out(0, 0x55, 1)
    assert ring0.io_in(0, 1) == (VERR_IOM_IOPORT_UNUSED, 0)
    assert ring3.io_in(0, 1) == (VERR_IOM_IOPORT_UNUSED, 0)


def test_ring0_constructor_writes_no_state() -> None:
    state = PostState()
    PostRing0(FakeRing0Helpers(), state, {"ReadBack": True})
    assert bytes(state) == bytes(PostState())


@pytest.mark.skipif(not SAMPLE_TRACE.exists(), reason="the sample trace is not beside the repository")
def test_sample_trace_never_touches_port_0x80() -> None:
    """So the trace cannot say what a read of 0x80 returns; replaying its accesses (none) matches trivially."""
    state, _, ring0, _, _ = make_post()
    accesses = [op for op in read_trace(SAMPLE_TRACE) if op.kind in (IN, OUT, INS, OUTS) and op.address == 0x80]
    for op in accesses:
        if op.kind == OUT:
            ring0.io_out(0, op.value, op.size)
        elif op.kind == IN and op.expected is not None:
            assert ring0.io_in(0, op.size)[1] == op.expected
    assert accesses == []
    assert state.codes_written == 0
