"""PDM in ring-3: device registration, instantiation from the config, and the device helpers.

Registration checks what PDMDevice.cpp's pdmR3DevReg_Register checks (a valid name, a
class, at least one instance, a constructor, the new-style flag, a ring-0 half exactly
when the R0 flag says so, no duplicate names), each failure a named VirtualBox status.
Instantiation follows pdmR3DevInit: the configured instances are ordered by priority
(default: the lowest bit of the device class) and instance number, the instance count is
checked against the device's maximum, each instance gets its shared state and its lock,
its ring-3 constructor runs, then its ring-0 constructor when ring-0 is enabled, and
finally init-complete runs for all of them before IOM freezes region creation.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.devapi import (
    PDM_DEVREG_FLAGS_GUEST_BITS_32_64,
    PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_OPT_IN_R0,
    PDM_DEVREG_FLAGS_R0,
    PDM_DEVREG_FLAGS_REQUIRE_R0,
    CharDriver,
    ConfigError,
    ConfigKey,
    DeviceRegistration,
    MmioRead,
    MmioWrite,
    PortIn,
    PortInString,
    PortOut,
    PortOutString,
)
from shared.iomtable import CB_IN, CB_IN_STRING, CB_OUT, CB_OUT_STRING
from shared.status import (
    VERR_PDM_DEVICE_NAME_CLASH,
    VERR_PDM_DEVICE_NOT_FOUND,
    VERR_PDM_INVALID_DEVICE_REGISTRATION,
    VERR_PDM_TOO_MANY_DEVICE_INSTANCES,
    VBoxError,
    status_name,
)
from slowpath.config import VmConfig
from slowpath.drivers import DRIVERS, construct_driver
from slowpath.iom import IomManager

DEVICE_MODULES = (
    "devices.serial",
    "devices.debugcon",
    "devices.isa_debug_exit",
    "devices.testdev",
    "devices.ioapic",
    "devices.hpet",
    "devices.vga",
    "devices.edu",
    "devices.rtc",
    "devices.pit",
    "devices.pic",
    "devices.i8042",
    "devices.post",
    "devices.fw_cfg",
    "devices.piix",
)
"""The built-in devices, by module.  Each module defines ``REGISTRATION``."""

STATE_ALIGNMENT = 64  # shared instance data is 64-byte aligned, as in VirtualBox
_VALID_NAME = re.compile(r"[A-Za-z0-9_-]{1,31}\Z")


class DeviceRegistry:
    """The registered device types (PDM's list of PDMDEVREGs)."""

    def __init__(self) -> None:
        self._devices: dict[str, tuple[DeviceRegistration, str]] = {}

    def register(self, reg: DeviceRegistration, module: str) -> None:
        """pdmR3DevReg_Register: validate *reg* and add it; raises VBoxError."""
        problem = _registration_problem(reg)
        if problem:
            raise VBoxError(VERR_PDM_INVALID_DEVICE_REGISTRATION, f"device {reg.name!r}: {problem}")
        if reg.name in self._devices:
            raise VBoxError(VERR_PDM_DEVICE_NAME_CLASH, f"a device named {reg.name!r} is already registered")
        self._devices[reg.name] = (reg, module)

    def get(self, name: str) -> tuple[DeviceRegistration, str] | None:
        return self._devices.get(name)

    def names(self) -> list[str]:
        return sorted(self._devices)


def _registration_problem(reg: DeviceRegistration) -> str | None:
    if not _VALID_NAME.match(reg.name):
        return "the name must be 1..31 letters, digits, '_' or '-'"
    if bool(reg.flags & PDM_DEVREG_FLAGS_R0) != (reg.ring0 is not None):
        return "the R0 flag and the presence of a ring-0 half disagree"
    if reg.flags & PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT != PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT:
        return "host bits are not the default"
    if not reg.flags & PDM_DEVREG_FLAGS_GUEST_BITS_32_64:
        return "no guest bits"
    if not reg.flags & PDM_DEVREG_FLAGS_NEW_STYLE:
        return "the NEW_STYLE flag is required"
    if not reg.device_class:
        return "no device class"
    if reg.max_instances < 1:
        return "max_instances must be at least 1"
    if reg.ring3 is None:
        return "no constructor (ring-3 half)"
    if not (isinstance(reg.shared_state, type) and issubclass(reg.shared_state, ctypes.Structure)):
        return "the shared state must be a ctypes.Structure"
    return None


def builtin_registry() -> DeviceRegistry:
    registry = DeviceRegistry()
    for module in DEVICE_MODULES:
        registry.register(importlib.import_module(module).REGISTRATION, module)
    return registry


def default_order(device_class: int) -> int:
    """pdmR3DevInit's default priority: the lowest set bit of the class."""
    return device_class & -device_class


@dataclass
class DeviceInstance:
    """One configured instance, from planning through construction."""

    index: int  # position in construction order; owner id in the registration table
    reg: DeviceRegistration
    module: str
    number: int
    order: int
    trusted: bool
    r0_enabled: bool
    config: dict[str, Any]
    luns: dict[int, tuple[str, dict[str, Any]]]
    lock: Any  # a multiprocessing RLock, handed to the workers at spawn
    state_offset: int = 0
    state: Any = None
    ring3: Any = None
    drivers: dict[int, CharDriver] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.reg.name}#{self.number}"


