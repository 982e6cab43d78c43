"""The ``ringsim`` command, run as a user runs it: a separate process, real exit statuses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from shared.segments import SEGMENT_PREFIX

RINGSIM = [sys.executable, "-c", "from slowpath.cli import main; main()"]


def ringsim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RINGSIM, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def segments_of(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"{SEGMENT_PREFIX}{pid}_")]


def running(pid: int) -> bool:
    """True while *pid* is a live process.  A zombie (dead, waiting for this sandbox's
    init to reap it) is not running."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_run_with_no_arguments_exits_0_after_clean_power_off() -> None:
    done = ringsim("run")
    assert done.returncode == 0, done.stderr
    assert "VINF_EM_OFF" in done.stdout
    assert "Hello from the ringsim guest on COM1" in done.stdout


def test_run_json_has_the_documented_keys() -> None:
    done = ringsim("run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("accesses", "ring0_handled", "deferred", "commits", "final_status", "wall_s", "regions", "replay"):
        assert key in report
    assert set(report["deferred"]) >= {"no_ring0_handler", "device_asked", "device_lock_busy", "iom_lock_busy"}
    assert report["final_status"] == {"rc": 1109, "name": "VINF_EM_OFF"}
    assert {"reads_checked", "reads_matched", "mismatches"} <= set(report["replay"])
    assert report["accesses"] == report["ring0_handled"] + sum(report["deferred"].values())


def test_isa_debug_exit_becomes_the_exit_status() -> None:
    done = ringsim("run", "--workload", "debug-exit")
    assert done.returncode == (0x10 << 1) | 1


def test_trace_replay_reports_mismatches_with_line_numbers(tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    trace.write_text("# ringsim-trace v1\nin 0x540 4 = 0x64726962\n\nin 0x2f8 1 = 0x12\n")
    done = ringsim("run", "--workload", str(trace), "--json")
    assert done.returncode == 0, done.stderr
    replay = json.loads(done.stdout)["replay"]
    assert (replay["reads_checked"], replay["reads_matched"]) == (2, 1)
    assert replay["mismatches"][0]["line"] == 4
    assert replay["mismatches"][0]["got"] == 0xFF


@pytest.mark.parametrize(
    ("config", "line", "words"),
    [
        ('Name = "x"\n[Devices.serial.0.Config]\nIOBase = "high"\n', 3, "IOBase must be an integer"),
        ('Name = "x"\n\n[Devices.nosuch.0]\n', 3, "VERR_PDM_DEVICE_NOT_FOUND"),
        ('Name = "x"\nNumCPUs = 0\n', 2, "NumCPUs"),
        ('Name = "x"\n[Devices.serial.0]\nBogus = 1\n', 3, "unknown key 'Bogus'"),
        ("Name = \n", 1, "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_line(tmp_path: Path, config: str, line: int, words: str) -> None:
    path = tmp_path / "vm.toml"
    path.write_text(config)
    done = ringsim("run", "--config", str(path))
    assert done.returncode == 2
    message = done.stderr.strip()
    assert "\n" not in message
    assert message.startswith(f"ringsim: {path}:{line}: ")
    assert words in message


def test_bad_trace_line_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.trace"
    trace.write_text("out 0x80 1 0x1\nout 0x80 3 0x1\n")
    done = ringsim("run", "--workload", str(trace))
    assert done.returncode == 2
    assert done.stderr.strip() == f"ringsim: {trace}:2: port size 3 is not 1, 2 or 4"


def test_unknown_workload_names_the_builtin_programs() -> None:
    done = ringsim("run", "--workload", "no-such-thing")
    assert done.returncode == 2
    assert "built-in: debug-exit, hello" in done.stderr


def test_listen_any_warns_once_and_needs_tcp() -> None:
    done = ringsim("run", "--transport", "tcp", "--listen-any")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("every interface") == 1
    refused = ringsim("run", "--listen-any")
    assert refused.returncode == 2
    assert "--listen-any needs --transport tcp" in refused.stderr


def test_region_conflict_in_config_is_the_virtualbox_error(tmp_path: Path) -> None:
    path = tmp_path / "vm.toml"
    path.write_text("[Devices.serial.0.Config]\nIOBase = 0x540\n[Devices.testdev.0]\n")
    done = ringsim("run", "--config", str(path))
    assert done.returncode == 2
    # serial (class SERIAL) is built before testdev (class MISC); testdev's map collides.
    assert done.stderr.startswith(f"ringsim: {path}:3: testdev#0: VERR_IOM_IOPORT_RANGE_CONFLICT")


def test_info_ioport_lists_regions_in_virtualbox_columns() -> None:
    done = ringsim("info", "ioport")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"I/O port registrations: \d+ \(\d+ allocated\)", lines[0])
    assert lines[1] == " ## Ctx    Ports Mapping   PCI    Description"
    assert re.search(r"^ +\d+ R3\+0   0008  03f8-03ff        SERIAL$", done.stdout, re.MULTILINE)
    assert re.search(r"^ +\d+ R3     0004  00f4-00f7        ISA-DEBUG-EXIT$", done.stdout, re.MULTILINE)


def _start_long_run(tmp_path: Path) -> subprocess.Popen[str]:
    trace = tmp_path / "long.trace"
    trace.write_text("out 0x541 4 0x1\n" * 300_000)  # deferred writes: minutes of round trips
    return subprocess.Popen([*RINGSIM, "run", "--workload", str(trace)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _worker_of(process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in children_of(process.pid):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                time.sleep(0.5)  # let it get into its workload
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker process appeared")


def test_killed_worker_fails_the_run_within_5s_and_leaves_nothing(tmp_path: Path) -> None:
    process = _start_long_run(tmp_path)
    worker = _worker_of(process)
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - killed < 5.0
    assert process.returncode == 1
    assert re.search(r"vCPU 0 worker \(pid \d+\) ended before finishing its workload: killed by SIGKILL", stderr)
    assert segments_of(process.pid) == []
    assert not running(worker)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_powers_off_and_leaves_nothing(tmp_path: Path, signum: int, status: int) -> None:
    process = _start_long_run(tmp_path)
    worker = _worker_of(process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == status, stderr
    assert "powered off" in stderr
    assert "accesses" in stdout and "VM 'ringsim-pc'" in stdout  # the summary of what ran
    assert segments_of(process.pid) == []
    assert not running(worker)


def test_stats_out_then_ringsim_stats_prints_the_tree_with_a_pattern(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    assert ringsim("run", "--stats-out", str(path)).returncode == 0
    done = ringsim("stats", str(path), "--pattern", "/IOM/IoPortCommits|/PDM/CritSects/testdev*", "--flat")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert "/IOM/IoPortCommits" in names
    assert any(name.startswith("/PDM/CritSects/testdev#0/") for name in names)
    assert all(name == "/IOM/IoPortCommits" or name.startswith("/PDM/CritSects/testdev#0/") for name in names)
    as_json = json.loads(ringsim("stats", str(path), "--json").stdout)
    assert as_json["samples"]["/IOM/IoPortCommits"]["value"] > 0


def test_stats_of_a_file_that_is_not_statistics_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.json"
    path.write_text('{"hello": 1}')
    done = ringsim("stats", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"ringsim: {path}: not a ringsim statistics file")
