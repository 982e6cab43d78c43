"""The wire protocol between a ring-0 worker (ZeroMQ DEALER) and ring-3 (ROUTER).

Every message is one msgpack array.  A request is ``[version, op, seq, vcpu, *args]``;
a reply is ``[version, op, seq, status, payload]``.  Every message is validated on
receipt against the table below: its size, its version, its operation, the number and
types of its fields and their ranges.  A message that fails names what is wrong and
where (:class:`WireError`); nothing in a message names a file, a module or code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # every message; ZeroMQ enforces it too (MAXMSGSIZE)
MAX_STRING_BYTES = 64 * 1024  # data of one string access (4096 units of 4 bytes fit)
MAX_STRING_UNITS = 65536

# Requests, worker -> ring-3.
OP_HELLO = 1  # [pid]: the worker is up
OP_IOPORT_READ = 2  # [port, size, ring0_status]: do this IN in ring-3 -> (rc, value)
OP_COMMIT = 3  # [ring0_status]: IOMR3ProcessForceFlag; the pending writes are in shared memory
OP_IOPORT_READ_STRING = 4  # [port, size, count]: the rest of a REP INS -> (rc, bytes)
OP_IOPORT_WRITE_STRING = 5  # [port, size, data]: the rest of a REP OUTS -> (rc, units done)
OP_DONE = 6  # [status, report]: the workload ended with this status
OP_MMIO_READ = 7  # [address, size, ring0_status]: do this MMIO read in ring-3 -> (rc, value)
# Posted and doorbell modes: one-way messages, no reply; their statuses reach the vCPU
# merged into the reply of its next synchronous request (a sync point).
OP_POST = 8  # [port, size, value]: commit this posted OUT
OP_POST_MMIO = 9  # [address, region_hint, data]: commit this posted MMIO write
OP_DOORBELL = 10  # [mmio, address, size, value]: a doorbell rang: run the device's write handler
OP_SYNC = 11  # []: answer once everything sent before is done -> (merged posted status, 0)
ONE_WAY = frozenset((OP_POST, OP_POST_MMIO, OP_DOORBELL))
# Replies, ring-3 -> worker.
OP_REPLY = 64
OP_ERROR = 65

OP_NAMES = {
    OP_HELLO: "hello",
    OP_IOPORT_READ: "ioport_read",
    OP_COMMIT: "commit",
    OP_IOPORT_READ_STRING: "ioport_read_string",
    OP_IOPORT_WRITE_STRING: "ioport_write_string",
    OP_DONE: "done",
    OP_MMIO_READ: "mmio_read",
    OP_POST: "post",
    OP_POST_MMIO: "post_mmio",
    OP_DOORBELL: "doorbell",
    OP_SYNC: "sync",
    OP_REPLY: "reply",
    OP_ERROR: "error",
}


class WireError(Exception):
    """A message that does not follow the protocol."""


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is int and low <= value <= high

    check.__doc__ = f"an integer in [{low:#x}, {high:#x}]"
    return check


def _bytes_up_to(limit: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, bytes) and len(value) <= limit

    check.__doc__ = f"bytes of at most {limit}"
    return check


def _small_map(value: Any) -> bool:
    """a map with string keys"""
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _payload(value: Any) -> bool:
    """an integer or bytes"""
    return type(value) is int or isinstance(value, bytes)


def _text(value: Any) -> bool:
    """a string"""
    return isinstance(value, str)


_STATUS = _int_in(-(1 << 31), (1 << 31) - 1)
_PORT = _int_in(0, 0xFFFF)
_SIZE = _int_in(0, 8)  # invalid sizes reach IOM, which answers VERR_IOM_INVALID_IOPORT_SIZE


def _unit_size(value: Any) -> bool:
    """1, 2 or 4 (a string access moves whole units)"""
    return type(value) is int and value in (1, 2, 4)

_VALUE = _int_in(0, (1 << 64) - 1)

# op -> (field names, checks) for the arguments after [version, op, seq, vcpu].
REQUEST_FIELDS: dict[int, tuple[tuple[str, Callable[[Any], bool]], ...]] = {
    OP_HELLO: (("pid", _int_in(1, (1 << 31) - 1)),),
    OP_IOPORT_READ: (("port", _PORT), ("size", _SIZE), ("ring0_status", _STATUS)),
    OP_COMMIT: (("ring0_status", _STATUS),),
    OP_IOPORT_READ_STRING: (("port", _PORT), ("size", _unit_size), ("count", _int_in(1, MAX_STRING_UNITS))),
    OP_IOPORT_WRITE_STRING: (("port", _PORT), ("size", _unit_size), ("data", _bytes_up_to(MAX_STRING_BYTES))),
    OP_DONE: (("status", _STATUS), ("report", _small_map)),
    OP_MMIO_READ: (("address", _VALUE), ("size", _SIZE), ("ring0_status", _STATUS)),
    OP_POST: (("port", _PORT), ("size", _unit_size), ("value", _int_in(0, 0xFFFFFFFF))),
    OP_POST_MMIO: (("address", _VALUE), ("region_hint", _int_in(0, 0xFFFFFFFF)), ("data", _bytes_up_to(128))),
    OP_DOORBELL: (("mmio", _int_in(0, 1)), ("address", _VALUE), ("size", _int_in(1, 8)), ("value", _VALUE)),
    OP_SYNC: (),
}

REPLY_FIELDS: dict[int, tuple[tuple[str, Callable[[Any], bool]], ...]] = {
    OP_REPLY: (("status", _STATUS), ("payload", _payload)),
    OP_ERROR: (("status", _STATUS), ("message", _text)),
}


@dataclass(frozen=True, slots=True)
class Request:
    op: int
    seq: int
    vcpu: int
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    op: int
    seq: int
    status: int
    payload: Any


def _unpack(frame: bytes) -> list[Any]:
    if len(frame) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(frame)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte cap")
    try:
        message = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(f"not a msgpack message: {exc}") from None
    if not isinstance(message, list) or len(message) < 4:
        raise WireError("a message is an array of at least 4 fields")
    if type(message[0]) is not int or message[0] != PROTOCOL_VERSION:
        raise WireError(f"protocol version {message[0]!r}, expected {PROTOCOL_VERSION}")
    if type(message[2]) is not int or not 0 <= message[2] < 1 << 63:
        raise WireError(f"field seq: {message[2]!r} is not a sequence number")
    return message


def _check_fields(
    op: Any, args: list[Any], table: dict[int, tuple[tuple[str, Callable[[Any], bool]], ...]], what: str
) -> tuple[Any, ...]:
    fields = table.get(op) if type(op) is int else None
    if fields is None:
        raise WireError(f"unknown {what} operation {op!r}")
    if len(args) != len(fields):
        raise WireError(f"{OP_NAMES[op]}: expected {len(fields)} arguments, got {len(args)}")
    for (name, check), value in zip(fields, args, strict=True):
        if not check(value):
            raise WireError(f"{OP_NAMES[op]}: field {name} must be {check.__doc__}, got {value!r:.60}")
    return tuple(args)


def decode_request(frame: bytes, vcpus: int) -> Request:
    """Validate and decode a worker's request; raises :class:`WireError`."""
    message = _unpack(frame)
    vcpu = message[3]
    if type(vcpu) is not int or not 0 <= vcpu < vcpus:
        raise WireError(f"field vcpu: {vcpu!r} is not a vCPU of this VM (0..{vcpus - 1})")
    args = _check_fields(message[1], message[4:], REQUEST_FIELDS, "request")
    return Request(message[1], message[2], vcpu, args)


def decode_reply(frame: bytes) -> Reply:
    """Validate and decode ring-3's reply; raises :class:`WireError`."""
    message = _unpack(frame)
    if len(message) != 5:
        raise WireError(f"a reply has 5 fields, got {len(message)}")
    _check_fields(message[1], message[3:], REPLY_FIELDS, "reply")
    return Reply(message[1], message[2], message[3], message[4])


def encode_request(op: int, seq: int, vcpu: int, *args: Any) -> bytes:
    frame: bytes = msgpack.packb([PROTOCOL_VERSION, op, seq, vcpu, *args], use_bin_type=True)
    return frame


def encode_reply(op: int, seq: int, status: int, payload: Any) -> bytes:
    frame: bytes = msgpack.packb([PROTOCOL_VERSION, op, seq, status, payload], use_bin_type=True)
    return frame
