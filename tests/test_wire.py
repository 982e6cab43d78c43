"""shared/wire.py: every message round-trips, and every malformed one is a WireError naming the problem."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from shared.status import VERR_INTERNAL_ERROR, VERR_SEM_BUSY, VINF_IOM_R3_IOPORT_COMMIT_WRITE, VINF_SUCCESS
from shared.wire import (
    MAX_MESSAGE_BYTES,
    MAX_STRING_BYTES,
    MAX_STRING_UNITS,
    OP_COMMIT,
    OP_DONE,
    OP_ERROR,
    OP_HELLO,
    OP_IOPORT_READ,
    OP_IOPORT_READ_STRING,
    OP_IOPORT_WRITE_STRING,
    OP_REPLY,
    PROTOCOL_VERSION,
    Reply,
    Request,
    WireError,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

VCPUS = 2
INT32_MAX = (1 << 31) - 1
INT32_MIN = -(1 << 31)


def raw(*fields: Any) -> bytes:
    """A msgpack array with exactly these fields, for messages encode_* would never build."""
    return msgpack.packb(list(fields), use_bin_type=True)


def request_error(frame: bytes, vcpus: int = VCPUS) -> str:
    """The WireError message decode_request gives for *frame* (fails the test if it decodes)."""
    with pytest.raises(WireError) as info:
        decode_request(frame, vcpus)
    return str(info.value)


def reply_error(frame: bytes) -> str:
    """The WireError message decode_reply gives for *frame* (fails the test if it decodes)."""
    with pytest.raises(WireError) as info:
        decode_reply(frame)
    return str(info.value)


def field_position(op: int, field: str) -> int:
    """Where *field* sits among a request's arguments (the protocol's documented order)."""
    names = {
        OP_HELLO: ["pid"],
        OP_IOPORT_READ: ["port", "size", "ring0_status"],
        OP_COMMIT: ["ring0_status"],
        OP_IOPORT_READ_STRING: ["port", "size", "count"],
        OP_IOPORT_WRITE_STRING: ["port", "size", "data"],
        OP_DONE: ["status", "report"],
    }
    return names[op].index(field)


# --- round trips -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "args"),
    [
        pytest.param(OP_HELLO, (4242,), id="hello"),
        pytest.param(OP_IOPORT_READ, (0x3FD, 1, VINF_SUCCESS), id="ioport_read"),
        pytest.param(OP_IOPORT_READ, (0xFFFF, 4, VERR_SEM_BUSY), id="ioport_read-top-port"),
        pytest.param(OP_COMMIT, (VINF_IOM_R3_IOPORT_COMMIT_WRITE,), id="commit"),
        pytest.param(OP_IOPORT_READ_STRING, (0x511, 1, 4), id="ioport_read_string"),
        pytest.param(OP_IOPORT_READ_STRING, (0x1F0, 2, MAX_STRING_UNITS), id="ioport_read_string-max"),
        pytest.param(OP_IOPORT_WRITE_STRING, (0x3F8, 1, b"Hello\n"), id="ioport_write_string"),
        pytest.param(OP_IOPORT_WRITE_STRING, (0x3F8, 4, bytes(MAX_STRING_BYTES)), id="write_string-max"),
        pytest.param(OP_DONE, (VINF_SUCCESS, {"reads": 3, "mismatches": []}), id="done"),
        pytest.param(OP_DONE, (INT32_MIN, {}), id="done-lowest-status"),
    ],
)
def test_request_round_trips(op: int, args: tuple[Any, ...]) -> None:
    frame = encode_request(op, 77, 1, *args)
    assert decode_request(frame, VCPUS) == Request(op, 77, 1, args)


@pytest.mark.parametrize(
    ("op", "status", "payload"),
    [
        pytest.param(OP_REPLY, VINF_SUCCESS, 0x60, id="reply-value"),
        pytest.param(OP_REPLY, VINF_SUCCESS, b"QEMU", id="reply-bytes"),
        pytest.param(OP_REPLY, INT32_MAX, (1 << 64) - 1, id="reply-extremes"),
        pytest.param(OP_ERROR, VERR_INTERNAL_ERROR, "vCPU 1 is already connected", id="error"),
    ],
)
def test_reply_round_trips(op: int, status: int, payload: Any) -> None:
    frame = encode_reply(op, 1 << 40, status, payload)
    assert decode_reply(frame) == Reply(op, 1 << 40, status, payload)


def test_sequence_number_round_trips_up_to_63_bits() -> None:
    assert decode_request(encode_request(OP_COMMIT, (1 << 63) - 1, 0, 0), VCPUS).seq == (1 << 63) - 1


# --- framing ---------------------------------------------------------------------------
def test_truncated_msgpack_is_rejected() -> None:
    frame = encode_request(OP_IOPORT_READ, 1, 0, 0x80, 1, 0)
    assert "not a msgpack message" in request_error(frame[:-2])


def test_trailing_bytes_after_the_message_are_rejected() -> None:
    assert "not a msgpack message" in request_error(encode_request(OP_COMMIT, 1, 0, 0) + b"\x00")


@pytest.mark.parametrize(
    "frame", [b"\xc1", b"", b"GET / HTTP/1.1\r\n"], ids=["reserved-byte", "empty", "text"]
)
def test_non_msgpack_bytes_are_rejected(frame: bytes) -> None:
    assert "not a msgpack message" in request_error(frame)


@pytest.mark.parametrize(
    "message",
    [{"op": 1}, 17, "hello", None, [PROTOCOL_VERSION, OP_COMMIT, 1]],
    ids=["map", "int", "string", "nil", "three-fields"],
)
def test_message_that_is_not_an_array_of_four_is_rejected(message: Any) -> None:
    frame = msgpack.packb(message, use_bin_type=True)
    assert "array of at least 4 fields" in request_error(frame)
    assert "array of at least 4 fields" in reply_error(frame)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_wrong_protocol_version_is_rejected(version: Any) -> None:
    message = request_error(raw(version, OP_COMMIT, 1, 0, 0))
    assert "protocol version" in message and f"expected {PROTOCOL_VERSION}" in message
    assert "protocol version" in reply_error(raw(version, OP_REPLY, 1, 0, 0))


@pytest.mark.parametrize("version", [True, 1.0])
def test_version_of_wrong_type_is_rejected(version: Any) -> None:
    assert "protocol version" in request_error(raw(version, OP_COMMIT, 1, 0, 0))


@pytest.mark.parametrize("seq", [-1, 1 << 63, "7", True, 1.5])
def test_bad_sequence_number_is_rejected(seq: Any) -> None:
    assert "field seq" in request_error(raw(PROTOCOL_VERSION, OP_COMMIT, seq, 0, 0))
    assert "field seq" in reply_error(raw(PROTOCOL_VERSION, OP_REPLY, seq, 0, 0))


def test_message_over_the_size_cap_is_rejected_before_unpacking() -> None:
    frame = encode_request(OP_IOPORT_WRITE_STRING, 1, 0, 0x3F8, 1, bytes(MAX_MESSAGE_BYTES))
    assert len(frame) > MAX_MESSAGE_BYTES
    message = request_error(frame)
    assert f"{len(frame)} bytes" in message and f"{MAX_MESSAGE_BYTES}-byte cap" in message
    # The cap is checked first: even bytes that are not msgpack at all get the size error.
    assert "cap" in reply_error(b"\xc1" * (MAX_MESSAGE_BYTES + 1))


def test_message_of_exactly_the_size_cap_is_accepted() -> None:
    def done_frame(text_len: int) -> bytes:
        return encode_request(OP_DONE, 1, 0, VINF_SUCCESS, {"log": "x" * text_len})

    overhead = len(done_frame(70000)) - 70000  # the str header is the same size for both lengths
    frame = done_frame(MAX_MESSAGE_BYTES - overhead)
    assert len(frame) == MAX_MESSAGE_BYTES
    assert decode_request(frame, VCPUS).op == OP_DONE


# --- requests: operation, arity, fields ------------------------------------------------
@pytest.mark.parametrize("op", [0, 12, 63, OP_REPLY, OP_ERROR, "commit", None])
def test_unknown_request_operation_is_rejected(op: Any) -> None:
    assert f"unknown request operation {op!r}" in request_error(raw(PROTOCOL_VERSION, op, 1, 0, 0))


@pytest.mark.parametrize(
    ("op", "args", "name", "wanted"),
    [
        (OP_HELLO, (), "hello", 1),
        (OP_HELLO, (1, 2), "hello", 1),
        (OP_IOPORT_READ, (0x80, 1), "ioport_read", 3),
        (OP_COMMIT, (0, 0), "commit", 1),
        (OP_IOPORT_READ_STRING, (0x80, 1, 1, 1), "ioport_read_string", 3),
        (OP_IOPORT_WRITE_STRING, (0x80, 1), "ioport_write_string", 3),
        (OP_DONE, (0,), "done", 2),
    ],
)
def test_wrong_argument_count_is_rejected(op: int, args: tuple[Any, ...], name: str, wanted: int) -> None:
    message = request_error(encode_request(op, 1, 0, *args))
    assert message == f"{name}: expected {wanted} arguments, got {len(args)}"


@pytest.mark.parametrize(
    ("op", "args", "field"),
    [
        pytest.param(OP_IOPORT_READ, ("0x80", 1, 0), "port", id="port-as-string"),
        pytest.param(OP_IOPORT_READ, (True, 1, 0), "port", id="port-as-bool"),
        pytest.param(OP_IOPORT_READ, (128.0, 1, 0), "port", id="port-as-float"),
        pytest.param(OP_IOPORT_READ, (0x80, True, 0), "size", id="size-as-bool"),
        pytest.param(OP_IOPORT_READ, (0x80, 1, False), "ring0_status", id="status-as-bool"),
        pytest.param(OP_IOPORT_READ, (0x80, 1, None), "ring0_status", id="status-as-nil"),
        pytest.param(OP_COMMIT, ("0",), "ring0_status", id="commit-status-as-string"),
        pytest.param(OP_HELLO, ("1234",), "pid", id="pid-as-string"),
        pytest.param(OP_IOPORT_READ_STRING, (0x511, 1, [4]), "count", id="count-as-array"),
        pytest.param(OP_IOPORT_WRITE_STRING, (0x3F8, 1, "Hello"), "data", id="data-as-string"),
        pytest.param(OP_IOPORT_WRITE_STRING, (0x3F8, 1, [72, 105]), "data", id="data-as-array"),
        pytest.param(OP_DONE, (0, [1, 2]), "report", id="report-as-array"),
        pytest.param(OP_DONE, ("ok", {}), "status", id="done-status-as-string"),
    ],
)
def test_field_of_wrong_type_is_rejected(op: int, args: tuple[Any, ...], field: str) -> None:
    message = request_error(encode_request(op, 1, 0, *args))
    assert f"field {field} must be" in message
    assert f"got {args[field_position(op, field)]!r}" in message


def test_report_with_non_string_keys_is_rejected() -> None:
    # msgpack itself refuses non-string map keys (strict_map_key), before the field checks.
    assert "not a msgpack message" in request_error(encode_request(OP_DONE, 1, 0, 0, {1: 2}))


@pytest.mark.parametrize(
    ("op", "args", "field"),
    [
        pytest.param(OP_IOPORT_READ, (0x10000, 1, 0), "port", id="port-above-ffff"),
        pytest.param(OP_IOPORT_READ, (-1, 1, 0), "port", id="port-negative"),
        pytest.param(OP_IOPORT_READ, (0x80, 9, 0), "size", id="size-9"),
        pytest.param(OP_IOPORT_READ, (0x80, -1, 0), "size", id="size-negative"),
        pytest.param(OP_IOPORT_READ, (0x80, 1, INT32_MAX + 1), "ring0_status", id="status-above-int32"),
        pytest.param(OP_COMMIT, (INT32_MIN - 1,), "ring0_status", id="status-below-int32"),
        pytest.param(OP_DONE, (1 << 40, {}), "status", id="done-status-too-big"),
        pytest.param(OP_HELLO, (0,), "pid", id="pid-zero"),
        pytest.param(OP_IOPORT_READ_STRING, (0x511, 1, 0), "count", id="count-zero"),
        pytest.param(OP_IOPORT_READ_STRING, (0x511, 1, MAX_STRING_UNITS + 1), "count", id="count-too-big"),
    ],
)
def test_field_out_of_range_is_rejected(op: int, args: tuple[Any, ...], field: str) -> None:
    message = request_error(encode_request(op, 1, 0, *args))
    assert f"field {field} must be an integer in" in message
    assert f"got {args[field_position(op, field)]!r}" in message


def test_size_range_leaves_invalid_sizes_to_iom() -> None:
    # Sizes 0, 3, 5..8 pass the wire: IOM answers them with VERR_IOM_INVALID_IOPORT_SIZE.
    for size in (0, 3, 8):
        assert decode_request(encode_request(OP_IOPORT_READ, 1, 0, 0x80, size, 0), VCPUS).args[1] == size


def test_string_data_over_max_string_bytes_is_rejected() -> None:
    frame = encode_request(OP_IOPORT_WRITE_STRING, 1, 0, 0x3F8, 1, bytes(MAX_STRING_BYTES + 1))
    assert len(frame) < MAX_MESSAGE_BYTES
    message = request_error(frame)
    assert "ioport_write_string: field data must be bytes of at most 65536" in message


@pytest.mark.parametrize("vcpu", [VCPUS, -1, 1 << 40, "0", True, None])
def test_vcpu_not_of_this_vm_is_rejected(vcpu: Any) -> None:
    message = request_error(raw(PROTOCOL_VERSION, OP_COMMIT, 1, vcpu, 0))
    assert f"field vcpu: {vcpu!r} is not a vCPU of this VM (0..{VCPUS - 1})" == message


def test_vcpu_check_uses_the_vm_size() -> None:
    frame = encode_request(OP_COMMIT, 1, 3, 0)
    assert decode_request(frame, 4).vcpu == 3
    assert "is not a vCPU of this VM (0..2)" in request_error(frame, 3)


# --- replies ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([PROTOCOL_VERSION, OP_REPLY, 1, 0], id="four-fields"),
        pytest.param([PROTOCOL_VERSION, OP_REPLY, 1, 0, 0, 0], id="six-fields"),
    ],
)
def test_reply_with_wrong_field_count_is_rejected(fields: list[Any]) -> None:
    assert reply_error(raw(*fields)) == f"a reply has 5 fields, got {len(fields)}"


@pytest.mark.parametrize("op", [OP_HELLO, OP_COMMIT, 0, 66, "reply"])
def test_reply_with_unknown_operation_is_rejected(op: Any) -> None:
    assert f"unknown reply operation {op!r}" in reply_error(raw(PROTOCOL_VERSION, op, 1, 0, 0))


@pytest.mark.parametrize(
    ("op", "status", "payload", "field"),
    [
        pytest.param(OP_REPLY, "0", 0, "status", id="status-as-string"),
        pytest.param(OP_REPLY, True, 0, "status", id="status-as-bool"),
        pytest.param(OP_REPLY, INT32_MAX + 1, 0, "status", id="status-out-of-range"),
        pytest.param(
            OP_ERROR, VERR_INTERNAL_ERROR, b"bytes, not text", "message", id="error-message-as-bytes"
        ),
        pytest.param(OP_ERROR, VERR_INTERNAL_ERROR, 5, "message", id="error-message-as-int"),
    ],
)
def test_reply_with_bad_field_is_rejected(op: int, status: Any, payload: Any, field: str) -> None:
    assert f"field {field} must be" in reply_error(raw(PROTOCOL_VERSION, op, 1, status, payload))


@pytest.mark.parametrize(
    "payload", ["text", None, True, [1], 1.5], ids=["str", "nil", "bool", "array", "float"]
)
def test_reply_payload_that_is_neither_int_nor_bytes_is_rejected(payload: Any) -> None:
    assert "field payload must be" in reply_error(raw(PROTOCOL_VERSION, OP_REPLY, 1, 0, payload))


def test_reply_payload_error_says_what_a_payload_must_be() -> None:
    message = reply_error(raw(PROTOCOL_VERSION, OP_REPLY, 1, 0, "text"))
    assert "must be None" not in message
    assert "int" in message and "bytes" in message
