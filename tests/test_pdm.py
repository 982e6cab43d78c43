"""PDM in ring-3 (slowpath/pdm.py): device registration, instance planning and construction."""

from __future__ import annotations

import ctypes
import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from devices.debugcon import REGISTRATION as DEBUGCON
from devices.isa_debug_exit import REGISTRATION as ISA_DEBUG_EXIT
from devices.serial import REGISTRATION as SERIAL
from devices.testdev import REGISTRATION as TESTDEV
from shared.devapi import (
    PDM_DEVREG_CLASS_ARCH,
    PDM_DEVREG_CLASS_BUS_PCI,
    PDM_DEVREG_CLASS_MISC,
    PDM_DEVREG_CLASS_SERIAL,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_GUEST_BITS_32_64,
    PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_OPT_IN_R0,
    PDM_DEVREG_FLAGS_R0,
    PDM_DEVREG_FLAGS_REQUIRE_R0,
    ConfigKey,
    DeviceRegistration,
)
from shared.iomtable import CB_IN, CB_IN_STRING, CB_OUT, IomTable
from shared.status import (
    VERR_PDM_DEVICE_NAME_CLASH,
    VERR_PDM_INVALID_DEVICE_REGISTRATION,
    VERR_WRONG_ORDER,
    VINF_EM_OFF,
    VINF_SUCCESS,
    VBoxError,
)
from slowpath.config import ConfigFileError, VmConfig, parse_config
from slowpath.drivers import MemoryCharDriver
from slowpath.iom import IomManager
from slowpath.pdm import (
    STATE_ALIGNMENT,
    DeviceInstance,
    DeviceRegistry,
    VmServices,
    builtin_registry,
    construct_instances,
    default_order,
    plan_instances,
    state_bytes,
)

SOURCE = "t.toml"


class FakeState(ctypes.Structure):
    _fields_ = [("io_handle", ctypes.c_uint16), ("payload", ctypes.c_uint8 * 70)]


class QuietRing3:
    """A ring-3 half that does nothing."""

    def __init__(self, hlp: Any, state: Any, config: Mapping[str, Any]) -> None:
        self.config = config


class QuietRing0:
    def __init__(self, hlp: Any, state: Any, config: Mapping[str, Any]) -> None:
        self.config = config


BASE = DeviceRegistration(
    name="fake",
    description="a device for tests",
    device_class=PDM_DEVREG_CLASS_MISC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=4,
    shared_state=FakeState,
    ring3=QuietRing3,
)


def fake(name: str = "fake", **changes: Any) -> DeviceRegistration:
    return dataclasses.replace(BASE, name=name, **changes)


def with_r0(name: str, extra_flags: int = 0, **changes: Any) -> DeviceRegistration:
    return fake(name, flags=BASE.flags | PDM_DEVREG_FLAGS_R0 | extra_flags, ring0=QuietRing0, **changes)


def registry_of(*registrations: DeviceRegistration) -> DeviceRegistry:
    registry = DeviceRegistry()
    for reg in registrations:
        registry.register(reg, f"tests.{reg.name}")
    return registry


def plan(text: str, registry: DeviceRegistry | None = None) -> list[DeviceInstance]:
    return plan_instances(parse_config(text, SOURCE), registry or builtin_registry())


def plan_error(text: str, registry: DeviceRegistry | None = None) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as caught:
        plan(text, registry)
    assert caught.value.source == SOURCE
    return caught.value


