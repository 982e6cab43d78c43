"""piix: QEMU pc's PCI functions, their BAR regions and the ACPI PM block, through fake helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devices import piix
from devices.pci import BAR0, COMMAND, CONFIG_ADDRESS_ENABLE, INTERRUPT_LINE, ROM_ADDRESS, STATUS
from devices.piix import (
    PAM0,
    PIRQRC,
    PM1_CNT,
    PM_TIMER_HZ,
    PMBA,
    PMREGMISC,
    SLP_EN,
    SMRAM,
    SMRAM_D_CLS,
    SMRAM_D_LCK,
    SMRAM_D_OPEN,
    SMRAM_G_SMRAME,
    TMR_EN,
    TMR_STS,
    VGA_EDID,
    PiixRing0,
    PiixRing3,
    PiixState,
)
from shared.devapi import (
    PDM_DEVREG_CLASS_BUS_PCI,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
)
from shared.status import (
    VERR_IOM_IOPORT_RANGE_CONFLICT,
    VERR_IOM_IOPORT_UNUSED,
    VINF_EM_OFF,
    VINF_EM_RESET,
    VINF_EM_SUSPEND,
    VINF_IOM_R3_IOPORT_READ,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_IOM_R3_MMIO_READ,
    VINF_IOM_R3_MMIO_WRITE,
    VINF_SUCCESS,
    VBoxError,
)
from shared.trace import IN, MMIO_READ, MMIO_WRITE, OUT, TraceOp, read_trace

SAMPLE_TRACE = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
NS_PER_TICK = 1e9 / PM_TIMER_HZ


@dataclass
class Region:
    count: int
    description: str
    callbacks: dict[str, Any]
    mapped_at: int | None = None
    ring0: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeHelpers:
    """PDMDEVHLPR3 and R0 in one: regions as IOM keeps them, overlaps refused, a settable clock."""

    instance: int = 0
    now_ns: int = 0
    ports: list[Region] = field(default_factory=list)
    mmio: list[Region] = field(default_factory=list)
    maps: list[tuple[str, str, int | None]] = field(default_factory=list)
    taken_ports: set[int] = field(default_factory=set)

    def virtual_time_ns(self) -> int:
        return self.now_ns

    def ioport_create(self, count: int, *, description: str, **callbacks: Any) -> int:
        self.ports.append(Region(count, description, callbacks))
        return len(self.ports) - 1

    def ioport_map(self, handle: int, port: int) -> None:
        region = self.ports[handle]
        assert region.mapped_at is None, "mapped twice"
        if any(port <= taken < port + region.count for taken in self.taken_ports):
            raise VBoxError(VERR_IOM_IOPORT_RANGE_CONFLICT, f"{port:#x} overlaps")
        region.mapped_at = port
        self.maps.append(("map", region.description, port))

    def ioport_unmap(self, handle: int) -> None:
        region = self.ports[handle]
        assert region.mapped_at is not None, "not mapped"
        region.mapped_at = None
        self.maps.append(("unmap", region.description, None))

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        handle = self.ioport_create(count, description=description, **callbacks)
        self.ioport_map(handle, port)
        return handle

    def mmio_create(self, size: int, *, description: str, flags: int = 0, **callbacks: Any) -> int:
        self.mmio.append(Region(size, description, callbacks))
        return len(self.mmio) - 1

    def mmio_map(self, handle: int, address: int) -> None:
        region = self.mmio[handle]
        assert region.mapped_at is None, "mapped twice"
        region.mapped_at = address
        self.maps.append(("map", region.description, address))

    def mmio_unmap(self, handle: int) -> None:
        region = self.mmio[handle]
        assert region.mapped_at is not None, "not mapped"
        region.mapped_at = None
        self.maps.append(("unmap", region.description, None))

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.ports[handle].ring0 = callbacks

    def mmio_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.mmio[handle].ring0 = callbacks


@dataclass
class Machine:
    """The device with both halves, and IOM's dispatch: ring-0 first, ring-3 when it defers."""

    state: PiixState
    ring3: PiixRing3
    ring0: PiixRing0
    hlp: FakeHelpers
    ring3_accesses: int = 0

    def _port_region(self, port: int) -> tuple[Region, int] | None:
        for region in self.hlp.ports:
            if region.mapped_at is not None and region.mapped_at <= port < region.mapped_at + region.count:
                return region, port - region.mapped_at
        return None

    def _mmio_region(self, address: int) -> tuple[Region, int] | None:
        for region in self.hlp.mmio:
            if region.mapped_at is not None and region.mapped_at <= address < region.mapped_at + region.count:
                return region, address - region.mapped_at
        return None

    def inp(self, port: int, size: int) -> int:
        found = self._port_region(port)
        if found is None:
            return ONES[size]
        region, offset = found
        rc, value = region.ring0["in_"](offset, size)
        if rc == VINF_IOM_R3_IOPORT_READ:
            self.ring3_accesses += 1
            rc, value = region.callbacks["in_"](offset, size)
        if rc == VERR_IOM_IOPORT_UNUSED:
            return ONES[size]
        assert rc == VINF_SUCCESS
        return int(value) & ONES[size]

    def out(self, port: int, value: int, size: int) -> int:
        found = self._port_region(port)
        if found is None:
            return VINF_SUCCESS
        region, offset = found
        rc = region.ring0["out"](offset, value, size)
        if rc == VINF_IOM_R3_IOPORT_WRITE:
            self.ring3_accesses += 1
            rc = region.callbacks["out"](offset, value, size)
        return int(rc)

    def read(self, address: int, size: int) -> int:
        found = self._mmio_region(address)
        if found is None:
            return ONES[size]
        region, offset = found
        rc, value = region.ring0["read"](offset, size)
        assert rc not in (VINF_IOM_R3_MMIO_READ,)
        assert rc == VINF_SUCCESS
        return int(value)

    def write(self, address: int, value: int, size: int) -> None:
        found = self._mmio_region(address)
        if found is not None:
            region, offset = found
            assert region.ring0["write"](offset, value, size) not in (VINF_IOM_R3_MMIO_WRITE,)

    # -- configuration space through 0xCF8/0xCFC ------------------------------------------------
    def select(self, device: int, function: int, register: int) -> None:
        self.out(0xCF8, CONFIG_ADDRESS_ENABLE | device << 11 | function << 8 | register & 0xFC, 4)

    def config_read(self, device: int, function: int, register: int, size: int) -> int:
        self.select(device, function, register)
        return self.inp(0xCFC + (register & 3), size)

    def config_write(self, device: int, function: int, register: int, value: int, size: int) -> int:
        self.select(device, function, register)
        return self.out(0xCFC + (register & 3), value, size)


