"""shared/trace.py: every line form of TRACE-FORMAT.md v1, and errors that name file:line and the reason."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from shared.trace import (
    IN,
    INS,
    MMIO_READ,
    MMIO_WRITE,
    OUT,
    OUTS,
    TraceError,
    TraceOp,
    parse_line,
    parse_text,
    read_trace,
)

SOURCE = "guest.trace"


def op(
    kind: int,
    address: int,
    size: int,
    *,
    value: int = 0,
    data: bytes = b"",
    expected: int | bytes | None = None,
    vcpu: int = 0,
    line: int = 1,
) -> TraceOp:
    """The TraceOp a line should parse to, with the format's defaults spelled out once."""
    return TraceOp(kind, vcpu, address, size, value, data, expected, line)


def parse_error(text: str) -> str:
    """The TraceError message for a trace whose *last* line is bad (fails the test if it parses)."""
    with pytest.raises(TraceError) as info:
        parse_text(text, SOURCE)
    return str(info.value)


# --- every line form -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param("out  0x3fb 1 0x80", op(OUT, 0x3FB, 1, value=0x80), id="out"),
        pytest.param("out 0x80 2 0xbeef", op(OUT, 0x80, 2, value=0xBEEF), id="out-word"),
        pytest.param("out 0xcf8 4 0x80000000", op(OUT, 0xCF8, 4, value=0x80000000), id="out-dword"),
        pytest.param("in   0x3fd 1 = 0x60", op(IN, 0x3FD, 1, expected=0x60), id="in-expected"),
        pytest.param("in   0x3fd 1", op(IN, 0x3FD, 1), id="in-no-expectation"),
        pytest.param("in 0xffff 4 = 0xffffffff", op(IN, 0xFFFF, 4, expected=0xFFFFFFFF), id="in-top-port"),
        pytest.param("outs 0x3f8 1 48656c6c6f0a", op(OUTS, 0x3F8, 1, data=b"Hello\n"), id="outs"),
        pytest.param("outs 0x1f0 2 01020304", op(OUTS, 0x1F0, 2, data=b"\x01\x02\x03\x04"), id="outs-words"),
        pytest.param(
            "ins  0x511 1 4 = 51454d55", op(INS, 0x511, 1, value=4, expected=b"QEMU"), id="ins-expected"
        ),
        pytest.param("ins 0x1f0 2 256", op(INS, 0x1F0, 2, value=256), id="ins-no-expectation"),
        pytest.param(
            "ins 0x1f0 4 1 = DEADBEEF", op(INS, 0x1F0, 4, value=1, expected=b"\xde\xad\xbe\xef"), id="ins-hex"
        ),
        pytest.param("wr 0xfebf0004 4 0x12345678", op(MMIO_WRITE, 0xFEBF0004, 4, value=0x12345678), id="wr"),
        pytest.param(
            "rd 0xfebf0000 4 = 0x010000ed", op(MMIO_READ, 0xFEBF0000, 4, expected=0x010000ED), id="rd"
        ),
        pytest.param("rd 0xfed00000 8", op(MMIO_READ, 0xFED00000, 8), id="rd-qword-no-expectation"),
        pytest.param(
            "wr 0xffffffffffffff00 8 0xffffffffffffffff",
            op(MMIO_WRITE, 0xFFFFFFFFFFFFFF00, 8, value=(1 << 64) - 1),
            id="wr-top-of-64-bit-space",
        ),
        pytest.param("@1 out 0x80 1 0x00", op(OUT, 0x80, 1, vcpu=1), id="vcpu-prefix"),
        pytest.param("@0x3 in 0x80 1", op(IN, 0x80, 1, vcpu=3), id="vcpu-prefix-hex"),
        pytest.param(
            "@2 ins 0x511 1 2 = 5145", op(INS, 0x511, 1, value=2, expected=b"QE", vcpu=2), id="vcpu-ins"
        ),
        pytest.param("out 1016 1 128", op(OUT, 1016, 1, value=128), id="decimal"),
        pytest.param("in 0X3FD 1 = 0XFF", op(IN, 0x3FD, 1, expected=0xFF), id="upper-case-hex-prefix"),
        pytest.param("in 0x3fd 1 = 96", op(IN, 0x3FD, 1, expected=96), id="decimal-expected"),
        pytest.param("out 0x80 1 0x00 # POST code", op(OUT, 0x80, 1), id="trailing-comment"),
        pytest.param("out 0x80 1 0x01#no space", op(OUT, 0x80, 1, value=1), id="comment-touching-value"),
        pytest.param("in 0x3fd 1 = 0x60 # = 0x61", op(IN, 0x3FD, 1, expected=0x60), id="equals-in-comment"),
        pytest.param("\tout\t0x80   1\t0x2  ", op(OUT, 0x80, 1, value=2), id="tabs-and-spaces"),
    ],
)
def test_line_form_parses_to_its_operation(text: str, parsed: TraceOp) -> None:
    assert parse_line(text, 1) == parsed


