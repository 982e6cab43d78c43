"""QEMU's fw_cfg (I/O port interface) in devices/fw_cfg.py: its registers, its items and its manifest."""

from __future__ import annotations

import ctypes
import importlib.util
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from devices.fw_cfg import (
    DATA,
    DATA_CAPACITY,
    KEY_FILE_DIR,
    KEY_ID,
    KEY_SIGNATURE,
    PORT_COUNT,
    REGISTRATION,
    SELECTOR,
    FwCfgItem,
    FwCfgRing0,
    FwCfgRing3,
    FwCfgState,
    file_directory,
    load_manifest,
)
from shared.devapi import (
    PDM_DEVREG_CLASS_ARCH_BIOS,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
)
from shared.portio import read_units
from shared.status import VINF_SUCCESS, iom_success_r0
from shared.trace import IN, INS, OUT, read_trace

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRACE = REPO.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
SHIPPED_ITEMS = REPO / "slowpath" / "configs" / "pc-fw_cfg"
IO_HANDLE = 3


class FakeRing3Helpers:
    def __init__(self) -> None:
        self.instance = 0
        self.mapped: list[tuple[int, int, str, dict[str, Any]]] = []

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        self.mapped.append((port, count, description, callbacks))
        return IO_HANDLE


class FakeRing0Helpers:
    def __init__(self) -> None:
        self.instance = 0
        self.contexts: list[tuple[int, dict[str, Any]]] = []

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))


def make_config(**overrides: Any) -> dict[str, Any]:
    keys = REGISTRATION.config_keys
    assert set(overrides) <= {key.name for key in keys}
    return {key.name: key.check(overrides.get(key.name, key.default_for(0))) for key in keys}