def line_of(text: str, fragment: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


# -- registration --------------------------------------------------------------------------


class NotAStructure(ctypes.Union):
    _fields_ = [("value", ctypes.c_uint32)]


INVALID_REGISTRATIONS: dict[str, DeviceRegistration] = {
    "empty-name": fake(""),
    "name-with-space": fake("my device"),
    "name-with-dot": fake("my.device"),
    "name-32-chars": fake("n" * 32),
    "name-not-ascii": fake("gerät"),
    "r0-flag-without-ring0-half": fake(flags=BASE.flags | PDM_DEVREG_FLAGS_R0),
    "ring0-half-without-r0-flag": fake(ring0=QuietRing0),
    "no-new-style-flag": fake(flags=PDM_DEVREG_FLAGS_DEFAULT_BITS),
    "no-host-bits": fake(flags=PDM_DEVREG_FLAGS_GUEST_BITS_32_64 | PDM_DEVREG_FLAGS_NEW_STYLE),
    "no-guest-bits": fake(flags=PDM_DEVREG_FLAGS_HOST_BITS_DEFAULT | PDM_DEVREG_FLAGS_NEW_STYLE),
    "class-0": fake(device_class=0),
    "max-instances-0": fake(max_instances=0),
    "no-constructor": fake(ring3=None),
    "state-is-a-union": fake(shared_state=NotAStructure),
    "state-is-a-scalar": fake(shared_state=ctypes.c_uint32),
    "state-is-not-ctypes": fake(shared_state=dict),
    "state-is-an-instance": fake(shared_state=FakeState()),
}


@pytest.mark.parametrize("case", sorted(INVALID_REGISTRATIONS))
def test_register_rejects_invalid_registration(case: str) -> None:
    registry = DeviceRegistry()
    with pytest.raises(VBoxError) as caught:
        registry.register(INVALID_REGISTRATIONS[case], "tests.fake")
    assert caught.value.rc == VERR_PDM_INVALID_DEVICE_REGISTRATION
    assert "VERR_PDM_INVALID_DEVICE_REGISTRATION" in str(caught.value)
    assert registry.names() == []


@pytest.mark.parametrize("name", ["a", "n" * 31, "isa-debug-exit", "my_dev2"])
def test_register_accepts_valid_names(name: str) -> None:
    registry = registry_of(fake(name))
    assert registry.names() == [name]
    assert registry.get(name) == (fake(name), f"tests.{name}")


def test_register_accepts_a_ring0_half_with_the_r0_flag() -> None:
    assert registry_of(with_r0("fast")).names() == ["fast"]


def test_register_duplicate_name_is_name_clash() -> None:
    registry = registry_of(fake("dup"))
    with pytest.raises(VBoxError) as caught:
        registry.register(fake("dup", max_instances=1), "tests.other")
    assert caught.value.rc == VERR_PDM_DEVICE_NAME_CLASH
    assert registry.get("dup") == (fake("dup"), "tests.dup")


def test_builtin_registry_holds_the_built_in_devices() -> None:
    registry = builtin_registry()
    assert registry.names() == [
        "debugcon", "edu", "fw_cfg", "hpet", "i8042", "i8254", "i8259", "ioapic", "isa-debug-exit", "mc146818",
        "piix", "post", "serial", "testdev", "vga",
    ]
    assert registry.get("serial") == (SERIAL, "devices.serial")
    assert registry.get("nosuch") is None


# -- planning: order ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_class", "order"),
    [
        (PDM_DEVREG_CLASS_ARCH, 0x1),
        (PDM_DEVREG_CLASS_BUS_PCI, 0x4),
        (PDM_DEVREG_CLASS_SERIAL, 0x10000),
        (PDM_DEVREG_CLASS_SERIAL | PDM_DEVREG_CLASS_MISC, 0x10000),
        (PDM_DEVREG_CLASS_BUS_PCI | PDM_DEVREG_CLASS_SERIAL, 0x4),
        (PDM_DEVREG_CLASS_MISC, 0x80000000),
    ],
)
def test_default_order_is_the_lowest_class_bit(device_class: int, order: int) -> None:
    assert default_order(device_class) == order


ORDER_REGISTRY = (
    fake("arch", device_class=PDM_DEVREG_CLASS_ARCH),
    fake("pci", device_class=PDM_DEVREG_CLASS_BUS_PCI),
    fake("ser", device_class=PDM_DEVREG_CLASS_SERIAL | PDM_DEVREG_CLASS_MISC),
    fake("misc", device_class=PDM_DEVREG_CLASS_MISC),
)

ORDER_CONFIG = """\
[Devices.misc.0]
[Devices.ser.1]
[Devices.ser.0]
[Devices.arch.0]
[Devices.pci.0]
"""


def names(instances: list[DeviceInstance]) -> list[str]:
    return [instance.name for instance in instances]


def test_plan_orders_by_default_priority_then_instance_number() -> None:
    planned = plan(ORDER_CONFIG, registry_of(*ORDER_REGISTRY))
    assert names(planned) == ["arch#0", "pci#0", "ser#0", "ser#1", "misc#0"]
    assert [instance.index for instance in planned] == [0, 1, 2, 3, 4]
    assert [instance.order for instance in planned] == [0x1, 0x4, 0x10000, 0x10000, 0x80000000]


