"""Rebuild the fw_cfg items a guest read from a recorded trace, as the item directory devices/fw_cfg.py loads.

fw_cfg items are the configuration of the VM that was recorded, not behaviour of the
device: QEMU's ACPI tables and table loader script, SMBIOS tables, the e820 map, CPU
counts, boot settings, option ROMs.  A PC's firmware reads them to learn what machine it
runs on, so to answer the recorded firmware the way QEMU did, ringsim's fw_cfg must serve
that VM's items; taking them from the recording is how one gets them (QEMU builds them at
run time, there is no file to copy).  The register behaviour, which is the device's, is
not taken from here.

How: every 16-bit write to the selector port selects a key and rewinds; every 8-bit
``in`` and ``ins`` of the data port (or, as QEMU allows, of the selector port) with an
expected value gives the selected item's bytes at the running offset.  The file
directory (key 0x0019), when the guest read it, names the files and gives every file's
full length, read or not.

What is written, into OUT (default ``slowpath/configs/pc-fw_cfg``):

- ``manifest.toml``: one ``[[item]]`` per fixed key and one ``[[file]]`` per file of the
  directory (format: ``devices.fw_cfg.load_manifest``), each with a comment saying how
  much of it the guest read;
- ``items/0xKKKK.bin`` and ``files/<name>``: each item's bytes up to its last non-zero
  byte.  The entry's ``size`` gives the full length and the device fills the rest with
  zeros: bytes the guest read as zeros and bytes it never read (a file read partly or
  not at all) both end up as zeros, and the comment tells which part was read.  A fixed
  key's length is not recorded anywhere: it is taken as the length the guest read.

The signature (0x0000), the ID (0x0001) and the directory are built by the device and not
written; the script loads what it wrote through the device's own loader and checks that
every byte the guest read, these three included, comes back the same.

    python bench/extract_fw_cfg.py [TRACE] [--out DIR] [--port 0x510]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devices.fw_cfg import (
    DEVICE_KEYS,
    DIRECTORY_COUNT,
    DIRECTORY_ENTRY,
    KEY_FILE_DIR,
    KEY_FILE_FIRST,
    KEY_FILE_LAST,
    KEY_SIGNATURE,
    KEY_WRITE,
    MANIFEST_NAME,
    NO_SLOT,
    device_items,
    load_manifest,
    slot_of,
)
from shared.trace import IN, INS, OUT, read_trace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
DEFAULT_OUT = ROOT / "slowpath" / "configs" / "pc-fw_cfg"

# What the fixed keys hold (QEMU's docs/specs/fw_cfg.rst and its x86 keys), for the comments.
KEY_NAMES = {
    0x0002: "FW_CFG_UUID",
    0x0003: "FW_CFG_RAM_SIZE",
    0x0004: "FW_CFG_NOGRAPHIC",
    0x0005: "FW_CFG_NB_CPUS",
    0x0006: "FW_CFG_MACHINE_ID",
    0x0007: "FW_CFG_KERNEL_ADDR",
    0x0008: "FW_CFG_KERNEL_SIZE",
    0x0009: "FW_CFG_KERNEL_CMDLINE",
    0x000A: "FW_CFG_INITRD_ADDR",
    0x000B: "FW_CFG_INITRD_SIZE",
    0x000C: "FW_CFG_BOOT_DEVICE",
    0x000D: "FW_CFG_NUMA",
    0x000E: "FW_CFG_BOOT_MENU",
    0x000F: "FW_CFG_MAX_CPUS",
    0x0010: "FW_CFG_KERNEL_ENTRY",
    0x0011: "FW_CFG_KERNEL_DATA",
    0x0012: "FW_CFG_INITRD_DATA",
    0x0013: "FW_CFG_CMDLINE_ADDR",
    0x0014: "FW_CFG_CMDLINE_SIZE",
    0x0015: "FW_CFG_CMDLINE_DATA",
    0x0016: "FW_CFG_SETUP_ADDR",
    0x0017: "FW_CFG_SETUP_SIZE",
    0x0018: "FW_CFG_SETUP_DATA",
    0x8000: "FW_CFG_ACPI_TABLES (x86)",
    0x8001: "FW_CFG_SMBIOS_ENTRIES (x86)",
    0x8002: "FW_CFG_IRQ0_OVERRIDE (x86)",
    0x8003: "FW_CFG_E820_TABLE (x86)",
    0x8004: "FW_CFG_HPET (x86)",
}
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\Z")


class ExtractError(Exception):
    """The trace cannot give consistent items (two reads of one byte disagree, say)."""


@dataclass
class RecordedItem:
    """The bytes the guest read of one key, by offset."""

    key: int
    known: dict[int, int] = field(default_factory=dict)
    lines: set[int] = field(default_factory=set)

    def record(self, offset: int, data: bytes, line: int) -> None:
        for position, byte in enumerate(data, start=offset):
            seen = self.known.setdefault(position, byte)
            if seen != byte:
                raise ExtractError(
                    f"line {line}: key {self.key:#06x} byte {position} reads {byte:#04x}, earlier {seen:#04x}"
                )
        self.lines.add(line)

    @property
    def read_length(self) -> int:
        """One past the last offset the guest read."""
        return max(self.known, default=-1) + 1

    def prefix(self, length: int) -> bytes:
        """The first *length* bytes, zero where the guest read nothing."""
        return bytes(self.known.get(offset, 0) for offset in range(length))


@dataclass(frozen=True)
class DirectoryEntry:
    key: int
    size: int
    name: str


def record_reads(trace: Path, port: int) -> tuple[dict[int, RecordedItem], int]:
    """Every byte the guest read, per key; and how many data units carried a value."""
    items: dict[int, RecordedItem] = {}
    key, offset, units = KEY_SIGNATURE, 0, 0  # after reset QEMU has the signature selected
    for op in read_trace(trace):
        if op.address not in (port, port + 1):
            continue
        if op.kind == OUT and op.size == 2:
            key, offset = op.value & ~KEY_WRITE & 0xFFFF, 0
        elif op.kind in (IN, INS) and op.size == 1:
            count = op.value if op.kind == INS else 1
            if op.expected is not None:
                data = op.expected if isinstance(op.expected, bytes) else bytes([op.expected & 0xFF])
                items.setdefault(key, RecordedItem(key)).record(offset, data, op.line)
                units += count
            offset += count
    return items, units


def read_directory(items: dict[int, RecordedItem]) -> list[DirectoryEntry]:
    """The files of the directory, as far as the guest read it whole."""
    recorded = items.get(KEY_FILE_DIR)
    if recorded is None or recorded.read_length < DIRECTORY_COUNT.size:
        return []
    raw = recorded.prefix(recorded.read_length)
    (count,) = DIRECTORY_COUNT.unpack_from(raw)
    entries = []
    for number in range(count):
        start = DIRECTORY_COUNT.size + number * DIRECTORY_ENTRY.size
        if any(position not in recorded.known for position in range(start, start + DIRECTORY_ENTRY.size)):
            print(f"warning: the guest did not read directory entry {number}: that file is left out", file=sys.stderr)
            continue
        size, key, _, name = DIRECTORY_ENTRY.unpack_from(raw, start)
        entries.append(DirectoryEntry(key, size, name.split(b"\0", 1)[0].decode("utf-8")))
    return entries


def _data_path(key: int, name: str | None) -> str:
    if name is not None and SAFE_FILE_NAME.match(name) and ".." not in name.split("/"):
        return f"files/{name}"
    return f"{'files' if name is not None else 'items'}/{key:#06x}.bin"


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _how_much_read(recorded: RecordedItem | None, size: int) -> str:
    if size == 0:
        return "empty"
    if recorded is None:
        return f"{size} bytes, never read by the guest: zeros here"
    read = sum(1 for offset in recorded.known if offset < size)
    if read == size:
        return f"the guest read all {size} bytes" if size > 1 else "the guest read its 1 byte"
    return f"the guest read {read} of {size} bytes; the rest are zeros here"


def write_items(
    out: Path, items: dict[int, RecordedItem], directory: list[DirectoryEntry], trace: Path
) -> tuple[int, int]:
    """Write the manifest and the data files; returns (entries, bytes of data files)."""
    for owned in ("items", "files"):
        shutil.rmtree(out / owned, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# fw_cfg items of the VM recorded in {trace.name}, for devices/fw_cfg.py.",
        "# Written by bench/extract_fw_cfg.py from the bytes the guest read: regenerate, do not edit.",
        "# An entry is `size` bytes long; its data file holds them up to the last non-zero byte and",
        "# the device fills the rest with zeros.  A fixed key's length is what the guest read of it.",
        "# The signature (0x0000), the ID (0x0001) and the file directory (0x0019) come from the device.",
    ]
    written = 0
    entries = 0

    def emit(table: str, key: int, name: str | None, size: int, note: str) -> None:
        nonlocal written, entries
        recorded = items.get(key)
        content = recorded.prefix(min(size, recorded.read_length)).rstrip(b"\0") if recorded else b""
        lines.append("")
        lines.append(f"# {note}")
        lines.append(f"[[{table}]]")
        if name is not None:
            lines.append(f"name = {_toml_string(name)}")
        lines.append(f"selector = {key:#06x}")
        if content:
            path = _data_path(key, name)
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(content)
            written += len(content)
            lines.append(f"data = {_toml_string(path)}")
        lines.append(f"size = {size}")
        entries += 1

    files = {entry.key: entry for entry in directory}
    for key in sorted(items):
        if key in DEVICE_KEYS or key in files:
            continue
        if slot_of(key) == NO_SLOT:
            raise ExtractError(f"key {key:#06x} selects nothing on this device, yet the guest read data from it")
        if KEY_FILE_FIRST <= key <= KEY_FILE_LAST:
            raise ExtractError(f"the guest read file slot {key:#06x}, which the directory it read does not list")
        size = items[key].read_length
        emit("item", key, None, size, f"{KEY_NAMES.get(key, 'key')} {key:#06x}: the guest read {size} byte(s)")
    for entry in directory:
        recorded = items.get(entry.key)
        if recorded is not None and any(recorded.known[offset] for offset in recorded.known if offset >= entry.size):
            raise ExtractError(f"{entry.name!r}: the guest read non-zero bytes past its {entry.size} bytes")
        emit("file", entry.key, entry.name, entry.size, f"{entry.name}: {_how_much_read(recorded, entry.size)}")
    (out / MANIFEST_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return entries, written


def check_items(out: Path, items: dict[int, RecordedItem]) -> tuple[int, int]:
    """Load OUT as the device does and compare every recorded byte; returns (checked, mismatched)."""
    served = {item.key: item.data for item in device_items(load_manifest(out))}
    checked = mismatched = 0
    for key, recorded in items.items():
        data = served.get(key, b"")
        for offset, byte in recorded.known.items():
            checked += 1
            got = data[offset] if offset < len(data) else 0
            if got != byte:
                mismatched += 1
                if mismatched <= 10:
                    print(f"mismatch: key {key:#06x} byte {offset}: read {byte:#04x}, served {got:#04x}")
    return checked, mismatched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("trace", nargs="?", type=Path, default=DEFAULT_TRACE, help="the trace (default: the sample)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the item directory (default: {DEFAULT_OUT})")
    parser.add_argument("--port", type=lambda text: int(text, 0), default=0x510, help="the selector port")
    args = parser.parse_args(argv)
    try:
        items, units = record_reads(args.trace, args.port)
        directory = read_directory(items)
        entries, written = write_items(args.out, items, directory, args.trace)
    except ExtractError as exc:
        print(f"extract_fw_cfg: {exc}", file=sys.stderr)
        return 1
    checked, mismatched = check_items(args.out, items)
    on_disk = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"{args.trace}: {units} data units read with a value, from {len(items)} keys")
    print(f"{args.out}: {entries} manifest entries ({len(directory)} files in the directory)")
    print(f"data files {written} bytes; the directory on disk, manifest included, {on_disk} bytes")
    print(f"bytes checked against the loaded items: {checked}, mismatched: {mismatched}")
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
