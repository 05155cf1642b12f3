"""F2 frame arithmetic: Modbus function-03 replies, signed values, decimals, several datapoints a frame."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_core.formats.f2 import (
    DatapointSpec,
    FrameError,
    crc16_modbus,
    decode_datapoints,
    encode_reply,
    parse_hex,
    parse_reply,
)

TEMP = DatapointSpec("temperature", 0, 2, True, 2, "°C")
HUMIDITY = DatapointSpec("humidity", 2, 2, False, 1, "%RH")
POWER = DatapointSpec("active_power", 4, 4, True, 0, "W")


def test_crc_matches_the_modbus_reference_vector() -> None:
    # the classic example "01 03 00 00 00 0A" has CRC C5CD (sent CD C5)
    assert crc16_modbus(bytes.fromhex("01030000000A")) == 0xCDC5


def test_several_datapoints_signed_and_decimals_from_one_frame() -> None:
    # temperature -5.25 °C -> -525 -> 0xFDF3; humidity 55.5 -> 555 -> 0x022B; power -1500 W -> 0xFFFFFA24
    frame = encode_reply(1, bytes.fromhex("FDF3022BFFFFFA24"))
    text = " ".join(f"{b:02X}" for b in frame)
    assert text.startswith("01 03 08 FD F3 02 2B FF FF FA 24")
    values = dict((spec.name, value) for spec, value in decode_datapoints(text, [TEMP, HUMIDITY, POWER]))
    assert values == {"temperature": -5.25, "humidity": 55.5, "active_power": -1500.0}


def test_unsigned_reading_of_high_bit_is_positive() -> None:
    reply = parse_reply(encode_reply(3, bytes.fromhex("FDF3")))
    spec = DatapointSpec("raw", 0, 2, False, 0, "")
    assert (
        decode_datapoints(" ".join(f"{b:02x}" for b in encode_reply(3, reply.data)), [spec])[0][1] == 65011.0
    )


def test_frame_without_crc_is_accepted_and_hex_without_spaces() -> None:
    body = encode_reply(1, bytes.fromhex("0AFF0064"), with_crc=False)
    assert decode_datapoints(body.hex(), [TEMP, HUMIDITY]) == [(TEMP, 28.15), (HUMIDITY, 10.0)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("01 03 04 00 01", "does not match frame length"),
        ("01 03 02 00 01 00 00", "CRC mismatch"),
        ("01 83 02 C0 F1", "exception reply"),
        ("01 04 02 00 01", "unsupported modbus function"),
        ("zz 03", "not hex"),
        ("01 03", "too short"),
    ],
)
def test_bad_frames_say_what_is_wrong(data: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        parse_reply(parse_hex(data))


def test_datapoint_beyond_the_frame_is_an_error() -> None:
    frame = encode_reply(1, bytes.fromhex("0001"))
    with pytest.raises(FrameError, match=r"needs bytes 4\.\.7"):
        decode_datapoints(frame.hex(), [POWER])


@given(
    value=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    decimals=st.integers(min_value=0, max_value=4),
    offset=st.integers(min_value=0, max_value=6),
)
def test_signed_four_byte_values_round_trip(value: int, decimals: int, offset: int) -> None:
    spec = DatapointSpec("x", offset, 4, True, decimals, "")
    data = bytes(offset) + value.to_bytes(4, "big", signed=True)
    [(_, decoded)] = decode_datapoints(encode_reply(7, data).hex(), [spec])
    assert decoded == value / 10**decimals