def make_machine() -> Machine:
    state, hlp = PiixState(), FakeHelpers()
    ring3 = PiixRing3(hlp, state, {})
    ring0 = PiixRing0(hlp, state, {})
    return Machine(state, ring3, ring0, hlp)


def mapped(machine: Machine, description_start: str) -> int | None:
    (region,) = [r for r in machine.hlp.ports + machine.hlp.mmio if r.description.startswith(description_start)]
    return region.mapped_at


def enable_pm_block(machine: Machine, base: int = 0x600) -> None:
    assert machine.config_write(1, 3, PMBA, base | 1, 4) == VINF_SUCCESS
    assert machine.config_write(1, 3, PMREGMISC, 1, 1) == VINF_SUCCESS


# -- registration and regions ---------------------------------------------------------------------


def test_registration_is_a_pci_bus_device_with_ring0() -> None:
    reg = piix.REGISTRATION
    assert reg.name == "piix"
    assert reg.device_class == PDM_DEVREG_CLASS_BUS_PCI
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert (reg.shared_state, reg.ring3, reg.ring0, reg.max_instances) == (PiixState, PiixRing3, PiixRing0, 1)


def test_constructor_maps_only_the_config_ports_and_creates_the_rest() -> None:
    machine = make_machine()
    sizes = {r.description: (r.count, r.mapped_at) for r in machine.hlp.ports + machine.hlp.mmio}
    assert sizes == {
        "PCI config address/data, PIIX3 reset control": (8, 0xCF8),
        "PIIX4 ACPI PM I/O": (64, None),
        "PIIX3 IDE bus master": (16, None),
        "VGA BAR0 framebuffer": (16 << 20, None),
        "VGA BAR2 MMIO (EDID)": (0x1000, None),
    }