def test_plan_explicit_priority_wins_over_the_class() -> None:
    text = "[Devices.misc]\nPriority = 2\n" + ORDER_CONFIG + "[Devices.arch]\nPriority = 0x20000\n"
    planned = plan(text, registry_of(*ORDER_REGISTRY))
    assert names(planned) == ["misc#0", "pci#0", "ser#0", "ser#1", "arch#0"]


def test_plan_orders_instance_numbers_numerically() -> None:
    text = "[Devices.ser.3]\n[Devices.ser.10]\n[Devices.ser.0]\n[Devices.ser.2]\n"
    planned = plan(text, registry_of(fake("ser", max_instances=16)))
    assert [instance.number for instance in planned] == [0, 2, 3, 10]


def test_plan_places_shared_states_64_byte_aligned_without_overlap() -> None:
    planned = plan(ORDER_CONFIG, registry_of(*ORDER_REGISTRY))
    size = ctypes.sizeof(FakeState)
    assert size > STATE_ALIGNMENT
    offsets = [instance.state_offset for instance in planned]
    assert offsets == [0, 128, 256, 384, 512]
    assert state_bytes(planned) == 512 + size
    assert state_bytes([]) == STATE_ALIGNMENT


def test_plan_gives_each_instance_its_own_lock() -> None:
    planned = plan(ORDER_CONFIG, registry_of(*ORDER_REGISTRY))
    assert len({id(instance.lock) for instance in planned}) == len(planned)


# -- planning: errors --------------------------------------------------------------------


def test_unknown_device_is_verr_pdm_device_not_found_at_its_table() -> None:
    text = 'Name = "x"\n\n[Devices.serial.0]\n[Devices.nosuch.0]\n[Devices.nosuch.0.Config]\nIOBase = 1\n'
    error = plan_error(text)
    assert "VERR_PDM_DEVICE_NOT_FOUND" in str(error)
    assert "'nosuch'" in str(error)
    assert error.line == 4


def test_too_many_instances_is_verr_pdm_too_many_device_instances() -> None:
    text = 'Name = "x"\n\n[Devices.testdev.0]\n[Devices.testdev.1]\n'
    error = plan_error(text)
    assert "VERR_PDM_TOO_MANY_DEVICE_INSTANCES" in str(error)
    assert "at most 1" in str(error)
    assert error.line == 3


def test_instance_number_past_the_device_defaults_is_a_config_error() -> None:
    text = 'Name = "x"\n[Devices.serial.4]\n'
    error = plan_error(text)
    assert error.line == 2


def test_as_many_instances_as_allowed_is_fine() -> None:
    text = "".join(f"[Devices.serial.{n}]\n" for n in range(4))
    assert names(plan(text)) == ["serial#0", "serial#1", "serial#2", "serial#3"]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("IOBsae = 0x540", "unknown key 'IOBsae'"),
        ("IOBase = 0xfff9", "above the maximum"),
        ('IOBase = "0x540"', "must be an integer"),
        ("IOBase = true", "must be an integer"),
    ],
)
def test_bad_device_config_key_is_an_error_at_its_line(entry: str, words: str) -> None:
    text = f'Name = "x"\n[Devices.testdev.0]\n[Devices.testdev.0.Config]\n# the base\n{entry}\n'
    error = plan_error(text)
    assert error.line == 5
    assert str(error).startswith(f"{SOURCE}:5: testdev#0: ")
    assert words in str(error)


def test_bad_choice_is_an_error_at_its_line() -> None:
    text = '[Devices.serial.0]\n[Devices.serial.0.Config]\nIOBase = 0x3f8\nUartType = "8250"\n'
    error = plan_error(text)
    assert error.line == 4
    assert "not one of 16450, 16550A" in str(error)


def test_config_defaults_are_filled_in_per_instance() -> None:
    planned = plan("[Devices.serial.1]\n[Devices.debugcon.0]\n[Devices.debugcon.0.Config]\nReadback = 0x42\n")
    by_name = {instance.name: instance for instance in planned}
    assert by_name["serial#1"].config == {"IOBase": 0x2F8, "IRQ": 3, "UartType": "16550A", "YieldOnLSRRead": False}
    assert by_name["debugcon#0"].config == {"IOBase": 0xE9, "Readback": 0x42}


