"""fw_cfg: QEMU's firmware configuration device, I/O port interface (``fw_cfg_io`` of a ``pc`` machine).

Firmware reads the VM's configuration through two ports (QEMU's docs/specs/fw_cfg.rst): a
16-bit write to the selector register picks an *item* by its key and rewinds to the item's
first byte; each 8-bit read of the data register returns the next byte, and 0 once the
item is exhausted.  Items are blobs: a few with fixed keys (the signature "QEMU" at
0x0000, the interface ID at 0x0001, CPU counts and such), and named *files* (ACPI tables,
SMBIOS, option ROMs, boot order) in the file slots from 0x0020, listed in the file
directory at 0x0019.  Key bit 15 selects the architecture-specific bank (0x8000 + n);
bit 14, the old write channel, is ignored.  Keys whose index (bits 0-13) is 0x40 or
more select nothing: QEMU 7.2 has 0x20 file slots, so valid indexes end at 0x3f.

The DMA interface is not offered: the ID item says "traditional interface only", as
QEMU says with ``-global fw_cfg_io.dma_enabled=off`` (how the sample trace was recorded).

Accesses the interface does not define answer as QEMU's combined port region does:
either port reads the data stream with 8-bit reads and selects with 16-bit writes,
8-bit writes are dropped (writes through the data register were removed in QEMU 2.4),
and other sizes are refused by the region, which QEMU's memory core answers like
unassigned memory: reads give 0, writes are dropped.

What the device serves comes from the VM config: ``Items`` names a directory holding a
``manifest.toml`` (see :func:`load_manifest`) and the data files it names.  The ring-3
constructor reads them and lays every item out in :class:`FwCfgState`, so ring-0 can
serve every access: selects, single reads and, through the string callback, a whole
``rep insb`` in one call.  Nothing here depends on time.
"""

from __future__ import annotations

import ctypes
import struct
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_ARCH_BIOS,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VINF_SUCCESS

# --- Ports: offsets from IOBase (0x510 on a PC).
SELECTOR = 0  # write 16 bits: select an item and rewind to its first byte
DATA = 1  # read 8 bits: the selected item's next byte, 0 past its end
PORT_COUNT = 2

# --- Selector (key) bits.
KEY_ARCH = 0x8000  # the architecture-specific bank (FW_CFG_ARCH_LOCAL)
KEY_WRITE = 0x4000  # the write channel: ignored since QEMU 2.4
KEY_INDEX = 0x3FFF  # the item within its bank
BANK_SLOTS = 0x40  # indexes 0x00-0x3f exist: 0x20 fixed keys, then 0x20 file slots
SLOT_COUNT = 2 * BANK_SLOTS  # the generic bank, then the arch bank
NO_SLOT = -1  # the last key selected nothing: reads give 0

# --- Items the device builds itself.
KEY_SIGNATURE = 0x0000  # the 4 bytes "QEMU"
KEY_ID = 0x0001  # interface feature bits, a little-endian u32
KEY_FILE_DIR = 0x0019  # the file directory
KEY_FILE_FIRST = 0x0020  # the first file slot
KEY_FILE_LAST = KEY_FILE_FIRST + BANK_SLOTS // 2 - 1
DEVICE_KEYS = (KEY_SIGNATURE, KEY_ID, KEY_FILE_DIR)

SIGNATURE = b"QEMU"
ID_TRADITIONAL = 0x1  # the I/O port interface; bit 1 (DMA) stays clear
FILE_NAME_SIZE = 56  # a file name and its NUL, in a directory entry
DIRECTORY_COUNT = struct.Struct(">I")  # the directory starts with the number of files...
DIRECTORY_ENTRY = struct.Struct(">IHH56s")  # ...then each: size, key, reserved, name

DATA_CAPACITY = 1 << 20  # bytes of item data the shared state can hold, all items together
MANIFEST_NAME = "manifest.toml"


