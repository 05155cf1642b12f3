"""Device ids: what may become a certificate's CN, a broker username, a topic level and a file name."""

from __future__ import annotations

import pytest

from iot_core.device_ids import (
    DEVICE_ID_PATTERN,
    RESERVED_PREFIX,
    is_f2_id,
    validate_device_id,
    validate_name,
)


@pytest.mark.parametrize(
    "device_id",
    ["a", "0", "sensor-01", "dev.kitchen_2", "f2-aabbccddee01", "x" * 63, "iot-etl", "iot.etl-x"],
)
def test_valid_ids_are_returned_unchanged(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id
    assert DEVICE_ID_PATTERN.fullmatch(device_id)


@pytest.mark.parametrize(
    ("device_id", "rule"),
    [
        ("", "empty"),
        ("a/b", "/ + # or %"),
        ("a+b", "/ + # or %"),
        ("a#", "/ + # or %"),
        ("a%u", "/ + # or %"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\nb", "line break"),
        ("a\r", "line break"),
        ("Sensor", "upper case"),
        ("F2-AABBCCDDEE01", "upper case"),
        ("x" * 64, "at most 63"),
        (f"{RESERVED_PREFIX}listener", "reserved"),
        ("-dash-first", "start with a letter or digit"),
        (".hidden", "start with a letter or digit"),
        ("a:b", "a-z 0-9"),
        ("dév", "a-z 0-9"),
    ],
)
def test_invalid_ids_are_refused_in_one_line_naming_value_and_rule(device_id: str, rule: str) -> None:
    with pytest.raises(ValueError) as refused:
        validate_device_id(device_id)
    message = str(refused.value)
    assert "\n" not in message and "\r" not in message
    assert repr(device_id) in message
    assert rule in message
    assert "a-z 0-9 . _ -" in message  # what to do instead


def test_service_names_follow_the_same_rule_and_say_what_they_are() -> None:
    assert validate_name("listener-2", "service name") == "listener-2"
    with pytest.raises(ValueError, match=r"^service name 'a/b' "):
        validate_name("a/b", "service name")


def test_f2_ids_are_recognised_and_are_device_ids() -> None:
    assert is_f2_id("f2-aabbccddee01")
    assert not is_f2_id("f2-aabbccddee0")  # 11 hex digits
    assert not is_f2_id("f2-aabbccddee0g")
    assert not is_f2_id("f2-AABBCCDDEE01")
    assert validate_device_id("f2-0123456789ab") == "f2-0123456789ab"
