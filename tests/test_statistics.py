"""The statistics tree: STAM names over real runs, --pattern selection, zero hiding, files, printing.

Two small runs on real workers feed most tests (module fixtures: the VMs are closed,
and their segments gone, before the first test that uses them starts); the pattern,
file and printing rules are also pinned on hand-made snapshots.
"""

from __future__ import annotations

import json
import re

import pytest

from shared.trace import parse_text
from slowpath.config import parse_config
from slowpath.statistics import (
    ALWAYS,
    COUNTER,
    PROFILE,
    USED,
    Sample,
    Snapshot,
    StatisticsFileError,
    from_json,
    render_flat,
    render_tree,
    select,
    snapshot,
    to_json,
)
from slowpath.vm import VM

TESTDEV_MMIO = "/IOM/MmioRegions/00000000feb00000-00000000feb00fff"


def run(config: str, trace: str) -> Snapshot:
    with VM(parse_config(config, "t.toml")) as vm:
        vm.run(vm.split_workload(parse_text(trace, "t"), "t"))
        return snapshot(vm)


@pytest.fixture(scope="module")
def ports() -> Snapshot:
    """NOP in ring-0, NOP_R3 deferred and committed, the UART's LSR read in ring-0."""
    return run(
        "[Devices.testdev.0]\n[Devices.serial.0]\n",
        "out 0x540 4 0x1\nout 0x541 4 0x1\nin 0x3fd 1\n",
    )


@pytest.fixture(scope="module")
def two_vcpus() -> Snapshot:
    """A single-port range, MMIO in both tiers on vCPU 0, two deferred OUTs on vCPU 1.

    vCPU 1's OUTs (line ends to the debug console, which ring-0 leaves to ring-3) go to a device
    vCPU 0 does not touch: no lock is shared, so no access can be deferred as lock-busy instead.
    """
    return run(
        "NumCPUs = 2\n[Devices.testdev.0]\n[Devices.post.0]\n[Devices.debugcon.0]\n",
        "out 0x80 1 0x12\n"
        "wr 0xfeb00000 4 0x5\n"
        "wr 0xfeb00008 4 0x6\n"
        "rd 0xfeb00008 4\n"
        "@1 out 0xe9 1 0xa\n"
        "@1 out 0xe9 1 0xa\n",
    )


def values(samples: Snapshot) -> dict[str, int]:
    return {name: sample.value for name, sample in samples.items() if sample.kind == COUNTER}


def counter(value: int, visibility: str = USED) -> Sample:
    return Sample.counter(value, "test", visibility)


# --- names and values from real runs ---------------------------------------------------------
def test_ring0_write_is_counted_on_its_port_in_the_range(ports: Snapshot) -> None:
    assert ports["/IOM/IoPorts/0540-0547/0540-Out-R0"].value == 1
    assert ports["/IOM/IoPorts/0540-0547/0540-Out-R3"].value == 0
    profile = ports["/IOM/IoPorts/0540-0547/0540-Out-R0-Prof"]
    assert (profile.kind, profile.unit, profile.calls) == (PROFILE, "ns/call", 1)
    assert profile.ns > 0


def test_deferred_write_counts_r0_to_r3_then_r3_and_one_commit(ports: Snapshot) -> None:
    assert ports["/IOM/IoPorts/0540-0547/0541-Out-R0toR3"].value == 1
    assert ports["/IOM/IoPorts/0540-0547/0541-Out-R3"].value == 1
    assert ports["/IOM/IoPorts/0540-0547/0541-Out-R0"].value == 0
    assert ports["/IOM/IoPortCommits"].value == 1


def test_range_total_counts_each_access_once_with_its_description(ports: Snapshot) -> None:
    total = ports["/IOM/IoPorts/0540-0547"]
    assert (total.value, total.description, total.visibility) == (2, "TESTDEV", ALWAYS)
    assert ports["/IOM/IoPorts/03f8-03ff"].value == 1
    assert ports["/IOM/IoPorts/03f8-03ff/03fd-In-R0"].value == 1


