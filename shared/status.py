"""VirtualBox status codes, with their real values, and the rules that combine them.

Successes are >= 0, failures < 0 (IPRT's RT_SUCCESS / RT_FAILURE).  The values are
VirtualBox's own (include/iprt/err.h, include/VBox/err.h); see ../shared/STATUS-CODES.md.
A status travels as a plain ``int`` everywhere, because the ring-0 hot path compares
them millions of times; :func:`status_name` turns one into its printable name.
"""

from __future__ import annotations

# --- IPRT basics -----------------------------------------------------------------------
VINF_SUCCESS = 0
VERR_INVALID_PARAMETER = -2
VERR_INVALID_FLAGS = -13
VERR_WRONG_ORDER = -22
VERR_OUT_OF_RANGE = -54
VERR_UNSUPPORTED_ALIGNMENT = -97
VERR_SEM_BUSY = -360
VERR_SEM_DESTROYED = -363

# --- EM scheduling codes: the lower the value, the more urgent -------------------------
VINF_EM_FIRST = 1100
VINF_EM_TERMINATE = 1100
VINF_EM_DBG_HYPER_STEPPED = 1101
VINF_EM_DBG_HYPER_BREAKPOINT = 1102
VINF_EM_DBG_HYPER_ASSERTION = 1103
VINF_EM_DBG_EVENT = 1104
VINF_EM_DBG_STOP = 1105
VINF_EM_DBG_STEPPED = 1106
VINF_EM_DBG_BREAKPOINT = 1107
VINF_EM_DBG_STEP = 1108
VINF_EM_OFF = 1109
VINF_EM_SUSPEND = 1110
VINF_EM_RESET = 1111
VINF_EM_HALT = 1112
VINF_EM_RESUME = 1113
VINF_EM_NO_MEMORY = 1114
VINF_EM_RESCHEDULE_REM = 1115
VINF_EM_RESCHEDULE_HM = 1116
VINF_EM_RESCHEDULE_RAW = 1117
VINF_EM_RESCHEDULE = 1118
VINF_EM_RESCHEDULE_PARAV = 1119
VINF_EM_WAIT_SIPI = 1120
VINF_EM_LAST = 1120

VINF_EM_RAW_TO_R3 = 1135
VINF_EM_PENDING_R3_IOPORT_READ = 1159
VINF_EM_PENDING_R3_IOPORT_WRITE = 1160

# --- IOM -------------------------------------------------------------------------------
VERR_IOM_INVALID_IOPORT_RANGE = -2600
VERR_IOM_IOPORT_RANGE_CONFLICT = -2602
VERR_IOM_INVALID_MMIO_RANGE = -2605
VERR_IOM_MMIO_RANGE_CONFLICT = -2608
VERR_IOM_INVALID_IOPORT_SIZE = -2611
VERR_IOM_IOPORT_UNUSED = -2614
VINF_IOM_MMIO_UNUSED_00 = 2615
VINF_IOM_MMIO_UNUSED_FF = 2616
VINF_IOM_R3_IOPORT_READ = 2620
VINF_IOM_R3_IOPORT_WRITE = 2621
VINF_IOM_R3_IOPORT_COMMIT_WRITE = 2622
VINF_IOM_R3_MMIO_READ = 2623
VINF_IOM_R3_MMIO_WRITE = 2624
VINF_IOM_R3_MMIO_READ_WRITE = 2625
VINF_IOM_R3_MMIO_COMMIT_WRITE = 2626
VERR_IOM_IOPORT_IPE_1 = -2631
VERR_IOM_IOPORT_IPE_2 = -2632
VERR_IOM_MMIO_IPE_1 = -2634
VERR_IOM_MMIO_IPE_2 = -2635
VERR_IOM_MMIO_IPE_3 = -2636
VERR_IOM_FF_STATUS_IPE = -2638
VERR_IOM_TOO_MANY_IOPORT_REGISTRATIONS = -2650
VERR_IOM_INVALID_IOPORT_HANDLE = -2651
VERR_IOM_IOPORTS_ALREADY_MAPPED = -2652
VERR_IOM_IOPORTS_NOT_MAPPED = -2653
VERR_IOM_TOO_MANY_MMIO_REGISTRATIONS = -2660
VERR_IOM_INVALID_MMIO_HANDLE = -2661
VERR_IOM_MMIO_REGION_ALREADY_MAPPED = -2662
VERR_IOM_MMIO_REGION_NOT_MAPPED = -2663