class FwCfgState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("selector", ctypes.c_uint16),  # the key last written, as written
        ("current_slot", ctypes.c_int16),  # the slot it selected, or NO_SLOT
        ("read_offset", ctypes.c_uint32),  # the next byte of the selected item
        ("item_start", ctypes.c_uint32 * SLOT_COUNT),  # where each slot's bytes begin in data
        ("item_length", ctypes.c_uint32 * SLOT_COUNT),  # 0 for a slot that holds no item
        ("data_used", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * DATA_CAPACITY),  # every item's bytes, back to back
    ]


def slot_of(key: int) -> int:
    """The slot a key selects, or NO_SLOT; the write bit makes no difference."""
    index = key & KEY_INDEX
    if index >= BANK_SLOTS:
        return NO_SLOT
    return (BANK_SLOTS if key & KEY_ARCH else 0) + index


class FwCfgCore:
    """The two registers, the same in both tiers."""

    def __init__(self, state: FwCfgState) -> None:
        self.state = state
        self.data = memoryview(state.data).cast("B")

    def select(self, key: int) -> None:
        state = self.state
        state.selector = key
        state.current_slot = slot_of(key)
        state.read_offset = 0

    def read_bytes(self, count: int) -> bytes:
        """The selected item's next *count* bytes, zeros past its end (or for no item)."""
        state = self.state
        slot = state.current_slot
        if slot == NO_SLOT:
            return bytes(count)
        offset = state.read_offset
        available = state.item_length[slot] - offset
        if available <= 0:
            return bytes(count)
        taken = min(count, available)
        start = state.item_start[slot] + offset
        state.read_offset = offset + taken
        chunk = bytes(self.data[start : start + taken])
        return chunk if taken == count else chunk + bytes(count - taken)

    def io_out(self, offset: int, value: int, size: int) -> int:
        """A 16-bit write selects (at either port); other writes are dropped."""
        if size == 2:
            self.select(value & 0xFFFF)
        return VINF_SUCCESS

    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        """An 8-bit read streams the item (at either port); the region refuses other sizes: 0."""
        if size != 1:
            return VINF_SUCCESS, 0
        return VINF_SUCCESS, self.read_bytes(1)[0]

    def io_in_string(self, offset: int, count: int, size: int) -> tuple[int, bytes]:
        """A whole ``rep insb`` in one call: the next *count* bytes."""
        if size != 1:
            return VINF_SUCCESS, bytes(count * size)
        return VINF_SUCCESS, self.read_bytes(count)


# --- The items: read from the config's manifest by ring-3, laid out in the shared state.


@dataclass(frozen=True)
class FwCfgItem:
    """One item: its key, its bytes and, for a file, its name in the directory."""

    key: int
    data: bytes
    name: str | None = None


def load_manifest(directory: Path) -> list[FwCfgItem]:
    """The items a ``manifest.toml`` in *directory* names; raises ConfigError.

    The manifest is two arrays of tables; paths are relative to the manifest::

        [[item]]                     # an item with a fixed key
        selector = 0x000f
        data = "items/0x000f.bin"    # optional: its bytes
        size = 2                     # optional: its length, when longer than the data

        [[file]]                     # a file: listed in the directory (key 0x0019)
        name = "etc/acpi/rsdp"       # at most 55 bytes of UTF-8
        selector = 0x0022            # optional: a file slot 0x0020-0x003f
        data = "files/etc/acpi/rsdp"
        size = 20

    An item is ``size`` bytes long (default: the data file's length); bytes past the
    data file read as zeros.  Files without a selector take the free file slots in the
    order of their names, as QEMU assigns them.  The device's own keys (0x0000, 0x0001,
    0x0019) cannot be given.
    """
    manifest = directory / MANIFEST_NAME
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"fw_cfg items: cannot read {manifest}: {exc}") from None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{manifest}: not valid TOML: {exc}") from None
    for section in tree:
        if section not in ("item", "file"):
            raise ConfigError(f"{manifest}: unknown key {section!r}; expected [[item]] and [[file]] tables")
    items = [_manifest_item(manifest, number, entry) for number, entry in _entries(manifest, tree, "item")]
    files = [_manifest_file(manifest, number, entry) for number, entry in _entries(manifest, tree, "file")]
    taken: dict[int, str] = {}
    for item in items + files:
        what = f"the file {item.name!r}" if item.name is not None else f"[[item]] {item.key:#06x}"
        if item.key in taken:
            raise ConfigError(f"{manifest}: {taken[item.key]} and {what} both have selector {item.key:#06x}")
        if item.key >= 0:
            taken[item.key] = what
    names = [file.name for file in files]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{manifest}: the file {name!r} is listed twice")
    free = (key for key in range(KEY_FILE_FIRST, KEY_FILE_LAST + 1) if key not in taken)
    placed: list[FwCfgItem] = []
    for file in sorted(files, key=lambda file: file.name or ""):
        key = file.key
        if key < 0:
            key = next(free, -1)
            if key < 0:
                raise ConfigError(f"{manifest}: no free file slot for {file.name!r} (there are {BANK_SLOTS // 2})")
        placed.append(FwCfgItem(key, file.data, file.name))
    return items + placed


