"""Simulated plain devices: `devices/{device_id}/{metric}` with the value as text or a small JSON object,
in every form the decoder reads, and the deliberately bad ones it rejects.
"""

from __future__ import annotations

import json
import random
import string
from datetime import datetime

from simulator.device_clock import MS, Stamps, iso_ms_z, truncate_ms
from simulator.expected import ExpectedReading, SentMessage
from simulator.message_kind import MessageKind

# metric -> (unit, low, high, decimals); values are rounded so that their text form round-trips exactly
PLAIN_METRICS: dict[str, tuple[str, float, float, int]] = {
    "temperature": ("°C", -10.0, 35.0, 2),
    "humidity": ("%", 20.0, 95.0, 1),
    "pressure": ("hPa", 960.0, 1045.0, 2),
    "heart_rate": ("bpm", 48, 150, 0),
    "battery": ("%", 5, 100, 0),
}
STATE_METRIC = "state"  # short text states
STATE_WORDS = ("idle", "heating", "cooling", "standby", "charging")
SWITCH_METRIC = "relay"  # boolean words; the decoder stores 1/0 and the lowercase word
BOOLEAN_WORDS = ("true", "false", "on", "off", "ON", "Off")
_BOOLEAN_NUM = {"true": 1.0, "false": 0.0, "on": 1.0, "off": 0.0}


class PlainDevices(MessageKind):
    """`devices/{device_id}/{metric}` with the value as text or a small JSON object."""

    kind = "plain"
    metrics: tuple[str, ...] = (*PLAIN_METRICS, STATE_METRIC, SWITCH_METRIC)

    def __init__(self, rng: random.Random, stamps: Stamps, qos: int, devices: int) -> None:
        super().__init__(rng, stamps, qos)
        ids: dict[str, None] = {}  # ordered and unique
        while len(ids) < devices:
            ids[f"{rng.getrandbits(32):08x}"] = None
        self.device_ids: tuple[str, ...] = tuple(ids)

    def topic(self, device_id: str, metric: str) -> str:
        return f"devices/{device_id}/{metric}"

    def number(self, metric: str) -> float | int:
        _unit, low, high, decimals = PLAIN_METRICS[metric]
        value = round(self.rng.uniform(low, high), decimals)
        return int(value) if decimals == 0 else value

    def device_ts(self, device_id: str, metric: str, now: datetime) -> datetime:
        return self.stamps.next(("plain", device_id, metric), truncate_ms(now), MS)

    def good(self, now: datetime) -> SentMessage:
        device_id = self.rng.choice(self.device_ids)
        metric = self.rng.choice(self.metrics)
        payload, expected = self.value_payload(device_id, metric, now)
        return self.sent(self.topic(device_id, metric), payload.encode(), readings=(expected,))

    def value_payload(self, device_id: str, metric: str, now: datetime) -> tuple[str, ExpectedReading]:
        """The payload text in one of the forms devices use, and the reading it stands for."""
        ts: datetime | None = None
        sent_unit = ""
        if metric == SWITCH_METRIC:
            payload = self.rng.choice(BOOLEAN_WORDS)
            word = payload.lower()
            num, text = _BOOLEAN_NUM[word], word
        elif metric == STATE_METRIC:
            word = self.rng.choice(STATE_WORDS)
            payload = json.dumps({"value": word}) if self.rng.random() < 0.2 else word
            num, text = None, word
        else:
            unit = PLAIN_METRICS[metric][0]
            value = self.number(metric)
            num, text = float(value), None
            form = self.rng.random()
            if form < 0.3:
                payload = str(value)
            elif form < 0.6:
                payload, sent_unit = f"{value} {unit}", unit
            else:
                doc: dict[str, object] = {"value": value}
                if self.rng.random() < 0.7:
                    sent_unit = "C" if metric == "temperature" and self.rng.random() < 0.5 else unit
                    doc["unit"] = sent_unit
                if self.rng.random() < 0.6:
                    ts = self.device_ts(device_id, metric, now)
                    doc["ts"] = iso_ms_z(ts)
                payload = json.dumps(doc, ensure_ascii=False)
        return payload, ExpectedReading(device_id, metric, sent_unit, num, text, ts)

    def any_topic(self) -> tuple[str, str]:
        return self.rng.choice(self.device_ids), self.rng.choice(tuple(PLAIN_METRICS))

    def bad_empty(self, now: datetime) -> SentMessage:
        return self.rejected("empty", self.topic(*self.any_topic()), self.rng.choice((b"", b" ")))

    def bad_not_utf8(self, now: datetime) -> SentMessage:
        # a latin-1 degree sign, UTF-16 text, a broken two-byte sequence
        payload = self.rng.choice((b"23.5 \xb0C", b"\xff\xfe2\x003\x00", b"\xc3\x28"))
        return self.rejected("not_utf8", self.topic(*self.any_topic()), payload)

    def bad_not_finite(self, now: datetime) -> SentMessage:
        payload = self.rng.choice(("nan", "NaN", "inf", "-inf", "Infinity"))
        return self.rejected("not_finite", self.topic(*self.any_topic()), payload.encode())

    def bad_missing_value(self, now: datetime) -> SentMessage:
        device_id, metric = self.any_topic()
        doc = {"val": self.number(metric), "unit": PLAIN_METRICS[metric][0], "ts": iso_ms_z(now)}
        return self.rejected("missing_value", self.topic(device_id, metric), json.dumps(doc).encode())

    def bad_text_too_long(self, now: datetime) -> SentMessage:
        text = "error " + "".join(self.rng.choices(string.ascii_lowercase, k=self.rng.randint(260, 400)))
        return self.rejected(
            "text_too_long", self.topic(self.rng.choice(self.device_ids), STATE_METRIC), text.encode()
        )

    def bad_topic_segments(self, now: datetime) -> SentMessage:
        device_id, metric = self.any_topic()
        topic = f"{self.topic(device_id, metric)}/{self.rng.choice(('raw', 'value', 'x'))}"
        return self.rejected("topic_segments", topic, str(self.number(metric)).encode())
