"""The MC146818 RTC and CMOS alone: both halves driven through fake helpers sharing one virtual clock."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devices import rtc
from devices.rtc import (
    A_UIP,
    B_24_HOUR,
    B_AIE,
    B_DM_BINARY,
    B_PIE,
    B_SET,
    B_SQWE,
    B_UIE,
    C_AF,
    C_IRQF,
    C_PF,
    C_UF,
    DEFAULT_START_TIME,
    NS_PER_SECOND,
    REG_A,
    REG_B,
    REG_C,
    REG_D,
    RtcRing0,
    RtcRing3,
    RtcState,
    civil_from_days,
    days_from_civil,
)
from shared.devapi import (
    PDM_DEVREG_CLASS_RTC,
    PDM_DEVREG_FLAGS_DEFAULT_BITS,
    PDM_DEVREG_FLAGS_NEW_STYLE,
    PDM_DEVREG_FLAGS_R0,
    ConfigError,
)
from shared.status import VERR_IOM_IOPORT_UNUSED, VINF_IOM_R3_IOPORT_WRITE, VINF_SUCCESS
from shared.trace import IN, OUT, read_trace

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRACE = REPO.parent / "shared" / "traces" / "seabios-fwcfg-pio.trace.gz"
HANDLE = 5
MIB = 1024 * 1024
GIB = 1024 * MIB
INDEX, DATA = 0x70, 0x71


class Clock:
    """The VM's virtual clock, moved by hand."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ns: int) -> None:
        self.now_ns += ns


@dataclass
class FakeRing3Helpers:
    clock: Clock
    instance: int = 0
    regions: list[tuple[int, int, str, dict[str, Any]]] = field(default_factory=list)

    def ioport_create_and_map(self, port: int, count: int, *, description: str, **callbacks: Any) -> int:
        self.regions.append((port, count, description, callbacks))
        return HANDLE

    def virtual_time_ns(self) -> int:
        return self.clock()


@dataclass
class FakeRing0Helpers:
    clock: Clock
    instance: int = 0
    contexts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def ioport_set_up_context(self, handle: int, **callbacks: Any) -> None:
        self.contexts.append((handle, callbacks))

    def virtual_time_ns(self) -> int:
        return self.clock()


def config(**overrides: Any) -> dict[str, Any]:
    values = {key.name: key.default for key in rtc.REGISTRATION.config_keys}
    values.update(overrides)
    return values


@dataclass
class Rtc:
    state: RtcState
    ring3: RtcRing3
    ring0: RtcRing0
    hlp3: FakeRing3Helpers
    hlp0: FakeRing0Helpers
    clock: Clock

    def out(self, port: int, value: int, size: int = 1) -> int:
        """An OUT as IOM does it: ring-0 first, ring-3 when ring-0 asks."""
        rc = self.ring0.io_out(port - INDEX, value, size)
        if rc == VINF_IOM_R3_IOPORT_WRITE:
            rc = self.ring3.io_out(port - INDEX, value, size)
        return rc

    def inb(self, port: int, size: int = 1) -> int:
        rc, value = self.ring0.io_in(port - INDEX, size)
        if rc == VERR_IOM_IOPORT_UNUSED:
            return (1 << (8 * size)) - 1
        assert rc == VINF_SUCCESS
        return value

    def read(self, index: int) -> int:
        assert self.out(INDEX, index) == VINF_SUCCESS
        return self.inb(DATA)

    def write(self, index: int, value: int) -> None:
        assert self.out(INDEX, index) == VINF_SUCCESS
        assert self.out(DATA, value) == VINF_SUCCESS


def make_rtc(clock: Clock | None = None, **overrides: Any) -> Rtc:
    clock = clock or Clock()
    state = RtcState()
    hlp3 = FakeRing3Helpers(clock)
    ring3 = RtcRing3(hlp3, state, config(**overrides))
    hlp0 = FakeRing0Helpers(clock)
    ring0 = RtcRing0(hlp0, state, config(**overrides))
    return Rtc(state, ring3, ring0, hlp3, hlp0, clock)


@pytest.fixture
def dev() -> Rtc:
    return make_rtc()


