"""Strict, posted and doorbell modes: the same guest-visible results, different costs."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from conftest import vm_config, workload

from shared.trace import parse_text, read_trace
from slowpath import api
from slowpath.report import RunResult

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
# Devices whose whole state is deterministic (no clocks in it): compared byte for byte.
DETERMINISTIC = ("serial", "debugcon", "fw_cfg", "i8042", "i8259", "testdev", "vga", "edu", "ioapic")


def _meaningful_state(device: str, state: ctypes.Structure) -> bytes:
    """The state's bytes; debugcon's line buffer only up to what it holds (the rest is old bytes)."""
    if device == "debugcon":
        held: int = state.buffered  # type: ignore[attr-defined]
        return bytes([held & 0xFF, held >> 8]) + bytes(state.buffer[:held])  # type: ignore[attr-defined]
    return ctypes.string_at(ctypes.addressof(state), ctypes.sizeof(state))


def _replay(mode: str) -> tuple[RunResult, dict[str, bytes]]:
    ops = read_trace(SAMPLE)
    with api.open_vm(mode=mode) as vm:
        result = api.run_workload(vm, ops, source=str(SAMPLE))
        states = {
            instance.name: _meaningful_state(instance.reg.name, instance.state)
            for instance in vm.instances
            if instance.reg.name in DETERMINISTIC
        }
    return result, states


@pytest.mark.skipif(not SAMPLE.exists(), reason="the sample recording is not beside the checkout")
def test_every_mode_gives_the_same_reads_and_final_device_state_on_the_sample_trace() -> None:
    strict, strict_states = _replay("strict")
    for mode in ("posted", "doorbell"):
        other, other_states = _replay(mode)
        assert other.replay["per_port"] == strict.replay["per_port"], mode
        assert other.replay["mismatches"] == strict.replay["mismatches"], mode
        assert other.console == strict.console, mode
        assert other_states == strict_states, mode
    assert other.posted["doorbells"] == 3923  # doorbell mode did take a different path


def test_posted_writes_do_not_wait_and_a_full_window_falls_back_to_strict() -> None:
    writes = 500
    config = vm_config(vm_config().text.replace('Name = "test-vm"', 'Name = "test-vm"\nPostedWindow = 16'))
    with api.open_vm(config, mode="posted") as vm:
        result = api.run_workload(vm, workload("out 0x548 4 0x1\n" * writes))  # testdev's ring-3-only port
        assert vm.device("testdev").state.nop_writes == writes  # every one applied, once
    posted, fell_back = result.posted["posted_writes"], result.posted["window_full_fell_back_to_strict"]
    assert posted + fell_back == writes
    assert fell_back == writes // 17  # 16 in flight, the 17th is strict and drains them
    assert result.per_vcpu[0]["messages"] == writes + 2


def test_a_later_access_waits_for_posted_writes_to_its_device() -> None:
    ops = workload("wr 0xfea00008 4 0x6\nrd 0xfea00008 4 = 0x2d0\nout 0x541 4 0x1\nin 0x540 4 = 0x64726962\n")
    with api.open_vm(vm_config(), mode="posted") as vm:
        result = api.run_workload(vm, ops)
    assert result.replay["reads_matched"] == 2, result.replay["mismatches"]  # 6! = 720 was there to read
    assert result.posted["posted_writes"] == 2 and result.posted["syncs"] == 2


def test_a_posted_writes_em_status_reaches_the_vcpu_and_powers_off() -> None:
    ops = workload("out 0x543 1 0x0\n" + "out 0x540 4 0x1\n" * 100)
    with api.open_vm(vm_config(), mode="posted") as vm:
        result = api.run_workload(vm, ops)
        assert vm.device("testdev").state.nop_writes < 100  # the vCPU stopped soon after
    assert result.final_status["name"] == "VINF_EM_OFF"


def test_doorbell_writes_skip_ring0_and_ring3_runs_the_handler() -> None:
    bells = "\n[[Doorbells]]\nPort = 0x541\n[[Doorbells]]\nAddress = 0xfeb00008\nValue = 7\n"
    config = vm_config(vm_config().text + bells)
    ops = parse_text("out 0x541 4 0x1\n" * 50 + "wr 0xfeb00008 4 0x7\nwr 0xfeb00008 4 0x8\nin 0x541 4\n", "t")
    with api.open_vm(config, mode="doorbell") as vm:
        result = api.run_workload(vm, ops)
        state = vm.device("testdev").state
        assert (state.nop_writes, state.mmio_writes, state.ring0_accesses) == (50, 2, 0)
    assert result.posted["doorbells"] == 51  # the MMIO write of 8 does not match the doorbell's value
    assert result.deferred["doorbell"] == 51
    assert result.ring0_handled + sum(result.deferred.values()) == result.accesses


def test_two_vcpus_under_contention_lose_and_duplicate_nothing_in_posted_mode() -> None:
    per_vcpu = 100_000
    text = "out 0x540 4 0x1\n" * per_vcpu + ("@1 out 0x540 4 0x1\n" * 9 + "@1 out 0x541 4 0x1\n") * (per_vcpu // 10)
    with api.open_vm(vm_config(), vcpus=2, mode="posted") as vm:
        result = api.run_workload(vm, parse_text(text, "t"))
        assert vm.device("testdev").state.nop_writes == 2 * per_vcpu
    assert result.ring0_handled + sum(result.deferred.values()) == 2 * per_vcpu
    assert result.locks["testdev#0"]["busy_r0"] == result.deferred["device_lock_busy"]
