"""Guest I/O traces (../shared/TRACE-FORMAT.md, version 1): parsing into operations.

Ring-3 parses a trace before power-on, so a bad line stops the run before anything
starts; the worker of each vCPU then replays its share.  A line that does not parse
raises :class:`TraceError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import NamedTuple

# Operation kinds.
IN = 0
OUT = 1
INS = 2
OUTS = 3
MMIO_READ = 4
MMIO_WRITE = 5

KIND_NAMES = {IN: "in", OUT: "out", INS: "ins", OUTS: "outs", MMIO_READ: "rd", MMIO_WRITE: "wr"}
_KINDS = {name: kind for kind, name in KIND_NAMES.items()}
PORT_SIZES = (1, 2, 4)
MMIO_SIZES = (1, 2, 4, 8)
MAX_STRING_UNITS = 4096  # the sample traces split REP instructions at this many units


class TraceError(Exception):
    """A trace line that does not follow the format."""


class TimeDependentRule(NamedTuple):
    """Reads that depend on time (timer counters, clock registers): replays report them apart.

    A rule covers the ports (or, with ``mmio``, the guest-physical addresses) first..last.
    With an index port, it covers them only while the value last written to that port,
    masked with ``index_mask``, lies in index_first..index_last (the RTC's time registers
    behind port 0x70, say).
    """

    first: int
    last: int
    mmio: bool = False
    index_port: int | None = None
    index_mask: int = 0xFF
    index_first: int = 0
    index_last: int = 0xFF


class TraceOp(NamedTuple):
    """One guest access.  For reads ``expected`` may be None (no expectation)."""

    kind: int
    vcpu: int
    address: int  # port, or guest-physical address for MMIO
    size: int
    value: int  # OUT/wr: the value; INS: the unit count; otherwise 0
    data: bytes  # OUTS: the bytes written; otherwise b""
    expected: int | bytes | None
    line: int


def _number(text: str, what: str) -> int:
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number (0x hex or decimal)") from None


def _hex_bytes(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an even-length run of hex digits") from None


def parse_line(text: str, line: int) -> TraceOp | None:
    """Parse one line; None for blank and comment lines.  Raises ValueError with the reason."""
    text = text.split("#", 1)[0].strip()
    if not text:
        return None
    words = text.split()
    vcpu = 0
    if words[0].startswith("@"):
        vcpu = _number(words[0][1:], "vCPU")
        if vcpu < 0:
            raise ValueError(f"vCPU {vcpu} is negative")
        words = words[1:]
        if not words:
            raise ValueError("'@N' must be followed by an access")
    kind = _KINDS.get(words[0])
    if kind is None:
        raise ValueError(f"unknown access {words[0]!r}; expected one of {', '.join(_KINDS)}")
    mmio = kind in (MMIO_READ, MMIO_WRITE)
    expected: int | bytes | None = None
    if "=" in words:
        at = words.index("=")
        if kind not in (IN, INS, MMIO_READ) or at != len(words) - 2:
            raise ValueError("'= EXPECTED' goes at the end of an in, ins or rd line")
        expected_text = words[-1]
        words = words[:at]
    else:
        expected_text = None
    wanted = {IN: 3, OUT: 4, INS: 4, OUTS: 4, MMIO_READ: 3, MMIO_WRITE: 4}[kind]
    if len(words) != wanted:
        layout = {
            IN: "in PORT SIZE [= VALUE]",
            OUT: "out PORT SIZE VALUE",
            INS: "ins PORT SIZE COUNT [= BYTES]",
            OUTS: "outs PORT SIZE BYTES",
            MMIO_READ: "rd ADDRESS SIZE [= VALUE]",
            MMIO_WRITE: "wr ADDRESS SIZE VALUE",
        }[kind]
        raise ValueError(f"expected '{layout}'")
    address = _number(words[1], "address" if mmio else "port")
    size = _number(words[2], "size")
    if mmio:
        if size not in MMIO_SIZES:
            raise ValueError(f"MMIO size {size} is not 1, 2, 4 or 8")
        if not 0 <= address < 1 << 64:
            raise ValueError(f"address {address:#x} is outside the 64-bit physical space")
    else:
        if size not in PORT_SIZES:
            raise ValueError(f"port size {size} is not 1, 2 or 4")
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"port {address:#x} is outside 0..0xffff")
    limit = 1 << (8 * size)
    value = 0
    data = b""
    if kind in (OUT, MMIO_WRITE):
        value = _number(words[3], "value")
        if not 0 <= value < limit:
            raise ValueError(f"value {value:#x} does not fit in {size} bytes")
    elif kind == INS:
        value = _number(words[3], "count")
        if not 1 <= value <= MAX_STRING_UNITS:
            raise ValueError(f"count {value} is not in 1..{MAX_STRING_UNITS}")
    elif kind == OUTS:
        data = _hex_bytes(words[3], "bytes")
        if not data or len(data) % size:
            raise ValueError(f"{len(data)} bytes are not a whole, non-zero number of {size}-byte units")
        if len(data) // size > MAX_STRING_UNITS:
            raise ValueError(f"more than {MAX_STRING_UNITS} units in one outs line")
    if expected_text is not None:
        if kind == INS:
            expected = _hex_bytes(expected_text, "expected bytes")
            if len(expected) != value * size:
                raise ValueError(f"expected {value * size} bytes, got {len(expected)}")
        else:
            expected = _number(expected_text, "expected value")
            if not 0 <= expected < limit:
                raise ValueError(f"expected value {expected:#x} does not fit in {size} bytes")
    return TraceOp(kind, vcpu, address, size, value, data, expected, line)


def parse_text(text: str, source: str) -> list[TraceOp]:
    ops: list[TraceOp] = []
    # Lines end at '\n' only: str.splitlines() would also split at form feeds and
    # other separators a comment may hold, and shift every later line number.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        try:
            op = parse_line(line, number)
        except ValueError as exc:
            raise TraceError(f"{source}:{number}: {exc}") from None
        if op is not None:
            ops.append(op)
    return ops


def read_trace(path: Path) -> list[TraceOp]:
    """Parse a trace file (gzip-compressed when it ends in .gz)."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise TraceError(f"{path}: cannot read trace: {exc}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text: {exc}") from None
    return parse_text(text, str(path))