def test_trusted_is_carried_into_the_plan() -> None:
    planned = plan("[Devices.serial.0]\nTrusted = true\n[Devices.serial.1]\n")
    assert [instance.trusted for instance in planned] == [True, False]


# -- planning: R0Enabled -------------------------------------------------------------------


def test_r0enabled_defaults_on_for_devices_with_a_ring0_half() -> None:
    planned = plan("[Devices.serial.0]\n[Devices.debugcon.0]\n[Devices.testdev.0]\n[Devices.isa-debug-exit.0]\n")
    assert {instance.name: instance.r0_enabled for instance in planned} == {
        "serial#0": True,
        "debugcon#0": True,
        "testdev#0": True,
        "isa-debug-exit#0": False,
    }


def test_r0enabled_false_turns_ring0_off() -> None:
    planned = plan("[Devices.serial.0]\nR0Enabled = false\n[Devices.serial.1]\nR0Enabled = true\n")
    assert [instance.r0_enabled for instance in planned] == [False, True]


def test_r0enabled_on_a_device_without_ring0_half_is_an_error_at_its_line() -> None:
    text = '[Devices.serial.0]\n[Devices.isa-debug-exit.0]\nTrusted = true\nR0Enabled = true\n'
    error = plan_error(text)
    assert error.line == 4
    assert "isa-debug-exit has no ring-0 half" in str(error)


def test_r0enabled_false_on_a_device_without_ring0_half_is_fine() -> None:
    (instance,) = plan("[Devices.isa-debug-exit.0]\nR0Enabled = false\n")
    assert instance.r0_enabled is False


def test_opt_in_r0_device_defaults_off_until_configured() -> None:
    registry = registry_of(with_r0("optin", PDM_DEVREG_FLAGS_OPT_IN_R0))
    planned = plan("[Devices.optin.0]\n[Devices.optin.1]\nR0Enabled = true\n", registry)
    assert [instance.r0_enabled for instance in planned] == [False, True]


def test_require_r0_device_is_on_whatever_the_config() -> None:
    registry = registry_of(with_r0("forced", PDM_DEVREG_FLAGS_REQUIRE_R0))
    planned = plan("[Devices.forced.0]\nR0Enabled = false\n[Devices.forced.1]\n", registry)
    assert [instance.r0_enabled for instance in planned] == [True, True]


# -- planning: LUNs --------------------------------------------------------------------------


def test_unknown_lun_driver_is_an_error_at_the_driver_line() -> None:
    text = '[Devices.serial.0]\n[Devices.serial.0."LUN#0"]\n\nDriver = "tcp"\n'
    error = plan_error(text)
    assert error.line == 4
    assert "unknown driver 'tcp'" in str(error)
    assert "stdout, file, memory" in str(error)


def test_bad_lun_driver_key_is_an_error_at_its_line() -> None:
    text = '[Devices.serial.0."LUN#0"]\nDriver = "memory"\n[Devices.serial.0."LUN#0".Config]\nInputs = "x"\n'
    error = plan_error(text)
    assert error.line == 4
    assert "driver memory" in str(error) and "'Inputs'" in str(error)


def test_lun_driver_config_gets_its_defaults() -> None:
    (instance,) = plan('[Devices.serial.0."LUN#0"]\nDriver = "memory"\n[Devices.serial.0."LUN#2"]\nDriver = "file"\n')
    assert instance.luns == {0: ("memory", {"Input": ""}), 2: ("file", {"Path": "", "Append": False})}


# -- construction ------------------------------------------------------------------------

BUILTIN_CONFIG = """\
Name = "unit"
[Devices.testdev.0]
[Devices.isa-debug-exit.0]
[Devices.debugcon.0]
R0Enabled = false
[Devices.debugcon.0."LUN#0"]
Driver = "memory"
[Devices.serial.1]
[Devices.serial.0]
[Devices.serial.0."LUN#0"]
Driver = "memory"
[Devices.serial.0."LUN#0".Config]
Input = "hi"
"""


def construct(
    text: str, registry: DeviceRegistry | None = None
) -> tuple[list[DeviceInstance], IomManager, VmServices, VmConfig]:
    config = parse_config(text, SOURCE)
    instances = plan_instances(config, registry or builtin_registry())
    iom = IomManager(IomTable())
    services = VmServices(time.monotonic_ns())
    construct_instances(instances, [instance.reg.shared_state() for instance in instances], iom, services, config)
    return instances, iom, services, config


