"""The VM configuration: TOML shaped like VirtualBox's CFGM tree.

    Name = "my-vm"
    NumCPUs = 1

    [Devices.serial]
    Priority = 65536                 # optional; default: the lowest bit of the class
    [Devices.serial.0]               # instance 0 (instance names are all digits)
    Trusted = true
    R0Enabled = true                 # default: on, when the device has a ring-0 half
    [Devices.serial.0.Config]        # the device's own keys, validated by the device
    IOBase = 0x3f8
    [Devices.serial.0."LUN#0"]       # the driver attached on LUN#0
    Driver = "memory"
    [Devices.serial.0."LUN#0".Config]

Here the shape is checked; PDM checks the device and driver keys.  Every error is one
:class:`ConfigFileError` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.boot import MODES, Doorbell
from shared.trace import TimeDependentRule
from shared.vcpu import MAX_VCPUS

_LUN_KEY = re.compile(r"LUN#([0-9]+)\Z")
_INSTANCE_NAME = re.compile(r"[0-9]+\Z")  # ASCII digits only: str.isdigit() also takes superscripts


class ConfigFileError(Exception):
    """A configuration error at a place in a file: ``FILE:LINE: what``."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line


@dataclass
class LunConfig:
    driver: str
    config: dict[str, Any]


@dataclass
class InstanceConfig:
    number: int
    trusted: bool
    r0_enabled: bool | None
    config: dict[str, Any]
    luns: dict[int, LunConfig]


@dataclass
class DeviceConfig:
    name: str
    priority: int | None
    instances: list[InstanceConfig]


@dataclass
class VmConfig:
    name: str
    vcpus: int
    devices: list[DeviceConfig]
    source: str
    text: str = field(repr=False)
    time_dependent: list[TimeDependentRule] = field(default_factory=list)
    mode: str = "strict"  # how deferred writes travel: strict | posted | doorbell
    posted_window: int = 64
    doorbells: list[Doorbell] = field(default_factory=list)
    on_device_error: str = "continue"  # a device callback that raises: the VM goes on, or powers off
    folder: Path = field(default_factory=Path.cwd)  # where relative paths in the config start

    def error(self, keys: tuple[str, ...], message: str) -> ConfigFileError:
        """An error about the value at *keys*, located at its line in the file."""
        return ConfigFileError(self.source, locate(self.text, keys), message)


def _split_dotted(header: str) -> tuple[str, ...]:
    """Split a TOML dotted key, honouring quotes: ``a."b.c".d`` -> (a, b.c, d)."""
    parts = re.findall(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s]+))\s*(?:\.|$)', header)
    return tuple(next(p for p in groups if p) for groups in parts if any(groups))


