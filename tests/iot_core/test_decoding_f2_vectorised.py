"""The column-wise F2 path (`f2_frame`, `modbus_columns`) decides a message only where the per-message
path stores exactly the same readings (same values to the last bit, same items, same element count) and
rejects nothing: on the simulator's fleet, hand-picked frames, topics and payloads, sensor models with
datapoints it does not read, and generated frames (any length, function, CRC, spelling of the hex)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_core.formats.batch import DecodeOptions
from iot_core.formats.f2 import crc16_modbus, encode_reply, to_hex
from iot_core.formats.f2_frame import decode_f2_frame
from iot_core.formats.f2_messages import F2Catalog
from iot_core.formats.modbus_columns import crc16_columns
from simulator.messages import MessageFactory
from tests.support.bad_inputs import BAD_INPUTS
from tests.support.decoding import assert_decided_like_reference, raw_frame
from tests.support.fleet import fleet_catalog
from tests.support.near_misses import (
    DOORS,
    EXOTIC,
    F2_MESSAGES,
    MAC,
    POWER,
    SENSOR,
    STRIKE,
    TS,
    exotic_catalog,
    sensor,
)

T0 = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
CATALOG = exotic_catalog()
OPTIONS = [DecodeOptions(), DecodeOptions(default_tz=ZoneInfo("Europe/Berlin"), max_field_chars=20)]


def check(frame: pl.DataFrame, options: DecodeOptions, catalog: F2Catalog = CATALOG) -> int:
    rows, counts = decode_f2_frame(
        frame,
        catalog,
        options.limits,
        options.default_tz,
        min_year=options.min_year,
        max_future_s=options.max_future_s,
    )
    return assert_decided_like_reference(frame, "measurements", rows, counts, catalog, options)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_simulated_fleet_is_decided_column_wise_as_one_by_one(seed: int) -> None:
    factory = MessageFactory(seed, kinds=("f2",), bad_share=0.2)
    sent = [factory.next(T0 + timedelta(milliseconds=7 * i)) for i in range(3000)]
    rx = [int((T0 + timedelta(milliseconds=7 * i, microseconds=3)).timestamp() * 1e6) for i in range(3000)]
    frame = raw_frame([(m.topic, m.payload) for m in sent], rx)
    assert check(frame, DecodeOptions(), fleet_catalog()) == sum(1 for m in sent if not m.bad)
    check(frame, OPTIONS[1], fleet_catalog())


def test_the_bad_input_corpus_is_left_to_the_per_message_path() -> None:
    assert check(raw_frame([(bad.topic, bad.payload) for bad in BAD_INPUTS]), DecodeOptions()) == 0


GOOD = encode_reply(1, bytes.fromhex("FDF3022B"))
BODY = encode_reply(1, bytes.fromhex("FDF3022B"), with_crc=False)
EDGE = [
    (SENSOR, sensor(to_hex(GOOD))), (SENSOR, sensor(GOOD.hex())), (SENSOR, sensor(GOOD.hex().upper())),
    (SENSOR, sensor(to_hex(BODY))), (SENSOR, sensor(to_hex(GOOD)[:-1])),
    (SENSOR, sensor(to_hex(GOOD) + " ")),
    (SENSOR, sensor(to_hex(GOOD).replace(" ", "  "))), (SENSOR, sensor(to_hex(GOOD).replace(" ", "\t"))),
    (SENSOR, sensor(to_hex(GOOD[:-1] + bytes([GOOD[-1] ^ 1])))), (SENSOR, sensor("01 83 02 C0 F1")),
    (SENSOR, sensor("01 04 02 00 01")), (SENSOR, sensor("01 03")), (SENSOR, sensor("01 03 04 00 01")),
    (SENSOR, sensor(to_hex(encode_reply(1, bytes(2))))),
    (SENSOR, sensor(to_hex(encode_reply(1, bytes(9))))),
    (SENSOR, sensor("zz 03")), (SENSOR, sensor(None)), (SENSOR, sensor(5)), (SENSOR, sensor("")),
    (SENSOR, json.dumps({"data": to_hex(GOOD)}).encode()),
    (SENSOR, json.dumps({"data": to_hex(GOOD), "timestamp": None}).encode()),
    (SENSOR, json.dumps({"data": to_hex(GOOD), "timestamp": "2025-01-15T10:29:00Z"}).encode()),
    (SENSOR, json.dumps({"data": to_hex(GOOD), "timestamp": "yesterday"}).encode()),
    (SENSOR, json.dumps({"data": to_hex(GOOD), "timestamp": 5}).encode()),
    (SENSOR, sensor(to_hex(GOOD), extra=1)),
    (SENSOR, f'{{"data": "{to_hex(GOOD)}", "data": "{to_hex(GOOD)}"}}'.encode()),
    (SENSOR, f'{{"data": null, "data": "{to_hex(GOOD)}"}}'.encode()),
    (SENSOR, f'{{"data": "{to_hex(GOOD)}", "data": "{to_hex(encode_reply(1, bytes(4)))}"}}'.encode()),
    (SENSOR, f'{{"data": "{to_hex(GOOD)}", "timestamp": "{TS}", "timestamp": null}}'.encode()),
    (SENSOR, f' \n{{ "timestamp" :"{TS}" ,"data":"{to_hex(GOOD)}" }}\t'.encode()),
    (SENSOR, b"true"), (SENSOR, b"[]"),
    (POWER, sensor(to_hex(encode_reply(3, bytes.fromhex("0966 3BEE FFFFFA24"))))),
    (POWER, sensor(to_hex(encode_reply(3, bytes.fromhex("0966 3BEE FFFF"))))),
    (SENSOR.upper().replace("TELE/F2-", "tele/f2-"), sensor(to_hex(GOOD))),
    (f"tele/f2-{MAC.upper()}/sensor-mode/J1/sensor-1", sensor(to_hex(GOOD))),
    (SENSOR.replace("sensor-mode", "other-mode"), sensor(to_hex(GOOD))),
    (SENSOR.replace("J1", "J9"), sensor(to_hex(GOOD))),
    (SENSOR.replace(MAC, "ffeeddccbbaa"), sensor(to_hex(GOOD))),
    (SENSOR + "/x", sensor(to_hex(GOOD))), (SENSOR.replace("tele", "stat"), sensor(to_hex(GOOD))),
    (STRIKE, b"true"), (STRIKE, b" false\n"), (STRIKE, b"True"), (STRIKE, b"1"), (STRIKE, b"null"),
    (STRIKE, b'"true"'), (STRIKE, b"true false"), (STRIKE, b"\x00"),
    (DOORS, b'{"door-1": true, "door-2": false}'), (DOORS, b'{"b": true, "a": false, "\xc3\xa9": true}'),
    (DOORS, b'{"a b": true, "a": false, "": true}'), (DOORS, b"{}"), (DOORS, b'{"a": 1}'),
    (DOORS, b'{"a": true, "a": false}'), (DOORS, b'{"a\\u0041": true}'),
    (DOORS, ('{"' + "d" * 300 + '": true}').encode()),
    (DOORS.replace("stat", "tele"), b'{"a": true}'), (DOORS.replace(MAC, "ffeeddccbbaa"), b'{"a": true}'),
    (DOORS + "/x", b'{"a": true}'), (f"stat/f2-{MAC}/x/door-sensors", b'{"a": true}'),
]  # fmt: skip


@pytest.mark.parametrize("options", OPTIONS)
def test_edge_cases_are_decided_as_one_by_one(options: DecodeOptions) -> None:
    assert check(raw_frame(EDGE + EXOTIC), options) > 0


def test_a_controller_is_named_in_either_case() -> None:
    upper = f"tele/f2-{MAC.upper()}/sensor-mode/J1/sensor-1"
    frame = raw_frame([(SENSOR, sensor(to_hex(GOOD))), (upper, sensor(to_hex(GOOD)))])
    assert check(frame, DecodeOptions()) == 2


def test_only_datapoints_read_exactly_are_decided_column_wise() -> None:
    # six bytes with 22 decimals and a signed byte are read here; the other models are left alone
    assert check(raw_frame(EXOTIC), DecodeOptions()) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=30))
def test_the_crc_of_every_row_is_the_modbus_crc(bodies: list[bytes]) -> None:
    size = len(bodies[0])
    matrix = np.frombuffer(b"".join(b[:size].ljust(size, b"\x00") for b in bodies), dtype=np.uint8)
    rows = [b[:size].ljust(size, b"\x00") for b in bodies]
    assert crc16_columns(matrix.reshape(len(bodies), size)).tolist() == [crc16_modbus(r) for r in rows]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(F2_MESSAGES, min_size=1, max_size=20), options=st.sampled_from(OPTIONS))
def test_generated_frames_are_decided_as_one_by_one(
    messages: list[tuple[str, str]], options: DecodeOptions
) -> None:
    check(
        raw_frame([(topic, payload.encode("utf-8", "surrogatepass")) for topic, payload in messages]), options
    )
