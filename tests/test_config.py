"""The VM configuration (slowpath/config.py): TOML shaped like CFGM, every error at its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from slowpath.config import ConfigFileError, LunConfig, load_config, locate, parse_config

SOURCE = "t.toml"


def config_error(text: str) -> ConfigFileError:
    """Parse *text*, which must fail; the error."""
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, SOURCE)
    error = caught.value
    assert error.source == SOURCE
    assert str(error).startswith(f"{SOURCE}:{error.line}: ")
    return error


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of *text* that contains *fragment* (exactly one must)."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


# -- what a good config gives -------------------------------------------------------------

FULL = """\
# a comment line
Name = "my-vm"
NumCPUs = 4

[Devices.serial]
Priority = 7
[Devices.serial.1]
[Devices.serial.0]               # instance 0, listed after 1
Trusted = true
R0Enabled = false
[Devices.serial.0.Config]
IOBase = 0x3f8
[Devices.serial.0."LUN#0"]
Driver = "memory"
[Devices.serial.0."LUN#0".Config]
Input = "hello # not a comment"

[Devices.debugcon.0]
"""


def test_good_config_gives_the_cfgm_tree() -> None:
    config = parse_config(FULL, SOURCE)
    assert (config.name, config.vcpus, config.source) == ("my-vm", 4, SOURCE)
    assert [device.name for device in config.devices] == ["serial", "debugcon"]
    serial, debugcon = config.devices
    assert serial.priority == 7 and debugcon.priority is None
    assert [instance.number for instance in serial.instances] == [0, 1]
    zero, one = serial.instances
    assert (zero.trusted, zero.r0_enabled, zero.config) == (True, False, {"IOBase": 0x3F8})
    assert zero.luns == {0: LunConfig(driver="memory", config={"Input": "hello # not a comment"})}
    assert (one.trusted, one.r0_enabled, one.config, one.luns) == (False, None, {}, {})


def test_empty_config_is_one_vcpu_and_no_devices() -> None:
    config = parse_config("", SOURCE)
    assert (config.name, config.vcpus, config.devices) == ("ringsim", 1, [])


def test_instances_are_ordered_by_number_not_by_name() -> None:
    config = parse_config("[Devices.serial.10]\n[Devices.serial.2]\n[Devices.serial.0]\n", SOURCE)
    assert [instance.number for instance in config.devices[0].instances] == [0, 2, 10]


def test_built_in_default_config_parses() -> None:
    path = Path(__file__).resolve().parent.parent / "slowpath" / "configs" / "default.toml"
    config = load_config(path)
    assert config.source == str(path)
    names = [device.name for device in config.devices]
    for expected in ("piix", "i8259", "i8254", "mc146818", "i8042", "post", "fw_cfg", "serial", "debugcon",
                     "ioapic", "hpet", "vga", "isa-debug-exit", "testdev", "edu"):
        assert expected in names
    assert len(next(d for d in config.devices if d.name == "debugcon").instances) == 2
    assert config.time_dependent


def test_unreadable_config_file_is_an_error_at_line_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigFileError) as caught:
        load_config(missing)
    assert caught.value.line == 1
    assert str(caught.value).startswith(f"{missing}:1: cannot read config")


# -- TOML syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('Name = "x"\nNumCPUs = \n', 2),
        ('Name = "x"\n\n\nNumCPUs = 1\nNumCPUs = 2\n', 5),
        ('Name = "x"\n[Devices.serial.0\nTrusted = true\n', 2),
        ('Name = "x"\nName2 = "unterminated\n', 2),
    ],
    ids=["missing-value", "duplicate-key", "unclosed-header", "unterminated-string"],
)
def test_toml_syntax_error_is_reported_at_its_line(text: str, line: int) -> None:
    error = config_error(text)
    assert error.line == line
    assert "not valid TOML" in str(error)
    assert "(at line" not in str(error)  # the location is said once, in front


def test_toml_error_at_end_of_document_is_reported_at_the_last_line() -> None:
    text = 'Name = "x"\nNumCPUs = 1\n[Devices.serial.0]\nTrusted = [true,\n'
    error = config_error(text)
    assert error.line in (4, 5)


# -- top level -----------------------------------------------------------------------------


def test_unknown_top_level_key_is_an_error_at_its_line() -> None:
    text = 'Name = "x"\n\nMemory = 4096\n'
    error = config_error(text)
    assert error.line == 3
    assert "'Memory'" in str(error)


@pytest.mark.parametrize("value", ["0", "65", "-1", "true", '"2"', "1.5"])
def test_numcpus_out_of_range_is_an_error_at_its_line(value: str) -> None:
    text = f'Name = "x"\n# two vCPUs would do\nNumCPUs = {value}\n'
    error = config_error(text)
    assert error.line == 3
    assert "NumCPUs must be an integer in 1..64" in str(error)


@pytest.mark.parametrize("value", [1, 64])
def test_numcpus_limits_are_accepted(value: int) -> None:
    assert parse_config(f"NumCPUs = {value}\n", SOURCE).vcpus == value


@pytest.mark.parametrize("value", ['""', "3"])
def test_name_must_be_a_non_empty_string(value: str) -> None:
    error = config_error(f"NumCPUs = 1\nName = {value}\n")
    assert error.line == 2


def test_devices_must_be_tables() -> None:
    assert config_error('Name = "x"\nDevices = 3\n').line == 2
    error = config_error('Name = "x"\n[Devices]\nserial = 3\n')
    assert error.line == 3
    assert "Devices.serial must be a table" in str(error)


# -- devices and instances -------------------------------------------------------------


def test_non_digit_instance_name_is_an_error_at_its_table() -> None:
    text = '[Devices.serial.0]\n[Devices.serial.first]\nTrusted = true\n'
    error = config_error(text)
    assert error.line == 2
    assert "'first' isn't all digits" in str(error)


def test_instance_name_with_a_non_decimal_digit_is_an_error() -> None:
    text = '[Devices.serial.0]\n[Devices.serial."\u00b2"]\n'
    error = config_error(text)
    assert error.line == 2


@pytest.mark.parametrize("value", ["-1", '"high"', "true"])
def test_priority_must_be_a_non_negative_integer(value: str) -> None:
    text = f"[Devices.serial]\nPriority = {value}\n[Devices.serial.0]\n"
    error = config_error(text)
    assert error.line == 2


def test_unknown_instance_key_is_an_error_at_its_line() -> None:
    text = "[Devices.serial.0]\nTrusted = true\nIRQ = 4\n"
    error = config_error(text)
    assert error.line == 3
    assert "unknown key 'IRQ'" in str(error)


@pytest.mark.parametrize("key", ["Trusted", "R0Enabled"])
def test_trusted_and_r0enabled_must_be_booleans(key: str) -> None:
    text = f'[Devices.serial.0]\n{key} = "yes"\n'
    error = config_error(text)
    assert error.line == 2
    assert f"{key} must be true or false" in str(error)


def test_instance_must_be_a_table() -> None:
    error = config_error("[Devices.serial]\n0 = 1\n")
    assert error.line == 2


# -- LUNs -----------------------------------------------------------------------------------


def test_lun_without_driver_is_an_error_at_the_lun_table() -> None:
    text = (
        "[Devices.serial.0]\n"
        "Trusted = true\n"
        '[Devices.serial.0."LUN#0"]\n'
        '[Devices.serial.0."LUN#0".Config]\n'
    )
    error = config_error(text)
    assert error.line == 3
    assert 'LUN#0 needs Driver = "<name>"' in str(error)


def test_lun_known_only_by_its_config_table_is_located_there() -> None:
    text = '[Devices.serial.0]\nTrusted = true\n\n[Devices.serial.0."LUN#1".Config]\nInput = "x"\n'
    error = config_error(text)
    assert error.line == 4
    assert "LUN#1 needs Driver" in str(error)


@pytest.mark.parametrize("driver", ['""', "3"])
def test_lun_driver_must_be_a_non_empty_string(driver: str) -> None:
    error = config_error(f'[Devices.serial.0."LUN#0"]\nDriver = {driver}\n')
    assert error.line == 1


def test_unknown_lun_key_is_an_error_at_its_line() -> None:
    text = '[Devices.serial.0."LUN#0"]\nDriver = "memory"\nAttachedDriver = "x"\n'
    error = config_error(text)
    assert error.line == 3
    assert "unknown key 'AttachedDriver'" in str(error)


def test_lun_key_needs_a_number() -> None:
    error = config_error('[Devices.serial.0."LUN#x"]\nDriver = "memory"\n')
    assert error.line == 1
    assert "unknown key 'LUN#x'" in str(error)


# -- locate ------------------------------------------------------------------------------

LOCATE_TEXT = """\
Name = "x"                                 # line 1
[Devices.serial]                           # line 2
Priority = 3
[Devices.serial.0]
Trusted = true                             # line 5
Config.UartType = "16450"
[Devices.serial.0."LUN#0"]                 # line 7
Driver = "file"
[Devices.serial.0."LUN#0".Config]          # line 9
Path = "/tmp/out # not a comment"
Append = true                              # line 11
[ Devices . serial . '1' ]
"""


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        (("Name",), 1),
        (("Devices", "serial", "Priority"), 3),
        (("Devices", "serial", "0", "Trusted"), 5),
        (("Devices", "serial", "0", "Config", "UartType"), 6),
        (("Devices", "serial", "0", "LUN#0"), 7),
        (("Devices", "serial", "0", "LUN#0", "Driver"), 8),
        (("Devices", "serial", "0", "LUN#0", "Config"), 9),
        (("Devices", "serial", "0", "LUN#0", "Config", "Path"), 10),
        (("Devices", "serial", "0", "LUN#0", "Config", "Append"), 11),
        (("Devices", "serial", "1"), 12),
    ],
)
def test_locate_finds_keys_in_quoted_lun_tables(keys: tuple[str, ...], line: int) -> None:
    assert locate(LOCATE_TEXT, keys) == line


def test_locate_falls_back_to_the_closest_enclosing_table() -> None:
    assert locate(LOCATE_TEXT, ("Devices", "serial", "0", "LUN#0", "Config", "Missing")) == 9
    assert locate(LOCATE_TEXT, ("Devices", "serial", "0", "R0Enabled")) == 4
    assert locate(LOCATE_TEXT, ("Devices", "serial", "Missing")) == 2


def test_locate_finds_a_table_defined_only_by_its_subtables() -> None:
    text = 'Name = "x"\n\n[Devices.testdev.0]\n[Devices.testdev.0.Config]\n'
    assert locate(text, ("Devices", "testdev")) == 3
    assert locate(text, ("Devices",)) == 3


def test_locate_without_any_match_is_line_1() -> None:
    assert locate(LOCATE_TEXT, ("Nothing", "here")) == 1
    assert locate("", ("Name",)) == 1


def test_locate_does_not_confuse_devices_sharing_a_prefix() -> None:
    text = "[Devices.serial2.0]\nTrusted = true\n[Devices.serial.0]\nTrusted = true\n"
    assert locate(text, ("Devices", "serial", "0", "Trusted")) == 4
    assert locate(text, ("Devices", "serial2", "0", "Trusted")) == 2


def test_config_value_error_points_at_the_value_line() -> None:
    config = parse_config(LOCATE_TEXT, SOURCE)
    error = config.error(("Devices", "serial", "0", "LUN#0", "Config", "Path"), "no such directory")
    assert str(error) == f"{SOURCE}:10: no such directory"
    assert error.line == line_of(LOCATE_TEXT, "Path =")