@pytest.mark.parametrize(
    "text", ["", "   ", "\t", "# ringsim-trace v1", "   # indented comment", "#out 0x80 1 0"]
)
def test_blank_and_comment_lines_parse_to_none(text: str) -> None:
    assert parse_line(text, 1) is None


def test_parse_text_skips_blank_and_comment_lines_and_keeps_line_numbers() -> None:
    text = "# ringsim-trace v1\n\nout 0x80 1 0x01\n   \n# comment\n@1 in 0x3fd 1 = 0x60  # LSR\n"
    assert parse_text(text, SOURCE) == [
        op(OUT, 0x80, 1, value=1, line=3),
        op(IN, 0x3FD, 1, expected=0x60, vcpu=1, line=6),
    ]


def test_parse_text_counts_crlf_lines() -> None:
    assert [o.line for o in parse_text("# header\r\nout 0x80 1 1\r\n\r\nin 0x80 1\r\n", SOURCE)] == [2, 4]


def test_empty_trace_is_no_operations() -> None:
    assert parse_text("# only a header\n\n", SOURCE) == []


# --- errors name file:line and what was expected ---------------------------------------
@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        pytest.param(
            "inb 0x80 1", "unknown access 'inb'; expected one of in, out, ins, outs, rd, wr", id="unknown"
        ),
        pytest.param("OUT 0x80 1 0", "unknown access 'OUT'", id="access-is-case-sensitive"),
        pytest.param("out 0xzz 1 0", "port '0xzz' is not a number (0x hex or decimal)", id="bad-port"),
        pytest.param("out 0x80 1 ten", "value 'ten' is not a number", id="bad-value"),
        pytest.param("out 0x80 1 0x", "value '0x' is not a number", id="bare-0x"),
        pytest.param("wr 0xfebz 4 0", "address '0xfebz' is not a number", id="bad-address"),
        pytest.param("in 0x80 one", "size 'one' is not a number", id="bad-size"),
        pytest.param("in 0x80 1 = 0xg0", "expected value '0xg0' is not a number", id="bad-expected"),
        pytest.param("@x out 0x80 1 0", "vCPU 'x' is not a number", id="bad-vcpu"),
        pytest.param("@1", "'@N' must be followed by an access", id="vcpu-alone"),
        pytest.param("out 0x80 3 0", "port size 3 is not 1, 2 or 4", id="port-size-3"),
        pytest.param("in 0x80 8", "port size 8 is not 1, 2 or 4", id="port-size-8"),
        pytest.param("rd 0x1000 3", "MMIO size 3 is not 1, 2, 4 or 8", id="mmio-size-3"),
        pytest.param("out 0x10000 1 0", "port 0x10000 is outside 0..0xffff", id="port-too-big"),
        pytest.param("wr 0x10000000000000000 1 0", "outside the 64-bit physical space", id="address-too-big"),
        pytest.param("out 0x80 1 0x100", "value 0x100 does not fit in 1 bytes", id="value-too-big-byte"),
        pytest.param("out 0x80 2 65536", "value 0x10000 does not fit in 2 bytes", id="value-too-big-word"),
        pytest.param("out 0x80 1 -1", "value -0x1 does not fit in 1 bytes", id="value-negative"),
        pytest.param(
            "in 0x80 1 = 0x100", "expected value 0x100 does not fit in 1 bytes", id="expected-too-big"
        ),
        pytest.param(
            "outs 0x3f8 1 48656", "bytes '48656' is not an even-length run of hex digits", id="odd-hex"
        ),
        pytest.param("outs 0x3f8 1 4865zz", "is not an even-length run of hex digits", id="non-hex"),
        pytest.param(
            "outs 0x1f0 2 010203", "3 bytes are not a whole, non-zero number of 2-byte units", id="partial"
        ),
        pytest.param("ins 0x511 1 4 = 5145", "expected 4 bytes, got 2", id="ins-expected-short"),
        pytest.param("ins 0x1f0 2 1 = 51454d55", "expected 2 bytes, got 4", id="ins-expected-long"),
        pytest.param(
            "ins 0x511 1 4 = 51454", "expected bytes '51454' is not an even-length run", id="ins-odd-hex"
        ),
        pytest.param("ins 0x511 1 0", "count 0 is not in 1..4096", id="ins-count-zero"),
        pytest.param("ins 0x511 1 4097", "count 4097 is not in 1..4096", id="ins-count-too-big"),
        pytest.param(
            "out 0x80 1 0 = 0", "'= EXPECTED' goes at the end of an in, ins or rd line", id="eq-on-out"
        ),
        pytest.param(
            "outs 0x80 1 00 = 00", "'= EXPECTED' goes at the end of an in, ins or rd line", id="eq-on-outs"
        ),
        pytest.param(
            "wr 0x1000 1 0 = 0", "'= EXPECTED' goes at the end of an in, ins or rd line", id="eq-on-wr"
        ),
        pytest.param(
            "in 0x80 = 1 0x60", "'= EXPECTED' goes at the end of an in, ins or rd line", id="eq-misplaced"
        ),
        pytest.param("in 0x80 1 = 0x60 0x61", "goes at the end", id="eq-then-two-words"),
        pytest.param("out 0x80 1", "expected 'out PORT SIZE VALUE'", id="out-missing-value"),
        pytest.param("in 0x80 1 0x60", "expected 'in PORT SIZE [= VALUE]'", id="in-without-equals"),
        pytest.param("in 0x80 1 =0x60", "expected 'in PORT SIZE [= VALUE]'", id="equals-needs-spaces"),
        pytest.param("ins 0x511 1", "expected 'ins PORT SIZE COUNT [= BYTES]'", id="ins-missing-count"),
        pytest.param("outs 0x3f8 1", "expected 'outs PORT SIZE BYTES'", id="outs-missing-bytes"),
        pytest.param("rd 0x1000", "expected 'rd ADDRESS SIZE [= VALUE]'", id="rd-missing-size"),
        pytest.param("wr 0x1000 4 1 2", "expected 'wr ADDRESS SIZE VALUE'", id="wr-extra-word"),
    ],
)
def test_bad_line_error_names_file_line_and_reason(bad_line: str, reason: str) -> None:
    message = parse_error(f"# ringsim-trace v1\nout 0x80 1 0\n\n{bad_line}\nout 0x80 1 0\n")
    assert message.startswith(f"{SOURCE}:4: ")
    assert reason in message