def test_construct_builtin_devices_creates_and_maps_their_regions() -> None:
    instances, iom, _, _ = construct(BUILTIN_CONFIG)
    assert names(instances) == ["serial#0", "serial#1", "testdev#0", "isa-debug-exit#0", "debugcon#0"]
    table = iom.table
    rows = [
        (table.entries[h].owner, table.entries[h].port, table.entries[h].count, table.entries[h].description)
        for h in range(table.registrations)
    ]
    assert rows == [
        (0, 0x3F8, 8, b"SERIAL"),
        (1, 0x2F8, 8, b"SERIAL"),
        (2, 0x540, 8, b"TESTDEV"),
        (2, 0x548, 1, b"TESTDEV R3"),  # testdev's second region: no ring-0 half
        (3, 0xF4, 4, b"ISA-DEBUG-EXIT"),
        (4, 0xE9, 1, b"DEBUGCON"),
    ]
    assert all(table.entries[h].mapped for h in range(table.registrations))
    assert [instance.state.io_handle for instance in instances] == [0, 1, 2, 4, 5]


def test_construct_freezes_region_creation_afterwards() -> None:
    _, iom, _, _ = construct(BUILTIN_CONFIG)
    assert iom.table.frozen == 1
    with pytest.raises(VBoxError) as caught:
        iom.create(0, "serial#0", 1, "LATE", out=lambda offset, value, size: VINF_SUCCESS)
    assert caught.value.rc == VERR_WRONG_ORDER
    assert iom.table.generation % 2 == 0


def test_construct_records_ring0_marks_for_r0_enabled_devices_only() -> None:
    instances, iom, _, _ = construct(BUILTIN_CONFIG)
    marks = {instance.name: iom.table.entries[instance.state.io_handle].ring0_callbacks for instance in instances}
    assert marks == {
        "serial#0": CB_IN | CB_OUT,
        "serial#1": CB_IN | CB_OUT,
        "testdev#0": CB_IN | CB_OUT | CB_IN_STRING,
        "isa-debug-exit#0": 0,
        "debugcon#0": 0,  # it has a ring-0 half, but R0Enabled = false
    }
    info = iom.info().splitlines()
    assert info[2:] == [
        "  0 R3+0   0008  03f8-03ff        SERIAL",
        "  1 R3+0   0008  02f8-02ff        SERIAL",
        "  2 R3+0   0008  0540-0547        TESTDEV",
        "  3 R3     0001  0548-0548        TESTDEV R3",
        "  4 R3     0004  00f4-00f7        ISA-DEBUG-EXIT",
        "  5 R3     0001  00e9-00e9        DEBUGCON",
    ]


def test_construct_attaches_configured_lun_drivers_only() -> None:
    instances, _, _, _ = construct(BUILTIN_CONFIG)
    by_name = {instance.name: instance for instance in instances}
    serial0 = by_name["serial#0"].drivers[0]
    assert isinstance(serial0, MemoryCharDriver)
    assert by_name["serial#1"].drivers == {}
    assert isinstance(by_name["debugcon#0"].drivers[0], MemoryCharDriver)
    assert by_name["debugcon#0"].ring3.driver is by_name["debugcon#0"].drivers[0]


def test_construct_hands_devices_the_vm_services() -> None:
    instances, _, services, _ = construct(BUILTIN_CONFIG)
    exit_device = next(instance for instance in instances if instance.reg is ISA_DEBUG_EXIT)
    assert services.exit_status is None
    assert exit_device.ring3.io_out(0, 3, 1) == VINF_EM_OFF
    assert services.exit_status == 7


def test_driver_config_error_at_attach_is_located_at_the_lun() -> None:
    text = '[Devices.debugcon.0]\n[Devices.debugcon.0."LUN#0"]\nDriver = "file"\n'
    with pytest.raises(ConfigFileError) as caught:
        construct(text)
    assert caught.value.line == 2
    assert "debugcon#0 debug console: Path is required" in str(caught.value)


class RecordingState(ctypes.Structure):
    _fields_ = [("io_handle", ctypes.c_uint16)]


