"""The default PC answers a real firmware's accesses the way QEMU's `pc` machine did.

Replays the whole sample recording (SeaBIOS under QEMU 7.2, 198,310 accesses) on the
built-in default VM, with real workers, and checks what issue 4 asks of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.trace import read_trace
from slowpath.cli import load_vm_config
from slowpath.report import RunResult
from slowpath.vm import VM

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
SAMPLE = TRACES / "seabios-fwcfg-pio.trace.gz"

pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="the sample recording is not beside the checkout")


@pytest.fixture(scope="module")
def sample_run() -> RunResult:
    ops = read_trace(SAMPLE)
    with VM(load_vm_config(None)) as vm:
        return vm.run(vm.split_workload(ops, str(SAMPLE)))


def test_every_deterministic_read_of_a_modelled_device_matches(sample_run: RunResult) -> None:
    per_device = sample_run.replay["per_device"]
    wrong = {
        name: (row["reads_checked"], row["reads_matched"])
        for name, row in per_device.items()
        if name != "unassigned" and row["reads_checked"] != row["reads_matched"]
    }
    assert wrong == {}
    assert sum(row["reads_checked"] for name, row in per_device.items() if name != "unassigned") > 1000


def test_guest_output_on_com1_and_port_0x402_is_byte_for_byte_the_recording(sample_run: RunResult) -> None:
    serial = sample_run.console["serial#0/LUN#0"].encode("latin-1")
    debugcon = sample_run.console["debugcon#1/LUN#0"].encode("latin-1")
    assert serial == (TRACES / "seabios-fwcfg-pio.serial.txt").read_bytes()
    assert debugcon == (TRACES / "seabios-fwcfg-pio.debugcon.txt").read_bytes()


def test_nine_tenths_of_the_accesses_land_on_a_modelled_device(sample_run: RunResult) -> None:
    replay = sample_run.replay
    assert replay["units"] == 198_310
    assert replay["units_on_devices"] >= 0.9 * replay["units"]


def test_nine_tenths_of_the_accesses_finish_in_ring0_in_strict_mode(sample_run: RunResult) -> None:
    replay = sample_run.replay
    assert replay["units_ring0"] + replay["units_ring3"] == replay["units"]
    assert replay["units_ring0"] >= 0.9 * replay["units"]
    assert sum(sample_run.deferred.values()) > 0  # and the report says how many went to ring-3, and why