def test_globals_sum_every_row(ports: Snapshot) -> None:
    got = values(ports)
    assert (got["/IOM/IoPortIN"], got["/IOM/IoPortOUT"], got["/IOM/IoPortINS"]) == (1, 2, 0)
    assert got["/ringsim/Ring0Handled"] == 2
    assert got["/ringsim/Deferred/DeviceAsked"] == 1
    assert got["/ringsim/Ring3Accesses"] == 1
    assert ports["/IOM/MmioCommitsDirect"].visibility == ALWAYS


def test_device_locks_are_named_after_the_instance(ports: Snapshot) -> None:
    assert ports["/PDM/CritSects/testdev#0/EntersR0"].value >= 1
    assert ports["/PDM/CritSects/testdev#0/EntersR3"].value >= 1
    assert ports["/PDM/CritSects/serial#0/EntersR0"].value >= 1
    wait = ports["/PDM/CritSects/testdev#0/ContentionR3Wait"]
    assert wait.kind == PROFILE
    assert "/PDM/CritSects/serial#0/ContentionR0Busy" in ports


def test_per_vcpu_counters_come_from_that_vcpus_rows(two_vcpus: Snapshot) -> None:
    got = values(two_vcpus)
    assert got["/ringsim/vCPU0/Deferred/DeviceAsked"] == 2  # the MMIO write and read at NOP_R3
    assert got["/ringsim/vCPU1/Deferred/DeviceAsked"] == 2
    assert got["/ringsim/vCPU0/Ring0Handled"] == 2  # OUT 0x80 and the MMIO write at NOP
    assert got["/ringsim/vCPU1/Ring0Handled"] == 0
    assert (got["/ringsim/vCPU0/IoPortCommits"], got["/ringsim/vCPU1/IoPortCommits"]) == (0, 2)
    assert (got["/ringsim/vCPU0/MmioCommits"], got["/ringsim/vCPU1/MmioCommits"]) == (1, 0)
    assert (got["/ringsim/vCPU0/Ring3Accesses"], got["/ringsim/vCPU1/Ring3Accesses"]) == (2, 2)
    assert got["/ringsim/Deferred/DeviceAsked"] == 4
    assert got["/IOM/IoPortCommits"] == 2


def test_single_port_range_has_no_port_prefix_on_its_leaves(two_vcpus: Snapshot) -> None:
    assert two_vcpus["/IOM/IoPorts/0080"].value == 1
    assert two_vcpus["/IOM/IoPorts/0080/Out-R0"].value == 1
    assert not any(name.startswith("/IOM/IoPorts/0080/0080-") for name in two_vcpus)


def test_mmio_region_is_named_by_its_mapping_in_016x(two_vcpus: Snapshot) -> None:
    got = values(two_vcpus)
    assert got[f"{TESTDEV_MMIO}/Write-R0"] == 1
    assert got[f"{TESTDEV_MMIO}/Write-R0toR3-Commit"] == 1
    assert got[f"{TESTDEV_MMIO}/Write-R3"] == 1
    assert got[f"{TESTDEV_MMIO}/Read-R0toR3"] == 1
    assert got[f"{TESTDEV_MMIO}/Read-R3"] == 1
    assert got[f"{TESTDEV_MMIO}/Read-FFor00"] == 0
    assert two_vcpus[f"{TESTDEV_MMIO}/Read-R3-Prof"].calls == 1
    assert (got["/IOM/MmioR0ToR3Commits"], got["/IOM/MmioCommitsDirect"]) == (1, 1)


def test_unmapped_ranges_are_named_by_handle() -> None:
    config = parse_config("[Devices.testdev.0]\n", "t.toml")
    with VM(config) as vm:  # nothing runs, so no worker is spawned
        testdev = vm.device("testdev")
        vm.iom.unmap(testdev.index, testdev.state.io_handle)
        vm.iom.mmio_unmap(testdev.index, testdev.state.mmio_handle)
        samples = snapshot(vm)
        io_handle, mmio_handle = testdev.state.io_handle, testdev.state.mmio_handle
    assert samples[f"/IOM/IoPorts/unmapped-{io_handle}"].visibility == ALWAYS
    assert f"/IOM/IoPorts/unmapped-{io_handle}/+0001-Out-R0toR3" in samples
    assert f"/IOM/MmioRegions/unmapped-{mmio_handle}/Read-R0" in samples
    assert not any(name.startswith("/IOM/IoPorts/0540") for name in samples)