def _entries(manifest: Path, tree: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    entries = tree.get(section, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{manifest}: {section} must be an array of tables ([[{section}]])")
    return list(enumerate(entries, start=1))


def _integer(manifest: Path, where: str, entry: dict[str, Any], key: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{manifest}: {where}: {key} must be a non-negative integer, not {value!r}")
    return value


def _item_bytes(manifest: Path, where: str, entry: dict[str, Any]) -> bytes:
    """An entry's bytes: its data file, zero-filled to its size."""
    data = b""
    path = entry.get("data")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{manifest}: {where}: data must be a path, not {path!r}")
        try:
            data = (manifest.parent / path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{manifest}: {where}: cannot read its data: {exc}") from None
    size = _integer(manifest, where, entry, "size")
    if size is None:
        return data
    if size < len(data):
        raise ConfigError(f"{manifest}: {where}: size {size} is less than its data file's {len(data)} bytes")
    if size > DATA_CAPACITY:
        raise ConfigError(f"{manifest}: {where}: size {size} is over the device's {DATA_CAPACITY} bytes")
    return data + bytes(size - len(data))


def _check_keys(manifest: Path, where: str, entry: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in entry:
        if key not in allowed:
            raise ConfigError(f"{manifest}: {where}: unknown key {key!r} (accepted: {', '.join(allowed)})")


def _manifest_item(manifest: Path, number: int, entry: dict[str, Any]) -> FwCfgItem:
    where = f"[[item]] #{number}"
    _check_keys(manifest, where, entry, ("selector", "data", "size"))
    key = _integer(manifest, where, entry, "selector")
    if key is None:
        raise ConfigError(f"{manifest}: {where}: selector is missing")
    where = f"[[item]] {key:#06x}"
    if key > 0xFFFF or key & KEY_WRITE or slot_of(key) == NO_SLOT:
        raise ConfigError(f"{manifest}: {where}: not a selector the device has (0x0000-0x003f, or 0x8000-0x803f)")
    if key in DEVICE_KEYS:
        raise ConfigError(f"{manifest}: {where}: the device builds this item itself")
    if KEY_FILE_FIRST <= key <= KEY_FILE_LAST:
        raise ConfigError(f"{manifest}: {where}: selectors 0x0020-0x003f are file slots: use [[file]]")
    if "data" not in entry and "size" not in entry:
        raise ConfigError(f"{manifest}: {where}: needs data, size or both")
    return FwCfgItem(key, _item_bytes(manifest, where, entry))


def _manifest_file(manifest: Path, number: int, entry: dict[str, Any]) -> FwCfgItem:
    """A file entry; its key is -1 when the manifest leaves it to the device."""
    where = f"[[file]] #{number}"
    _check_keys(manifest, where, entry, ("name", "selector", "data", "size"))
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{manifest}: {where}: name must be a non-empty string")
    where = f"[[file]] {name!r}"
    if len(name.encode("utf-8")) >= FILE_NAME_SIZE or "\0" in name:
        raise ConfigError(f"{manifest}: {where}: a name has at most {FILE_NAME_SIZE - 1} bytes and no NUL")
    key = _integer(manifest, where, entry, "selector")
    if key is not None and not KEY_FILE_FIRST <= key <= KEY_FILE_LAST:
        raise ConfigError(f"{manifest}: {where}: selector {key:#x} is not a file slot (0x0020-0x003f)")
    return FwCfgItem(-1 if key is None else key, _item_bytes(manifest, where, entry), name)


def file_directory(items: list[FwCfgItem]) -> bytes:
    """Item 0x0019: the count, then each file's size, key, 0 and name, in key order (all big-endian)."""
    files = sorted((item for item in items if item.name is not None), key=lambda item: item.key)
    entries = [DIRECTORY_ENTRY.pack(len(file.data), file.key, 0, (file.name or "").encode("utf-8")) for file in files]
    return DIRECTORY_COUNT.pack(len(files)) + b"".join(entries)


def device_items(configured: list[FwCfgItem]) -> list[FwCfgItem]:
    """Everything the device serves: its own three items, then the configured ones."""
    own = [
        FwCfgItem(KEY_SIGNATURE, SIGNATURE),
        FwCfgItem(KEY_ID, ID_TRADITIONAL.to_bytes(4, "little")),
        FwCfgItem(KEY_FILE_DIR, file_directory(configured)),
    ]
    return own + configured


def install_items(state: FwCfgState, items: list[FwCfgItem]) -> None:
    """Lay *items* out in the shared state's data area; raises ConfigError when they do not fit."""
    total = sum(len(item.data) for item in items)
    if total > DATA_CAPACITY:
        raise ConfigError(f"fw_cfg items: {total} bytes of data, over the device's {DATA_CAPACITY}")
    data = memoryview(state.data).cast("B")
    offset = 0
    for slot in range(SLOT_COUNT):
        state.item_start[slot] = 0
        state.item_length[slot] = 0
    for item in items:
        slot = slot_of(item.key)
        state.item_start[slot] = offset
        state.item_length[slot] = len(item.data)
        data[offset : offset + len(item.data)] = item.data
        offset += len(item.data)
    state.data_used = offset


class FwCfgRing3(FwCfgCore):
    """Ring-3 half: loads the items, maps the ports, serves every access when ring-0 is off."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: FwCfgState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        configured = load_manifest(Path(config["Items"])) if config["Items"] else []
        install_items(state, device_items(configured))
        state.io_handle = hlp.ioport_create_and_map(
            config["IOBase"],
            PORT_COUNT,
            description="fw_cfg",
            out=self.io_out,
            in_=self.io_in,
            in_string=self.io_in_string,
        )
        self.reset()

    def reset(self) -> None:
        """As QEMU: the signature is selected, from its first byte."""
        self.select(KEY_SIGNATURE)


class FwCfgRing0(FwCfgCore):
    """Ring-0 half: every access (selects, single reads and whole ``rep insb``) is served here."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: FwCfgState, config: Mapping[str, Any]) -> None:
        super().__init__(state)
        hlp.ioport_set_up_context(state.io_handle, out=self.io_out, in_=self.io_in, in_string=self.io_in_string)


REGISTRATION = DeviceRegistration(
    name="fw_cfg",
    description="QEMU firmware configuration, I/O port interface (no DMA): a selector and a data port",
    device_class=PDM_DEVREG_CLASS_ARCH_BIOS,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=FwCfgState,
    ring3=FwCfgRing3,
    ring0=FwCfgRing0,
    config_keys=(
        ConfigKey("IOBase", int, 0x510, "the selector port; the data port follows it", minimum=0, maximum=0xFFFE),
        ConfigKey(
            "Items",
            str,
            "",
            "a directory holding manifest.toml and the item files it names (relative: to the VM "
            "config's folder); empty: only the signature, the ID and an empty file directory",
            is_path=True,
        ),
    ),
)
