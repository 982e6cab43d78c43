"""The body of a string I/O access, the same in both tiers (IOMIOPortReadString / WriteString).

A device's string callback goes first and may do any prefix of the units; single
accesses do the rest, stopping at the first status other than VINF_SUCCESS.  The tier
passes its own IOM_SUCCESS rule, since ring-0 also accepts the commit codes.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.devapi import PortIn, PortInString, PortOut, PortOutString
from shared.status import VERR_IOM_IOPORT_UNUSED, VINF_SUCCESS

ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
"""What a read of an unassigned port returns, by access size."""


def read_units(
    in_: PortIn,
    in_string: PortInString | None,
    where: int,
    size: int,
    count: int,
    succeeded: Callable[[int], bool],
) -> tuple[int, bytes, int]:
    """The body of a string read, shared by both tiers: the string callback, then single INs.

    *succeeded* is the tier's IOM_SUCCESS.  Returns (status, data, units left).
    """
    rc = VINF_SUCCESS
    data = b""
    left = count
    if in_string is not None:
        rc, data = in_string(where, count, size)
        data = data[: len(data) // size * size][: count * size]  # whole units, no more than asked
        left = count - len(data) // size
    if left and rc == VINF_SUCCESS:
        parts = [data]
        mask = ALL_ONES[size]
        while True:
            rc, value = in_(where, size)
            if rc == VERR_IOM_IOPORT_UNUSED:
                rc, value = VINF_SUCCESS, mask
            if succeeded(rc):
                parts.append((value & mask).to_bytes(size, "little"))
                left -= 1
            if not left or rc != VINF_SUCCESS:
                break
        data = b"".join(parts)
    return rc, data, left


def write_units(
    out: PortOut,
    out_string: PortOutString | None,
    where: int,
    size: int,
    data: bytes,
    succeeded: Callable[[int], bool],
) -> tuple[int, int]:
    """The body of a string write, shared by both tiers.  Returns (status, units done)."""
    count = len(data) // size
    rc = VINF_SUCCESS
    done = 0
    if out_string is not None:
        rc, done = out_string(where, data, size)
    while done < count and rc == VINF_SUCCESS:
        start = done * size
        rc = out(where, int.from_bytes(data[start : start + size], "little"), size)
        if succeeded(rc):
            done += 1
    return rc, done
