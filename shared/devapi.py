"""What a device module sees of the VMM: its registration record and the two helper tables.

A device in ``devices/`` imports only ``shared``.  It describes itself with a
:class:`DeviceRegistration` (VirtualBox's PDMDEVREG) and provides a ring-3 half, built by
the slow path with a :class:`Ring3DeviceHelpers` (``pDevIns->pHlpR3``), and optionally a
ring-0 half, built in every vCPU worker with a :class:`Ring0DeviceHelpers`.  Both halves
get the same ``ctypes.Structure`` placed in shared memory, so they see one copy of the
device's shared state.

Callbacks are called with the device lock held (IOM enters it).  They return a status:
``VINF_SUCCESS``, an EM scheduling code, ``VERR_IOM_IOPORT_UNUSED`` (port reads: all
ones), ``VINF_IOM_MMIO_UNUSED_FF`` / ``_00`` (MMIO reads: all ones / zeros), or, from a
ring-0 callback, ``VINF_IOM_R3_IOPORT_READ`` / ``_WRITE`` or ``VINF_IOM_R3_MMIO_READ`` /
``_WRITE`` / ``_READ_WRITE`` to ask for the access to be redone in ring-3.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# --- Callback shapes (IOM's new-style port callbacks) ----------------------------------
# offset is the port minus the range's first port, or the absolute port with IOM_IOPORT_F_ABS.
PortOut = Callable[[int, int, int], int]
"""out(offset, value, size) -> status"""
PortIn = Callable[[int, int], tuple[int, int]]
"""in(offset, size) -> (status, value)"""
PortOutString = Callable[[int, bytes, int], tuple[int, int]]
"""out_string(offset, data, size) -> (status, units consumed from the front of data)"""
PortInString = Callable[[int, int, int], tuple[int, bytes]]
"""in_string(offset, count, size) -> (status, data for the units it produced)"""

MmioRead = Callable[[int, int], tuple[int, int]]
"""read(offset, size) -> (status, value); size is 1, 2, 4 or 8 (after IOM's splitting)"""
MmioWrite = Callable[[int, int, int], int]
"""write(offset, value, size) -> status; size is 1, 2, 4 or 8 (after IOM's splitting)"""

# --- IOMMMIO_FLAGS_* (include/VBox/vmm/iom.h): how IOM shapes accesses for a region ----
IOMMMIO_FLAGS_READ_PASSTHRU = 0x00  # reads reach the device as the guest made them
IOMMMIO_FLAGS_READ_DWORD = 0x01  # every read becomes aligned DWORD reads
IOMMMIO_FLAGS_READ_DWORD_QWORD = 0x02  # as DWORD, but an aligned QWORD passes as one
IOMMMIO_FLAGS_READ_MODE = 0x03
IOMMMIO_FLAGS_WRITE_PASSTHRU = 0x00
IOMMMIO_FLAGS_WRITE_DWORD_ZEROED = 0x10  # aligned DWORD writes, missing bytes written as 0
IOMMMIO_FLAGS_WRITE_DWORD_QWORD_ZEROED = 0x20
IOMMMIO_FLAGS_WRITE_DWORD_READ_MISSING = 0x30  # missing bytes are read from the device first
IOMMMIO_FLAGS_WRITE_DWORD_QWORD_READ_MISSING = 0x40
IOMMMIO_FLAGS_WRITE_ONLY_DWORD = 0x50  # only aligned DWORDs; other writes are ignored
IOMMMIO_FLAGS_WRITE_ONLY_DWORD_QWORD = 0x60
IOMMMIO_FLAGS_WRITE_MODE = 0x70
IOMMMIO_FLAGS_ABS = 0x1000  # pass the absolute address instead of the offset into the region
IOMMMIO_FLAGS_VALID_MASK = 0x1373

IOM_IOPORT_F_ABS = 0x1
"""Pass the absolute port to the callbacks instead of the offset into the range."""
IOM_IOPORT_F_VALID_MASK = 0x1

# --- PDM_DEVREG_FLAGS_* and PDM_DEVREG_CLASS_* (include/VBox/vmm/pdmdev.h) --------------
PDM_DEVREG_FLAGS_R0 = 0x1
PDM_DEVREG_FLAGS_REQUIRE_R0 = 0x2
PDM_DEVREG_FLAGS_OPT_IN_R0 = 0x4
PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT = 0x200
PDM_DEVREG_FLAGS_GUEST_BITS_32_64 = 0x3000
PDM_DEVREG_FLAGS_DEFAULT_BITS = PDM_DEVREG_FLAGS_GUEST_BITS_32_64 | PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT
PDM_DEVREG_FLAGS_NEW_STYLE = 0x80000000

PDM_DEVREG_CLASS_ARCH = 0x1
PDM_DEVREG_CLASS_ARCH_BIOS = 0x2
PDM_DEVREG_CLASS_BUS_PCI = 0x4
PDM_DEVREG_CLASS_PCI_BUILTIN = 0x8
PDM_DEVREG_CLASS_INPUT = 0x10
PDM_DEVREG_CLASS_PIC = 0x20
PDM_DEVREG_CLASS_PIT = 0x40
PDM_DEVREG_CLASS_RTC = 0x80
PDM_DEVREG_CLASS_DMA = 0x100
PDM_DEVREG_CLASS_VMM_DEV = 0x200
PDM_DEVREG_CLASS_GRAPHICS = 0x400
PDM_DEVREG_CLASS_STORAGE = 0x800
PDM_DEVREG_CLASS_NETWORK = 0x1000
PDM_DEVREG_CLASS_ACPI = 0x8000
PDM_DEVREG_CLASS_SERIAL = 0x10000
PDM_DEVREG_CLASS_HOST_DEV = 0x40000
PDM_DEVREG_CLASS_MISC = 0x80000000


class ConfigError(Exception):
    """A device's configuration value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class ConfigKey:
    """One key a device accepts under its instance's ``Config`` node (CFGM)."""

    name: str
    kind: type  # int, str or bool
    default: Any | Callable[[int], Any]  # a value, or a function of the instance number
    description: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    is_path: bool = False  # a file or directory: a relative value is taken from the config's folder

    def default_for(self, instance: int) -> Any:
        """The default for *instance*; ConfigError when the device has none for it."""
        if not callable(self.default):
            return self.default
        try:
            return self.default(instance)
        except (IndexError, KeyError, ValueError):
            raise ConfigError(f"{self.name} has no default for instance {instance}; set it in Config") from None

    def check(self, value: Any) -> Any:
        """Return *value* if it is valid for this key, else raise :class:`ConfigError`."""
        # bool is an int subclass in Python; CFGM keeps them apart, and so do we.
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{self.name} must be an integer, not {value!r}")
        if self.kind is not int and not isinstance(value, self.kind):
            raise ConfigError(f"{self.name} must be a {self.kind.__name__}, not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} = {value:#x} is below the minimum {self.minimum:#x}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{self.name} = {value:#x} is above the maximum {self.maximum:#x}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name} = {value!r} is not one of {', '.join(self.choices)}")
        return value


class CharDriver(Protocol):
    """The driver below a character device's LUN (PDMISERIALCONNECTOR, reduced)."""

    def write(self, data: bytes) -> None: ...

    def read(self, max_bytes: int) -> bytes: ...

    def pending_input(self) -> int: ...


class Ring3DeviceHelpers(Protocol):
    """The ring-3 device helpers (PDMDEVHLPR3), as the slow path hands them to a device."""

    @property
    def instance(self) -> int: ...

    def ioport_create(
        self,
        count: int,
        *,
        description: str,
        out: PortOut | None = None,
        in_: PortIn | None = None,
        out_string: PortOutString | None = None,
        in_string: PortInString | None = None,
        flags: int = 0,
        posted: bool = False,
    ) -> int:
        """Create an I/O port region (IOMR3IoPortCreate); returns its handle.

        *posted* says the device lets writes ring-0 defers be posted in posted mode
        (the vCPU goes on without waiting; ordering per device is kept).
        """
        ...

    def ioport_map(self, handle: int, port: int) -> None: ...

    def ioport_unmap(self, handle: int) -> None: ...

    def ioport_create_and_map(
        self,
        port: int,
        count: int,
        *,
        description: str,
        out: PortOut | None = None,
        in_: PortIn | None = None,
        out_string: PortOutString | None = None,
        in_string: PortInString | None = None,
        flags: int = 0,
        posted: bool = False,
    ) -> int: ...

    def mmio_create(
        self,
        size: int,
        *,
        description: str,
        read: MmioRead | None = None,
        write: MmioWrite | None = None,
        flags: int = 0,
        posted: bool = False,
    ) -> int:
        """Create an MMIO region of *size* bytes (page multiple; IOMR3MmioCreate); returns its handle."""
        ...

    def mmio_map(self, handle: int, address: int) -> None:
        """Map a region at a page-aligned guest-physical address; allowed at runtime (a BAR move)."""
        ...

    def mmio_unmap(self, handle: int) -> None: ...

    def mmio_create_and_map(
        self,
        address: int,
        size: int,
        *,
        description: str,
        read: MmioRead | None = None,
        write: MmioWrite | None = None,
        flags: int = 0,
        posted: bool = False,
    ) -> int: ...

    def driver_attach(self, lun: int, description: str) -> CharDriver | None:
        """Attach the driver configured on LUN#lun; None when the LUN has none."""
        ...

    def virtual_time_ns(self) -> int: ...

    def set_exit_status(self, status: int) -> None:
        """The exit status ``ringsim run`` ends with once the VM powers off (isa-debug-exit)."""
        ...


class Ring0DeviceHelpers(Protocol):
    """The ring-0 device helpers (PDMDEVHLPR0), as a vCPU worker hands them to a device."""

    @property
    def instance(self) -> int: ...

    def ioport_set_up_context(
        self,
        handle: int,
        *,
        out: PortOut | None = None,
        in_: PortIn | None = None,
        out_string: PortOutString | None = None,
        in_string: PortInString | None = None,
    ) -> None:
        """Attach ring-0 callbacks to a region ring-3 created (IOMR0IoPortSetUpContext)."""
        ...

    def mmio_set_up_context(self, handle: int, *, read: MmioRead | None = None, write: MmioWrite | None = None) -> None:
        """Attach ring-0 callbacks to an MMIO region ring-3 created (IOMR0MmioSetUpContext)."""
        ...

    def virtual_time_ns(self) -> int: ...


class Ring3Device(Protocol):
    """A device's ring-3 half.  Its constructor is PDMDEVREG.pfnConstruct."""

    def __init__(self, hlp: Any, state: Any, config: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class DeviceRegistration:
    """PDMDEVREG: what PDM needs to know to instantiate a device."""

    name: str
    description: str
    device_class: int
    flags: int
    max_instances: int
    shared_state: type[ctypes.Structure]
    ring3: Callable[..., Any] | None
    ring0: Callable[..., Any] | None = None
    config_keys: tuple[ConfigKey, ...] = field(default=())

    def config_key(self, name: str) -> ConfigKey | None:
        for key in self.config_keys:
            if key.name == name:
                return key
        return None