class BadConfigKey(ConfigError):
    """A config key that is unknown or has a bad value; ``key`` says which."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _validated(
    keys: tuple[ConfigKey, ...], given: Mapping[str, Any], instance: int, folder: Path
) -> dict[str, Any]:
    """Defaults filled in, every given key checked, relative paths made absolute; raises BadConfigKey."""
    known = {key.name: key for key in keys}
    for name, value in given.items():
        if name not in known:
            raise BadConfigKey(name, f"unknown key {name!r} (accepted: {', '.join(known) or 'none'})")
        try:
            known[name].check(value)
        except ConfigError as exc:
            raise BadConfigKey(name, str(exc)) from None
    values = {}
    for key in keys:
        try:
            value = given[key.name] if key.name in given else key.default_for(instance)
        except ConfigError as exc:
            raise BadConfigKey(key.name, str(exc)) from None
        if key.is_path and value:
            value = str(folder / value)  # an absolute value stays as it is
        values[key.name] = value
    return values


def plan_instances(config: VmConfig, registry: DeviceRegistry) -> list[DeviceInstance]:
    """Check the configured devices and order them for construction; raises ConfigFileError."""
    context = multiprocessing.get_context("spawn")
    planned: list[DeviceInstance] = []
    for device in config.devices:
        found = registry.get(device.name)
        if found is None:
            raise config.error(
                ("Devices", device.name),
                f"{status_name(VERR_PDM_DEVICE_NOT_FOUND)}: no device {device.name!r} "
                f"(known: {', '.join(registry.names())})",
            )
        reg, module = found
        if len(device.instances) > reg.max_instances:
            raise config.error(
                ("Devices", device.name),
                f"{status_name(VERR_PDM_TOO_MANY_DEVICE_INSTANCES)}: {len(device.instances)} instances of "
                f"{device.name!r}, at most {reg.max_instances}",
            )
        order = device.priority if device.priority is not None else default_order(reg.device_class)
        for inst in device.instances:
            keys = ("Devices", device.name, str(inst.number))
            try:
                values = _validated(reg.config_keys, inst.config, inst.number, config.folder)
            except BadConfigKey as exc:
                raise config.error((*keys, "Config", exc.key), f"{reg.name}#{inst.number}: {exc}") from None
            has_r0 = bool(reg.flags & PDM_DEVREG_FLAGS_R0)
            if inst.r0_enabled and not has_r0:
                raise config.error((*keys, "R0Enabled"), f"{reg.name} has no ring-0 half")
            r0_enabled = has_r0 and (
                bool(reg.flags & PDM_DEVREG_FLAGS_REQUIRE_R0)
                or (inst.r0_enabled if inst.r0_enabled is not None else not reg.flags & PDM_DEVREG_FLAGS_OPT_IN_R0)
            )
            luns: dict[int, tuple[str, dict[str, Any]]] = {}
            for lun, lun_config in inst.luns.items():
                lun_keys = (*keys, f"LUN#{lun}")
                driver = DRIVERS.get(lun_config.driver)
                if driver is None:
                    raise config.error(
                        (*lun_keys, "Driver"),
                        f"unknown driver {lun_config.driver!r} (known: {', '.join(DRIVERS)})",
                    )
                try:
                    luns[lun] = (driver.name, _validated(driver.config_keys, lun_config.config, lun, config.folder))
                except BadConfigKey as exc:
                    raise config.error((*lun_keys, "Config", exc.key), f"driver {driver.name}: {exc}") from None
            planned.append(
                DeviceInstance(
                    index=0, reg=reg, module=module, number=inst.number, order=order, trusted=inst.trusted,
                    r0_enabled=r0_enabled, config=values, luns=luns, lock=context.RLock(),
                )
            )
    planned.sort(key=lambda instance: instance.order)  # stable: instance numbers stay ascending
    offset = 0
    for index, instance in enumerate(planned):
        instance.index = index
        instance.state_offset = offset
        size = ctypes.sizeof(instance.reg.shared_state)
        offset += (size + STATE_ALIGNMENT - 1) // STATE_ALIGNMENT * STATE_ALIGNMENT
    return planned


def state_bytes(instances: list[DeviceInstance]) -> int:
    """The size of the device-state segment the planned instances need."""
    if not instances:
        return STATE_ALIGNMENT
    last = instances[-1]
    return last.state_offset + max(ctypes.sizeof(last.reg.shared_state), 1)


def _callback_bits(
    in_: PortIn | None, out: PortOut | None, in_string: PortInString | None, out_string: PortOutString | None
) -> int:
    return (
        (CB_IN if in_ else 0)
        | (CB_OUT if out else 0)
        | (CB_IN_STRING if in_string else 0)
        | (CB_OUT_STRING if out_string else 0)
    )


class VmServices:
    """What the device helpers need from the VM: the clock and where exit statuses go."""

    def __init__(self, clock_base_ns: int) -> None:
        self.clock_base_ns = clock_base_ns
        self.exit_status: int | None = None

    def virtual_time_ns(self) -> int:
        return time.monotonic_ns() - self.clock_base_ns


class Ring3Helpers:
    """PDMDEVHLPR3 for one device instance."""

    def __init__(
        self, instance: DeviceInstance, iom: IomManager, services: VmServices, config: VmConfig
    ) -> None:
        self._instance = instance
        self._iom = iom
        self._services = services
        self._config = config

    @property
    def instance(self) -> int:
        return self._instance.number

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
        return self._iom.create(
            self._instance.index, self._instance.name, count, description, flags=flags,
            in_=in_, out=out, in_string=in_string, out_string=out_string, posted=posted,
        )

    def ioport_map(self, handle: int, port: int) -> None:
        self._iom.map(self._instance.index, handle, port)

    def ioport_unmap(self, handle: int) -> None:
        self._iom.unmap(self._instance.index, handle)

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
    ) -> int:
        handle = self.ioport_create(
            count, description=description, out=out, in_=in_, out_string=out_string, in_string=in_string, flags=flags,
            posted=posted,
        )
        self.ioport_map(handle, port)
        return handle

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
        return self._iom.mmio_create(
            self._instance.index, self._instance.name, size, description, flags=flags, read=read, write=write,
            posted=posted,
        )

    def mmio_map(self, handle: int, address: int) -> None:
        self._iom.mmio_map(self._instance.index, handle, address)

    def mmio_unmap(self, handle: int) -> None:
        self._iom.mmio_unmap(self._instance.index, handle)

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
    ) -> int:
        handle = self.mmio_create(size, description=description, read=read, write=write, flags=flags, posted=posted)
        self.mmio_map(handle, address)
        return handle

    def driver_attach(self, lun: int, description: str) -> CharDriver | None:
        """PDMDevHlpDriverAttach: the driver configured on LUN#lun, or None (no unit)."""
        configured = self._instance.luns.get(lun)
        if configured is None:
            return None
        name, values = configured
        try:
            driver = construct_driver(name, values)
        except ConfigError as exc:
            keys = ("Devices", self._instance.reg.name, str(self._instance.number), f"LUN#{lun}", "Config")
            raise self._config.error(keys, f"{self._instance.name} {description}: {exc}") from None
        self._instance.drivers[lun] = driver
        return driver

    def virtual_time_ns(self) -> int:
        return self._services.virtual_time_ns()

    def set_exit_status(self, status: int) -> None:
        self._services.exit_status = status