def unix(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    return int(moment.timestamp())


# --- registration and set-up ---------------------------------------------------------------
def test_registration_is_an_rtc_with_a_ring0_half() -> None:
    reg = rtc.REGISTRATION
    assert reg.name == "mc146818"
    assert reg.device_class == PDM_DEVREG_CLASS_RTC
    assert reg.flags == PDM_DEVREG_FLAGS_DEFAULT_BITS | PDM_DEVREG_FLAGS_R0 | PDM_DEVREG_FLAGS_NEW_STYLE
    assert reg.ring0 is RtcRing0 and reg.ring3 is RtcRing3


def test_ring3_maps_ports_0x70_and_0x71_and_ring0_attaches_to_the_same_handle(dev: Rtc) -> None:
    (port, count, _description, callbacks), = dev.hlp3.regions
    assert (port, count) == (0x70, 2)
    assert set(callbacks) == {"out", "in_"}
    assert dev.state.io_handle == HANDLE
    (handle, r0_callbacks), = dev.hlp0.contexts
    assert handle == HANDLE and set(r0_callbacks) == {"out", "in_"}


def test_start_time_must_be_a_unix_time_up_to_year_9999() -> None:
    key = rtc.REGISTRATION.config_key("StartTime")
    assert key is not None
    assert key.check(0) == 0
    with pytest.raises(ConfigError):
        key.check(-1)
    with pytest.raises(ConfigError):
        key.check(unix(9999, 12, 31, 23, 59, 59) + 1)


def test_default_start_time_is_2026_11_01_at_02_01_03_utc() -> None:
    assert DEFAULT_START_TIME == unix(2026, 11, 1, 2, 1, 3)


# --- ports 0x70 and 0x71 ---------------------------------------------------------------------
def test_index_port_reads_as_all_ones(dev: Rtc) -> None:
    dev.out(INDEX, 0x0F)
    assert dev.ring0.io_in(0, 1) == (VERR_IOM_IOPORT_UNUSED, 0)
    assert dev.ring3.io_in(0, 1) == (VERR_IOM_IOPORT_UNUSED, 0)


def test_index_bit7_is_the_nmi_mask_kept_apart_from_the_index(dev: Rtc) -> None:
    dev.write(0x40, 0x5A)
    assert dev.out(INDEX, 0x80 | 0x40) == VINF_SUCCESS
    assert dev.state.nmi_masked == 1
    assert dev.state.index == 0x40
    assert dev.inb(DATA) == 0x5A
    dev.out(INDEX, 0x40)
    assert dev.state.nmi_masked == 0


def test_nvram_bytes_keep_what_is_written_in_ring0(dev: Rtc) -> None:
    for index in (0x0E, 0x0F, 0x40, 0x7F):
        assert dev.ring0.io_out(0, index, 1) == VINF_SUCCESS
        assert dev.ring0.io_out(1, index ^ 0xA5, 1) == VINF_SUCCESS
    for index in (0x0E, 0x0F, 0x40, 0x7F):
        assert dev.read(index) == index ^ 0xA5


def test_word_write_at_0x70_writes_the_index_then_the_data(dev: Rtc) -> None:
    assert dev.out(INDEX, 0xC3 << 8 | 0x41, 2) == VINF_SUCCESS
    assert dev.read(0x41) == 0xC3


def test_word_read_at_0x70_gives_all_ones_then_the_data(dev: Rtc) -> None:
    dev.write(0x41, 0x99)
    dev.out(INDEX, 0x41)
    assert dev.inb(INDEX, 2) == 0x99FF
    assert dev.inb(DATA, 2) == 0xFF99  # port 0x72 is not the RTC's


def test_register_d_reports_valid_ram_and_time_and_ignores_writes(dev: Rtc) -> None:
    dev.write(REG_D, 0x00)
    assert dev.read(REG_D) == 0x80


# --- the CMOS contents of QEMU's pc machine ----------------------------------------------------
def test_power_on_bytes_for_128_mib_match_qemu_pc(dev: Rtc) -> None:
    expected = {
        0x0A: 0x26, 0x0B: 0x02, 0x0C: 0x00, 0x0D: 0x80, 0x0F: 0x00,
        0x10: 0x50, 0x12: 0x00, 0x14: 0x07,
        0x15: 0x80, 0x16: 0x02,  # 640 KiB
        0x17: 0xFF, 0x18: 0xFF, 0x30: 0xFF, 0x31: 0xFF,  # 127 MiB, capped at 0xFFFF KiB
        0x32: 0x20, 0x37: 0x20,
        0x34: 0x00, 0x35: 0x07,  # 112 MiB in 64 KiB units
        0x38: 0x30, 0x39: 0x00, 0x3D: 0x12,
        0x5B: 0x00, 0x5C: 0x00, 0x5D: 0x00, 0x5F: 0x00,
    }
    assert {index: dev.read(index) for index in expected} == expected


def test_small_memory_is_counted_in_kib_above_1_mib_and_none_above_16_mib() -> None:
    dev = make_rtc(MemorySize=8 * MIB)
    assert (dev.read(0x17), dev.read(0x18)) == (0x00, 0x1C)  # 7168 KiB
    assert (dev.read(0x30), dev.read(0x31)) == (0x00, 0x1C)
    assert (dev.read(0x34), dev.read(0x35)) == (0x00, 0x00)


def test_4_gib_keeps_3_gib_below_4_gib_and_the_rest_above() -> None:
    dev = make_rtc(MemorySize=4 * GIB)
    assert (dev.read(0x34), dev.read(0x35)) == (0x00, 0xBF)  # (3 GiB - 16 MiB) / 64 KiB
    assert [dev.read(0x5B + n) for n in range(3)] == [0x00, 0x40, 0x00]  # 1 GiB / 64 KiB


def test_memory_just_below_3_5_gib_stays_below_4_gib() -> None:
    dev = make_rtc(MemorySize=0xE000_0000 - 64 * 1024)
    assert [dev.read(0x5B + n) for n in range(3)] == [0, 0, 0]
    assert (dev.read(0x34), dev.read(0x35)) == (0xFF, 0xDE)  # 57087 units


def test_cpu_count_is_stored_minus_one_at_0x5f() -> None:
    assert make_rtc(CpuCount=4).read(0x5F) == 3


# --- reading the time ------------------------------------------------------------------------------
def test_time_registers_show_the_start_time_in_bcd(dev: Rtc) -> None:
    # 2026-11-01 02:01:03, a Sunday (day of week 1).
    got = [dev.read(index) for index in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)]
    assert got == [0x03, 0x01, 0x02, 0x01, 0x01, 0x11, 0x26, 0x20]


