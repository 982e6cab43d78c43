"""PDM drivers: what sits below a device's LUN in ring-3.

Only character drivers exist so far (PDMISERIALCONNECTOR's byte stream, reduced to
write/read): ``stdout``, ``file`` and ``memory``.  A LUN names its driver in the VM
config (``[Devices.serial.0."LUN#0"] Driver = "file"``) with the driver's own keys under
``Config``, validated like a device's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from shared.devapi import CharDriver, ConfigError, ConfigKey


class MemoryCharDriver:
    """Keeps what the device sends; ``Input`` (config) is what the device can receive."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.output = bytearray()
        self._input = bytearray(config["Input"].encode("latin-1"))

    def write(self, data: bytes) -> None:
        self.output += data

    def read(self, max_bytes: int) -> bytes:
        data = bytes(self._input[:max_bytes])
        del self._input[:max_bytes]
        return data

    def pending_input(self) -> int:
        return len(self._input)

    def close(self) -> None:
        """Nothing to release."""


class StreamCharDriver:
    """Sends the device's bytes to a binary stream (stdout, or a file it opened)."""

    def __init__(self, stream: BinaryIO, owned: bool) -> None:
        self._stream = stream
        self._owned = owned

    def write(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    def read(self, max_bytes: int) -> bytes:
        return b""

    def pending_input(self) -> int:
        return 0

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def _open_file(config: Mapping[str, Any]) -> StreamCharDriver:
    if not config["Path"]:
        raise ConfigError("Path is required for the file driver")
    path = Path(config["Path"])
    try:
        return StreamCharDriver(path.open("ab" if config["Append"] else "wb"), owned=True)
    except OSError as exc:
        raise ConfigError(f"Path {str(path)!r}: {exc.strerror}") from None


@dataclass(frozen=True)
class DriverRegistration:
    name: str
    description: str
    config_keys: tuple[ConfigKey, ...]
    construct: Callable[[Mapping[str, Any]], Any]


DRIVERS: dict[str, DriverRegistration] = {
    reg.name: reg
    for reg in (
        DriverRegistration(
            "stdout",
            "bytes go to ringsim's standard output",
            (),
            lambda config: StreamCharDriver(sys.stdout.buffer, owned=False),
        ),
        DriverRegistration(
            "file",
            "bytes go to a file",
            (
                ConfigKey("Path", str, "", "the file to write (relative: to the VM config's folder)", is_path=True),
                ConfigKey("Append", bool, False, "append instead of truncating"),
            ),
            _open_file,
        ),
        DriverRegistration(
            "memory",
            "bytes are kept in memory for the run report and the Python API",
            (ConfigKey("Input", str, "", "bytes the device can receive (latin-1 text)"),),
            MemoryCharDriver,
        ),
    )
}


def construct_driver(name: str, config: Mapping[str, Any]) -> CharDriver:
    """Build the driver *name* from its validated config; raises ConfigError."""
    reg = DRIVERS.get(name)
    if reg is None:
        raise ConfigError(f"unknown driver {name!r}; known: {', '.join(DRIVERS)}")
    driver: CharDriver = reg.construct(config)
    return driver