def test_ins_at_most_4096_units_and_outs_too() -> None:
    assert parse_line("ins 0x511 1 4096", 1) == op(INS, 0x511, 1, value=4096)
    assert parse_line(f"outs 0x3f8 2 {'00' * 2 * 4096}", 1) == op(OUTS, 0x3F8, 2, data=bytes(8192))
    assert "more than 4096 units" in parse_error(f"outs 0x3f8 1 {'00' * 4097}")


def test_parse_line_raises_value_error_with_the_bare_reason() -> None:
    with pytest.raises(ValueError, match=r"^port size 3 is not 1, 2 or 4$"):
        parse_line("out 0x80 3 0", 9)


def test_first_bad_line_stops_the_parse() -> None:
    assert parse_error("out 0x80 1 0\nbogus\nalso bogus\n").startswith(f"{SOURCE}:2: ")


def test_negative_vcpu_prefix_is_rejected() -> None:
    # slowpath/vm.py split_workload only checks op.vcpu >= vcpu_count, so vCPU -1 would
    # silently be replayed by the last vCPU (shares[-1]).
    assert "vCPU" in parse_error("@-1 out 0x80 1 0")


def test_form_feed_inside_a_comment_stays_in_the_comment() -> None:
    ops = parse_text("out 0x80 1 1  # page\x0cbreak\nin 0x80 1\n", SOURCE)
    assert [(o.kind, o.line) for o in ops] == [(OUT, 1), (IN, 2)]


# --- files -----------------------------------------------------------------------------
TRACE_TEXT = "# ringsim-trace v1\nout 0x3fb 1 0x80\n@1 in 0x3fd 1 = 0x60\nouts 0x3f8 1 4869\n"
TRACE_OPS = [
    op(OUT, 0x3FB, 1, value=0x80, line=2),
    op(IN, 0x3FD, 1, expected=0x60, vcpu=1, line=3),
    op(OUTS, 0x3F8, 1, data=b"Hi", line=4),
]


def test_read_trace_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "boot.trace"
    path.write_text(TRACE_TEXT, encoding="utf-8")
    assert read_trace(path) == TRACE_OPS


def test_read_trace_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "boot.trace.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(TRACE_TEXT)
    assert read_trace(path) == TRACE_OPS


def test_read_trace_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.trace.gz"
    path.write_bytes(gzip.compress(b"out 0x80 1 0\nout 0x80 3 0\n"))
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(info.value) == f"{path}:2: port size 3 is not 1, 2 or 4"


def test_read_trace_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.trace"
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(path)


def test_read_trace_not_gzip_but_named_gz_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.trace.gz"
    path.write_text(TRACE_TEXT)
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(path)


def test_read_trace_truncated_gzip_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.trace.gz"
    path.write_bytes(gzip.compress(TRACE_TEXT.encode() * 20)[:-12])
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(path)


def test_read_trace_corrupt_gzip_is_a_trace_error(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(b"out 0x80 1 0\n" * 50))
    for i in range(10, len(compressed) - 8):  # keep the header and trailer, garble the deflate data
        compressed[i] ^= 0xFF
    path = tmp_path / "corrupt.trace.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(path)


def test_read_trace_non_utf8_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.trace"
    path.write_bytes(b"# caf\xe9\nout 0x80 1 0\n")
    with pytest.raises(TraceError, match="not UTF-8 text"):
        read_trace(path)
