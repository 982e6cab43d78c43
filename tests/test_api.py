"""The Python API, as a notebook or a script would use it."""

from __future__ import annotations

import pytest

from shared.trace import TraceError
from slowpath import api


def test_single_accesses_on_the_default_pc_then_a_program_on_the_same_vm() -> None:
    with api.open_vm() as vm:
        first = api.run_accesses(vm, "out 0x544 4 0xabcd\nin 0x544 4 = 0xabcd\nout 0x541 4 0x1\n")
        assert (first.replay["reads_checked"], first.replay["reads_matched"]) == (1, 1)
        assert first.deferred["device_asked"] == 1 and first.commits == 1
        samples = api.statistics(vm)
        assert samples["/IOM/IoPortCommits"].value == 1
        assert samples["/IOM/IoPorts/0540-0547/0541-Out-R0toR3"].value == 1
        second = api.run_workload(vm, "hello")
        assert second.final_status["name"] == "VINF_EM_OFF"
        assert vm.device("testdev").state.scratch == 0xCAFEF00D  # the program's write; state carried over


def test_accesses_can_go_to_another_vcpu() -> None:
    with api.open_vm(vcpus=2) as vm:
        result = api.run_accesses(vm, "out 0x540 4 0x1\n", vcpu=1)
    assert [row["executed"] for row in result.per_vcpu] == [0, 1]


def test_config_from_text_and_errors_name_the_line() -> None:
    config = api.parse_config('[Devices.testdev.0]\n[Devices.testdev.0.Config]\nIOBase = 0x700\n', "mine.toml")
    with api.open_vm(config) as vm:
        result = api.run_accesses(vm, "in 0x700 4 = 0x64726962\n")
    assert result.replay["reads_matched"] == 1
    with pytest.raises(TraceError, match="<accesses>:1: port size 3"):
        with api.open_vm(config) as vm:
            api.run_accesses(vm, "in 0x700 3\n")