def write_manifest(directory: Path, text: str, files: dict[str, bytes] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.toml").write_text(text, encoding="utf-8")
    for name, data in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


class FwCfg:
    """Both halves on one state, as the VM builds them."""

    def __init__(self, items: Path | None = None, **config: Any) -> None:
        self.state = FwCfgState()
        self.config = make_config(Items=str(items) if items else "", **config)
        self.ring3_helpers = FakeRing3Helpers()
        self.ring0_helpers = FakeRing0Helpers()
        self.ring3 = FwCfgRing3(self.ring3_helpers, self.state, self.config)
        self.ring0 = FwCfgRing0(self.ring0_helpers, self.state, self.config)

    def select(self, key: int) -> None:
        assert self.ring0.io_out(SELECTOR, key, 2) == VINF_SUCCESS

    def read(self, count: int) -> bytes:
        """*count* single 8-bit reads of the data port, in ring-0."""
        out = bytearray()
        for _ in range(count):
            rc, value = self.ring0.io_in(DATA, 1)
            assert rc == VINF_SUCCESS
            out.append(value)
        return bytes(out)

    def read_string(self, count: int) -> bytes:
        rc, data = self.ring0.io_in_string(DATA, count, 1)
        assert rc == VINF_SUCCESS
        return data

    def item(self, key: int, count: int) -> bytes:
        self.select(key)
        return self.read_string(count)


SAMPLE_MANIFEST = """
[[item]]
selector = 0x0005
data = "cpus.bin"

[[item]]
selector = 0x8002
size = 3
data = "irq0.bin"

[[file]]
name = "etc/zeta"
selector = 0x0021
data = "zeta.bin"

[[file]]
name = "etc/alpha"
selector = 0x0020
size = 6
data = "alpha.bin"
"""
SAMPLE_FILES = {"cpus.bin": b"\x04\x00", "irq0.bin": b"\x01", "zeta.bin": b"ZZZ", "alpha.bin": b"abc"}


@pytest.fixture
def fw_cfg(tmp_path: Path) -> FwCfg:
    return FwCfg(write_manifest(tmp_path / "items", SAMPLE_MANIFEST, SAMPLE_FILES))


# --- Registration and construction ------------------------------------------------------


def test_registration_is_a_single_bios_device_with_a_ring0_half() -> None:
    assert REGISTRATION.name == "fw_cfg"
    assert REGISTRATION.device_class == PDM_DEVREG_CLASS_ARCH_BIOS
    assert REGISTRATION.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert REGISTRATION.max_instances == 1
    assert REGISTRATION.shared_state is FwCfgState
    assert (REGISTRATION.ring3, REGISTRATION.ring0) == (FwCfgRing3, FwCfgRing0)


def test_config_defaults_to_port_0x510_and_no_items() -> None:
    assert make_config() == {"IOBase": 0x510, "Items": ""}


def test_ring3_maps_selector_and_data_ports_at_io_base(fw_cfg: FwCfg) -> None:
    [(port, count, _, callbacks)] = fw_cfg.ring3_helpers.mapped
    assert (port, count) == (0x510, PORT_COUNT)
    assert {name for name, callback in callbacks.items() if callback} == {"out", "in_", "in_string"}
    assert fw_cfg.state.io_handle == IO_HANDLE


def test_ring3_maps_at_a_configured_io_base() -> None:
    device = FwCfg(IOBase=0x600)
    assert device.ring3_helpers.mapped[0][:2] == (0x600, PORT_COUNT)


def test_ring0_takes_selects_single_reads_and_string_reads(fw_cfg: FwCfg) -> None:
    [(handle, callbacks)] = fw_cfg.ring0_helpers.contexts
    assert handle == IO_HANDLE
    assert all(callable(callbacks[name]) for name in ("out", "in_", "in_string"))


def test_ring0_constructor_writes_no_state(fw_cfg: FwCfg) -> None:
    fw_cfg.select(0x0005)
    fw_cfg.read(1)
    before = bytes(fw_cfg.state)
    FwCfgRing0(FakeRing0Helpers(), fw_cfg.state, fw_cfg.config)
    assert bytes(fw_cfg.state) == before


def test_items_live_in_the_shared_state(fw_cfg: FwCfg) -> None:
    """A second half built on a copy of the state serves the same bytes: nothing is kept outside it."""
    copy = FwCfgState.from_buffer_copy(fw_cfg.state)
    other = FwCfgRing0(FakeRing0Helpers(), copy, fw_cfg.config)
    other.io_out(SELECTOR, 0x0021, 2)
    assert other.io_in_string(DATA, 3, 1) == (VINF_SUCCESS, b"ZZZ")


# --- The registers ----------------------------------------------------------------------


def test_signature_is_selected_after_construction(fw_cfg: FwCfg) -> None:
    assert fw_cfg.read(4) == b"QEMU"


def test_signature_item_reads_qemu(fw_cfg: FwCfg) -> None:
    assert fw_cfg.item(KEY_SIGNATURE, 4) == b"QEMU"


def test_id_item_offers_the_traditional_interface_without_dma(fw_cfg: FwCfg) -> None:
    assert fw_cfg.item(KEY_ID, 4) == b"\x01\x00\x00\x00"


def test_selecting_rewinds_to_the_first_byte(fw_cfg: FwCfg) -> None:
    fw_cfg.select(0x0021)
    assert fw_cfg.read(2) == b"ZZ"
    fw_cfg.select(0x0021)
    assert fw_cfg.read(3) == b"ZZZ"


def test_reads_past_the_end_return_zero(fw_cfg: FwCfg) -> None:
    fw_cfg.select(0x0005)
    assert fw_cfg.read(4) == b"\x04\x00\x00\x00"


def test_size_beyond_the_data_file_reads_as_zeros(fw_cfg: FwCfg) -> None:
    assert fw_cfg.item(0x0020, 8) == b"abc\x00\x00\x00\x00\x00"


def test_a_key_with_no_item_reads_zero(fw_cfg: FwCfg) -> None:
    assert fw_cfg.item(0x0003, 4) == bytes(4)


@pytest.mark.parametrize("key", [0x0040, 0x3FFF, 0x8040, 0xFFFF])
def test_keys_past_the_last_slot_select_nothing(fw_cfg: FwCfg, key: int) -> None:
    assert fw_cfg.item(key, 4) == bytes(4)


def test_the_write_bit_of_a_key_is_ignored(fw_cfg: FwCfg) -> None:
    assert fw_cfg.item(0x4000 | KEY_ID, 4) == b"\x01\x00\x00\x00"


def test_the_arch_bank_is_apart_from_the_generic_one(fw_cfg: FwCfg) -> None:
    assert fw_cfg.item(0x8002, 3) == b"\x01\x00\x00"
    assert fw_cfg.item(0x0002, 3) == bytes(3)


def test_string_read_returns_the_next_bytes_in_one_call(fw_cfg: FwCfg) -> None:
    fw_cfg.select(KEY_SIGNATURE)
    assert fw_cfg.read(1) == b"Q"
    assert fw_cfg.read_string(2) == b"EM"
    assert fw_cfg.read(1) == b"U"


def test_string_read_past_the_end_is_zero_filled(fw_cfg: FwCfg) -> None:
    fw_cfg.select(0x0021)
    assert fw_cfg.read_string(5) == b"ZZZ\x00\x00"
    assert fw_cfg.read_string(2) == b"\x00\x00"


def test_byte_reads_of_the_selector_port_read_the_stream_too(fw_cfg: FwCfg) -> None:
    fw_cfg.select(KEY_SIGNATURE)
    assert fw_cfg.ring0.io_in(SELECTOR, 1) == (VINF_SUCCESS, ord("Q"))
    assert fw_cfg.ring0.io_in(DATA, 1) == (VINF_SUCCESS, ord("E"))


def test_word_writes_to_the_data_port_select_too(fw_cfg: FwCfg) -> None:
    assert fw_cfg.ring0.io_out(DATA, 0x0021, 2) == VINF_SUCCESS
    assert fw_cfg.read(3) == b"ZZZ"


@pytest.mark.parametrize(("port", "size"), [(SELECTOR, 1), (DATA, 1), (SELECTOR, 4), (DATA, 4)])
def test_byte_and_dword_writes_are_dropped(fw_cfg: FwCfg, port: int, size: int) -> None:
    fw_cfg.select(0x0021)
    fw_cfg.read(1)
    assert fw_cfg.ring0.io_out(port, 0x0005, size) == VINF_SUCCESS
    assert fw_cfg.read(2) == b"ZZ"


@pytest.mark.parametrize("size", [2, 4])
def test_word_and_dword_reads_give_zero_and_do_not_advance(fw_cfg: FwCfg, size: int) -> None:
    fw_cfg.select(KEY_SIGNATURE)
    assert fw_cfg.ring0.io_in(DATA, size) == (VINF_SUCCESS, 0)
    assert fw_cfg.ring0.io_in_string(DATA, 3, size) == (VINF_SUCCESS, bytes(3 * size))
    assert fw_cfg.read(1) == b"Q"


def test_ring3_serves_the_same_registers(fw_cfg: FwCfg) -> None:
    assert fw_cfg.ring3.io_out(SELECTOR, 0x0021, 2) == VINF_SUCCESS
    assert fw_cfg.ring3.io_in(DATA, 1) == (VINF_SUCCESS, ord("Z"))
    assert fw_cfg.ring3.io_in_string(DATA, 3, 1) == (VINF_SUCCESS, b"ZZ\x00")


def test_reset_selects_the_signature_from_its_first_byte(fw_cfg: FwCfg) -> None:
    fw_cfg.select(0x0021)
    fw_cfg.read(2)
    fw_cfg.ring3.reset()
    assert fw_cfg.read(4) == b"QEMU"


# --- The file directory -----------------------------------------------------------------


def test_file_directory_lists_files_in_key_order_big_endian(fw_cfg: FwCfg) -> None:
    raw = fw_cfg.item(KEY_FILE_DIR, 4 + 2 * 64 + 4)
    assert struct.unpack_from(">I", raw) == (2,)
    size, key, reserved, name = struct.unpack_from(">IHH56s", raw, 4)
    assert (size, key, reserved, name.rstrip(b"\0")) == (6, 0x0020, 0, b"etc/alpha")
    size, key, reserved, name = struct.unpack_from(">IHH56s", raw, 4 + 64)
    assert (size, key, reserved, name.rstrip(b"\0")) == (3, 0x0021, 0, b"etc/zeta")
    assert raw[-4:] == bytes(4)


def test_without_items_the_directory_is_empty() -> None:
    device = FwCfg()
    assert device.item(KEY_FILE_DIR, 8) == bytes(8)
    assert device.item(KEY_SIGNATURE, 4) == b"QEMU"


def test_directory_entries_pad_names_with_nuls() -> None:
    raw = file_directory([FwCfgItem(0x0020, b"xy", "a")])
    assert raw == b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02\x00\x20\x00\x00" + b"a" + bytes(55)


# --- The manifest -----------------------------------------------------------------------


def test_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    items = load_manifest(write_manifest(tmp_path / "deep" / "items", SAMPLE_MANIFEST, SAMPLE_FILES))
    assert {(item.key, item.data, item.name) for item in items} == {
        (0x0005, b"\x04\x00", None),
        (0x8002, b"\x01\x00\x00", None),
        (0x0021, b"ZZZ", "etc/zeta"),
        (0x0020, b"abc\x00\x00\x00", "etc/alpha"),
    }


def test_files_without_selectors_take_free_slots_in_name_order(tmp_path: Path) -> None:
    text = """
[[file]]
name = "c"
size = 1
[[file]]
name = "a"
size = 1
[[file]]
name = "b"
selector = 0x0020
size = 1
"""
    items = load_manifest(write_manifest(tmp_path, text))
    assert {item.name: item.key for item in items} == {"a": 0x0021, "b": 0x0020, "c": 0x0022}


def test_a_file_without_data_or_size_is_empty(tmp_path: Path) -> None:
    [item] = load_manifest(write_manifest(tmp_path, '[[file]]\nname = "bootorder"\n'))
    assert (item.key, item.data) == (0x0020, b"")


def test_relative_items_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_manifest(tmp_path / "vm" / "items", SAMPLE_MANIFEST, SAMPLE_FILES)
    monkeypatch.chdir(tmp_path)
    device = FwCfg(Path("vm/items"))
    assert device.item(0x0021, 3) == b"ZZZ"


def test_a_missing_manifest_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*manifest\.toml"):
        FwCfg(tmp_path / "nowhere")


def test_a_missing_data_file_is_a_config_error(tmp_path: Path) -> None:
    text = '[[file]]\nname = "etc/x"\ndata = "gone.bin"\n'
    with pytest.raises(ConfigError, match=r"\[\[file\]\] 'etc/x': cannot read its data"):
        FwCfg(write_manifest(tmp_path, text))


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_manifest(write_manifest(tmp_path, "[[item]\nselector = 5\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[items]]\nselector = 5\nsize = 1\n", r"unknown key 'items'"),
        ("item = 5\n", r"item must be an array of tables"),
        ("[[item]]\nselector = 5\nsize = 1\ncolour = 1\n", r"unknown key 'colour'"),
        ("[[item]]\nsize = 1\n", r"selector is missing"),
        ("[[item]]\nselector = 5\n", r"needs data, size or both"),
        ("[[item]]\nselector = 5\nsize = -1\n", r"size must be a non-negative integer"),
        ("[[item]]\nselector = true\nsize = 1\n", r"selector must be a non-negative integer"),
        ("[[item]]\nselector = 5\ndata = 7\n", r"data must be a path"),
        ("[[item]]\nselector = 0x0000\nsize = 4\n", r"builds this item itself"),
        ("[[item]]\nselector = 0x0001\nsize = 4\n", r"builds this item itself"),
        ("[[item]]\nselector = 0x0019\nsize = 4\n", r"builds this item itself"),
        ("[[item]]\nselector = 0x0025\nsize = 4\n", r"file slots: use \[\[file\]\]"),
        ("[[item]]\nselector = 0x0040\nsize = 4\n", r"not a selector the device has"),
        ("[[item]]\nselector = 0x4005\nsize = 4\n", r"not a selector the device has"),
        ("[[item]]\nselector = 0x10005\nsize = 4\n", r"not a selector the device has"),
        ("[[item]]\nselector = 5\nsize = 1\n[[item]]\nselector = 5\nsize = 2\n", r"both have selector 0x0005"),
        ('[[file]]\nname = ""\n', r"name must be a non-empty string"),
        (f'[[file]]\nname = "{"n" * 56}"\n', r"at most 55 bytes"),
        ('[[file]]\nname = "etc/x"\nselector = 0x0005\n', r"not a file slot"),
        ('[[file]]\nname = "a"\n[[file]]\nname = "a"\n', r"'a' is listed twice"),
        (
            '[[file]]\nname = "a"\nselector = 0x20\n[[file]]\nname = "b"\nselector = 0x20\n',
            r"the file 'a' and the file 'b' both have selector 0x0020",
        ),
    ],
)
def test_malformed_manifests_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_manifest(write_manifest(tmp_path, text))