def test_ring0_sets_up_every_region() -> None:
    machine = make_machine()
    assert all(region.ring0 for region in machine.hlp.ports + machine.hlp.mmio)


# -- the functions, as QEMU's pc reports them in the sample trace ---------------------------------


@pytest.mark.parametrize(
    ("device", "function", "ids", "class_revision", "header_type"),
    [
        (0, 0, 0x12378086, 0x06000002, 0x00),
        (1, 0, 0x70008086, 0x06010000, 0x80),
        (1, 1, 0x70108086, 0x01018000, 0x00),
        (1, 3, 0x71138086, 0x06800003, 0x00),
        (2, 0, 0x11111234, 0x03000002, 0x00),
    ],
)
def test_function_identification(device: int, function: int, ids: int, class_revision: int, header_type: int) -> None:
    machine = make_machine()
    assert machine.config_read(device, function, 0x00, 4) == ids
    assert machine.config_read(device, function, 0x08, 4) == class_revision
    assert machine.config_read(device, function, 0x0E, 1) == header_type
    assert machine.config_read(device, function, 0x2C, 4) == 0x11001AF4


@pytest.mark.parametrize(("device", "function"), [(1, 2), (1, 4), (1, 7), (3, 0), (31, 0)])
def test_absent_functions_read_all_ones(device: int, function: int) -> None:
    assert make_machine().config_read(device, function, 0x00, 2) == 0xFFFF


@pytest.mark.parametrize(
    ("device", "function", "pin"), [(0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 3, 1), (2, 0, 0)]
)
def test_only_the_pm_function_has_an_interrupt_pin(device: int, function: int, pin: int) -> None:
    assert make_machine().config_read(device, function, 0x3D, 1) == pin


@pytest.mark.parametrize(
    ("device", "function", "register", "initial", "sized"),
    [
        (1, 1, BAR0 + 16, 0x00000001, 0xFFFFFFF1),  # IDE bus master: 16 I/O ports
        (1, 1, BAR0, 0x00000000, 0x00000000),  # legacy-mode IDE has no BAR0
        (2, 0, BAR0, 0x00000008, 0xFF000008),  # VGA framebuffer: 16 MiB, prefetchable
        (2, 0, BAR0 + 8, 0x00000000, 0xFFFFF000),  # VGA MMIO: 4 KiB
        (2, 0, ROM_ADDRESS, 0x00000000, 0xFFFF0000),  # VGA ROM: 64 KiB (written without bit 0)
        (0, 0, ROM_ADDRESS, 0x00000000, 0x00000000),  # no ROM
    ],
)
def test_bar_sizing(device: int, function: int, register: int, initial: int, sized: int) -> None:
    machine = make_machine()
    assert machine.config_read(device, function, register, 4) == initial
    machine.config_write(device, function, register, 0xFFFFFFFE if register == ROM_ADDRESS else 0xFFFFFFFF, 4)
    assert machine.config_read(device, function, register, 4) == sized


def test_status_registers_reset_values() -> None:
    machine = make_machine()
    statuses = [machine.config_read(d, f, STATUS, 2) for d, f in ((0, 0), (1, 0), (1, 1), (1, 3), (2, 0))]
    assert statuses == [0x0000, 0x0200, 0x0280, 0x0280, 0x0000]


def test_command_register_reads_back_io_memory_and_serr() -> None:
    machine = make_machine()
    machine.config_write(2, 0, COMMAND, 0x0103, 2)
    assert machine.config_read(2, 0, COMMAND, 2) == 0x0103