class Ring0SetupRecorder:
    """PDMDEVHLPR0 as seen while the VM is created: records each region's ring-0 callbacks.

    VirtualBox calls a device's ring-0 constructor during creation, and its
    IOMR0IoPortSetUpContext marks the region as having ring-0 callbacks.  Here the
    ring-0 halves live in the workers, which start later, so ring-3 runs the ring-0
    constructor once with this recorder to fill in those marks; each worker then runs
    it again with the real ring-0 helpers.
    """

    def __init__(self, instance: DeviceInstance, iom: IomManager, services: VmServices) -> None:
        self._instance = instance
        self._iom = iom
        self._services = services

    @property
    def instance(self) -> int:
        return self._instance.number

    def ioport_set_up_context(
        self,
        handle: int,
        *,
        out: PortOut | None = None,
        in_: PortIn | None = None,
        out_string: PortOutString | None = None,
        in_string: PortInString | None = None,
    ) -> None:
        self._iom.set_up_ring0(self._instance.index, handle, _callback_bits(in_, out, in_string, out_string))

    def mmio_set_up_context(self, handle: int, *, read: MmioRead | None = None, write: MmioWrite | None = None) -> None:
        self._iom.mmio_set_up_ring0(self._instance.index, handle, _callback_bits(read, write, None, None))

    def virtual_time_ns(self) -> int:
        return self._services.virtual_time_ns()


def construct_instances(
    instances: list[DeviceInstance],
    states: list[Any],
    iom: IomManager,
    services: VmServices,
    config: VmConfig,
) -> None:
    """Run every constructor in order, then init-complete, then freeze region creation."""
    for instance, state in zip(instances, states, strict=True):
        instance.state = state
        assert instance.reg.ring3 is not None  # registration guarantees a constructor
        try:
            instance.ring3 = instance.reg.ring3(Ring3Helpers(instance, iom, services, config), state, instance.config)
            if instance.r0_enabled and instance.reg.ring0 is not None:
                instance.reg.ring0(Ring0SetupRecorder(instance, iom, services), state, instance.config)
        except (VBoxError, ConfigError) as exc:
            # What a constructor refuses (a port range that collides, say) comes from
            # this instance's configuration: point there.
            keys = ("Devices", instance.reg.name, str(instance.number), "Config")
            raise config.error(keys, f"{instance.name}: {exc}") from None
    for instance in instances:
        init_complete = getattr(instance.ring3, "init_complete", None)
        if init_complete is not None:
            with instance.lock:
                init_complete()
    iom.freeze()
