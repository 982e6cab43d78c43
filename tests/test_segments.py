"""shared/segments.py: shared-memory segments, their views, their cleanup and the sweep of stale ones."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import segments
from shared.segments import SEGMENT_PREFIX, Segment, new_segment_name, sweep_stale

SHM = Path("/dev/shm")


class Pair(ctypes.Structure):
    _fields_ = [("first", ctypes.c_uint32), ("second", ctypes.c_uint32)]


def mapped_in_this_process(name: str) -> bool:
    """Whether /dev/shm/<name> is mapped into this process (deleted or not)."""
    return f"/dev/shm/{name}" in Path("/proc/self/maps").read_text()


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped, so no process has it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def segment() -> Iterator[Segment]:
    """A fresh 4 KiB segment, closed and unlinked whatever the test does."""
    created = Segment.create("test", 4096)
    try:
        yield created
    finally:
        created.close()
        created.unlink()


@pytest.fixture
def fake_shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point sweep_stale at a private directory, so it cannot touch other runs' real segments."""
    monkeypatch.setattr(segments, "_SHM_DIR", tmp_path)
    return tmp_path


# --- names -----------------------------------------------------------------------------
def test_segment_name_carries_prefix_pid_token_and_tag() -> None:
    name = new_segment_name("stats")
    prefix, pid, token, tag = name.split("_")
    assert f"{prefix}_" == SEGMENT_PREFIX and int(pid) == os.getpid() and tag == "stats"
    assert len(token) == 8 and int(token, 16) >= 0
    assert new_segment_name("stats") != name


def test_create_makes_a_named_segment_of_at_least_the_size(segment: Segment) -> None:
    assert segment.name.startswith(f"{SEGMENT_PREFIX}{os.getpid()}_") and segment.name.endswith("_test")
    assert segment.owner
    assert segment.size >= 4096
    assert (SHM / segment.name).exists()


# --- views -----------------------------------------------------------------------------
def test_value_written_through_one_segment_is_seen_through_an_attached_one(segment: Segment) -> None:
    attached = Segment.attach(segment.name)
    try:
        assert not attached.owner and attached.size == segment.size
        mine = segment.view(Pair, 8)
        theirs = attached.view(Pair, 8)
        mine.first, mine.second = 0xDEADBEEF, 7
        assert (theirs.first, theirs.second) == (0xDEADBEEF, 7)
        theirs.second = 42
        assert mine.second == 42
        # words() sees the same bytes: offset 8 is word 1, little-endian (second << 32) | first.
        assert attached.words()[1] == (42 << 32) | 0xDEADBEEF
        segment.words()[2] = 1 << 63
        assert attached.view(ctypes.c_uint64, 16).value == 1 << 63
        del mine, theirs
    finally:
        attached.close()
    assert (SHM / segment.name).exists()  # closing an attachment does not remove the name


def test_words_views_the_whole_segment_as_64_bit_words(segment: Segment) -> None:
    words = segment.words()
    assert words.format == "Q" and words.itemsize == 8 and len(words) == segment.size // 8


def test_attach_to_a_missing_name_fails() -> None:
    with pytest.raises(FileNotFoundError):
        Segment.attach(f"{SEGMENT_PREFIX}{os.getpid()}_00000000_absent")


# --- close -----------------------------------------------------------------------------
def test_close_unmaps_after_views_were_handed_out(segment: Segment) -> None:
    segment.view(Pair).first = 1
    segment.view(ctypes.c_uint64, 64).value = 2
    words = segment.words()
    assert words[0] == 1 and mapped_in_this_process(segment.name)
    segment.close()
    assert not mapped_in_this_process(segment.name)
    with pytest.raises(ValueError, match="released"):
        words[0]  # close() released the words() view it handed out


def test_close_is_idempotent(segment: Segment) -> None:
    segment.words()
    segment.close()
    segment.close()
    assert not mapped_in_this_process(segment.name)


def test_close_with_a_view_still_alive_detaches_and_the_mapping_goes_with_the_view(segment: Segment) -> None:
    kept = segment.view(Pair)
    segment.close()  # must not raise from cleanup code
    assert mapped_in_this_process(segment.name)
    kept.first = 5  # the mapping stays valid for the view that outlived close()
    assert kept.first == 5
    del kept
    assert not mapped_in_this_process(segment.name)


# --- unlink ----------------------------------------------------------------------------
def test_unlink_removes_the_name_from_dev_shm(segment: Segment) -> None:
    path = SHM / segment.name
    assert path.exists()
    segment.unlink()
    assert not path.exists()
    segment.unlink()  # a second unlink is harmless


def test_segment_outlives_unlink_while_mapped(segment: Segment) -> None:
    value = segment.view(ctypes.c_uint64)
    segment.unlink()
    value.value = 99
    assert value.value == 99
    del value


# --- sweep_stale -----------------------------------------------------------------------
def test_sweep_removes_a_ringsim_segment_whose_creator_is_dead(fake_shm: Path) -> None:
    stale = f"{SEGMENT_PREFIX}{dead_pid()}_0badc0de_stats"
    (fake_shm / stale).write_bytes(bytes(64))
    assert sweep_stale() == [stale]
    assert not (fake_shm / stale).exists()


def test_sweep_leaves_live_processes_and_foreign_names_alone(fake_shm: Path) -> None:
    pid = dead_pid()
    stale = f"{SEGMENT_PREFIX}{pid}_00c0ffee_vm"
    kept = [
        f"{SEGMENT_PREFIX}{os.getpid()}_12345678_vm",  # this process: alive
        f"{SEGMENT_PREFIX}1_12345678_vm",  # pid 1 is always alive
        f"other_{pid}_12345678_vm",  # not ringsim's prefix
        f"ringsimx{pid}_12345678_vm",  # a prefix that only starts like ringsim's
        f"{SEGMENT_PREFIX}pid{pid}_vm",  # no pid where ringsim puts one
        f"sem.mp-{pid}",
    ]
    for name in [stale, *kept]:
        (fake_shm / name).write_bytes(b"")
    assert sweep_stale() == [stale]
    assert sorted(path.name for path in fake_shm.iterdir()) == sorted(kept)


def test_sweep_of_a_missing_directory_removes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "_SHM_DIR", tmp_path / "absent")
    assert sweep_stale() == []


def test_sweep_in_dev_shm_keeps_this_process_segments(segment: Segment) -> None:
    removed = sweep_stale()
    assert segment.name not in removed
    assert (SHM / segment.name).exists()
    assert all(name.startswith(SEGMENT_PREFIX) for name in removed)