def test_i440fx_pam_registers_read_back() -> None:
    machine = make_machine()
    assert machine.config_read(0, 0, PAM0 - 1, 4) == 0
    machine.config_write(0, 0, PAM0 - 1, 0x33333000, 4)
    machine.config_write(0, 0, PAM0 + 3, 0x33333333, 4)
    assert machine.config_read(0, 0, PAM0 - 1, 4) == 0x33333000
    assert machine.config_read(0, 0, PAM0 + 3, 4) == 0x33333333


def test_smram_base_segment_is_read_only() -> None:
    machine = make_machine()
    assert machine.config_read(0, 0, SMRAM, 1) == 0x02
    machine.config_write(0, 0, SMRAM, 0x4A, 1)
    assert machine.config_read(0, 0, SMRAM, 1) == 0x4A
    machine.config_write(0, 0, SMRAM, 0xFF & ~SMRAM_D_LCK, 1)
    assert machine.config_read(0, 0, SMRAM, 1) == 0x6A  # bit 7 reserved, bits 2:0 fixed at 010


def test_smram_lock_closes_d_open_and_freezes_until_reset() -> None:
    machine = make_machine()
    machine.config_write(0, 0, SMRAM, SMRAM_D_OPEN | SMRAM_D_LCK | SMRAM_G_SMRAME, 1)
    assert machine.config_read(0, 0, SMRAM, 1) == SMRAM_D_LCK | SMRAM_G_SMRAME | 0x02
    machine.config_write(0, 0, SMRAM, SMRAM_D_OPEN | SMRAM_D_CLS, 1)
    assert machine.config_read(0, 0, SMRAM, 1) == SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME | 0x02
    machine.ring3.reset()
    machine.config_write(0, 0, SMRAM, SMRAM_D_OPEN, 1)
    assert machine.config_read(0, 0, SMRAM, 1) == SMRAM_D_OPEN | 0x02


def test_pirq_routes_reset_disabled_and_take_irqs() -> None:
    machine = make_machine()
    assert machine.config_read(1, 0, PIRQRC, 4) == 0x80808080
    for lane, irq in enumerate((0x0A, 0x0A, 0x0B, 0x0B)):
        machine.config_write(1, 0, PIRQRC + lane, irq, 1)
    assert machine.config_read(1, 0, PIRQRC, 4) == 0x0B0B0A0A
    machine.config_write(1, 0, PIRQRC, 0xFFFFFFFF, 4)
    assert machine.config_read(1, 0, PIRQRC, 4) == 0x8F8F8F8F  # bits 6:4 are reserved


def test_piix3_datasheet_reset_values() -> None:
    machine = make_machine()
    assert machine.config_read(1, 0, 0x4C, 4) == 0x0003004D  # IORT, XBCS
    assert machine.config_read(1, 0, 0x68, 4) == 0x00000200  # TOM
    assert machine.config_read(1, 0, 0x70, 2) == 0x8080  # MBIRQ0/1
    assert machine.config_read(1, 0, 0x76, 4) == 0x00020C0C  # MBDMA0/1, PCSC
    assert (machine.config_read(1, 0, 0xA0, 1), machine.config_read(1, 0, 0xA8, 1)) == (0x08, 0x0F)


def test_pmba_bit0_reads_one_and_the_base_is_64_byte_aligned() -> None:
    machine = make_machine()
    assert machine.config_read(1, 3, PMBA, 4) == 0x00000001
    machine.config_write(1, 3, PMBA, 0xFFFFFFFF, 4)
    assert machine.config_read(1, 3, PMBA, 4) == 0x0000FFC1


def test_smbus_base_and_host_configuration_read_back() -> None:
    machine = make_machine()
    machine.config_write(1, 3, 0x90, 0x701, 4)
    machine.config_write(1, 3, 0xD2, 0x09, 1)
    assert machine.config_read(1, 3, 0x90, 4) == 0x701
    assert machine.config_read(1, 3, 0xD2, 1) == 0x09


def test_interrupt_line_is_storage() -> None:
    machine = make_machine()
    machine.config_write(1, 3, INTERRUPT_LINE, 0x0A, 1)
    machine.config_write(1, 3, INTERRUPT_LINE, 0x09, 1)
    assert machine.config_read(1, 3, INTERRUPT_LINE, 1) == 0x09


