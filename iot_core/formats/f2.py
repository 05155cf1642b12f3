"""F2 Smart Controller frames: Modbus RTU function-03 replies in hex, and the datapoints they carry.

A datapoint's value = int(data[offset:offset+length], big-endian, two's complement if signed)
/ 10**decimals, where `data` is the register bytes after the byte-count field.
"""

from __future__ import annotations

from dataclasses import dataclass


class FrameError(ValueError):
    """The frame cannot be decoded; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class DatapointSpec:
    name: str
    offset: int
    length: int
    signed: bool
    decimals: int
    unit: str


@dataclass(frozen=True, slots=True)
class ModbusReply:
    address: int
    function: int
    data: bytes


def crc16_modbus(frame: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def parse_hex(text: str) -> bytes:
    """Hex with or without spaces ("01 03 0C ..." or "01030C...")."""
    cleaned = "".join(text.split())
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise FrameError(f"data is not hex: {text[:40]!r}") from exc


def parse_reply(frame: bytes) -> ModbusReply:
    """Split a function-03 reply into address, function and register bytes; checks length and CRC.

    A frame without the two CRC bytes is accepted (some gateways strip them); one with them must match.
    """
    if len(frame) < 3:
        raise FrameError(f"frame too short ({len(frame)} bytes)")
    address, function, count = frame[0], frame[1], frame[2]
    if function & 0x80:
        raise FrameError(f"modbus exception reply (function 0x{function:02X}, code {count})")
    if function != 0x03:
        raise FrameError(f"unsupported modbus function 0x{function:02X} (expected 0x03)")
    body_end = 3 + count
    if len(frame) == body_end + 2:
        expected = crc16_modbus(frame[:body_end])
        got = frame[body_end] | (frame[body_end + 1] << 8)
        if expected != got:
            raise FrameError(f"CRC mismatch: frame says {got:04X}, computed {expected:04X}")
    elif len(frame) != body_end:
        raise FrameError(f"byte count {count} does not match frame length {len(frame)}")
    return ModbusReply(address, function, frame[3:body_end])


def datapoint_value(data: bytes, spec: DatapointSpec) -> float:
    end = spec.offset + spec.length
    if end > len(data):
        raise FrameError(
            f"datapoint {spec.name} needs bytes {spec.offset}..{end - 1}, frame has {len(data)} data bytes"
        )
    raw = int.from_bytes(data[spec.offset : end], "big", signed=spec.signed)
    return raw / 10**spec.decimals if spec.decimals else float(raw)


def decode_datapoints(data_hex: str, specs: list[DatapointSpec]) -> list[tuple[DatapointSpec, float]]:
    reply = parse_reply(parse_hex(data_hex))
    return [(spec, datapoint_value(reply.data, spec)) for spec in specs]


def encode_reply(address: int, data: bytes, with_crc: bool = True) -> bytes:
    """The inverse of parse_reply (the simulator's devices use it)."""
    body = bytes([address, 0x03, len(data)]) + data
    if not with_crc:
        return body
    crc = crc16_modbus(body)
    return body + bytes([crc & 0xFF, crc >> 8])


def encode_datapoints(values: dict[str, float], specs: list[DatapointSpec]) -> bytes:
    """Register bytes holding `values` per `specs` (values are rounded to the spec's decimals)."""
    size = max(s.offset + s.length for s in specs)
    buf = bytearray(size)
    for spec in specs:
        raw = round(values[spec.name] * 10**spec.decimals)
        buf[spec.offset : spec.offset + spec.length] = raw.to_bytes(spec.length, "big", signed=spec.signed)
    return bytes(buf)


def to_hex(frame: bytes) -> str:
    return " ".join(f"{b:02X}" for b in frame)
