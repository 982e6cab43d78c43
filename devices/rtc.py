"""mc146818: the PC's real-time clock and its 128 bytes of CMOS RAM (Motorola MC146818A).

Port 0x70 selects a CMOS byte (bits 0-6) and holds the chipset's NMI mask (bit 7, kept
apart from the index); port 0x71 reads or writes the selected byte.  Port 0x70 is
write-only: a read returns all ones, as it did on the sample trace's QEMU ``pc`` machine.

The clock is not a ticking counter.  The RTC's time is the VM's virtual clock plus an
offset set from ``StartTime`` at creation: by default 2026-11-01 02:01:03 UTC, which
agrees with every time field the sample trace reads (November, 02:01:03, century 20),
so runs are reproducible; 0 takes the host's time instead.  Every read of a time
register (0x00, 0x02, 0x04, 0x06-0x09, and the century at 0x32) computes the date and
time of that moment, in BCD or binary and in 12- or 24-hour form as register B asks.
While the clock is stopped (B.SET, or the divider chain held in reset by register A) the
time registers are plain bytes: stopping the clock stores the time in them, and starting
it again takes the time from them, normalising out-of-range values as C's ``mktime``
does.  Writes to the day of the week are not kept: it is always computed from the date.
Changing the data mode or the hour format shows the running time in the new format at
once (the chip itself would leave the stored registers as they were).

Status register C is kept the same lazy way: its flags are worked out from the virtual
time between one look and the next (a read of C, or a write that changes what ticks).
UF is set at every second boundary while the clock runs and AF when the new time matches
the alarm; PF only while PIE is set, as QEMU does (the chip sets PF whether or not PIE
is).  No timer runs, so IRQ8 (``irq_level``) changes only when the guest touches the
device.  Register A's update-in-progress bit is set during the last 244 us of each
second while the clock runs.  DSE (daylight saving) and SQWE are stored and do nothing.

The other bytes are what QEMU 7.2 puts in a ``pc`` machine's CMOS: the memory sizes for
``MemorySize``, the CPU count, one 2.88 MB floppy drive, the boot order hard disk,
floppy, CD-ROM, and no hard disks.

Time-dependent reads (a replay cannot match them exactly): registers 0x00, 0x02, 0x04 and
0x06-0x09, register A's UIP bit and register C's UF, AF and PF flags.

Split: ring-0 does index writes, every read (the virtual clock is readable there, and a
read of C clears it in place) and NVRAM writes.  Writes to the time, alarm, A and B
registers go to ring-3 (VINF_IOM_R3_IOPORT_WRITE): they re-time the clock, which in a VMM
with timers means arming the RTC's timers, a ring-3 job as in the HPET.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.devapi import (
    PDM_DEVREG_CLASS_RTC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigKey,
    DeviceRegistration,
    Ring0DeviceHelpers,
    Ring3DeviceHelpers,
)
from shared.status import VERR_IOM_IOPORT_UNUSED, VINF_IOM_R3_IOPORT_WRITE, VINF_SUCCESS

IO_BASE = 0x70
INDEX_PORT = 0  # offset of 0x70: write the index and the NMI mask
DATA_PORT = 1  # offset of 0x71: the selected byte
PORT_COUNT = 2
INDEX_MASK = 0x7F  # 128 bytes
NMI_MASK = 0x80  # port 0x70 bit 7: NMIs are masked while it is set
CMOS_SIZE = 128

# --- The clock's registers.
SECONDS = 0x00
SECONDS_ALARM = 0x01
MINUTES = 0x02
MINUTES_ALARM = 0x03
HOURS = 0x04
HOURS_ALARM = 0x05
DAY_OF_WEEK = 0x06  # 1-7, Sunday is 1
DAY_OF_MONTH = 0x07
MONTH = 0x08
YEAR = 0x09  # the year within the century
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C  # read-only; a read clears it
REG_D = 0x0D  # read-only

# --- Register A.
A_UIP = 0x80  # update in progress: the time registers are about to change; read-only
A_DIVIDER = 0x70  # DV2-DV0: the time base; 0-2 run, 6-7 hold the divider chain in reset
A_DIVIDER_SHIFT = 4
A_RATE = 0x0F  # RS3-RS0: the periodic interrupt rate, 0 = none
A_WRITABLE = 0x7F
DIVIDER_32KHZ = 0x20  # DV = 010, the PC's 32.768 kHz crystal
LAST_RUNNING_DIVIDER = 2  # DV above 2 stops the clock (6 and 7 are the reset the datasheet names)
UIP_NS = 244_000  # UIP is set this long before each second boundary

# --- Register B.
B_SET = 0x80  # stop the clock so software can set it; also clears UIE
B_PIE = 0x40  # periodic interrupt enable
B_AIE = 0x20  # alarm interrupt enable
B_UIE = 0x10  # update-ended interrupt enable
B_SQWE = 0x08  # square-wave output: stored only
B_DM_BINARY = 0x04  # data mode: binary (1) or BCD (0)
B_24_HOUR = 0x02  # 24-hour (1) or 12-hour (0) hours
B_DSE = 0x01  # daylight saving: stored only
B_CLEARED_BY_RESET = B_PIE | B_AIE | B_UIE | B_SQWE

# --- Register C: what happened since it was last read.
C_IRQF = 0x80  # one of the flags below is set while its enable bit in B is
C_PF = 0x40  # a periodic interval ended
C_AF = 0x20  # an update reached the alarm time
C_UF = 0x10  # an update cycle ended
C_FLAGS = C_PF | C_AF | C_UF

D_VRT = 0x80  # valid RAM and time: the battery is good

# 12-hour hours: bit 7 is PM.  An alarm byte with both top bits set matches any value.
HOUR_PM = 0x80
ALARM_ANY = 0xC0

# --- Bytes the firmware reads, at the places QEMU's pc machine puts them.
SHUTDOWN_STATUS = 0x0F  # why the CPU was last reset: 0 for a normal power-on
FLOPPY_TYPES = 0x10  # drive 0 in bits 4-7, drive 1 in bits 0-3
HARD_DISK_TYPES = 0x12
EQUIPMENT = 0x14
BASE_MEMORY = 0x15  # 2 bytes: KiB below 1 MiB
EXTENDED_MEMORY = 0x17  # 2 bytes: KiB above 1 MiB, at most 0xFFFF
EXTENDED_MEMORY_POST = 0x30  # the same, as POST found it
CENTURY = 0x32  # the century of the date, in the clock's data mode
MEMORY_ABOVE_16M = 0x34  # 2 bytes: 64 KiB units above 16 MiB, at most 0xFFFF
PS2_CENTURY = 0x37  # the century again where IBM PS/2 machines keep it: a plain byte here
BOOT_DEVICE_3 = 0x38  # bits 4-7: the third boot device; bit 0 set: skip the floppy signature check
HARD_DISK_TRANSLATION = 0x39
BOOT_DEVICES_1_2 = 0x3D  # bits 0-3: first boot device, bits 4-7: second
MEMORY_ABOVE_4G = 0x5B  # 3 bytes: 64 KiB units above 4 GiB
CPU_COUNT_MINUS_1 = 0x5F

POWER_ON_A = DIVIDER_32KHZ | 0x06  # 32.768 kHz, 1024 Hz periodic rate
POWER_ON_B = B_24_HOUR  # BCD, 24-hour, nothing enabled
FLOPPY_2880K = 5  # CMOS drive type of a 2.88 MB drive: QEMU's drive with no disk in it
EQUIPMENT_FLOPPY = 0x01  # at least one floppy drive
EQUIPMENT_FPU = 0x02
EQUIPMENT_PS2_MOUSE = 0x04
BOOT_FLOPPY = 1
BOOT_HARD_DISK = 2
BOOT_CDROM = 3
BASE_MEMORY_KIB = 640

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
# QEMU's pc machine leaves 4 GiB minus this much as a PCI hole; with 3.5 GiB or more
# of memory it keeps only 3 GiB below 4 GiB (gigabyte alignment) and moves the rest above.
PCI_HOLE_START = 0xE000_0000
LOW_MEMORY_ALIGNED = 0xC000_0000

NS_PER_SECOND = 1_000_000_000
SECONDS_PER_DAY = 86_400
CRYSTAL_HZ = 32_768
UNIX_EPOCH_WEEKDAY = 4  # 1970-01-01 was a Thursday (Sunday = 0)
DEFAULT_START_TIME = 1_793_498_463  # 2026-11-01 02:01:03 UTC, a Sunday
LATEST_START_TIME = 253_402_300_799  # 9999-12-31 23:59:59 UTC

# The registers a running clock computes; stopped, they are plain CMOS bytes.
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY)
# Writes that re-time the clock or the alarm: ring-3's.
RETIMING_REGISTERS = frozenset((*TIME_REGISTERS, SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM, REG_A, REG_B))
ALL_ONES = 0xFF


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date.  Months and days out of range carry over."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    # Count from 1 March so that the leap day ends a year.
    shifted_year = year - 1 if month <= 2 else year
    era, year_of_era = divmod(shifted_year, 400)
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the date *days* after 1970-01-01; the inverse of :func:`days_from_civil`."""
    era, day_of_era = divmod(days + 719_468, 146_097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    month = month_from_march + 3 if month_from_march < 10 else month_from_march - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def periodic_ticks(rate: int) -> int:
    """The periodic interval of rate select *rate*, in 32.768 kHz ticks; 0 for none."""
    if rate == 0:
        return 0
    if rate <= 2:
        return 1 << (rate + 6)  # rates 1 and 2 are 256 Hz and 128 Hz with a 32.768 kHz base
    return 1 << (rate - 1)


def memory_split(memory_size: int) -> tuple[int, int]:
    """(bytes below 4 GiB, bytes above 4 GiB) of QEMU's pc machine with *memory_size* of RAM."""
    below = memory_size
    if memory_size >= PCI_HOLE_START:
        below = LOW_MEMORY_ALIGNED
    return below, memory_size - below


class RtcState(ctypes.Structure):
    _fields_ = [
        ("io_handle", ctypes.c_uint16),
        ("index", ctypes.c_uint8),  # the selected byte, 0-127
        ("nmi_masked", ctypes.c_uint8),  # port 0x70 bit 7 as last written
        ("irq_level", ctypes.c_uint8),  # IRQ8: register C's IRQF
        # While the clock runs, its time in ns since 1970 is
        # clock_seconds * 1e9 + virtual ns + clock_phase_ns (split so that years 0-25599 fit).
        ("clock_seconds", ctypes.c_int64),
        ("clock_phase_ns", ctypes.c_int64),
        ("flags_checked_ns", ctypes.c_int64),  # virtual time up to which C's flags are worked out
        ("cmos", ctypes.c_uint8 * CMOS_SIZE),
    ]


def _split_access(offset: int, size: int) -> list[int]:
    """The offsets in this 2-port range that a *size*-byte access at *offset* covers."""
    return [byte for byte in range(offset, offset + size) if byte < PORT_COUNT]


class RtcCore:
    """The registers, the same in both tiers.  *clock* is the VM's virtual clock in ns."""

    def __init__(self, state: RtcState, clock: Callable[[], int]) -> None:
        self.state = state
        self.clock = clock

    # -- accesses as IOM hands them over ------------------------------------------------
    def io_in(self, offset: int, size: int) -> tuple[int, int]:
        """A read: VINF_SUCCESS with the bytes, or VERR_IOM_IOPORT_UNUSED for port 0x70 alone.

        Port 0x70 reads as 0xFF; bytes past 0x71 of a wider access read as 0xFF too.
        """
        if offset == INDEX_PORT and size == 1:
            return VERR_IOM_IOPORT_UNUSED, 0
        value = (1 << (8 * size)) - 1
        for byte in _split_access(offset, size):
            if byte == DATA_PORT:
                shift = 8 * (byte - offset)
                value = value & ~(ALL_ONES << shift) | self.read_register(self.state.index) << shift
        return VINF_SUCCESS, value

    def io_out(self, offset: int, value: int, size: int) -> int:
        """A write: a byte to 0x70, 0x71, or both (a word at 0x70: index, then data).  VINF_SUCCESS."""
        for byte in _split_access(offset, size):
            byte_value = value >> 8 * (byte - offset) & ALL_ONES
            if byte == INDEX_PORT:
                self.write_index(byte_value)
            else:
                self.write_register(self.state.index, byte_value)
        return VINF_SUCCESS

    def write_index(self, value: int) -> None:
        self.state.index = value & INDEX_MASK
        self.state.nmi_masked = 1 if value & NMI_MASK else 0

    # -- CMOS bytes ---------------------------------------------------------------------
    def read_register(self, index: int) -> int:
        cmos = self.state.cmos
        if index == REG_A:
            return int(cmos[REG_A]) | (A_UIP if self.update_in_progress() else 0)
        if index == REG_C:
            return self.read_and_clear_c()
        if index == REG_D:
            return D_VRT
        if index in TIME_REGISTERS and self.running():
            return self.time_registers(self.now_seconds())[index]
        return int(cmos[index])

    def write_register(self, index: int, value: int) -> None:
        if index in TIME_REGISTERS:
            self.write_time_register(index, value)
        elif index == REG_A:
            self.write_control(value & A_WRITABLE, int(self.state.cmos[REG_B]))
        elif index == REG_B:
            # Setting SET clears UIE: no update cycles end while the clock is held.
            self.write_control(int(self.state.cmos[REG_A]), value & ~B_UIE if value & B_SET else value)
        elif index in (REG_C, REG_D):
            return  # read-only
        elif index in (SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM):
            self.update_flags()  # an alarm already passed is judged against the old alarm
            self.state.cmos[index] = value
        else:
            self.state.cmos[index] = value

    # -- the clock ----------------------------------------------------------------------
    def running(self) -> bool:
        """The time advances: the divider chain runs and SET is clear."""
        cmos = self.state.cmos
        return self.runs_with(int(cmos[REG_A]), int(cmos[REG_B]))

    @classmethod
    def runs_with(cls, reg_a: int, reg_b: int) -> bool:
        return not reg_b & B_SET and cls.divider_running(reg_a)

    @staticmethod
    def divider_running(reg_a: int) -> bool:
        return (reg_a & A_DIVIDER) >> A_DIVIDER_SHIFT <= LAST_RUNNING_DIVIDER

    def time_ns(self) -> int:
        """The clock's time in ns since 1970 (meaningful while it runs; its phase even when stopped)."""
        state = self.state
        return int(state.clock_seconds) * NS_PER_SECOND + self.clock() + int(state.clock_phase_ns)

    def now_seconds(self) -> int:
        return self.time_ns() // NS_PER_SECOND

    def set_time(self, seconds: int, phase_ns: int) -> None:
        """Make the clock read *seconds* plus *phase_ns* now."""
        state = self.state
        whole_seconds, part_ns = divmod(self.clock(), NS_PER_SECOND)
        state.clock_seconds = seconds - whole_seconds
        state.clock_phase_ns = phase_ns - part_ns

    def update_in_progress(self) -> bool:
        return self.running() and self.time_ns() % NS_PER_SECOND >= NS_PER_SECOND - UIP_NS

    def encode(self, value: int) -> int:
        """A number as the clock shows it: BCD, or binary with B.DM."""
        if self.state.cmos[REG_B] & B_DM_BINARY:
            return value & ALL_ONES
        return (value // 10 % 10) << 4 | value % 10

    def decode(self, byte: int) -> int:
        if self.state.cmos[REG_B] & B_DM_BINARY:
            return byte
        return (byte >> 4) * 10 + (byte & 0x0F)

    def encode_hours(self, hours: int) -> int:
        if self.state.cmos[REG_B] & B_24_HOUR:
            return self.encode(hours)
        return self.encode(hours % 12 or 12) | (HOUR_PM if hours >= 12 else 0)

    def decode_hours(self, byte: int) -> int:
        if self.state.cmos[REG_B] & B_24_HOUR:
            return self.decode(byte)
        return self.decode(byte & ~HOUR_PM) % 12 + (12 if byte & HOUR_PM else 0)

    def time_registers(self, seconds: int) -> dict[int, int]:
        """The time registers showing *seconds* since 1970, in the current data mode and hour format."""
        days, second_of_day = divmod(seconds, SECONDS_PER_DAY)
        year, month, day = civil_from_days(days)
        hours, minute_seconds = divmod(second_of_day, 3600)
        minutes, secs = divmod(minute_seconds, 60)
        return {
            SECONDS: self.encode(secs),
            MINUTES: self.encode(minutes),
            HOURS: self.encode_hours(hours),
            DAY_OF_WEEK: self.encode((days + UNIX_EPOCH_WEEKDAY) % 7 + 1),
            DAY_OF_MONTH: self.encode(day),
            MONTH: self.encode(month),
            YEAR: self.encode(year % 100),
            CENTURY: self.encode(year // 100),
        }

    def seconds_from_registers(self, registers: Mapping[int, int]) -> int:
        """The time the registers show, as seconds since 1970 (the day of the week is not used)."""
        year = self.decode(registers[CENTURY]) * 100 + self.decode(registers[YEAR])
        days = days_from_civil(year, self.decode(registers[MONTH]), self.decode(registers[DAY_OF_MONTH]))
        return (
            days * SECONDS_PER_DAY
            + self.decode_hours(registers[HOURS]) * 3600
            + self.decode(registers[MINUTES]) * 60
            + self.decode(registers[SECONDS])
        )

    def write_time_register(self, index: int, value: int) -> None:
        """Stopped: a plain byte.  Running: the clock jumps to the time with that field changed."""
        if not self.running():
            self.state.cmos[index] = value
            return
        if index == DAY_OF_WEEK:
            return  # computed from the date
        self.update_flags()
        now_ns = self.time_ns()
        registers = self.time_registers(now_ns // NS_PER_SECOND)
        registers[index] = value
        self.set_time(self.seconds_from_registers(registers), now_ns % NS_PER_SECOND)
        self.state.flags_checked_ns = self.clock()

    def write_control(self, reg_a: int, reg_b: int) -> None:
        """Registers A and B together: the clock stops or starts as SET and the divider say."""
        state = self.state
        cmos = state.cmos
        self.update_flags()
        was_running = self.running()
        divider_was_running = self.divider_running(int(cmos[REG_A]))
        if was_running and not self.runs_with(reg_a, reg_b):
            # Stopping keeps the time in the registers (as encoded before the change).
            registers = self.time_registers(self.now_seconds())
            for index, byte in registers.items():
                cmos[index] = byte
        cmos[REG_A] = reg_a
        cmos[REG_B] = reg_b
        if not was_running and self.running():
            seconds = self.seconds_from_registers({index: int(cmos[index]) for index in TIME_REGISTERS})
            if divider_was_running:
                phase = self.time_ns() % NS_PER_SECOND  # the divider chain kept its phase under SET
            else:
                phase = NS_PER_SECOND // 2  # the first update comes half a second after the reset ends
            self.set_time(seconds, phase)
            state.flags_checked_ns = self.clock()
        self.update_irq()

    # -- status register C --------------------------------------------------------------
    def update_flags(self) -> None:
        """Fold what happened since the last look into register C, then raise IRQF as B enables."""
        state = self.state
        now = self.clock()
        last = int(state.flags_checked_ns)
        state.flags_checked_ns = now
        cmos = state.cmos
        reg_a, reg_b = int(cmos[REG_A]), int(cmos[REG_B])
        if now <= last or not self.divider_running(reg_a):
            return
        base = int(state.clock_seconds) * NS_PER_SECOND + int(state.clock_phase_ns)
        start_ns, end_ns = last + base, now + base
        flags = 0
        period = periodic_ticks(reg_a & A_RATE)
        if reg_b & B_PIE and period:
            start_tick = start_ns * CRYSTAL_HZ // NS_PER_SECOND
            end_tick = end_ns * CRYSTAL_HZ // NS_PER_SECOND
            if end_tick // period > start_tick // period:
                flags |= C_PF
        if not reg_b & B_SET:
            start_s, end_s = start_ns // NS_PER_SECOND, end_ns // NS_PER_SECOND
            if end_s > start_s:
                flags |= C_UF
                alarm = self.next_alarm(start_s)
                if alarm is not None and alarm <= end_s:
                    flags |= C_AF
        cmos[REG_C] |= flags
        self.update_irq()

    def update_irq(self) -> None:
        cmos = self.state.cmos
        pending = cmos[REG_C] & cmos[REG_B] & C_FLAGS
        if pending:
            cmos[REG_C] |= C_IRQF
        self.state.irq_level = 1 if cmos[REG_C] & C_IRQF else 0

    def read_and_clear_c(self) -> int:
        self.update_flags()
        value = int(self.state.cmos[REG_C])
        self.state.cmos[REG_C] = 0
        self.state.irq_level = 0
        return value

    def next_alarm(self, after: int) -> int | None:
        """The first second after *after* (seconds since 1970) that the alarm matches, or None if none can."""
        cmos = self.state.cmos
        choices: list[list[int]] = []
        for index, limit in ((HOURS_ALARM, 24), (MINUTES_ALARM, 60), (SECONDS_ALARM, 60)):
            byte = int(cmos[index])
            if byte & ALARM_ANY == ALARM_ANY:
                choices.append(list(range(limit)))
                continue
            value = self.decode_hours(byte) if index == HOURS_ALARM else self.decode(byte)
            if not 0 <= value < limit:
                return None
            choices.append([value])
        hours, minutes, seconds = choices
        day_start = after - after % SECONDS_PER_DAY
        now = after % SECONDS_PER_DAY
        # Search today, then tomorrow: each list is short and sorted, so this ends quickly.
        for day in (0, SECONDS_PER_DAY):
            for hour in hours:
                if day + hour * 3600 + 3599 <= now:
                    continue
                for minute in minutes:
                    if day + hour * 3600 + minute * 60 + 59 <= now:
                        continue
                    for second in seconds:
                        moment = day + hour * 3600 + minute * 60 + second
                        if moment > now:
                            return day_start + moment
        return None

    # -- power-on contents --------------------------------------------------------------
    def power_on(self, config: Mapping[str, Any]) -> None:
        """Fill the CMOS as QEMU's pc machine does, and start the clock at StartTime."""
        state = self.state
        cmos = state.cmos
        for index in range(CMOS_SIZE):
            cmos[index] = 0
        state.index = 0
        state.nmi_masked = 0
        state.irq_level = 0
        cmos[REG_A] = POWER_ON_A
        cmos[REG_B] = POWER_ON_B
        start_time = config["StartTime"] or int(time.time())
        self.set_time(start_time, 0)
        state.flags_checked_ns = self.clock()
        cmos[PS2_CENTURY] = self.time_registers(start_time)[CENTURY]

        below_4g, above_4g = memory_split(config["MemorySize"])
        self._set_word(BASE_MEMORY, BASE_MEMORY_KIB)
        extended_kib = min(max(below_4g // KIB - 1024, 0), 0xFFFF)
        self._set_word(EXTENDED_MEMORY, extended_kib)
        self._set_word(EXTENDED_MEMORY_POST, extended_kib)
        self._set_word(MEMORY_ABOVE_16M, min(max(below_4g - 16 * MIB, 0) // (64 * KIB), 0xFFFF))
        above_units = min(above_4g // (64 * KIB), 0xFFFFFF)
        for byte in range(3):
            cmos[MEMORY_ABOVE_4G + byte] = above_units >> 8 * byte & ALL_ONES
        cmos[CPU_COUNT_MINUS_1] = config["CpuCount"] - 1

        cmos[FLOPPY_TYPES] = FLOPPY_2880K << 4
        cmos[EQUIPMENT] = EQUIPMENT_FLOPPY | EQUIPMENT_FPU | EQUIPMENT_PS2_MOUSE
        cmos[BOOT_DEVICES_1_2] = BOOT_FLOPPY << 4 | BOOT_HARD_DISK
        cmos[BOOT_DEVICE_3] = BOOT_CDROM << 4  # bit 0 clear: check the floppy's boot signature

    def _set_word(self, index: int, value: int) -> None:
        self.state.cmos[index] = value & ALL_ONES
        self.state.cmos[index + 1] = value >> 8 & ALL_ONES


class RtcRing3(RtcCore):
    """Ring-3 half: creates the ports, fills the CMOS, does every access, owns reset."""

    def __init__(self, hlp: Ring3DeviceHelpers, state: RtcState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns)
        state.io_handle = hlp.ioport_create_and_map(
            IO_BASE, PORT_COUNT, description="RTC/CMOS", out=self.io_out, in_=self.io_in
        )
        self.power_on(config)

    def reset(self) -> None:
        """The chip's RESET pin: interrupt enables and flags clear; the time, A and the NVRAM stay."""
        state = self.state
        state.cmos[REG_B] &= ~B_CLEARED_BY_RESET
        state.cmos[REG_C] = 0
        state.flags_checked_ns = self.clock()
        state.irq_level = 0


class RtcRing0(RtcCore):
    """Ring-0 half: index writes, every read, NVRAM writes; writes that re-time the clock go to ring-3."""

    def __init__(self, hlp: Ring0DeviceHelpers, state: RtcState, config: Mapping[str, Any]) -> None:
        super().__init__(state, hlp.virtual_time_ns)
        hlp.ioport_set_up_context(state.io_handle, out=self.io_out, in_=self.io_in)

    def io_out(self, offset: int, value: int, size: int) -> int:
        """As in ring-3, or VINF_IOM_R3_IOPORT_WRITE, before any change, for a write that re-times the clock."""
        index = int(self.state.index)
        for byte in _split_access(offset, size):
            byte_value = value >> 8 * (byte - offset) & ALL_ONES
            if byte == INDEX_PORT:
                index = byte_value & INDEX_MASK
            elif index in RETIMING_REGISTERS:
                return VINF_IOM_R3_IOPORT_WRITE
        return super().io_out(offset, value, size)


REGISTRATION = DeviceRegistration(
    name="mc146818",
    description="MC146818A real-time clock and 128 bytes of CMOS RAM at ports 0x70-0x71, filled as QEMU's pc",
    device_class=PDM_DEVREG_CLASS_RTC,
    flags=PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE,
    max_instances=1,
    shared_state=RtcState,
    ring3=RtcRing3,
    ring0=RtcRing0,
    config_keys=(
        ConfigKey(
            "StartTime",
            int,
            DEFAULT_START_TIME,
            "the clock's time at VM creation, in seconds since 1970 (UTC); 0 takes the host's time then",
            minimum=0,
            maximum=LATEST_START_TIME,
        ),
        ConfigKey("MemorySize", int, 128 * MIB, "the guest's RAM in bytes, for the CMOS memory sizes",
                  minimum=MIB, maximum=1 << 40),
        ConfigKey("CpuCount", int, 1, "the number of CPUs, for CMOS byte 0x5F", minimum=1, maximum=256),
    ),
)