# -- the split between the tiers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "function", "register", "size"),
    [
        (2, 0, COMMAND, 2), (1, 1, BAR0 + 16, 4), (2, 0, BAR0, 4), (1, 3, PMBA, 4), (1, 3, PMREGMISC, 1),
        (0, 0, SMRAM, 1),
    ],
)
def test_config_writes_with_side_effects_go_to_ring3(device: int, function: int, register: int, size: int) -> None:
    machine = make_machine()
    machine.config_write(device, function, register, 0, size)
    assert machine.ring3_accesses == 1


@pytest.mark.parametrize(
    ("device", "function", "register", "size"),
    [(1, 0, PIRQRC, 1), (0, 0, PAM0, 1), (1, 3, INTERRUPT_LINE, 1), (2, 0, ROM_ADDRESS, 4), (1, 3, 0x58, 4)],
)
def test_plain_config_writes_stay_in_ring0(device: int, function: int, register: int, size: int) -> None:
    machine = make_machine()
    machine.config_write(device, function, register, 0x12345678 & (1 << 8 * size) - 1, size)
    machine.config_read(device, function, register, size)
    assert machine.ring3_accesses == 0


# -- the ACPI PM block --------------------------------------------------------------------------------


def test_pm_block_maps_at_pmba_once_pmiose_is_set() -> None:
    machine = make_machine()
    machine.config_write(1, 3, PMBA, 0x601, 4)
    assert mapped(machine, "PIIX4 ACPI PM") is None
    machine.config_write(1, 3, PMREGMISC, 1, 1)
    assert mapped(machine, "PIIX4 ACPI PM") == 0x600
    assert machine.state.pm_mapped == 1


def test_pm_block_moves_with_pmba_and_unmaps_with_pmiose() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.config_write(1, 3, PMBA, 0xB001, 4)
    assert mapped(machine, "PIIX4 ACPI PM") == 0xB000
    machine.config_write(1, 3, PMREGMISC, 0, 1)
    assert mapped(machine, "PIIX4 ACPI PM") is None


def test_pm_block_at_base_zero_is_not_decoded() -> None:
    machine = make_machine()
    machine.config_write(1, 3, PMREGMISC, 1, 1)
    assert mapped(machine, "PIIX4 ACPI PM") is None


def test_pm_block_over_another_region_stays_unmapped() -> None:
    machine = make_machine()
    machine.hlp.taken_ports.add(0x620)
    enable_pm_block(machine)
    assert mapped(machine, "PIIX4 ACPI PM") is None
    machine.config_write(1, 3, PMBA, 0x701, 4)
    assert mapped(machine, "PIIX4 ACPI PM") == 0x700


def test_pm_timer_counts_at_3_579545_mhz() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.hlp.now_ns = 1_000_000_000
    assert machine.inp(0x608, 4) == PM_TIMER_HZ
    machine.hlp.now_ns = 1_000_000
    assert machine.inp(0x608, 4) == 3579


def test_pm_timer_is_24_bits_wide_and_wraps() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.hlp.now_ns = int((0x1000000 + 5) * NS_PER_TICK) + 1
    assert machine.inp(0x608, 4) == 5
    assert machine.inp(0x60B, 1) == 0


def test_pm_timer_byte_reads_and_writes_are_ignored() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.hlp.now_ns = int(0x123456 * NS_PER_TICK) + 1
    machine.out(0x608, 0, 4)
    assert machine.inp(0x608, 4) == 0x123456
    assert machine.inp(0x609, 1) == 0x34
    assert machine.inp(0x60A, 2) == 0x0012


def test_tmr_sts_sets_when_bit_23_changes_and_clears_on_write_one() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.hlp.now_ns = int(0x7FFFFF * NS_PER_TICK)
    assert machine.inp(0x600, 2) & TMR_STS == 0
    machine.hlp.now_ns = int(0x800001 * NS_PER_TICK)
    assert machine.inp(0x600, 2) & TMR_STS == TMR_STS
    machine.out(0x600, 0, 2)
    assert machine.inp(0x600, 2) & TMR_STS == TMR_STS  # writing 0 changes nothing
    machine.out(0x600, TMR_STS, 2)
    assert machine.inp(0x600, 2) & TMR_STS == 0
    machine.hlp.now_ns = int(0x1000001 * NS_PER_TICK)  # bit 23 goes back to 0: another change
    assert machine.inp(0x600, 2) & TMR_STS == TMR_STS