def test_time_follows_the_virtual_clock(dev: Rtc) -> None:
    dev.clock.advance(23 * 3600 * NS_PER_SECOND)  # 2026-11-02 01:01:03, a Monday
    assert [dev.read(index) for index in (0x00, 0x02, 0x04, 0x06, 0x07)] == [0x03, 0x01, 0x01, 0x02, 0x02]


def test_binary_mode_shows_the_same_time_in_binary(dev: Rtc) -> None:
    dev.write(REG_B, B_24_HOUR | B_DM_BINARY)
    assert [dev.read(index) for index in (0x08, 0x09, 0x32)] == [11, 26, 20]


def test_12_hour_mode_shows_pm_in_bit_7_and_midnight_and_noon_as_12() -> None:
    for hour, expected in ((0, 0x12), (2, 0x02), (12, 0x92), (14, 0x82), (23, 0x91)):
        dev = make_rtc(StartTime=unix(2024, 1, 1, hour))
        dev.write(REG_B, 0)
        assert dev.read(0x04) == expected, hour


def test_start_time_0_takes_the_hosts_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtc.time, "time", lambda: unix(2001, 2, 3, 4, 5, 6) + 0.7)
    dev = make_rtc(StartTime=0)
    assert [dev.read(index) for index in (0x00, 0x04, 0x07, 0x08, 0x09)] == [0x06, 0x04, 0x03, 0x02, 0x01]