def _strip_comment(line: str) -> str:
    """The line without its comment; a '#' inside quotes (as in "LUN#0") is kept."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:i].strip()
    return line.strip()


def locate(text: str, keys: tuple[str, ...]) -> int:
    """The line (1-based) that best shows *keys*: where it is set, else the first table
    inside it or the closest table around it; 1 when nothing matches."""
    best_line, best_depth = 1, 0
    current: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        header = re.match(r"\[\s*(.+?)\s*\]$", line)
        if header:
            current = _split_dotted(header.group(1))
            path = current
        else:
            assignment = re.match(r"\s*(.+?)\s*=", line)
            if not assignment:
                continue
            path = current + _split_dotted(assignment.group(1))
        depth = min(len(path), len(keys))
        if path[:depth] == keys[:depth] and depth > best_depth:
            best_line, best_depth = number, depth
    return best_line


def _table(config: VmConfig, value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise config.error(keys, f"{'.'.join(keys)} must be a table")
    return value


def parse_config(text: str, source: str, folder: Path | None = None) -> VmConfig:
    """Parse and shape-check a VM config; raises :class:`ConfigFileError`.

    Relative paths in it (ConfigKey.is_path) start at *folder*, by default the working directory.
    """
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        # tomllib says "(at end of document)" for an error where the text ran out.
        line = int(match.group(1)) if match else max(1, len(text.rstrip("\n").split("\n")))
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise ConfigFileError(source, line, f"not valid TOML: {message}") from None
    config = VmConfig(name="ringsim", vcpus=1, devices=[], source=source, text=text)
    if folder is not None:
        config.folder = folder
    for key, value in tree.items():
        if key == "Name":
            if not isinstance(value, str) or not value:
                raise config.error((key,), "Name must be a non-empty string")
            config.name = value
        elif key == "NumCPUs":
            if type(value) is not int or not 1 <= value <= MAX_VCPUS:
                raise config.error((key,), f"NumCPUs must be an integer in 1..{MAX_VCPUS}")
            config.vcpus = value
        elif key == "Devices":
            for name, node in _table(config, value, (key,)).items():
                config.devices.append(_parse_device(config, name, _table(config, node, (key, name))))
        elif key == "Replay":
            config.time_dependent = _parse_replay(config, _table(config, value, (key,)))
        elif key == "Mode":
            if value not in MODES:
                raise config.error((key,), f"Mode must be one of {', '.join(MODES)}, not {value!r}")
            config.mode = value
        elif key == "PostedWindow":
            if type(value) is not int or not 1 <= value <= 4096:
                raise config.error((key,), "PostedWindow must be an integer in 1..4096")
            config.posted_window = value
        elif key == "Doorbells":
            config.doorbells = _parse_doorbells(config, value)
        elif key == "OnDeviceError":
            if value not in ("continue", "poweroff"):
                raise config.error((key,), f"OnDeviceError must be continue or poweroff, not {value!r}")
            config.on_device_error = value
        else:
            raise config.error(
                (key,), f"unknown key {key!r}; expected Name, NumCPUs, Mode, PostedWindow, OnDeviceError, "
                        "[Devices], [[Doorbells]] or [Replay]"
            )
    return config


def _parse_device(config: VmConfig, name: str, node: dict[str, Any]) -> DeviceConfig:
    device = DeviceConfig(name=name, priority=None, instances=[])
    for key, value in node.items():
        keys = ("Devices", name, key)
        if key == "Priority":
            if type(value) is not int or value < 0:
                raise config.error(keys, "Priority must be a non-negative integer")
            device.priority = value
        elif _INSTANCE_NAME.match(key):
            number = int(key)
            if any(instance.number == number for instance in device.instances):
                raise config.error(keys, f"instance {number} of {name!r} is configured twice")
            device.instances.append(_parse_instance(config, keys, number, _table(config, value, keys)))
        else:
            raise config.error(keys, f"the instance name {key!r} isn't all digits")
    device.instances.sort(key=lambda instance: instance.number)
    return device


def _parse_instance(config: VmConfig, keys: tuple[str, ...], number: int, node: dict[str, Any]) -> InstanceConfig:
    instance = InstanceConfig(number=number, trusted=False, r0_enabled=None, config={}, luns={})
    for key, value in node.items():
        here = (*keys, key)
        if key in ("Trusted", "R0Enabled"):
            if not isinstance(value, bool):
                raise config.error(here, f"{key} must be true or false")
            if key == "Trusted":
                instance.trusted = value
            else:
                instance.r0_enabled = value
        elif key == "Config":
            instance.config = _table(config, value, here)
        elif (lun := _LUN_KEY.match(key)) is not None:
            instance.luns[int(lun.group(1))] = _parse_lun(config, here, _table(config, value, here))
        else:
            raise config.error(here, f"unknown key {key!r}; expected Trusted, R0Enabled, Config or LUN#<n>")
    return instance


def _parse_lun(config: VmConfig, keys: tuple[str, ...], node: dict[str, Any]) -> LunConfig:
    driver = node.get("Driver")
    if not isinstance(driver, str) or not driver:
        raise config.error(keys, f"{keys[-1]} needs Driver = \"<name>\"")
    lun = LunConfig(driver=driver, config={})
    for key, value in node.items():
        if key == "Config":
            lun.config = _table(config, value, (*keys, key))
        elif key != "Driver":
            raise config.error((*keys, key), f"unknown key {key!r}; expected Driver or Config")
    return lun


def _parse_doorbells(config: VmConfig, value: Any) -> list[Doorbell]:
    """[[Doorbells]]: Port or Address, and optionally the Value that rings."""
    keys = ("Doorbells",)
    if not isinstance(value, list) or not all(isinstance(bell, dict) for bell in value):
        raise config.error(keys, "Doorbells must be an array of tables ([[Doorbells]])")
    bells = []
    for bell in value:
        if set(bell) - {"Port", "Address", "Value"} or ("Port" in bell) == ("Address" in bell):
            raise config.error(keys, "a doorbell has Port or Address, and optionally Value")
        mmio = "Address" in bell
        address = bell["Address"] if mmio else bell["Port"]
        if type(address) is not int or not 0 <= address <= (0xFFFF if not mmio else (1 << 64) - 1):
            raise config.error((*keys, "Address" if mmio else "Port"), f"not a {'n address' if mmio else ' port'}")
        ring_value = bell.get("Value")
        if ring_value is not None and (type(ring_value) is not int or ring_value < 0):
            raise config.error((*keys, "Value"), "Value must be a non-negative integer")
        bells.append(Doorbell(mmio, address, ring_value))
    return bells


def _range(config: VmConfig, keys: tuple[str, ...], text: Any) -> tuple[int, int]:
    """"0x40-0x42" or "0x61" (or an integer) as (first, last)."""
    if type(text) is int:
        return text, text
    try:
        if not isinstance(text, str):
            raise ValueError
        first, _, last = text.partition("-")
        low, high = int(first, 0), int(last or first, 0)
    except ValueError:
        raise config.error(keys, f"{keys[-1]} must be a number or a range like \"0x40-0x42\", not {text!r}") from None
    if low > high or low < 0:
        raise config.error(keys, f"{keys[-1]} range {text!r} is empty or negative")
    return low, high


def _parse_replay(config: VmConfig, node: dict[str, Any]) -> list[TimeDependentRule]:
    """[Replay]: [[Replay.TimeDependent]] rules (Ports or Addresses, optionally behind an index port)."""
    rules: list[TimeDependentRule] = []
    for key, value in node.items():
        if key != "TimeDependent":
            raise config.error(("Replay", key), f"unknown key {key!r}; expected [[Replay.TimeDependent]]")
        if not isinstance(value, list) or not all(isinstance(rule, dict) for rule in value):
            raise config.error(("Replay", key), "TimeDependent must be an array of tables ([[Replay.TimeDependent]])")
        for rule in value:
            keys = ("Replay", key)
            unknown = set(rule) - {"Ports", "Addresses", "IndexPort", "IndexMask", "Indexes"}
            if unknown or ("Ports" in rule) == ("Addresses" in rule):
                raise config.error(keys, "a TimeDependent rule has Ports or Addresses, optionally IndexPort, "
                                         "IndexMask and Indexes")
            mmio = "Addresses" in rule
            field_name = "Addresses" if mmio else "Ports"
            first, last = _range(config, (*keys, field_name), rule[field_name])
            index_port = rule.get("IndexPort")
            if index_port is not None and (type(index_port) is not int or not 0 <= index_port <= 0xFFFF):
                raise config.error((*keys, "IndexPort"), "IndexPort must be a port number")
            mask = rule.get("IndexMask", 0xFF)
            if type(mask) is not int or mask < 0:
                raise config.error((*keys, "IndexMask"), "IndexMask must be a non-negative integer")
            index_first, index_last = _range(config, (*keys, "Indexes"), rule.get("Indexes", "0x00-0xff"))
            rules.append(TimeDependentRule(first, last, mmio, index_port, mask, index_first, index_last))
    return rules


def load_config(path: Path) -> VmConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(str(path), 1, f"cannot read config: {exc}") from None
    return parse_config(text, str(path), path.resolve().parent)