def test_pm1_status_bits_are_write_one_to_clear() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.state.pm1_status = 0x8520  # WAK, RTC, PWRBTN, GBL
    machine.out(0x601, 0x05, 1)
    assert machine.inp(0x600, 2) == 0x8020


def test_pm1_enable_reads_back_and_drives_the_sci() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.out(0x602, TMR_EN, 2)
    assert machine.inp(0x602, 2) == TMR_EN
    assert machine.state.sci_level == 0
    machine.hlp.now_ns = int(0x800001 * NS_PER_TICK)
    machine.out(0x602, TMR_EN | 0x0100, 2)
    assert machine.state.sci_level == 1
    machine.out(0x600, TMR_STS, 2)
    assert machine.state.sci_level == 0


def test_dword_read_at_pm1_sts_returns_status_and_enable() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    machine.out(0x602, 0x0121, 2)
    assert machine.inp(0x600, 4) == 0x01210000


def test_pm1_control_reads_back_without_slp_en() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    assert machine.out(0x604, 0x0401, 2) == VINF_SUCCESS
    assert machine.inp(0x604, 2) == 0x0401
    assert machine.ring3_accesses == 2  # PMBA and PMREGMISC; the control write stayed in ring-0


@pytest.mark.parametrize(("sleep_type", "status"), [(0, VINF_EM_OFF), (2, VINF_EM_OFF), (1, VINF_EM_SUSPEND)])
def test_slp_en_enters_the_sleep_state_in_ring3(sleep_type: int, status: int) -> None:
    machine = make_machine()
    enable_pm_block(machine)
    assert machine.out(0x604, SLP_EN | sleep_type << 10 | 1, 2) == status
    assert machine.ring3_accesses == 3
    assert machine.inp(0x604, 2) == sleep_type << 10 | 1  # SLP_EN reads 0


def test_slp_en_in_the_high_byte_alone_is_a_sleep_request() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    assert machine.out(0x605, SLP_EN >> 8, 1) == VINF_EM_OFF


def test_ring0_defers_a_sleep_request_before_changing_anything() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    assert machine.ring0.pm_write(PM1_CNT, SLP_EN | 0x0001, 2) == VINF_IOM_R3_IOPORT_WRITE
    assert machine.state.pm1_control == 0


def test_undefined_pm_offsets_read_all_ones() -> None:
    machine = make_machine()
    enable_pm_block(machine)
    assert machine.inp(0x606, 2) == 0xFFFF
    assert machine.inp(0x628, 4) == 0xFFFFFFFF
    assert machine.inp(0x63F, 1) == 0xFF


def test_pm_registers_without_a_mapping_are_not_reachable() -> None:
    machine = make_machine()
    machine.state.pm1_enable = TMR_EN
    assert machine.inp(0x602, 2) == 0xFFFF


# -- the reset control register 0xCF9 -------------------------------------------------------------


def test_rcpu_resets_the_vm_from_ring3() -> None:
    machine = make_machine()
    assert machine.out(0xCF9, 0x06, 1) == VINF_EM_RESET
    assert machine.ring3_accesses == 1


def test_soft_reset_resets_the_vm_as_qemu_does() -> None:
    assert make_machine().out(0xCF9, 0x04, 1) == VINF_EM_RESET


def test_srst_reads_back_and_rcpu_reads_zero() -> None:
    machine = make_machine()
    assert machine.out(0xCF9, 0x02, 1) == VINF_SUCCESS
    assert machine.inp(0xCF9, 1) == 0x02
    machine.out(0xCF9, 0x06, 1)
    assert machine.inp(0xCF9, 1) == 0x02


