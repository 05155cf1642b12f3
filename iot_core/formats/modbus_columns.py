"""Modbus function-03 replies read column-wise (numpy), exactly as `f2.parse_reply` and `datapoint_value`.

Frames of one length are one byte matrix: the function and byte count are columns, the CRC is computed
for all of them at once a byte column at a time, and each datapoint is a few byte columns shifted
together. A datapoint read here is at most 6 bytes long with 0..22 decimals: its integer and 10**decimals
are exact as floats, so one float division rounds as Python's `int / int` does.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from iot_core.formats.columns import POSITION
from iot_core.formats.f2 import DatapointSpec


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_CRC_TABLE = _crc_table()


def crc16_columns(body: np.ndarray) -> np.ndarray:
    """`f2.crc16_modbus` of every row of the byte matrix `body`."""
    crc = np.full(body.shape[0], 0xFFFF, dtype=np.uint32)
    for column in body.T:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ column) & 0xFF]
    return crc


def readable(spec: DatapointSpec) -> bool:
    """A datapoint this module reads exactly (others: the per-message path)."""
    return spec.offset >= 0 and 1 <= spec.length <= 6 and 0 <= spec.decimals <= 22


def _value(data: np.ndarray, spec: DatapointSpec) -> np.ndarray:
    raw = np.zeros(data.shape[0], dtype=np.int64)
    for index in range(spec.offset, spec.offset + spec.length):
        raw = (raw << 8) | data[:, index].astype(np.int64)
    if spec.signed:
        bits = 8 * spec.length
        raw = np.where(raw >= 1 << (bits - 1), raw - (1 << bits), raw)
    values = raw.astype(np.float64)
    return values / float(10**spec.decimals) if spec.decimals else values


def read_datapoints(frames: pl.DataFrame, models: list[tuple[DatapointSpec, ...]]) -> pl.DataFrame:
    """(POSITION, item, value_num) of every datapoint of `models[model]` for each frame of `frames`
    (POSITION, model, hex: pairs of hex digits) that `parse_reply` accepts with all its datapoints in
    reach; any other frame has no row (the per-message path says what is wrong with it)."""
    parts = [pl.DataFrame(schema={POSITION: pl.UInt32, "item": pl.Int32, "value_num": pl.Float64})]
    frames = frames.with_columns(size=pl.col("hex").str.len_bytes() // 2)
    for (size,), group in frames.filter(pl.col("size") >= 3).group_by("size"):
        matrix = np.frombuffer(bytes.fromhex("".join(group["hex"].to_list())), dtype=np.uint8)
        matrix = matrix.reshape(-1, size)
        count = matrix[:, 2].astype(np.int64)
        function_03 = matrix[:, 1] == 0x03
        with_crc = function_03 & (count + 5 == size)
        if with_crc.any():
            sent = matrix[:, size - 2].astype(np.uint32) | (matrix[:, size - 1].astype(np.uint32) << 8)
            with_crc &= crc16_columns(matrix[:, : size - 2]) == sent
        without_crc = function_03 & (count + 3 == size)
        positions, model_of = group[POSITION].to_numpy(), group["model"].to_numpy()
        for rows, width in ((with_crc, size - 5), (without_crc, size - 3)):
            for model in np.unique(model_of[rows]):
                specs = models[model]
                if not all(readable(s) and s.offset + s.length <= width for s in specs):
                    continue
                chosen = rows & (model_of == model)
                data = matrix[chosen, 3 : 3 + width]
                for item, spec in enumerate(specs):
                    parts.append(
                        pl.DataFrame(
                            {
                                POSITION: positions[chosen],
                                "item": np.full(data.shape[0], item, dtype=np.int32),
                                "value_num": _value(data, spec),
                            },
                            schema={POSITION: pl.UInt32, "item": pl.Int32, "value_num": pl.Float64},
                        )
                    )
    return pl.concat(parts)