# --- zero hiding ---------------------------------------------------------------------------
def test_zero_counters_and_profiles_are_hidden_unless_asked_for(ports: Snapshot) -> None:
    shown = select(ports)
    assert "/IOM/IoPorts/0540-0547/0541-Out-R0toR3" in shown
    assert "/IOM/IoPorts/0540-0547/0541-In-R3" not in shown  # USED and zero
    assert "/IOM/IoPorts/0540-0547/0542-In-R0-Prof" not in shown  # a profile with no calls
    assert "/PDM/CritSects/serial#0/EntersR3" not in shown
    assert "/IOM/IoPortINS" in shown  # a global: ALWAYS
    assert select(ports, include_zero=True) == ports


def test_range_total_is_shown_even_when_zero() -> None:
    samples = {"/IOM/IoPorts/0060": counter(0, ALWAYS), "/IOM/IoPorts/0060/In-R0": counter(0)}
    assert list(select(samples)) == ["/IOM/IoPorts/0060"]


# --- --pattern ----------------------------------------------------------------------------
def test_pattern_matches_the_whole_name_with_star_and_question_mark(ports: Snapshot) -> None:
    assert list(select(ports, "/IOM/IoPortIN")) == ["/IOM/IoPortIN"]
    assert set(select(ports, "/IOM/IoPortIN*")) == {"/IOM/IoPortIN", "/IOM/IoPortINS"}
    assert set(select(ports, "/IOM/IoPort?UT")) == {"/IOM/IoPortOUT"}
    assert set(select(ports, "/IOM/IoPorts/0540-0547/0541-Out-R*")) == {
        "/IOM/IoPorts/0540-0547/0541-Out-R0toR3",
        "/IOM/IoPorts/0540-0547/0541-Out-R0-Prof",
        "/IOM/IoPorts/0540-0547/0541-Out-R3",
        "/IOM/IoPorts/0540-0547/0541-Out-R3-Prof",
    }


def test_star_crosses_path_components(ports: Snapshot) -> None:
    assert set(select(ports, "/PDM/*R0")) == {"/PDM/CritSects/testdev#0/EntersR0", "/PDM/CritSects/serial#0/EntersR0"}


def test_alternatives_are_separated_by_a_bar(ports: Snapshot) -> None:
    assert set(select(ports, "/IOM/IoPortIN|/IOM/IoPortOUT|/nothing/*")) == {"/IOM/IoPortIN", "/IOM/IoPortOUT"}


def test_pattern_without_leading_slash_is_not_a_substring_match(ports: Snapshot) -> None:
    assert select(ports, "IoPortIN") == {}
    assert list(select(ports, "*IoPortIN")) == ["/IOM/IoPortIN"]


def test_no_pattern_empty_pattern_and_star_select_everything_visible(ports: Snapshot) -> None:
    assert select(ports, None) == select(ports, "") == select(ports, "*")
    assert len(select(ports, "*", include_zero=True)) == len(ports)


def test_pattern_characters_other_than_star_and_question_mark_are_literal() -> None:
    samples = {"/a/x[1]": counter(1), "/a/x1": counter(1), "/a/x.y": counter(1), "/a/xzy": counter(1)}
    assert list(select(samples, "/a/x[1]")) == ["/a/x[1]"]
    assert list(select(samples, "/a/x.y")) == ["/a/x.y"]


def test_pattern_is_case_sensitive(ports: Snapshot) -> None:
    assert select(ports, "/iom/ioportin") == {}


# --- files ---------------------------------------------------------------------------------
def test_json_round_trip_is_exact(ports: Snapshot) -> None:
    document = json.loads(json.dumps(to_json(ports)))
    back = from_json(document)
    assert back == ports
    assert list(back) == list(ports)


