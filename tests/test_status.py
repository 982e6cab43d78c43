"""shared/status.py: VirtualBox's status values, their names, IOM_SUCCESS and iomR3MergeStatus."""

from __future__ import annotations

import pytest

from shared import status
from shared.status import (
    VERR_IOM_FF_STATUS_IPE,
    VERR_IOM_INVALID_IOPORT_SIZE,
    VERR_IOM_IOPORT_IPE_1,
    VERR_IOM_IOPORT_UNUSED,
    VERR_SEM_BUSY,
    VERR_SEM_DESTROYED,
    VINF_EM_DBG_STOP,
    VINF_EM_FIRST,
    VINF_EM_HALT,
    VINF_EM_LAST,
    VINF_EM_PENDING_R3_IOPORT_READ,
    VINF_EM_PENDING_R3_IOPORT_WRITE,
    VINF_EM_RAW_TO_R3,
    VINF_EM_RESCHEDULE,
    VINF_EM_RESCHEDULE_HM,
    VINF_EM_RESCHEDULE_RAW,
    VINF_EM_RESCHEDULE_REM,
    VINF_EM_RESET,
    VINF_EM_SUSPEND,
    VINF_EM_TERMINATE,
    VINF_EM_WAIT_SIPI,
    VINF_IOM_MMIO_UNUSED_00,
    VINF_IOM_MMIO_UNUSED_FF,
    VINF_IOM_R3_IOPORT_COMMIT_WRITE,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_IOM_R3_MMIO_COMMIT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_READ_WRITE,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
    iom_success_r0,
    iom_success_r3,
    merge_status,
    status_name,
)

PORT_COMMIT = VINF_IOM_R3_IOPORT_COMMIT_WRITE
MMIO_COMMIT = VINF_IOM_R3_MMIO_COMMIT_WRITE


# --- values ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        # The values in STATUS-CODES.md, which are VirtualBox's err.h values.
        ("VINF_SUCCESS", 0),
        ("VERR_SEM_BUSY", -360),
        ("VERR_WRONG_ORDER", -22),
        ("VINF_EM_TERMINATE", 1100),
        ("VINF_EM_DBG_STOP", 1105),
        ("VINF_EM_OFF", 1109),
        ("VINF_EM_HALT", 1112),
        ("VINF_EM_RESCHEDULE_REM", 1115),
        ("VINF_EM_RESCHEDULE_HM", 1116),
        ("VINF_EM_RESCHEDULE_RAW", 1117),
        ("VINF_EM_WAIT_SIPI", 1120),
        ("VINF_EM_RAW_TO_R3", 1135),
        ("VINF_EM_PENDING_R3_IOPORT_READ", 1159),
        ("VINF_EM_PENDING_R3_IOPORT_WRITE", 1160),
        ("VINF_IOM_MMIO_UNUSED_00", 2615),
        ("VINF_IOM_MMIO_UNUSED_FF", 2616),
        ("VINF_IOM_R3_IOPORT_READ", 2620),
        ("VINF_IOM_R3_IOPORT_WRITE", 2621),
        ("VINF_IOM_R3_IOPORT_COMMIT_WRITE", 2622),
        ("VINF_IOM_R3_MMIO_READ", 2623),
        ("VINF_IOM_R3_MMIO_WRITE", 2624),
        ("VINF_IOM_R3_MMIO_READ_WRITE", 2625),
        ("VINF_IOM_R3_MMIO_COMMIT_WRITE", 2626),
        ("VERR_IOM_IOPORT_RANGE_CONFLICT", -2602),
        ("VERR_IOM_MMIO_RANGE_CONFLICT", -2608),
        ("VERR_IOM_INVALID_IOPORT_SIZE", -2611),
        ("VERR_IOM_IOPORT_UNUSED", -2614),
        ("VERR_IOM_IOPORT_IPE_1", -2631),
        ("VERR_IOM_MMIO_IPE_1", -2634),
        ("VERR_IOM_MMIO_IPE_2", -2635),
        ("VERR_IOM_FF_STATUS_IPE", -2638),
        ("VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS", -2650),
        ("VERR_IOM_INVALID_IOPORT_HANDLE", -2651),
        ("VERR_IOM_IOPORTS_ALREADY_MAPPED", -2652),
        ("VERR_IOM_IOPORTS_NOT_MAPPED", -2653),
        ("VERR_IOM_TOO_MANY_MMIO_REGISTRATIONS", -2660),
        ("VERR_IOM_INVALID_MMIO_HANDLE", -2661),
        ("VERR_IOM_MMIO_REGION_ALREADY_MAPPED", -2662),
        ("VERR_IOM_MMIO_REGION_NOT_MAPPED", -2663),
    ],
)
def test_status_values_are_virtualbox_values(name: str, value: int) -> None:
    assert getattr(status, name) == value


