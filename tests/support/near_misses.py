"""Generated near-misses of the column-wise decoders' grammars, and hostile neighbours of them."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from iot_core.formats.f2 import DatapointSpec, crc16_modbus, encode_reply, to_hex
from iot_core.formats.f2_messages import F2Catalog, SensorEntry
from tests.support.fleet import fleet_catalog

# Generated near-misses: members drawn from good and hostile values, in any order, maybe twice, with
# JSON whitespace of every kind, as objects or arrays.
_VALUES = {
    "schema": ["1", "1", "1", "2", "1.0", "true", '"1"', "null", "-0"],
    "event_id": ['"ev-1"', '"ev-2"', '""', '" "', '"\u00a0"', '"é"', '"a\\"b"', "5", "null",
                 f'"{"e" * 129}"'],
    "device_id": ['"dev-1"', '"dev-1"', '"dev-1"', '"dev-2"', '"dev-1 "', "null"],
    "event_type": ['"door"', '"t"', '""', '"\\u0000"', '"\ud800"', "[]"],
    "value": ["1", "-0", "-0.0", "1.5", "1e5", "123456789012345", "1234567890123456", "true", "null",
              '"open"', '""', '" "', '"\\n"', "[1]", '{"a": 1}', "NaN", "-Infinity", "9" * 400],
    "unit": ['"C"', '""', "null", "5", f'"{"u" * 257}"', "true"],
    "ts_device": ['"2025-01-15T10:29:00.000Z"', '"2025-01-15T10:29:00"', '"2025-01-15 10:29:00.123456"',
                  '"2025-01-15T15:59:00+05:30"', '"yesterday"', '""', "5", "null", '"2025-02-30T00:00:00Z"',
                  '"2999-01-01T00:00:00Z"', '" 2025-01-15T10:29:00Z"'],
    "meta": ["{}", "null", '{"a": 1}', '{"b": "x", "a": 2.50}', '{"a": 1, "a": 2}', '{"value": 1}',
             '{"a": {"b": 1}}', "[]", '"x"', '{"a": NaN}', '{"a": "\\u0000"}', '{"é": "ü"}', '{"k": 0.00001}',
             '{"k": -0}', '{"k": 12345678901234567890}', '{"a b": 1, "a": 2}', '{ }'],
    "x": ["1", '"y"', "[1, {}]", "1e999"],
}  # fmt: skip
_MEMBERS = st.lists(
    st.sampled_from(sorted(_VALUES)).flatmap(
        lambda key: st.tuples(st.just(key), st.sampled_from(_VALUES[key]))
    ),
    max_size=3,
)
WS = st.sampled_from(["", "", " ", "\n", "\t ", "\r\n"])


@st.composite
def _elements(draw: st.DrawFn) -> str:
    required = [
        (key, draw(st.one_of(st.just(_VALUES[key][0]), st.sampled_from(_VALUES[key]))))
        for key in ("schema", "event_id", "device_id", "event_type")
    ]
    members = draw(st.permutations([*required[: draw(st.integers(2, 4))], *draw(_MEMBERS)]))
    texts = [f'"{key}"{draw(WS)}:{draw(WS)}{value}' for key, value in members]
    return "{" + draw(WS) + f"{draw(WS)},{draw(WS)}".join(texts) + draw(WS) + "}"


EVENT_PAYLOADS = st.one_of(
    _elements(),
    _elements(),
    st.lists(_elements(), max_size=3).map(lambda elements: "[" + ", ".join(elements) + "]"),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
)


MAC = "aabbccddee01"
SENSOR = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"  # th-sensor: 2 + 2 bytes
POWER = f"tele/f2-{MAC}/sensor-mode/J3/sensor-1"  # power-meter: 2 + 2 + 4 bytes
STRIKE = f"stat/f2-{MAC}/access-control-mode/J2/strike-1"
DOORS = f"stat/f2-{MAC}/door-sensors"
TS = "2025-01-15 10:29:00.123456"


def exotic_catalog() -> F2Catalog:
    """The fleet plus models with datapoints only the per-message path reads."""
    catalog = fleet_catalog()
    odd = {
        "X1": (DatapointSpec("wide", 0, 7, True, 0, ""), DatapointSpec("b", 7, 1, False, 0, "")),
        "X2": (DatapointSpec("many_decimals", 0, 2, False, 23, ""),),
        "X3": (DatapointSpec("negative_offset", -2, 2, False, 0, ""),),
        "X4": (DatapointSpec("empty", 0, 0, False, 0, ""),),
        "X5": (DatapointSpec("six", 0, 6, True, 22, "u"), DatapointSpec("one", 6, 1, True, 1, "")),
    }
    for port, specs in odd.items():
        catalog.add(MAC, port, "sensor-1", SensorEntry("sensor-mode", port.lower(), specs))
    return catalog


def sensor(data: object, **extra: object) -> bytes:
    return json.dumps({"timestamp": TS, "data": data, **extra}).encode()


EXOTIC = [
    (
        f"tele/f2-{MAC}/sensor-mode/{port}/sensor-1",
        sensor(to_hex(encode_reply(1, bytes(range(1, 9))))),
    )
    for port in ("X1", "X2", "X3", "X4", "X5")
]


@st.composite
def _frames(draw: st.DrawFn) -> str:
    data = draw(st.binary(max_size=12))
    frame = bytes([draw(st.integers(0, 255)), draw(st.sampled_from([3, 3, 3, 0x83, 4])), len(data)]) + data
    count = draw(st.sampled_from(["right", "right", "off"]))
    if count == "off":
        frame = frame[:2] + bytes([(frame[2] + draw(st.sampled_from([1, 2, 254, 255]))) % 256]) + frame[3:]
    if draw(st.booleans()):
        crc = crc16_modbus(frame) ^ draw(st.sampled_from([0, 0, 0, 1, 0x100]))
        frame += bytes([crc & 0xFF, crc >> 8])
    frame = frame[: draw(st.sampled_from([len(frame), len(frame), 2, 1, 0]))]
    text = draw(st.sampled_from([to_hex, bytes.hex, lambda b: b.hex().upper(), lambda b: to_hex(b).lower()]))(
        frame
    )
    return text + draw(st.sampled_from(["", "", " ", "0", "g"]))


_TOPICS = st.sampled_from(
    [SENSOR, SENSOR, POWER, f"tele/f2-{MAC}/sensor-mode/J4/sensor-2", *[t for t, _ in EXOTIC], STRIKE]
)
_TIMESTAMPS = st.sampled_from([TS, None, "2025-01-15T10:29:00Z", "2025-01-15 10:35:00.000000", "x", 5])
_DOORS = st.dictionaries(
    st.sampled_from(["door-1", "door-2", "a", "é", "a b", "d" * 20]), st.booleans(), max_size=4
)
_SENSOR_PAYLOADS = st.builds(lambda d, t: json.dumps({"timestamp": t, "data": d}), _frames(), _TIMESTAMPS)
F2_MESSAGES = st.one_of(
    st.tuples(_TOPICS, _SENSOR_PAYLOADS),
    st.tuples(_TOPICS, st.builds(lambda data: json.dumps({"data": data}), _frames())),
    st.tuples(_TOPICS, st.sampled_from(["true", "false", " true ", "null", "{}"])),
    st.tuples(st.just(DOORS), _DOORS.map(json.dumps)),
    st.tuples(st.just(DOORS), st.text(max_size=20)),
)  # fmt: skip