def test_uip_is_set_only_in_the_last_244_us_of_a_second(dev: Rtc) -> None:
    dev.clock.advance(NS_PER_SECOND - 244_001)
    assert not dev.read(REG_A) & A_UIP
    dev.clock.advance(1)
    assert dev.read(REG_A) == 0x26 | A_UIP
    dev.clock.advance(244_000)
    assert not dev.read(REG_A) & A_UIP


def test_uip_stays_clear_while_set_holds_the_clock(dev: Rtc) -> None:
    dev.write(REG_B, B_SET | B_24_HOUR)
    dev.clock.advance(NS_PER_SECOND - 1000)
    assert not dev.read(REG_A) & A_UIP


# --- setting the time --------------------------------------------------------------------------------
def test_set_freezes_the_time_and_clearing_it_restarts_from_the_written_registers(dev: Rtc) -> None:
    dev.write(REG_B, B_SET | B_24_HOUR)
    dev.clock.advance(10 * NS_PER_SECOND)
    assert dev.read(0x00) == 0x03
    for index, value in ((0x00, 0x58), (0x02, 0x59), (0x04, 0x23), (0x07, 0x31), (0x08, 0x12), (0x09, 0x99),
                         (0x32, 0x19)):
        dev.write(index, value)
    dev.clock.advance(5 * NS_PER_SECOND)
    assert dev.read(0x00) == 0x58  # still held
    dev.write(REG_B, B_24_HOUR)
    dev.clock.advance(3 * NS_PER_SECOND)
    # 1999-12-31 23:59:58 plus 3 s: 2000-01-01 00:00:01, a Saturday.
    assert [dev.read(index) for index in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)] == [
        0x01, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]