def test_cf9_write_does_not_touch_the_config_address() -> None:
    machine = make_machine()
    machine.select(1, 3, 0)
    machine.out(0xCF9, 0x02, 1)
    assert machine.inp(0xCF8, 4) == 0x80000B00


# -- the IDE bus-master block ---------------------------------------------------------------------


def map_bus_master(machine: Machine) -> None:
    machine.config_write(1, 1, BAR0 + 16, 0xC000, 4)
    machine.config_write(1, 1, COMMAND, 0x0001, 2)


def test_bus_master_block_maps_at_bar4_with_io_enabled() -> None:
    machine = make_machine()
    machine.config_write(1, 1, BAR0 + 16, 0xC000, 4)
    assert mapped(machine, "PIIX3 IDE bus master") is None
    machine.config_write(1, 1, COMMAND, 0x0001, 2)
    assert mapped(machine, "PIIX3 IDE bus master") == 0xC000
    machine.config_write(1, 1, BAR0 + 16, 0xD000, 4)
    assert mapped(machine, "PIIX3 IDE bus master") == 0xD000
    machine.config_write(1, 1, COMMAND, 0x0000, 2)
    assert mapped(machine, "PIIX3 IDE bus master") is None


def test_bus_master_command_keeps_start_and_direction() -> None:
    machine = make_machine()
    map_bus_master(machine)
    machine.out(0xC008, 0xFF, 1)
    assert machine.inp(0xC008, 1) == 0x09
    assert machine.inp(0xC00A, 1) & 0x01 == 0x01  # the engine is active while started
    machine.out(0xC008, 0x00, 1)
    assert machine.inp(0xC00A, 1) & 0x01 == 0


def test_bus_master_status_drive_bits_are_storage_error_and_interrupt_clear_on_one() -> None:
    machine = make_machine()
    map_bus_master(machine)
    machine.state.bus_master[0].status = 0x07
    machine.out(0xC002, 0xE2, 1)
    assert machine.inp(0xC002, 1) == 0x65  # simplex stays 0, active stays, error cleared


def test_bus_master_prd_pointer_is_dword_aligned_and_byte_addressable() -> None:
    machine = make_machine()
    map_bus_master(machine)
    machine.out(0xC004, 0x12345677, 4)
    assert machine.inp(0xC004, 4) == 0x12345674
    machine.out(0xC007, 0xAB, 1)
    assert machine.inp(0xC006, 2) == 0xAB34


def test_bus_master_command_and_status_take_byte_accesses_only() -> None:
    machine = make_machine()
    map_bus_master(machine)
    machine.out(0xC000, 0x0009, 2)
    assert machine.inp(0xC000, 1) == 0
    assert machine.inp(0xC000, 2) == 0xFFFF
    assert machine.inp(0xC001, 1) == 0xFF  # reserved
    assert machine.inp(0xC003, 1) == 0xFF


# -- the VGA BARs -----------------------------------------------------------------------------------


def map_vga(machine: Machine) -> None:
    machine.config_write(2, 0, BAR0, 0xFD000000, 4)
    machine.config_write(2, 0, BAR0 + 8, 0xFEBF0000, 4)
    machine.config_write(2, 0, COMMAND, 0x0103, 2)


def test_vga_bars_map_with_memory_decoding() -> None:
    machine = make_machine()
    map_vga(machine)
    assert mapped(machine, "VGA BAR0") == 0xFD000000
    assert mapped(machine, "VGA BAR2") == 0xFEBF0000


def test_vga_bar2_serves_the_edid_block() -> None:
    machine = make_machine()
    map_vga(machine)
    assert bytes(machine.read(0xFEBF0000 + i, 1) for i in range(256)) == VGA_EDID
    assert machine.read(0xFEBF0000, 8) == 0x00FFFFFFFFFFFF00
    assert machine.read(0xFEBF00FE, 4) == 0x2F00  # the last bytes, then nothing past the block
    assert machine.read(0xFEBF0500, 2) == 0


