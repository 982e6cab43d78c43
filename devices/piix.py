"""piix: the PCI bus of QEMU's ``pc`` machine (i440FX + PIIX3/PIIX4) and the ACPI PM I/O block.

One device owns the host bridge's ports 0xCF8-0xCFF (configuration mechanism #1 from
``devices/pci.py``, and PIIX3's reset control register at 0xCF9) and presents these
functions, with the IDs, class codes, revisions and BARs QEMU 7.2 reports in the sample
trace (every function's subsystem is QEMU's 1af4:1100):

=========  ============================  =========  ======  ===  ========================
address    function                      ID         class   rev  BARs
=========  ============================  =========  ======  ===  ========================
00:00.0    i440FX host bridge            8086:1237  060000  02   none
00:01.0    PIIX3 ISA bridge (multifn.)   8086:7000  060100  00   none
00:01.1    PIIX3 IDE                     8086:7010  010180  00   BAR4: 16 I/O ports
00:01.3    PIIX4 ACPI (power management) 8086:7113  068000  03   none (PMBA at 0x40)
00:02.0    VGA (QEMU std VGA)            1234:1111  030000  02   BAR0 16 MiB, BAR2 4 KiB,
                                                                 ROM 64 KiB
=========  ============================  =========  ======  ===  ========================

Device-specific registers read back what was written (QEMU's rule for 0x40-0xFF), with
the reset values and read-only bits of the datasheets where they matter: the i440FX PAM
registers 0x59-0x5F and SMRAM 0x72 (C_BASE_SEG fixed at 0xA0000, D_LCK locks D_OPEN,
D_LCK and G_SMRAME until reset), PIIX3's PIRQ routes 0x60-0x63 (0x80: disabled) and its
other reset values, PIIX3 IDE's timing registers 0x40/0x42, PIIX4's PMBA 0x40 (bits 15:6,
bit 0 reads 1), PMREGMISC 0x80 (bit 0, PMIOSE), SMBBA 0x90 (bits 15:4, bit 0 reads 1)
and SMBHSTCFG 0xD2.  PAM, SMRAM, PIRQ and SMBus values are stored only: ringsim has no
RAM to remap, no interrupt router and no SMBus controller.

The ACPI PM I/O block (64 ports) is mapped at PMBA while PMREGMISC.PMIOSE is set (0x600
in the sample; a base of 0 is not decoded): PM1a_STS (+0x00, write 1 to clear),
PM1a_EN (+0x02), PM1a_CNT (+0x04: SCI_EN, SLP_TYP, SLP_EN) and the PM timer (+0x08, 24
bits at 3.579545 MHz from the virtual clock).  Writing SLP_EN with sleep type 0 (S5, soft
off) powers the VM off (VINF_EM_OFF); type 2, QEMU's S4, does too, as QEMU does; type 1
(S3, suspend to RAM) returns VINF_EM_SUSPEND.  The other offsets read all ones (QEMU
leaves them unassigned).  TMR_STS sets each time bit 23 of the timer changes; the SCI
level (``sci_level``) follows STS & EN but is only re-evaluated on PM accesses, as there
are no timers to raise it on a timer carry.

BAR regions, created in the constructor and mapped by the framework when the firmware
programs the BAR and enables decoding: PIIX3 IDE's bus-master block (BMIBA, 16 ports:
per channel BMICOM, BMISTA and BMIDTP, with QEMU's access rules: command and status
take byte accesses only, other widths read all ones and are dropped, the reserved bytes
read 0xFF; there is no IDE controller behind it, so a started engine just stays
active); VGA BAR0, the 16 MiB framebuffer, an MMIO region that reads 0 and drops writes
(the VRAM is the VGA device's to model; QEMU's is zeroed at start); VGA BAR2, a 4 KiB
MMIO region serving the EDID block QEMU's std VGA presents at +0x000 (SeaVGABIOS reads
it) and 0 elsewhere (the bochs dispi and VGA register mirrors at +0x400-0x607 belong to
the VGA device).  The VGA ROM BAR is sized and stored but not backed: the option ROM
image comes from fw_cfg.  Not modelled here: the IDE task-file ports, the VGA I/O ports,
fw_cfg, the APM port 0xB2 and the SMBus I/O block.

PIIX3's reset control register (0xCF9) keeps SRST (bit 1); writing RCPU (bit 2) resets
the VM (VINF_EM_RESET) -- with SRST a hard reset, without it a soft one, which QEMU also
treats as a full machine reset, as ringsim has no CPU INIT of its own.

The split between the tiers: ring-0 serves every configuration read, the address
register, plain configuration writes, the whole PM block except PM1a_CNT writes that set
SLP_EN, the bus-master registers and both VGA regions.  Ring-3 takes the configuration
writes that can map or unmap something or lock a register -- the command register's low
byte, the BARs with regions (IDE BAR4, VGA BAR0/BAR2), PIIX4's PMBA and PMREGMISC, the
i440FX SMRAM register -- plus sleep requests and 0xCF9 writes (VINF_IOM_R3_IOPORT_WRITE).

Time-dependent registers (a replay cannot match them exactly): the PM timer (PMBA+0x08 to
+0x0B) and PM1a_STS.TMR_STS (bit 0 of PMBA+0x00).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

from devices.pci import (
    CONFIG_ADDRESS_PORT,
    CONFIG_DATA_PORT,
    ROM_SLOT,
    STATUS_DEVSEL_MEDIUM,
    STATUS_FAST_BACK_TO_BACK,
    ConfigMechanism1,
    ConfigWriter,
    IomBarMapper,
    PciBar,
    PciFunction,
    PciFunctionLayout,
    PciFunctionState,
    PciHostBridgeState,
    PciRegister,
    ring0_config_write,
    ring3_config_write,
)
from shared.devapi import (
    IOMMMIO_FLAGS_READ_PASSTHRU,
    IOMMMIO_FLAGS_WRITE_PASSTHRU,
    PDM_DEVREG_CLASS_BUS_PCI,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import (
    VINF_EM_OFF,
    VINF_EM_RESET,
    VINF_EM_SUSPEND,
    VINF_IOM_R3_IOPORT_WRITE,
    VINF_SUCCESS,
    VBoxError,
)

# --- Ports 0xCF8-0xCFF --------------------------------------------------------------------
CONFIG_PORTS = CONFIG_ADDRESS_PORT  # one region: CONFIG_ADDRESS 0xCF8-0xCFB, CONFIG_DATA 0xCFC-0xCFF
CONFIG_PORT_COUNT = 8
RESET_CONTROL = 1  # 0xCF9, PIIX3's RC register, byte accesses only
CONFIG_DATA = CONFIG_DATA_PORT - CONFIG_ADDRESS_PORT  # offset of 0xCFC in the region
RC_SYSTEM_RESET = 0x02  # SRST: the reset RCPU starts is a hard one; stored
RC_RESET_CPU = 0x04  # RCPU: writing 1 starts the reset; reads 0

# --- The functions' common values ---------------------------------------------------------
INTEL = 0x8086
QEMU_SUBSYSTEM_VENDOR = 0x1AF4  # QEMU gives every function subsystem 1af4:1100
QEMU_SUBSYSTEM = 0x1100
MEDIUM_FAST = STATUS_DEVSEL_MEDIUM | STATUS_FAST_BACK_TO_BACK

# --- i440FX (82441FX PMC) registers -------------------------------------------------------
PAM0 = 0x59  # 0x59-0x5F: programmable attribute map, BIOS and option ROM shadowing
SMRAM = 0x72  # system management RAM control
SMRAM_D_OPEN = 0x40  # SMRAM visible outside SMM
SMRAM_D_CLS = 0x20  # SMRAM closed to data accesses
SMRAM_D_LCK = 0x10  # locks D_OPEN (cleared), D_LCK and G_SMRAME until reset
SMRAM_G_SMRAME = 0x08  # SMRAM enabled
SMRAM_C_BASE_SEG = 0x02  # read-only: SMRAM is at 0xA0000
SMRAM_WRITABLE = SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME

# --- PIIX3 function 0 (ISA bridge) registers, datasheet reset values ----------------------
PIIX3_IORT = 0x4C  # ISA I/O recovery timer
PIIX3_XBCS = 0x4E  # X-bus chip select
PIRQRC = 0x60  # 0x60-0x63: PIRQA#-PIRQD# routing, bits 3:0 the IRQ
PIRQ_ROUTING_DISABLED = 0x80
PIIX3_TOM = 0x69  # top of memory
PIIX3_MBIRQ0 = 0x70  # motherboard IRQ routes 0 and 1
PIIX3_MBDMA0 = 0x76  # motherboard DMA routes 0 and 1
PIIX3_PCSC = 0x78  # programmable chip select control
PIIX3_SMICNTL = 0xA0  # SMI control
PIIX3_FTMR = 0xA8  # fast-off timer

# --- PIIX3 function 1 (IDE) ---------------------------------------------------------------
BMIBA_SLOT = 4  # BAR4: the bus-master IDE block
BMIBA_PORTS = 16
IDETIM_PRIMARY = 0x40  # IDE timing; bit 15 enables the channel's legacy decode
IDETIM_SECONDARY = 0x42

# --- PIIX4 function 3 (power management) registers ----------------------------------------
PMBA = 0x40  # PM I/O base: bits 15:6, bit 0 reads 1 (I/O space)
PMBA_ADDRESS = 0xFFC0
PMREGMISC = 0x80
PMIOSE = 0x01  # PMREGMISC bit 0: decode the PM I/O block at PMBA
SMBBA = 0x90  # SMBus I/O base: bits 15:4, bit 0 reads 1
SMBHSTCFG = 0xD2  # SMBus host configuration: enable and interrupt select

# --- The ACPI PM I/O block, at PMBA -------------------------------------------------------
PM_BLOCK_SIZE = 64
PM1_STS = 0x00  # word, write 1 to clear
PM1_EN = 0x02  # word
PM1_CNT = 0x04  # word
PM_TMR = 0x08  # dword, read-only: 24-bit counter
PM_DEFINED_END = 0x0C  # past this, and at 0x06-0x07, nothing answers

TMR_STS = 0x0001  # the timer's bit 23 changed
BM_STS = 0x0010
GBL_STS = 0x0020
PWRBTN_STS = 0x0100
RTC_STS = 0x0400
WAK_STS = 0x8000
TMR_EN = 0x0001
GBL_EN = 0x0020
PWRBTN_EN = 0x0100
RTC_EN = 0x0400
SCI_EVENTS = TMR_EN | GBL_EN | PWRBTN_EN | RTC_EN  # the enables that raise the SCI

SCI_EN = 0x0001  # PM1a_CNT: events raise the SCI (not an SMI)
SLP_TYP_SHIFT = 10  # PM1a_CNT bits 12:10
SLP_TYP_MASK = 0x7
SLP_EN = 0x2000  # write-only: enter the sleep state SLP_TYP names
SLEEP_STATUSES = {
    0: VINF_EM_OFF,  # S5, soft off (QEMU's _S5)
    1: VINF_EM_SUSPEND,  # S3, suspend to RAM
    2: VINF_EM_OFF,  # QEMU's _S4: it powers off, keeping no hibernation state
}

PM_TIMER_HZ = 3_579_545
PM_TIMER_MASK = 0xFFFFFF
PM_TIMER_CARRY_SHIFT = 23  # TMR_STS sets each time bit 23 changes
NS_PER_SECOND = 1_000_000_000

# --- The bus-master IDE block at BMIBA: two channels of 8 ports ---------------------------
BM_CHANNEL_SIZE = 8
BM_COMMAND = 0  # BMICOM
BM_STATUS = 2  # BMISTA
BM_PRD = 4  # BMIDTP: the PRD table's address, dword aligned
BM_COMMAND_START = 0x01
BM_COMMAND_READ = 0x08  # direction: the engine writes memory
BM_COMMAND_WRITABLE = BM_COMMAND_START | BM_COMMAND_READ
BM_STATUS_ACTIVE = 0x01  # read-only: the engine runs
BM_STATUS_ERROR = 0x02  # write 1 to clear
BM_STATUS_INTERRUPT = 0x04  # write 1 to clear
BM_STATUS_DRIVE_DMA = 0x60  # drive 0/1 DMA capable: read/write
BM_PRD_ADDRESS = 0xFFFFFFFC

# --- VGA BARs -----------------------------------------------------------------------------
VRAM_SLOT = 0
VRAM_SIZE = 16 << 20
VGA_MMIO_SLOT = 2
VGA_MMIO_SIZE = 0x1000
VGA_ROM_SIZE = 0x10000
BAR_REGION_FLAGS = IOMMMIO_FLAGS_READ_PASSTHRU | IOMMMIO_FLAGS_WRITE_PASSTHRU

# The EDID block QEMU 7.2's std VGA presents at BAR2+0 with its defaults, as SeaVGABIOS
# read it in the sample trace: manufacturer "RHT", product 0x1234, week 42 of 2014, EDID
# 1.4, a 1280x800 preferred mode, the monitor name "QEMU Monitor" and one CEA-861
# extension block.  It is data the device carries (like an option ROM), not behaviour.
VGA_EDID = bytes.fromhex(
    "00ffffffffffff0049143412000000002a180104a520147806ee91a3544c9926"
    "0f5054210800e1c0d1c0d100a940b300950081808140ea2900c051201c304026"
    "444045cb10000018000000f7000a004082002820000000000000000000fd0032"
    "7d1ea0ff010a202020202020000000fc0051454d55204d6f6e69746f720a013a"
    "02030b00467d6560591f61000000100000000000000000000000000000000000"
    "1000000000000000000000000000000000001000000000000000000000000000"
    "0000000010000000000000000000000000000000000010000000000000000000"
    "000000000000000010000000000000000000000000000000000000000000002f"
)

SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


def _qemu_function(name: str, device: int, function: int, vendor_id: int, device_id: int, class_code: int,
                   **rest: Any) -> PciFunctionLayout:
    return PciFunctionLayout(
        name, device, function, vendor_id, device_id, class_code,
        subsystem_vendor_id=QEMU_SUBSYSTEM_VENDOR, subsystem_id=QEMU_SUBSYSTEM, **rest,
    )


I440FX = _qemu_function(
    "i440FX host bridge", 0, 0, INTEL, 0x1237, 0x060000, revision=0x02,
    registers=(PciRegister(SMRAM, 1, SMRAM_C_BASE_SEG, SMRAM_WRITABLE, ring3=True),),
)
PIIX3_ISA = _qemu_function(
    "PIIX3 ISA bridge", 1, 0, INTEL, 0x7000, 0x060100, header_type=0x80, status=STATUS_DEVSEL_MEDIUM,
    registers=(
        PciRegister(PIIX3_IORT, 1, 0x4D, 0xFF),
        PciRegister(PIIX3_XBCS, 2, 0x0003, 0xFFFF),
        PciRegister(PIRQRC, 4, 0x80808080, 0x8F8F8F8F),
        PciRegister(PIIX3_TOM, 1, 0x02, 0xFF),
        PciRegister(PIIX3_MBIRQ0, 2, 0x8080, 0xFFFF),
        PciRegister(PIIX3_MBDMA0, 2, 0x0C0C, 0xFFFF),
        PciRegister(PIIX3_PCSC, 2, 0x0002, 0xFFFF),
        PciRegister(PIIX3_SMICNTL, 1, 0x08, 0xFF),
        PciRegister(PIIX3_FTMR, 1, 0x0F, 0xFF),
    ),
)
PIIX3_IDE = _qemu_function(
    "PIIX3 IDE", 1, 1, INTEL, 0x7010, 0x010180, status=MEDIUM_FAST,
    bars=(PciBar(BMIBA_SLOT, BMIBA_PORTS, io=True),),
)
PIIX4_PM = _qemu_function(
    "PIIX4 ACPI", 1, 3, INTEL, 0x7113, 0x068000, revision=0x03, status=MEDIUM_FAST, interrupt_pin=1,
    registers=(
        PciRegister(PMBA, 4, 0x00000001, PMBA_ADDRESS, ring3=True),
        PciRegister(PMREGMISC, 1, 0x00, PMIOSE, ring3=True),
        PciRegister(SMBBA, 4, 0x00000001, 0x0000FFF0),
        PciRegister(SMBHSTCFG, 1, 0x00, 0x0F),
    ),
)
VGA = _qemu_function(
    "VGA", 2, 0, 0x1234, 0x1111, 0x030000, revision=0x02,
    bars=(
        PciBar(VRAM_SLOT, VRAM_SIZE, prefetchable=True),
        PciBar(VGA_MMIO_SLOT, VGA_MMIO_SIZE),
        PciBar(ROM_SLOT, VGA_ROM_SIZE, backed=False),
    ),
)


def covers(offset: int, size: int, register: int, width: int) -> bool:
    """Whether an access of *size* bytes at *offset* touches the *width*-byte register at *register*."""
    return offset < register + width and register < offset + size


def register_lanes(offset: int, size: int, value: int, register: int, width: int) -> tuple[int, int]:
    """(mask, bits): the part of a *width*-byte register an access at *offset* writes, and what."""
    mask = bits = 0
    for lane in range(size):
        at = offset + lane - register
        if 0 <= at < width:
            mask |= 0xFF << (8 * at)
            bits |= (value >> (8 * lane) & 0xFF) << (8 * at)
    return mask, bits


class BusMasterChannel(ctypes.Structure):
    _fields_ = [
        ("command", ctypes.c_uint8),  # BMICOM
        ("status", ctypes.c_uint8),  # BMISTA
        ("prd", ctypes.c_uint32),  # BMIDTP
    ]


class PiixState(ctypes.Structure):
    _fields_ = [
        ("host_bridge", PciHostBridgeState),
        ("i440fx", PciFunctionState),
        ("isa", PciFunctionState),
        ("ide", PciFunctionState),
        ("pm", PciFunctionState),
        ("vga", PciFunctionState),
        ("config_handle", ctypes.c_uint16),  # ports 0xCF8-0xCFF
        ("pm_handle", ctypes.c_uint16),  # the ACPI PM block
        ("reset_control", ctypes.c_uint8),  # 0xCF9: SRST as last written
        ("pm_mapped", ctypes.c_uint8),
        ("pm_base", ctypes.c_uint16),  # where the PM block is mapped while mapped
        ("pm1_status", ctypes.c_uint16),  # PM1a_STS bits other than TMR_STS
        ("pm1_enable", ctypes.c_uint16),
        ("pm1_control", ctypes.c_uint16),  # without SLP_EN, which reads 0
        ("timer_carries_cleared", ctypes.c_uint64),  # timer ticks >> 23 when TMR_STS was last cleared
        ("sci_level", ctypes.c_uint8),  # the SCI line (no interrupt controller: recorded only)
        ("bus_master", BusMasterChannel * 2),
    ]


class PiixCore:
    """What both tiers share: the functions, the config ports' reads and the register blocks."""

    def __init__(self, state: PiixState, clock: Callable[[], int], write_config: ConfigWriter) -> None:
        self.state = state
        self.clock = clock
        self.host = PciFunction(I440FX, state.i440fx)
        self.isa = PciFunction(PIIX3_ISA, state.isa)
        self.ide = PciFunction(PIIX3_IDE, state.ide)
        self.pm = PciFunction(PIIX4_PM, state.pm)
        self.vga = PciFunction(VGA, state.vga)
        self.functions = (self.host, self.isa, self.ide, self.pm, self.vga)
        self.mechanism = ConfigMechanism1(state.host_bridge, self.functions, write_config)

    # -- 0xCF8-0xCFF -------------------------------------------------------------------------
    def config_port_read(self, offset: int, size: int) -> tuple[int, int]:
        if offset >= CONFIG_DATA:
            return self.mechanism.data_read(offset - CONFIG_DATA, size)
        if offset == RESET_CONTROL and size == 1:
            return VINF_SUCCESS, self.state.reset_control
        return self.mechanism.address_read(offset, size)

    # -- the ACPI PM block ---------------------------------------------------------------------
    def timer_ticks(self) -> int:
        """PM timer ticks since the VM started (3.579545 MHz), not wrapped."""
        return self.clock() * PM_TIMER_HZ // NS_PER_SECOND

    def pm1_status(self, ticks: int) -> int:
        """PM1a_STS with TMR_STS set if the timer's bit 23 changed since it was last cleared."""
        timer = TMR_STS if ticks >> PM_TIMER_CARRY_SHIFT > self.state.timer_carries_cleared else 0
        return int(self.state.pm1_status) | timer

    def pm_read(self, offset: int, size: int) -> tuple[int, int]:
        if offset == PM_TMR and size == 4:  # the hot read: firmware polls the timer for delays
            return VINF_SUCCESS, self.timer_ticks() & PM_TIMER_MASK
        state = self.state
        ticks = self.timer_ticks()
        block = b"".join((
            self.pm1_status(ticks).to_bytes(2, "little"),
            state.pm1_enable.to_bytes(2, "little"),
            state.pm1_control.to_bytes(2, "little"),
            b"\xff\xff",
            (ticks & PM_TIMER_MASK).to_bytes(4, "little"),
        ))
        data = bytes(block[at] if at < PM_DEFINED_END else 0xFF for at in range(offset, offset + size))
        return VINF_SUCCESS, int.from_bytes(data, "little")

    @staticmethod
    def sleep_requested(offset: int, value: int, size: int) -> bool:
        """Whether a PM-block write sets SLP_EN (ring-0 leaves those to ring-3)."""
        mask, bits = register_lanes(offset, size, value, PM1_CNT, 2)
        return bool(mask & bits & SLP_EN)

    def write_pm_registers(self, offset: int, value: int, size: int) -> int | None:
        """Apply a PM-block write; the sleep type when it set SLP_EN, else None."""
        state = self.state
        mask, bits = register_lanes(offset, size, value, PM1_STS, 2)
        cleared = mask & bits
        if cleared & TMR_STS:
            state.timer_carries_cleared = self.timer_ticks() >> PM_TIMER_CARRY_SHIFT
        state.pm1_status &= ~cleared
        mask, bits = register_lanes(offset, size, value, PM1_EN, 2)
        state.pm1_enable = state.pm1_enable & ~mask | bits
        mask, bits = register_lanes(offset, size, value, PM1_CNT, 2)
        sleep_type = None
        if mask:
            control = state.pm1_control & ~mask | bits
            state.pm1_control = control & ~SLP_EN
            if control & SLP_EN:
                sleep_type = control >> SLP_TYP_SHIFT & SLP_TYP_MASK
        self.update_sci()
        return sleep_type

    def update_sci(self) -> None:
        state = self.state
        state.sci_level = 1 if self.pm1_status(self.timer_ticks()) & state.pm1_enable & SCI_EVENTS else 0

    # -- the bus-master IDE block --------------------------------------------------------------
    def bus_master_read(self, offset: int, size: int) -> tuple[int, int]:
        channel = self.state.bus_master[offset // BM_CHANNEL_SIZE]
        at = offset % BM_CHANNEL_SIZE
        if at >= BM_PRD:
            return VINF_SUCCESS, channel.prd >> (8 * (at - BM_PRD)) & SIZE_MASK[size]
        if size != 1:
            return VINF_SUCCESS, SIZE_MASK[size]
        if at == BM_COMMAND:
            return VINF_SUCCESS, channel.command
        if at == BM_STATUS:
            return VINF_SUCCESS, channel.status
        return VINF_SUCCESS, 0xFF

    def bus_master_write(self, offset: int, value: int, size: int) -> int:
        channel = self.state.bus_master[offset // BM_CHANNEL_SIZE]
        at = offset % BM_CHANNEL_SIZE
        if at >= BM_PRD:
            mask, bits = register_lanes(at, size, value, BM_PRD, 4)
            channel.prd = (channel.prd & ~mask | bits) & BM_PRD_ADDRESS
        elif size == 1 and at == BM_COMMAND:
            channel.command = value & BM_COMMAND_WRITABLE
            if value & BM_COMMAND_START:
                channel.status |= BM_STATUS_ACTIVE
            else:
                channel.status &= ~BM_STATUS_ACTIVE
        elif size == 1 and at == BM_STATUS:
            kept = channel.status & (BM_STATUS_ACTIVE | BM_STATUS_ERROR | BM_STATUS_INTERRUPT)
            channel.status = value & BM_STATUS_DRIVE_DMA | kept & ~(value & (BM_STATUS_ERROR | BM_STATUS_INTERRUPT))
        return VINF_SUCCESS

    # -- the VGA BARs --------------------------------------------------------------------------
    @staticmethod
    def vram_read(offset: int, size: int) -> tuple[int, int]:
        return VINF_SUCCESS, 0

    @staticmethod
    def vga_mmio_read(offset: int, size: int) -> tuple[int, int]:
        data = VGA_EDID[offset : offset + size].ljust(size, b"\x00")
        return VINF_SUCCESS, int.from_bytes(data, "little")

    @staticmethod
    def dropped_write(offset: int, value: int, size: int) -> int:
        return VINF_SUCCESS


class PiixRing3(PiixCore):
    """Ring-3 half: creates the regions, maps and unmaps them, side effects, resets."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: PiixState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns, self.config_write)
        self.hlp = hlp
        self.mapper = IomBarMapper(hlp)
        state.config_handle = hlp.ioport_create_and_map(
            CONFIG_PORTS, CONFIG_PORT_COUNT, description="PCI config address/data, PIIX3 reset control",
            out=self.config_port_write, in_=self.config_port_read,
        )
        state.pm_handle = hlp.ioport_create(
            PM_BLOCK_SIZE, description="PIIX4 ACPI PM I/O", out=self.pm_write, in_=self.pm_read
        )
        self.ide.attach_region(BMIBA_SLOT, hlp.ioport_create(
            BMIBA_PORTS, description="PIIX3 IDE bus master", out=self.bus_master_write, in_=self.bus_master_read
        ))
        self.vga.attach_region(VRAM_SLOT, hlp.mmio_create(
            VRAM_SIZE, description="VGA BAR0 framebuffer", read=self.vram_read, write=self.dropped_write,
            flags=BAR_REGION_FLAGS,
        ))
        self.vga.attach_region(VGA_MMIO_SLOT, hlp.mmio_create(
            VGA_MMIO_SIZE, description="VGA BAR2 MMIO (EDID)", read=self.vga_mmio_read, write=self.dropped_write,
            flags=BAR_REGION_FLAGS,
        ))
        self.reset_registers()

    def reset_registers(self) -> None:
        """Everything's reset values; the regions must already be unmapped."""
        state = self.state
        for function in self.functions:
            function.reset_config()
        state.host_bridge.config_address = 0
        state.reset_control = 0
        state.pm1_status = state.pm1_enable = state.pm1_control = 0
        state.timer_carries_cleared = self.timer_ticks() >> PM_TIMER_CARRY_SHIFT
        state.sci_level = 0
        for channel in state.bus_master:
            channel.command = channel.status = channel.prd = 0

    def reset(self) -> None:
        """VM reset: every region unmapped, every register at its reset value."""
        for function in self.functions:
            function.unmap_all(self.mapper)
        self.map_pm_block(None)
        self.reset_registers()

    # -- 0xCF8-0xCFF -------------------------------------------------------------------------
    def config_port_write(self, offset: int, value: int, size: int) -> int:
        if offset >= CONFIG_DATA:
            return self.mechanism.data_write(offset - CONFIG_DATA, value, size)
        if offset == RESET_CONTROL and size == 1:
            return self.write_reset_control(value)
        return self.mechanism.address_write(offset, value, size)

    def write_reset_control(self, value: int) -> int:
        """Returns VINF_EM_RESET when RCPU is written as 1."""
        self.state.reset_control = value & RC_SYSTEM_RESET
        return VINF_EM_RESET if value & RC_RESET_CPU else VINF_SUCCESS

    def config_write(self, function: PciFunction, register: int, value: int, size: int) -> int:
        """A configuration write with its side effects: BAR mappings, the PM block, the SMRAM lock."""
        ring3_config_write(function, register, value, size, self.mapper)
        if function is self.pm and (covers(register, size, PMBA, 4) or covers(register, size, PMREGMISC, 1)):
            self.update_pm_decoding()
        elif function is self.host and covers(register, size, SMRAM, 1):
            self.apply_smram_lock()
        return VINF_SUCCESS

    def apply_smram_lock(self) -> None:
        """D_LCK set: D_OPEN clears and only D_CLS stays writable until reset."""
        space = self.host.space
        if space.config[SMRAM] & SMRAM_D_LCK:
            space.config[SMRAM] &= ~SMRAM_D_OPEN
            space.write_mask[SMRAM] = SMRAM_D_CLS

    # -- the ACPI PM block ---------------------------------------------------------------------
    def update_pm_decoding(self) -> None:
        base = self.pm.read(PMBA, 4) & PMBA_ADDRESS
        enabled = self.pm.read(PMREGMISC, 1) & PMIOSE
        self.map_pm_block(base if enabled and base else None)

    def map_pm_block(self, base: int | None) -> None:
        """Move the PM block to *base* (None: unmapped).  A base IOM refuses leaves it unmapped."""
        state = self.state
        if state.pm_mapped and base != state.pm_base:
            self.hlp.ioport_unmap(state.pm_handle)
            state.pm_mapped = 0
        if base is None or state.pm_mapped:
            return
        try:
            self.hlp.ioport_map(state.pm_handle, base)
        except VBoxError:
            return
        state.pm_mapped = 1
        state.pm_base = base

    def pm_write(self, offset: int, value: int, size: int) -> int:
        """Returns VINF_EM_OFF or VINF_EM_SUSPEND for a sleep request (SLEEP_STATUSES)."""
        sleep_type = self.write_pm_registers(offset, value, size)
        if sleep_type is None:
            return VINF_SUCCESS
        return SLEEP_STATUSES.get(sleep_type, VINF_SUCCESS)


class PiixRing0(PiixCore):
    """Ring-0 half: config reads and plain writes, the PM block, the bus master, the VGA BARs."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: PiixState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns, ring0_config_write)
        hlp.ioport_set_up_context(state.config_handle, out=self.config_port_write, in_=self.config_port_read)
        hlp.ioport_set_up_context(state.pm_handle, out=self.pm_write, in_=self.pm_read)
        hlp.ioport_set_up_context(
            state.ide.bars[BMIBA_SLOT].handle, out=self.bus_master_write, in_=self.bus_master_read
        )
        hlp.mmio_set_up_context(state.vga.bars[VRAM_SLOT].handle, read=self.vram_read, write=self.dropped_write)
        hlp.mmio_set_up_context(
            state.vga.bars[VGA_MMIO_SLOT].handle, read=self.vga_mmio_read, write=self.dropped_write
        )

    def config_port_write(self, offset: int, value: int, size: int) -> int:
        """Returns VINF_IOM_R3_IOPORT_WRITE for 0xCF9 and for config writes with side effects."""
        if offset >= CONFIG_DATA:
            return self.mechanism.data_write(offset - CONFIG_DATA, value, size)
        if offset == RESET_CONTROL and size == 1:
            return VINF_IOM_R3_IOPORT_WRITE
        return self.mechanism.address_write(offset, value, size)

    def pm_write(self, offset: int, value: int, size: int) -> int:
        """Returns VINF_IOM_R3_IOPORT_WRITE for a write that sets SLP_EN."""
        if self.sleep_requested(offset, value, size):
            return VINF_IOM_R3_IOPORT_WRITE
        self.write_pm_registers(offset, value, size)
        return VINF_SUCCESS


REGISTRATION = DeviceRegistration(
    name="piix",
    description="i440FX/PIIX3 PCI bus: config mechanism #1, host bridge, ISA, IDE, ACPI PM and VGA functions",
    device_class=PDM_DEVREG_CLASS_BUS_PCI,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=PiixState,
    ring3=PiixRing3,
    ring0=PiixRing0,
)