# --- PDM -------------------------------------------------------------------------------
VERR_PDM_NO_ATTACHED_DRIVER = -2810
VERR_PDM_INVALID_DEVICE_REGISTRATION = -2836
VERR_PDM_DEVICE_NAME_CLASH = -2839
VERR_PDM_DEVICE_NOT_FOUND = -2840
VERR_PDM_TOO_MANY_DEVICE_INSTANCES = -2867

# ringsim's own failure for "the peer tier is gone or broken".  VirtualBox has no such
# case (its tiers share an address space), so it borrows IPRT's generic
# VERR_INTERNAL_ERROR value (-225) rather than invent a new number.
VERR_INTERNAL_ERROR = -225

_NAMES: dict[int, str] = {}
for _name, _value in list(globals().items()):
    if _name.startswith(("VINF_", "VERR_")) and isinstance(_value, int):
        # The FIRST/LAST aliases must not hide the real names of 1100 and 1120.
        if _name in ("VINF_EM_FIRST", "VINF_EM_LAST"):
            continue
        _NAMES.setdefault(_value, _name)


def status_name(rc: int) -> str:
    """The VirtualBox name of a status code, or the number itself when ringsim has none."""
    return _NAMES.get(rc, f"rc={rc}")


def is_success(rc: int) -> bool:
    """IPRT's RT_SUCCESS: informational codes are successes too."""
    return rc >= 0


def is_failure(rc: int) -> bool:
    """IPRT's RT_FAILURE."""
    return rc < 0


def is_em_status(rc: int) -> bool:
    """True for the EM scheduling codes VINF_EM_FIRST..VINF_EM_LAST."""
    return VINF_EM_FIRST <= rc <= VINF_EM_LAST


_RESCHEDULE_CODES = (VINF_EM_RESCHEDULE_REM, VINF_EM_RESCHEDULE_HM, VINF_EM_RESCHEDULE_RAW)


def iom_success_r3(rc: int) -> bool:
    """IOM_SUCCESS as compiled for ring-3: VINF_SUCCESS, or an EM code that is not a reschedule."""
    return rc == VINF_SUCCESS or (is_em_status(rc) and rc not in _RESCHEDULE_CODES)


def iom_success_r0(rc: int) -> bool:
    """IOM_SUCCESS as compiled for ring-0: the ring-3 rule plus the two COMMIT_WRITE codes.

    A commit code retires the instruction; the device sees the write later in ring-3.
    """
    return (
        rc == VINF_IOM_R3_IOPORT_COMMIT_WRITE
        or rc == VINF_IOM_R3_MMIO_COMMIT_WRITE
        or iom_success_r3(rc)
    )


def merge_status(current: int, commit: int, commit_code: int) -> int:
    """Merge the status of a ring-3 commit into the vCPU's current status.

    This is VirtualBox's ``iomR3MergeStatus``: *current* is what the vCPU had (often the
    commit code ring-0 returned), *commit* is what the committed access returned and
    *commit_code* is VINF_IOM_R3_IOPORT_COMMIT_WRITE or VINF_IOM_R3_MMIO_COMMIT_WRITE.
    EM codes keep the most urgent (lowest); a failure wins; anything else cannot be
    merged and gives VERR_IOM_FF_STATUS_IPE.
    """
    if current in (commit_code, VINF_EM_RAW_TO_R3, VINF_SUCCESS):
        return commit
    if commit == VINF_SUCCESS:
        return current
    if is_em_status(current) and is_em_status(commit):
        return min(current, commit)
    if current < 0:
        return current
    if commit < 0:
        return commit
    if current == commit:
        return current
    return VERR_IOM_FF_STATUS_IPE


class VBoxError(Exception):
    """An operation failed with a VirtualBox status code (ring-3 API calls raise these)."""

    def __init__(self, rc: int, message: str) -> None:
        super().__init__(f"{status_name(rc)} ({rc}): {message}")
        self.rc = rc
        self.detail = message