def test_json_keeps_counters_and_profiles_apart() -> None:
    samples = {"/x/c": counter(7, ALWAYS), "/x/p": Sample.profile(900, 3, "a profile")}
    document = to_json(samples)
    assert document["samples"]["/x/c"] == {
        "kind": "counter", "value": 7, "unit": "times", "visibility": "always", "description": "test"
    }
    assert document["samples"]["/x/p"] == {
        "kind": "profile", "ns": 900, "calls": 3, "unit": "ns/call", "visibility": "used", "description": "a profile"
    }


@pytest.mark.parametrize(
    "document",
    [
        {"vm": "test-vm", "accesses": 3},  # a run result, not a statistics file
        {"format": "ringsim-statistics", "version": 99, "samples": {}},
        {"format": "ringsim-statistics", "version": 1, "samples": []},
        {"format": "ringsim-statistics", "version": 1, "samples": {"x": {}}},
        {"format": "ringsim-statistics", "version": 1, "samples": {"/x": {"kind": "gauge"}}},
        {"format": "ringsim-statistics", "version": 1, "samples": {"/x": {
            "kind": "counter", "value": -1, "unit": "times", "visibility": "used", "description": ""}}},
        {"format": "ringsim-statistics", "version": 1, "samples": {"/x": {
            "kind": "counter", "value": True, "unit": "times", "visibility": "used", "description": ""}}},
        {"format": "ringsim-statistics", "version": 1, "samples": {"/x": {
            "kind": "profile", "ns": 1, "unit": "ns/call", "visibility": "used", "description": ""}}},
    ],
)
def test_anything_but_a_statistics_file_is_rejected(document: object) -> None:
    with pytest.raises(StatisticsFileError):
        from_json(document)


# --- printing ------------------------------------------------------------------------------
def test_flat_dump_follows_stamr3print_formats(ports: Snapshot) -> None:
    lines = render_flat(select(ports)).splitlines()
    assert f"{'/IOM/IoPortCommits':<32} {1:>8} times" in lines
    assert "/IOM/IoPorts/0540-0547/0541-Out-R0toR3        1 times" in lines
    profile = next(line for line in lines if line.startswith("/IOM/IoPorts/0540-0547/0540-Out-R0-Prof "))
    match = re.fullmatch(r"\S+ +(\d+) ns/call \( *(\d+) ns, +1 calls\)", profile)
    assert match is not None and match[1] == match[2]
    assert lines == sorted(lines, key=lambda line: line.split()[0].split("/"))


def test_flat_profile_line_divides_total_by_calls() -> None:
    line = render_flat({"/PDM/CritSects/testdev#0/ContentionR3Wait": Sample.profile(301, 2, "")})
    assert line == f"{'/PDM/CritSects/testdev#0/ContentionR3Wait':<32} {150:>8} ns/call ({301:>12} ns, {2:>7} calls)"


def test_tree_has_one_line_per_path_component() -> None:
    samples = {
        "/PDM/CritSects/testdev#0/ContentionR3Wait": Sample.profile(300, 2, ""),
        "/IOM/IoPorts/0540-0547/0540-Out-R0": counter(1),
        "/IOM/IoPorts/0540-0547": counter(2, ALWAYS),
        "/IOM/IoPortCommits": counter(1),
    }
    assert render_tree(samples) == "\n".join(
        [
            "IOM",
            "  IoPortCommits                  1 times",
            "  IoPorts",
            "    0540-0547                    2 times",
            "      0540-Out-R0                1 times",
            "PDM",
            "  CritSects",
            "    testdev#0",
            "      ContentionR3Wait         150 ns/call (2 calls, 300 ns)",
        ]
    )


def test_tree_of_a_run_nests_ports_under_their_range(ports: Snapshot) -> None:
    lines = render_tree(select(ports)).splitlines()
    at = lines.index("  IoPorts")
    assert lines[at + 1].startswith("    03f8-03ff ")
    assert lines[at + 2].split() == ["03fd-In-R0", "1", "times"]
    assert lines[at + 2].startswith("      03fd-In-R0 ")
    assert any(line.startswith("  vCPU0") for line in lines)
    assert render_tree({}) == ""