def test_clearing_set_keeps_the_divider_phase(dev: Rtc) -> None:
    dev.clock.advance(NS_PER_SECOND // 4)
    dev.write(REG_B, B_SET | B_24_HOUR)
    dev.clock.advance(NS_PER_SECOND // 2)  # the divider is now 3/4 into a second
    dev.write(REG_B, B_24_HOUR)
    dev.clock.advance(NS_PER_SECOND // 4 - 1)
    assert dev.read(0x00) == 0x03
    dev.clock.advance(1)
    assert dev.read(0x00) == 0x04


def test_out_of_range_dates_carry_over_like_mktime(dev: Rtc) -> None:
    dev.write(REG_B, B_SET | B_24_HOUR)
    dev.write(0x08, 0x02)
    dev.write(0x07, 0x30)  # 2026-02-30 is 2026-03-02
    dev.write(REG_B, B_24_HOUR)
    assert (dev.read(0x08), dev.read(0x07)) == (0x03, 0x02)


def test_writing_a_time_register_while_running_moves_the_clock_and_keeps_the_phase(dev: Rtc) -> None:
    dev.clock.advance(NS_PER_SECOND // 2)
    dev.write(0x02, 0x30)
    assert [dev.read(index) for index in (0x00, 0x02, 0x04)] == [0x03, 0x30, 0x02]
    dev.clock.advance(NS_PER_SECOND // 2)
    assert dev.read(0x00) == 0x04


def test_day_of_week_is_computed_from_the_date_not_stored(dev: Rtc) -> None:
    dev.write(0x06, 0x05)
    assert dev.read(0x06) == 0x01


def test_divider_reset_stops_the_clock_and_the_first_update_comes_half_a_second_after(dev: Rtc) -> None:
    dev.write(REG_A, 0x66)  # DV = 110: divider chain in reset
    dev.clock.advance(7 * NS_PER_SECOND)
    assert dev.read(0x00) == 0x03
    dev.write(REG_A, 0x26)
    dev.clock.advance(NS_PER_SECOND // 2 - 1)
    assert dev.read(0x00) == 0x03
    dev.clock.advance(1)
    assert dev.read(0x00) == 0x04


# --- register C and IRQ8 -------------------------------------------------------------------------
def test_uf_is_set_by_a_second_boundary_and_a_read_of_c_clears_it(dev: Rtc) -> None:
    assert dev.read(REG_C) == 0
    dev.clock.advance(NS_PER_SECOND)
    assert dev.read(REG_C) == C_UF  # UIE off: no IRQF
    assert dev.read(REG_C) == 0


def test_no_update_ends_while_set_holds_the_clock(dev: Rtc) -> None:
    dev.write(REG_B, B_SET | B_24_HOUR)
    dev.clock.advance(5 * NS_PER_SECOND)
    assert not dev.read(REG_C) & C_UF


def test_set_clears_uie(dev: Rtc) -> None:
    dev.write(REG_B, B_SET | B_UIE | B_24_HOUR)
    assert dev.read(REG_B) == B_SET | B_24_HOUR


def test_an_enabled_flag_sets_irqf_and_raises_irq8_until_c_is_read(dev: Rtc) -> None:
    dev.write(REG_B, B_UIE | B_24_HOUR)
    dev.clock.advance(NS_PER_SECOND)
    dev.out(INDEX, REG_C)
    assert dev.inb(DATA) == C_IRQF | C_UF
    assert dev.state.irq_level == 0
    dev.clock.advance(NS_PER_SECOND)
    dev.write(REG_B, B_UIE | B_24_HOUR)  # any look folds the second that passed
    assert dev.state.irq_level == 1


def test_alarm_sets_af_when_the_time_reaches_it(dev: Rtc) -> None:
    dev.write(0x05, 0x02)
    dev.write(0x03, 0x01)
    dev.write(0x01, 0x05)  # 02:01:05; the clock reads 02:01:03
    dev.read(REG_C)
    dev.clock.advance(NS_PER_SECOND)
    assert dev.read(REG_C) == C_UF
    dev.clock.advance(NS_PER_SECOND)
    assert dev.read(REG_C) == C_UF | C_AF


def test_alarm_bytes_with_both_top_bits_set_match_anything(dev: Rtc) -> None:
    dev.write(REG_B, B_AIE | B_24_HOUR)
    for index in (0x01, 0x03, 0x05):
        dev.write(index, 0xC0)
    dev.read(REG_C)
    dev.clock.advance(NS_PER_SECOND)
    assert dev.read(REG_C) == C_IRQF | C_AF | C_UF


def test_alarm_passed_during_a_long_gap_is_still_flagged(dev: Rtc) -> None:
    dev.write(0x05, 0x01)
    dev.write(0x03, 0x00)
    dev.write(0x01, 0x00)  # 01:00:00, tomorrow for a clock at 02:01:03
    dev.read(REG_C)
    dev.clock.advance(22 * 3600 * NS_PER_SECOND)
    assert not dev.read(REG_C) & C_AF
    dev.clock.advance(3600 * NS_PER_SECOND)
    assert dev.read(REG_C) & C_AF


def test_an_alarm_hour_out_of_range_never_matches(dev: Rtc) -> None:
    dev.write(0x05, 0x25)
    dev.write(0x03, 0xC0)
    dev.write(0x01, 0xC0)
    dev.read(REG_C)
    dev.clock.advance(2 * 86_400 * NS_PER_SECOND)
    assert dev.read(REG_C) == C_UF


def test_pf_is_set_only_while_pie_is_enabled_as_qemu_does(dev: Rtc) -> None:
    dev.clock.advance(NS_PER_SECOND // 10)
    assert dev.read(REG_C) == 0  # 1024 Hz for 100 ms, PIE off
    dev.write(REG_B, B_PIE | B_24_HOUR)
    dev.clock.advance(NS_PER_SECOND // 1000)  # longer than 1/1024 s
    assert dev.read(REG_C) == C_IRQF | C_PF


def test_no_periodic_flag_with_rate_0(dev: Rtc) -> None:
    dev.write(REG_A, 0x20)
    dev.write(REG_B, B_PIE | B_24_HOUR)
    dev.clock.advance(NS_PER_SECOND // 2)
    assert dev.read(REG_C) == 0


def test_reset_clears_the_interrupt_enables_and_flags_and_keeps_time_and_nvram(dev: Rtc) -> None:
    dev.write(0x40, 0x77)
    dev.write(REG_B, B_PIE | B_AIE | B_UIE | B_SQWE | B_24_HOUR | B_DM_BINARY)
    dev.clock.advance(NS_PER_SECOND)
    dev.write(REG_A, 0x26)  # fold: flags and IRQ8 set
    assert dev.state.irq_level == 1
    dev.ring3.reset()
    assert dev.state.irq_level == 0
    assert dev.read(REG_B) == B_24_HOUR | B_DM_BINARY
    assert dev.read(REG_C) == 0
    assert dev.read(0x40) == 0x77
    assert dev.read(0x00) == 4  # binary: 02:01:04


# --- the ring-0 / ring-3 split ----------------------------------------------------------------
@pytest.mark.parametrize("index", [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x32])
def test_ring0_sends_writes_that_retime_the_clock_to_ring3_unchanged(dev: Rtc, index: int) -> None:
    dev.ring0.io_out(0, index, 1)
    before = bytes(dev.state)
    assert dev.ring0.io_out(1, 0x00, 1) == VINF_IOM_R3_IOPORT_WRITE
    assert bytes(dev.state) == before


def test_ring0_defers_a_word_write_whose_data_retimes_without_taking_the_index(dev: Rtc) -> None:
    dev.ring0.io_out(0, 0x40, 1)
    assert dev.ring0.io_out(0, 0x06 << 8 | REG_A, 2) == VINF_IOM_R3_IOPORT_WRITE
    assert dev.state.index == 0x40


def test_ring0_reads_every_register_and_clears_c(dev: Rtc) -> None:
    dev.clock.advance(NS_PER_SECOND)
    for index in (0x00, REG_A, REG_B, REG_D, 0x32, 0x40):
        dev.ring0.io_out(0, index, 1)
        assert dev.ring0.io_in(1, 1)[0] == VINF_SUCCESS
    dev.ring0.io_out(0, REG_C, 1)
    assert dev.ring0.io_in(1, 1) == (VINF_SUCCESS, C_UF)
    assert dev.ring0.io_in(1, 1) == (VINF_SUCCESS, 0)


def test_ring0_constructor_writes_no_state() -> None:
    state = RtcState()
    RtcRing0(FakeRing0Helpers(Clock()), state, config())
    assert bytes(state) == bytes(RtcState())


# --- the calendar ---------------------------------------------------------------------------------
def test_days_from_civil_and_back_agree_with_datetime() -> None:
    epoch = datetime.date(1970, 1, 1)
    first, last = (datetime.date(1, 1, 1) - epoch).days, (datetime.date(9999, 12, 31) - epoch).days
    for days in [*range(first, last, 997), last]:
        date = epoch + datetime.timedelta(days=days)
        assert days_from_civil(date.year, date.month, date.day) == days
        assert civil_from_days(days) == (date.year, date.month, date.day)


def test_days_from_civil_carries_months_past_december() -> None:
    assert days_from_civil(2025, 13, 1) == days_from_civil(2026, 1, 1)
    assert days_from_civil(2026, 0, 31) == days_from_civil(2025, 12, 31)


# --- the sample trace -------------------------------------------------------------------------------
@pytest.mark.skipif(not SAMPLE_TRACE.exists(), reason="the sample trace is not beside the repository")
def test_sample_trace_reads_of_0x70_and_0x71_match_qemu() -> None:
    """Every read matches; with the virtual clock held at power-on even the time registers do.

    The time-dependent reads (time registers, A's UIP, C's flags) are counted apart, to show
    that the default StartTime agrees with what the trace's clock showed.
    """
    dev = make_rtc()
    index = 0
    deterministic = matched = timed = timed_matched = 0
    mismatches = []
    for op in read_trace(SAMPLE_TRACE):
        if op.address not in (INDEX, DATA):
            continue
        if op.kind == OUT:
            dev.out(op.address, op.value, op.size)
            if op.address == INDEX:
                index = op.value & 0x7F
        elif op.kind == IN and op.expected is not None:
            got = dev.inb(op.address, op.size)
            time_dependent = op.address == DATA and (index <= REG_A or index == REG_C)
            if time_dependent:
                timed += 1
                timed_matched += got == op.expected
            else:
                deterministic += 1
                matched += got == op.expected
                if got != op.expected:
                    mismatches.append((op.line, index, op.expected, got))
    assert mismatches == []
    assert (deterministic, matched) == (401, 401)
    assert (timed, timed_matched) == (10, 10)
