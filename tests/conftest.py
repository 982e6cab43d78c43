"""Shared fixtures: configs and workloads from text, and a check that nothing leaks."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.segments import SEGMENT_PREFIX
from shared.trace import TraceOp, parse_text
from slowpath.config import VmConfig, parse_config

REPO = Path(__file__).resolve().parent.parent

DEFAULT_CONFIG = """
Name = "test-vm"
NumCPUs = 1
[Devices.serial.0]
[Devices.serial.0."LUN#0"]
Driver = "memory"
[Devices.debugcon.0]
[Devices.debugcon.0."LUN#0"]
Driver = "memory"
[Devices.isa-debug-exit.0]
[Devices.testdev.0]
[Devices.ioapic.0]
[Devices.hpet.0]
[Devices.vga.0]
[Devices.edu.0]
"""


def vm_config(text: str = DEFAULT_CONFIG) -> VmConfig:
    return parse_config(text, "test.toml")


def workload(text: str) -> list[TraceOp]:
    return parse_text(text, "test.trace")


def own_segments() -> set[str]:
    """The shared-memory segments this test process's VMs created and left."""
    prefix = f"{SEGMENT_PREFIX}{os.getpid()}_"
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every test ends with no segment of ours in /dev/shm and no child process alive."""
    before = own_segments()
    yield
    assert own_segments() - before == set()
    assert multiprocessing.active_children() == []