def test_a_size_below_the_data_files_length_is_a_config_error(tmp_path: Path) -> None:
    text = '[[item]]\nselector = 5\ndata = "four.bin"\nsize = 2\n'
    with pytest.raises(ConfigError, match="size 2 is less than its data file's 4 bytes"):
        load_manifest(write_manifest(tmp_path, text, {"four.bin": b"1234"}))


def test_more_files_than_file_slots_is_a_config_error(tmp_path: Path) -> None:
    text = "".join(f'[[file]]\nname = "f{number:02}"\n' for number in range(33))
    with pytest.raises(ConfigError, match="no free file slot for 'f32'"):
        load_manifest(write_manifest(tmp_path, text))


def test_items_must_fit_the_shared_data_area(tmp_path: Path) -> None:
    """The device's own items need a few bytes too, so a configured item of the whole capacity cannot fit."""
    text = f"[[item]]\nselector = 5\nsize = {DATA_CAPACITY}\n"
    with pytest.raises(ConfigError, match=f"over the device's {DATA_CAPACITY}"):
        FwCfg(write_manifest(tmp_path, text))


def test_the_data_area_is_a_fixed_mebibyte() -> None:
    assert FwCfgState.data.size == DATA_CAPACITY == 1 << 20
    assert ctypes.sizeof(FwCfgState) < DATA_CAPACITY + 4096