def test_edid_is_a_valid_base_block_and_extension() -> None:
    assert VGA_EDID[:8] == bytes.fromhex("00ffffffffffff00")
    assert sum(VGA_EDID[:128]) % 256 == 0
    assert sum(VGA_EDID[128:]) % 256 == 0
    assert VGA_EDID[126] == 1  # one extension block follows
    assert b"QEMU Monitor" in VGA_EDID


def test_vga_framebuffer_reads_zero_and_drops_writes() -> None:
    machine = make_machine()
    map_vga(machine)
    machine.write(0xFD000000, 0x12345678, 4)
    assert machine.read(0xFD000000, 4) == 0
    assert machine.read(0xFDFFFFF8, 8) == 0


def test_vga_rom_bar_is_stored_but_not_mapped() -> None:
    machine = make_machine()
    map_vga(machine)
    machine.config_write(2, 0, ROM_ADDRESS, 0xFEBE0001, 4)
    assert machine.config_read(2, 0, ROM_ADDRESS, 4) == 0xFEBE0001
    assert not any(description.startswith("VGA ROM") for _, description, _ in machine.hlp.maps)


# -- reset ------------------------------------------------------------------------------------------


def test_reset_unmaps_every_region_and_restores_the_registers() -> None:
    machine = make_machine()
    map_vga(machine)
    map_bus_master(machine)
    enable_pm_block(machine)
    machine.out(0x604, 0x0001, 2)
    machine.config_write(1, 0, PIRQRC, 0x0B, 1)
    machine.out(0xCF9, 0x02, 1)
    machine.ring3.reset()
    assert [r.description for r in machine.hlp.ports + machine.hlp.mmio if r.mapped_at is not None] == [
        "PCI config address/data, PIIX3 reset control"
    ]
    assert machine.inp(0xCF8, 4) == 0
    assert machine.inp(0xCF9, 1) == 0
    assert machine.config_read(1, 0, PIRQRC, 1) == 0x80
    assert machine.config_read(2, 0, COMMAND, 2) == 0
    assert machine.config_read(2, 0, BAR0, 4) == 0x00000008
    assert machine.state.pm1_control == 0
    enable_pm_block(machine)
    assert machine.inp(0x604, 2) == 0


# -- the sample trace --------------------------------------------------------------------------------


def _ours(op: TraceOp) -> bool:
    if op.kind in (IN, OUT):
        return 0xCF8 <= op.address <= 0xCFF or 0x600 <= op.address <= 0x63F or 0xC000 <= op.address <= 0xC00F
    return op.kind in (MMIO_READ, MMIO_WRITE) and (
        0xFD000000 <= op.address <= 0xFDFFFFFF or 0xFEBF0000 <= op.address <= 0xFEBF0FFF
    )


@pytest.mark.skipif(not SAMPLE_TRACE.exists(), reason="the sample trace is not beside the repository")
def test_sample_trace_reads_match_qemu() -> None:
    """Config cycles, the PM block and the VGA BAR2 reads of SeaBIOS booting on QEMU's pc.

    The PM timer (0x608) is time-dependent: its reads are only checked to count up.
    """
    machine = make_machine()
    checked = matched = timer_reads = 0
    mismatches: list[tuple[int, int, int | bytes, int]] = []
    last_timer = -1
    for op in filter(_ours, read_trace(SAMPLE_TRACE)):
        machine.hlp.now_ns += 2_000  # time moves between accesses, as in the recording
        if op.kind == OUT:
            machine.out(op.address, op.value, op.size)
            continue
        if op.kind == MMIO_WRITE:
            machine.write(op.address, op.value, op.size)
            continue
        got = machine.inp(op.address, op.size) if op.kind == IN else machine.read(op.address, op.size)
        if op.address == 0x608:
            timer_reads += 1
            assert got > last_timer
            last_timer = got
            continue
        if op.expected is None:
            continue
        checked += 1
        if got == op.expected:
            matched += 1
        elif len(mismatches) < 10:
            mismatches.append((op.line, op.address, op.expected, got))
    assert mismatches == []
    assert (checked, matched, timer_reads) == (531, 531, 5688)
    assert machine.state.pm_base == 0x600
    assert mapped(machine, "PIIX3 IDE bus master") == 0xC000