def recording_registry(
    events: list[str], locks: dict[str, Any], table: list[IomTable]
) -> DeviceRegistry:
    """Devices that log construction, ring-0 set-up and init-complete, with what they saw."""

    def lock_free_elsewhere(lock: Any) -> bool:
        result: list[bool] = []

        def probe() -> None:
            got = lock.acquire(False)
            if got:
                lock.release()
            result.append(got)

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join(10)
        return result[0]

    def make(name: str, device_class: int, port: int, r0: bool) -> DeviceRegistration:
        class Ring3:
            def __init__(self, hlp: Any, state: Any, config: Mapping[str, Any]) -> None:
                self.label = f"{name}#{hlp.instance}"
                events.append(f"ring3 {self.label}")
                state.io_handle = hlp.ioport_create_and_map(
                    port + 8 * hlp.instance, 2, description=name.upper(), in_=self.io_in
                )

            def io_in(self, offset: int, size: int) -> tuple[int, int]:
                return VINF_SUCCESS, 0

            def init_complete(self) -> None:
                held = not lock_free_elsewhere(locks[self.label])
                events.append(f"init {self.label} held={held} frozen={table[0].frozen}")

        class Ring0:
            def __init__(self, hlp: Any, state: Any, config: Mapping[str, Any]) -> None:
                events.append(f"ring0 {name}#{hlp.instance}")
                hlp.ioport_set_up_context(state.io_handle, out=lambda offset, value, size: VINF_SUCCESS)

        flags = PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_NEW_STYLE | (PDM_DEVREG_FLAGS_R0 if r0 else 0)
        return DeviceRegistration(
            name=name,
            description=name,
            device_class=device_class,
            flags=flags,
            max_instances=2,
            shared_state=RecordingState,
            ring3=Ring3,
            ring0=Ring0 if r0 else None,
        )

    return registry_of(
        make("late", PDM_DEVREG_CLASS_MISC, 0x100, r0=True),
        make("early", PDM_DEVREG_CLASS_ARCH, 0x200, r0=False),
        make("mid", PDM_DEVREG_CLASS_SERIAL, 0x300, r0=True),
    )


def test_construct_runs_constructors_in_order_then_init_complete_under_the_lock_before_freeze() -> None:
    events: list[str] = []
    locks: dict[str, Any] = {}
    tables: list[IomTable] = [IomTable()]
    registry = recording_registry(events, locks, tables)
    text = "[Devices.late.0]\n[Devices.mid.1]\n[Devices.mid.0]\nR0Enabled = false\n[Devices.early.0]\n"
    config = parse_config(text, SOURCE)
    instances = plan_instances(config, registry)
    locks.update({instance.name: instance.lock for instance in instances})
    iom = IomManager(tables[0])
    states = [RecordingState() for _ in instances]
    construct_instances(instances, states, iom, VmServices(time.monotonic_ns()), config)
    assert events == [
        "ring3 early#0",
        "ring3 mid#0",
        "ring3 mid#1",
        "ring0 mid#1",
        "ring3 late#0",
        "ring0 late#0",
        "init early#0 held=True frozen=0",
        "init mid#0 held=True frozen=0",
        "init mid#1 held=True frozen=0",
        "init late#0 held=True frozen=0",
    ]
    assert tables[0].frozen == 1
    # Ring-0 set-up marks the region of the instance whose constructor ran, with its callbacks.
    assert [tables[0].entries[state.io_handle].ring0_callbacks for state in states] == [0, 0, CB_OUT, CB_OUT]
    assert [instance.state for instance in instances] == states
    # Regions belong to the instance that created them (its construction index).
    assert [tables[0].entries[state.io_handle].owner for state in states] == [0, 1, 2, 3]
    assert [tables[0].entries[state.io_handle].port for state in states] == [0x200, 0x300, 0x308, 0x100]


def test_builtin_registrations_are_the_device_modules_own() -> None:
    registry = builtin_registry()
    for reg in (SERIAL, DEBUGCON, ISA_DEBUG_EXIT, TESTDEV):
        found = registry.get(reg.name)
        assert found is not None and found[0] is reg


def test_config_key_with_instance_dependent_default() -> None:
    reg = fake("multi", config_keys=(ConfigKey("Base", int, lambda n: 0x100 * (n + 1), "base"),))
    planned = plan("[Devices.multi.0]\n[Devices.multi.2]\n", registry_of(reg))
    assert [instance.config for instance in planned] == [{"Base": 0x100}, {"Base": 0x300}]