def test_em_range_is_1100_to_1120() -> None:
    assert (VINF_EM_FIRST, VINF_EM_LAST) == (1100, 1120)


# --- status_name -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rc", "name"),
    [
        (VINF_SUCCESS, "VINF_SUCCESS"),
        (VERR_SEM_BUSY, "VERR_SEM_BUSY"),
        (VINF_IOM_R3_IOPORT_READ, "VINF_IOM_R3_IOPORT_READ"),
        (VERR_IOM_FF_STATUS_IPE, "VERR_IOM_FF_STATUS_IPE"),
        (VINF_EM_PENDING_R3_IOPORT_WRITE, "VINF_EM_PENDING_R3_IOPORT_WRITE"),
    ],
)
def test_status_name_gives_the_virtualbox_name(rc: int, name: str) -> None:
    assert status_name(rc) == name


def test_status_name_of_em_range_ends_is_not_the_first_last_alias() -> None:
    assert status_name(1100) == "VINF_EM_TERMINATE"
    assert status_name(1120) == "VINF_EM_WAIT_SIPI"


@pytest.mark.parametrize("rc", [12345, -1, 1121])
def test_status_name_of_unknown_code_is_the_number(rc: int) -> None:
    assert status_name(rc) == f"rc={rc}"


# --- IOM_SUCCESS -----------------------------------------------------------------------
EM_CODES = list(range(VINF_EM_FIRST, VINF_EM_LAST + 1))
RESCHEDULE_CODES = [VINF_EM_RESCHEDULE_REM, VINF_EM_RESCHEDULE_HM, VINF_EM_RESCHEDULE_RAW]
EM_SUCCESS_CODES = [rc for rc in EM_CODES if rc not in RESCHEDULE_CODES]
NEVER_SUCCESS = [
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_IOM_R3_MMIO_READ_WRITE,
    VINF_IOM_MMIO_UNUSED_00,
    VINF_IOM_MMIO_UNUSED_FF,
    VINF_EM_RAW_TO_R3,
    VINF_EM_PENDING_R3_IOPORT_READ,
    VINF_EM_PENDING_R3_IOPORT_WRITE,
    VINF_EM_FIRST - 1,
    VINF_EM_LAST + 1,
    VERR_SEM_BUSY,
    VERR_IOM_IOPORT_UNUSED,
    VERR_IOM_INVALID_IOPORT_SIZE,
    -1,
    *RESCHEDULE_CODES,
]


@pytest.mark.parametrize("rc", [VINF_SUCCESS, *EM_SUCCESS_CODES])
def test_iom_success_r3_accepts_success_and_em_codes(rc: int) -> None:
    assert iom_success_r3(rc)


@pytest.mark.parametrize("rc", [*NEVER_SUCCESS, PORT_COMMIT, MMIO_COMMIT])
def test_iom_success_r3_rejects_reschedules_deferrals_commits_and_failures(rc: int) -> None:
    assert not iom_success_r3(rc)


@pytest.mark.parametrize("rc", [VINF_SUCCESS, *EM_SUCCESS_CODES, PORT_COMMIT, MMIO_COMMIT])
def test_iom_success_r0_also_accepts_the_two_commit_codes(rc: int) -> None:
    assert iom_success_r0(rc)


@pytest.mark.parametrize("rc", NEVER_SUCCESS)
def test_iom_success_r0_rejects_reschedules_deferrals_and_failures(rc: int) -> None:
    assert not iom_success_r0(rc)


# --- merge_status (iomR3MergeStatus) ---------------------------------------------------
OK = VINF_SUCCESS
HALT = VINF_EM_HALT
BUSY = VERR_SEM_BUSY
IPE_1 = VERR_IOM_IOPORT_IPE_1
CANNOT_MERGE = VERR_IOM_FF_STATUS_IPE


def case(current: int, commit: int, merged: int, rule: str, commit_code: int = PORT_COMMIT) -> object:
    """One row of the merge table: merge_status(current, commit, commit_code) == merged."""
    return pytest.param(current, commit, commit_code, merged, id=rule)