# --- The sample trace -------------------------------------------------------------------


@pytest.mark.skipif(not SAMPLE_TRACE.exists(), reason="the sample trace is not beside the repository")
def test_sample_trace_reads_match_with_the_shipped_items() -> None:
    """Every read of 0x510/0x511 in the sample trace, through the ring-0 callbacks as IOM makes them."""
    device = FwCfg(SHIPPED_ITEMS)
    callbacks = device.ring0_helpers.contexts[0][1]
    units = matched = 0
    mismatches: list[int] = []
    for op in read_trace(SAMPLE_TRACE):
        if op.address not in (0x510, 0x511):
            continue
        where = op.address - 0x510
        if op.kind == OUT:
            assert callbacks["out"](where, op.value, op.size) == VINF_SUCCESS
        elif op.kind == IN:
            rc, value = callbacks["in_"](where, op.size)
            units += 1
            matched += rc == VINF_SUCCESS and value == op.expected
        elif op.kind == INS:
            rc, data, left = read_units(
                callbacks["in_"], callbacks["in_string"], where, op.size, op.value, iom_success_r0
            )
            assert (rc, left) == (VINF_SUCCESS, 0)
            assert isinstance(op.expected, bytes)
            units += op.value
            same = sum(got == want for got, want in zip(data, op.expected, strict=True))
            matched += same
            if same != op.value:
                mismatches.append(op.line)
        else:
            pytest.fail(f"line {op.line}: unexpected access kind {op.kind}")
    assert mismatches == []
    assert (units, matched) == (145_993, 145_993)


@pytest.mark.skipif(not SAMPLE_TRACE.exists(), reason="the sample trace is not beside the repository")
def test_extractor_rebuilds_the_shipped_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/extract_fw_cfg.py run on the sample gives exactly the items shipped in slowpath/configs."""
    spec = importlib.util.spec_from_file_location("extract_fw_cfg", REPO / "bench" / "extract_fw_cfg.py")
    assert spec is not None and spec.loader is not None
    extractor = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "extract_fw_cfg", extractor)  # its dataclasses look themselves up there
    spec.loader.exec_module(extractor)
    assert extractor.main([str(SAMPLE_TRACE), "--out", str(tmp_path)]) == 0
    assert "mismatched: 0" in capsys.readouterr().out
    rebuilt = {path.relative_to(tmp_path): path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    shipped = {
        path.relative_to(SHIPPED_ITEMS): path.read_bytes() for path in SHIPPED_ITEMS.rglob("*") if path.is_file()
    }
    assert rebuilt == shipped