MERGE_CASES = [
    # Rule 1: current is the commit code, VINF_EM_RAW_TO_R3 or VINF_SUCCESS -> the commit's status.
    case(PORT_COMMIT, OK, OK, "1-current-is-port-commit-code"),
    case(PORT_COMMIT, HALT, HALT, "1-commit-code-takes-em"),
    case(PORT_COMMIT, BUSY, BUSY, "1-commit-code-takes-failure"),
    case(PORT_COMMIT, VINF_IOM_R3_IOPORT_WRITE, VINF_IOM_R3_IOPORT_WRITE, "1-commit-code-takes-any-code"),
    case(MMIO_COMMIT, VINF_EM_RESET, VINF_EM_RESET, "1-current-is-mmio-commit-code", MMIO_COMMIT),
    case(VINF_EM_RAW_TO_R3, VINF_EM_SUSPEND, VINF_EM_SUSPEND, "1-raw-to-r3-takes-em"),
    case(VINF_EM_RAW_TO_R3, IPE_1, IPE_1, "1-raw-to-r3-takes-failure"),
    case(OK, HALT, HALT, "1-current-success-takes-em"),
    case(OK, BUSY, BUSY, "1-current-success-takes-failure"),
    case(OK, OK, OK, "1-both-success"),
    # Rule 2: the commit succeeded -> the current status.
    case(HALT, OK, HALT, "2-commit-success-keeps-em"),
    case(BUSY, OK, BUSY, "2-commit-success-keeps-failure"),
    case(VINF_IOM_R3_IOPORT_READ, OK, VINF_IOM_R3_IOPORT_READ, "2-commit-success-keeps-other-code"),
    case(MMIO_COMMIT, OK, MMIO_COMMIT, "2-the-other-commit-code-is-not-rule-1"),
    # Rule 3: both EM scheduling codes -> the lower (more urgent) one, in either order.
    case(HALT, VINF_EM_TERMINATE, VINF_EM_TERMINATE, "3-em-commit-lower"),
    case(VINF_EM_TERMINATE, HALT, VINF_EM_TERMINATE, "3-em-current-lower"),
    case(VINF_EM_WAIT_SIPI, VINF_EM_DBG_STOP, VINF_EM_DBG_STOP, "3-em-range-end", MMIO_COMMIT),
    case(VINF_EM_RESCHEDULE, VINF_EM_RESET, VINF_EM_RESET, "3-em-reschedule-vs-reset"),
    case(HALT, HALT, HALT, "3-em-equal"),
    # Rule 4a: a failure in the current status wins.
    case(BUSY, HALT, BUSY, "4-current-failure-beats-em"),
    case(BUSY, IPE_1, BUSY, "4-current-failure-beats-commit-failure"),
    case(VERR_SEM_DESTROYED, VINF_IOM_R3_IOPORT_WRITE, VERR_SEM_DESTROYED, "4-current-failure-beats-info"),
    # Rule 4b: then a failure in the commit's status.
    case(HALT, IPE_1, IPE_1, "4-commit-failure-beats-em"),
    case(VINF_IOM_R3_IOPORT_READ, BUSY, BUSY, "4-commit-failure-beats-info"),
    # Rule 4c: two equal codes (neither EM nor failure) give that code.
    case(VINF_IOM_R3_IOPORT_READ, VINF_IOM_R3_IOPORT_READ, VINF_IOM_R3_IOPORT_READ, "4-equal-codes"),
    case(
        VINF_EM_PENDING_R3_IOPORT_READ,
        VINF_EM_PENDING_R3_IOPORT_READ,
        VINF_EM_PENDING_R3_IOPORT_READ,
        "4-equal-codes-outside-em-range",
    ),
    # Rule 4d: anything else cannot be merged.
    case(HALT, VINF_IOM_R3_IOPORT_WRITE, CANNOT_MERGE, "4-em-vs-iom-code"),
    case(HALT, VINF_EM_RAW_TO_R3, CANNOT_MERGE, "4-em-vs-raw-to-r3-outside-em-range"),
    case(VINF_EM_PENDING_R3_IOPORT_READ, VINF_EM_PENDING_R3_IOPORT_WRITE, CANNOT_MERGE, "4-two-pending"),
    case(MMIO_COMMIT, HALT, CANNOT_MERGE, "4-the-other-commit-code-is-not-rule-1"),
    case(VINF_IOM_R3_MMIO_READ, VINF_IOM_R3_MMIO_WRITE, CANNOT_MERGE, "4-two-iom-codes", MMIO_COMMIT),
]


@pytest.mark.parametrize(("current", "commit", "commit_code", "merged"), MERGE_CASES)
def test_merge_status_table(current: int, commit: int, commit_code: int, merged: int) -> None:
    assert merge_status(current, commit, commit_code) == merged


def test_merge_failure_in_current_wins() -> None:
    for commit in (VINF_EM_HALT, VINF_IOM_R3_IOPORT_WRITE, VERR_IOM_IOPORT_IPE_1, VINF_EM_RAW_TO_R3):
        assert merge_status(VERR_SEM_BUSY, commit, PORT_COMMIT) == VERR_SEM_BUSY


def test_merge_both_em_takes_lower_for_every_pair() -> None:
    for current in EM_CODES:
        for commit in EM_CODES:
            assert merge_status(current, commit, PORT_COMMIT) == min(current, commit)
